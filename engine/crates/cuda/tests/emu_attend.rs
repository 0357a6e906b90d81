//! The split-context attention (src/attend.cu: `attend_split` + `attend_combine`) in the host
//! emulator against the f64 one-sequence reference, for the split plans the engine picks
//! (`attention_split`) and for forced ones (one split per row; tiny chunks that are not a
//! multiple of the warp's unroll), with head sizes that take each load width.

use hmoe_cuda::dense_model::{attention_split, grid_split_count};
use hmoe_cuda::dense_ref;
use hmoe_cuda::verify::compare;
use hmoe_cuda::verify_dense::vals;
use std::path::Path;
use std::process::Command;

#[path = "emu/build.rs"]
mod emu_build;
use emu_build::compile_harness;

/// A batch: heads, KV heads, head size, and per sequence (cached, new, capacity).
struct Case {
    nh: usize,
    nkv: usize,
    hd: usize,
    seqs: Vec<(usize, usize, usize)>,
}

fn push_u32(b: &mut Vec<u8>, v: usize) {
    b.extend_from_slice(&(v as u32).to_le_bytes());
}

fn push_f32s(b: &mut Vec<u8>, v: &[f32]) {
    v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
}

/// Runs the case with the plan `(chunk, n_splits)` on a grid sized for
/// `grid_split_count(n_splits)` splits and checks every sequence's output.
fn check(exe: &Path, dir: &Path, c: &Case, (chunk, n_splits): (usize, usize), what: &str) {
    let (nh, nkv, hd) = (c.nh, c.nkv, c.hd);
    let kvw = nkv * hd;
    let n: usize = c.seqs.iter().map(|s| s.1).sum();
    let scale = 1.0 / (hd as f32).sqrt();
    let mut b = Vec::new();
    for v in [c.seqs.len(), nh, nkv, hd] {
        push_u32(&mut b, v);
    }
    push_f32s(&mut b, &[scale]);
    push_u32(&mut b, chunk);
    push_u32(&mut b, n_splits);
    push_u32(&mut b, grid_split_count(n_splits));
    for &(start, m, cap) in &c.seqs {
        [start, m, cap].iter().for_each(|&v| push_u32(&mut b, v));
    }
    let hist: Vec<(Vec<f32>, Vec<f32>)> = (c.seqs.iter().enumerate())
        .map(|(s, &(start, _, _))| {
            (
                vals(start * kvw, 60 + s as u64),
                vals(start * kvw, 80 + s as u64),
            )
        })
        .collect();
    for (k, v) in &hist {
        push_f32s(&mut b, k);
        push_f32s(&mut b, v);
    }
    let (q, k, v) = (vals(n * nh * hd, 1), vals(n * kvw, 2), vals(n * kvw, 3));
    for x in [&q, &k, &v] {
        push_f32s(&mut b, x);
    }
    let (i, o) = (dir.join("in.bin"), dir.join("out.bin"));
    std::fs::write(&i, &b).unwrap();
    let st = Command::new(exe).arg(&i).arg(&o).output().unwrap();
    assert!(
        st.status.success(),
        "harness: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let got: Vec<f32> = (std::fs::read(&o).unwrap().chunks_exact(4))
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got.len(), n * nh * hd);
    let mut row = 0;
    for (s, &(start, m, _)) in c.seqs.iter().enumerate() {
        let mut kf = hist[s].0.clone();
        kf.extend_from_slice(&k[row * kvw..(row + m) * kvw]);
        let mut vf = hist[s].1.clone();
        vf.extend_from_slice(&v[row * kvw..(row + m) * kvw]);
        let qs = &q[row * nh * hd..(row + m) * nh * hd];
        let want = dense_ref::attend(qs, &kf, &vf, start, nh, nkv, hd);
        let cmp = compare(&got[row * nh * hd..(row + m) * nh * hd], &want);
        println!(
            "{what} (chunk {chunk} x {n_splits}), sequence {s}: rel_l2 {:.2e}",
            cmp.rel_l2
        );
        assert!(
            cmp.pass,
            "{what} (chunk {chunk} x {n_splits}), sequence {s}: {cmp:?}"
        );
        row += m;
    }
}

fn max_visible(c: &Case) -> usize {
    c.seqs
        .iter()
        .map(|&(start, m, _)| start + m)
        .max()
        .unwrap_or(1)
}

#[test]
fn split_attention_matches_the_reference_for_every_plan() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "attend_harness");
    let d = dir.path();
    // One fresh, one decoding, one prefilling sequence in one launch (head size 64: two
    // floats per lane).
    let mixed = Case {
        nh: 8,
        nkv: 2,
        hd: 64,
        seqs: vec![(0, 4, 8), (29, 1, 40), (5, 6, 16)],
    };
    let n = 11;
    let vis = max_visible(&mixed);
    check(
        &exe,
        d,
        &mixed,
        attention_split(n, mixed.nh, vis),
        "mixed batch, engine plan",
    );
    check(&exe, d, &mixed, (vis, 1), "mixed batch, one split");
    // 7 positions per split: a tail shorter than the unroll in every split.
    check(
        &exe,
        d,
        &mixed,
        (7, vis.div_ceil(7)),
        "mixed batch, chunks of 7",
    );
    // More splits than rows need: short rows must skip the splits past their context.
    check(
        &exe,
        d,
        &mixed,
        (1, vis),
        "mixed batch, one position per split",
    );

    // Decode at a long context (head size 128: one 16-byte load per lane): the plan cuts it
    // into many splits, more than one block's warps.
    let decode = Case {
        nh: 8,
        nkv: 2,
        hd: 128,
        seqs: vec![(1299, 1, 1300)],
    };
    let plan = attention_split(1, decode.nh, 1300);
    assert!(
        plan.1 > 4,
        "decode must use several blocks of splits: {plan:?}"
    );
    check(&exe, d, &decode, plan, "decode at 1.3k");

    // Head sizes 32 and 256 (one float and two 16-byte loads per lane).
    for hd in [32, 256] {
        let c = Case {
            nh: 4,
            nkv: 4,
            hd,
            seqs: vec![(70, 2, 80)],
        };
        let vis = max_visible(&c);
        check(
            &exe,
            d,
            &c,
            attention_split(2, c.nh, vis),
            &format!("head size {hd}"),
        );
    }
}

/// The dense path's RMSNorm (src/norm.cu) against the f64 reference: rows as wide as the
/// residual (several load rounds per lane), as a head (one load per lane), and a width
/// that leaves lanes idle; out of place and in place.
#[test]
fn rms_norm_rows_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "norm_harness");
    let eps = 1e-6f32;
    for (rows, cols) in [
        (1usize, 2048usize),
        (3, 2048),
        (37, 128),
        (9, 4100),
        (2, 64),
    ] {
        let x = vals(rows * cols, 31);
        let w: Vec<f32> = vals(cols, 32).iter().map(|v| 1.0 + 0.1 * v).collect();
        let mut b = Vec::new();
        push_u32(&mut b, rows);
        push_u32(&mut b, cols);
        push_f32s(&mut b, &[eps]);
        push_f32s(&mut b, &x);
        push_f32s(&mut b, &w);
        let (i, o) = (dir.path().join("in.bin"), dir.path().join("out.bin"));
        std::fs::write(&i, &b).unwrap();
        let st = Command::new(&exe).arg(&i).arg(&o).output().unwrap();
        assert!(
            st.status.success(),
            "harness: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        let got: Vec<f32> = (std::fs::read(&o).unwrap().chunks_exact(4))
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let want = dense_ref::rms_norm(&x, &w, eps);
        let (out, inplace) = got.split_at(rows * cols);
        for (what, g) in [("out of place", out), ("in place", inplace)] {
            let c = compare(g, &want);
            println!(
                "rms_norm_rows {rows} x {cols} {what}: rel_l2 {:.2e}",
                c.rel_l2
            );
            assert!(c.pass, "rms_norm_rows {rows} x {cols} {what}: {c:?}");
        }
    }
}
