//! The dense-path kernels (src/dense.cu, attend.cu, attend_tiled.cu) in the host emulator
//! against plain f64 references (the fused per-head kernels: tests/emu_fused_dense.rs).

use hmoe_cuda::attend_tiled::{
    max_rel_diff, tiled_smem_floats, tiled_smem_floats_for, TILED_VS_SPLIT_MAX_REL,
};
use hmoe_cuda::dense_model::{attention_split, grid_split_count};
use hmoe_cuda::dense_ref;
use hmoe_cuda::verify::compare;
use hmoe_cuda::verify_dense::vals;
use hmoe_cuda::KernelType;
use hmoe_gguf::GgmlDType;
use hmoe_quant::quantize;
use std::path::Path;

#[path = "emu/build.rs"]
mod emu_build;
use emu_build::{compile_harness, compile_harness_with};

struct Input(Vec<u8>);

impl Input {
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn f32s(mut self, v: &[f32]) -> Self {
        v.iter()
            .for_each(|x| self.0.extend_from_slice(&x.to_le_bytes()));
        self
    }
    fn bytes(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
}

fn run(exe: &Path, dir: &Path, input: Input) -> Vec<f32> {
    emu_build::run_harness(exe, dir, "dense", &input.0)
}

fn check(what: &str, got: &[f32], want: &[f32]) {
    let c = compare(got, want);
    println!("{what}: rel_l2 {:.2e} max_rel {:.2e}", c.rel_l2, c.max_rel);
    assert!(c.pass, "{what}: {c:?}");
}

#[test]
fn linear_kernels_match_the_reference_in_the_emulator() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "dense_harness");
    let d = dir.path();

    // Quantised linear, 11 tokens (two token tiles).
    let (rows, cols, n) = (24usize, 512usize, 11usize);
    for dt in [
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
        GgmlDType::F16,
    ] {
        let t = KernelType::of(dt).unwrap();
        let wf: Vec<f32> = vals(rows * cols, 1).iter().map(|v| v * 0.05).collect();
        let mut wq = vec![0u8; t.row_bytes(cols).unwrap() * rows];
        quantize(dt, &wf, &mut wq).unwrap();
        let x = vals(n * cols, 2);
        let want = dense_ref::linear(t, &wq, rows, cols, &x).unwrap();
        let code = KernelType::ALL.iter().position(|&k| k == t).unwrap() as u32;
        let inp = Input(Vec::new())
            .u32(0)
            .u32(code)
            .u32(rows as u32)
            .u32(cols as u32)
            .u32(n as u32);
        let got = run(&exe, d, inp.u32(wq.len() as u32).bytes(&wq).f32s(&x));
        check(&format!("linear {dt}"), &got, &want);
    }
}

/// A batch for the device-resident attention: heads, KV heads, head size, and per
/// sequence (cached, new, capacity).
struct Batch {
    nh: usize,
    nkv: usize,
    hd: usize,
    seqs: Vec<(usize, usize, usize)>,
}

impl Batch {
    fn rows(&self) -> usize {
        self.seqs.iter().map(|s| s.1).sum()
    }
    fn max_visible(&self) -> usize {
        self.seqs
            .iter()
            .map(|&(start, m, _)| start + m)
            .max()
            .unwrap_or(1)
    }
}

/// `attend_split` and `attend_combine` of one batch (its new rows' keys and values copied
/// into their caches first, as `qk_norm_rope_kv` leaves them) with the split plan
/// `(chunk, n_splits)` on a grid sized for `grid_split_count(n_splits)` splits, against
/// the one-sequence f64 reference per sequence; the caches must still hold exactly the
/// history followed by the new rows (the attention kernels write no cache).
fn check_batch(exe: &Path, dir: &Path, b: &Batch, plan: (usize, usize), what: &str) {
    run_batch(exe, dir, b, plan, 1, None, what);
}

/// [`check_batch`] with `hpw` query heads per split warp; returns the attention output.
fn check_batch_hpw(
    exe: &Path,
    dir: &Path,
    b: &Batch,
    plan: (usize, usize),
    hpw: usize,
    what: &str,
) -> Vec<f32> {
    run_batch(exe, dir, b, plan, hpw, None, what)
}

/// [`check_batch`], plus `attend_tiled` on the same caches given `smem_floats` of shared
/// memory: checked against the reference and against the split kernels' output (within
/// [`TILED_VS_SPLIT_MAX_REL`]). Returns the tiled output.
fn check_tiled(exe: &Path, dir: &Path, b: &Batch, smem_floats: usize, what: &str) -> Vec<f32> {
    let plan = attention_split(b.rows(), b.nh, b.max_visible());
    run_batch(exe, dir, b, plan, 1, Some(smem_floats), what)
}

/// Runs op 4 (split) or, with `tiled`, op 6 (tiled and split) of the harness and checks
/// everything; returns the attention output of the kernel under test.
fn run_batch(
    exe: &Path,
    dir: &Path,
    b: &Batch,
    (chunk, n_splits): (usize, usize),
    hpw: usize,
    tiled: Option<usize>,
    what: &str,
) -> Vec<f32> {
    let (nh, nkv, hd) = (b.nh, b.nkv, b.hd);
    let kvw = nkv * hd;
    let n = b.rows();
    let scale = 1.0 / (hd as f32).sqrt();
    let mut inp = Input(Vec::new())
        .u32(if tiled.is_some() { 6 } else { 4 })
        .u32(b.seqs.len() as u32)
        .u32(nh as u32)
        .u32(nkv as u32)
        .u32(hd as u32)
        .f32s(&[scale])
        .u32(chunk as u32)
        .u32(n_splits as u32)
        .u32(grid_split_count(n_splits) as u32)
        .u32(hpw as u32);
    for &(start, m, cap) in &b.seqs {
        inp = inp.u32(start as u32).u32(m as u32).u32(cap as u32);
    }
    let hist: Vec<(Vec<f32>, Vec<f32>)> = (b.seqs.iter().enumerate())
        .map(|(s, &(start, _, _))| {
            (
                vals(start * kvw, 20 + s as u64),
                vals(start * kvw, 40 + s as u64),
            )
        })
        .collect();
    for (k, v) in &hist {
        inp = inp.f32s(k).f32s(v);
    }
    let q = vals(n * nh * hd, 9);
    let k = vals(n * kvw, 10);
    let v = vals(n * kvw, 11);
    inp = inp.f32s(&q).f32s(&k).f32s(&v);
    if let Some(f) = tiled {
        inp = inp.u32(f as u32);
    }
    let got = run(exe, dir, inp);
    let (att, mut caches) = got.split_at(n * nh * hd);
    if tiled.is_some() {
        let (split, rest) = caches.split_at(n * nh * hd);
        caches = rest;
        let d = max_rel_diff(att, split);
        println!("{what}: tiled vs split max_rel {d:.2e}");
        assert!(
            d <= TILED_VS_SPLIT_MAX_REL,
            "{what}: tiled vs split max_rel {d:.2e} > {TILED_VS_SPLIT_MAX_REL:.0e}"
        );
    }
    let mut row = 0;
    for (s, &(start, m, _)) in b.seqs.iter().enumerate() {
        let mut kf = hist[s].0.clone();
        kf.extend_from_slice(&k[row * kvw..(row + m) * kvw]);
        let mut vf = hist[s].1.clone();
        vf.extend_from_slice(&v[row * kvw..(row + m) * kvw]);
        let used = (start + m) * kvw;
        assert_eq!(&caches[..used], &kf[..], "{what}: K cache of sequence {s}");
        assert_eq!(
            &caches[used..2 * used],
            &vf[..],
            "{what}: V cache of sequence {s}"
        );
        caches = &caches[2 * used..];
        let qs = &q[row * nh * hd..(row + m) * nh * hd];
        let want = dense_ref::attend(qs, &kf, &vf, start, nh, nkv, hd);
        let kernel = match tiled {
            Some(_) => "tiled".to_string(),
            None => format!("chunk {chunk} x {n_splits}, {hpw} heads a warp"),
        };
        check(
            &format!("{what} ({kernel}), sequence {s}"),
            &att[row * nh * hd..(row + m) * nh * hd],
            &want,
        );
        row += m;
    }
    assert!(caches.is_empty(), "{} values left over", caches.len());
    att.to_vec()
}

/// The batched attention of the device-resident forward pass: one fresh, one decoding and
/// one prefilling sequence in one launch (head size 64: two floats per lane), for the
/// split plan the engine picks and for forced ones (one split per row; chunks of 7, a
/// tail shorter than a warp step in every split; one position per split, more splits than
/// the short rows need).
#[test]
fn batched_attention_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "dense_harness");
    let d = dir.path();
    let mixed = Batch {
        nh: 8,
        nkv: 2,
        hd: 64,
        seqs: vec![(0, 4, 8), (29, 1, 40), (5, 6, 16)],
    };
    let vis = mixed.max_visible();
    let plan = attention_split(mixed.rows(), mixed.nh, vis);
    check_batch(&exe, d, &mixed, plan, "mixed batch, engine plan");
    check_batch(&exe, d, &mixed, (vis, 1), "mixed batch, one split");
    check_batch(
        &exe,
        d,
        &mixed,
        (7, vis.div_ceil(7)),
        "mixed batch, chunks of 7",
    );
    check_batch(
        &exe,
        d,
        &mixed,
        (1, vis),
        "mixed batch, one position per split",
    );
}

/// Decode at a long context (head size 128: one 16-byte load per lane): the engine's plan
/// cuts it into many splits, more than one block's warps; then head sizes 32 and 256 (one
/// float and two 16-byte loads per lane).
#[test]
fn split_attention_matches_the_reference_at_long_contexts_and_every_head_size() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "dense_harness");
    let d = dir.path();
    let decode = Batch {
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
    check_batch(&exe, d, &decode, plan, "decode at 1.3k");
    for hd in [32, 256] {
        let b = Batch {
            nh: 4,
            nkv: 4,
            hd,
            seqs: vec![(70, 2, 80)],
        };
        let plan = attention_split(b.rows(), b.nh, b.max_visible());
        check_batch(&exe, d, &b, plan, &format!("head size {hd}"));
    }
}

/// Grouped-query attention: a warp serving 2, 4 or 8 query heads of one KV head gives
/// the same partials, bit for bit, as one warp per head under the same split plan (per head
/// the arithmetic is identical), and with the plan the engine makes for its warp count it
/// matches the reference. Qwen3-30B-A3B's shape (32 heads over 4 KV heads, head size 128)
/// in decode at 1.3k positions, and a small mixed batch with groups of 4 at head size 64.
#[test]
fn grouped_heads_per_warp_match_one_head_per_warp() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "dense_harness");
    let d = dir.path();
    let decode = Batch {
        nh: 32,
        nkv: 4,
        hd: 128,
        seqs: vec![(1299, 1, 1300)],
    };
    let mixed = Batch {
        nh: 8,
        nkv: 2,
        hd: 64,
        seqs: vec![(0, 4, 8), (29, 1, 40), (5, 6, 16)],
    };
    for (b, hpws, name) in [
        (&decode, &[2usize, 4, 8][..], "decode 32/4 at 1.3k"),
        (&mixed, &[2, 4][..], "mixed 8/2"),
    ] {
        let plan = attention_split(b.rows(), b.nh, b.max_visible());
        let one = check_batch_hpw(&exe, d, b, plan, 1, &format!("{name}, hpw 1"));
        for &hpw in hpws {
            let what = format!("{name}, hpw {hpw}");
            let got = check_batch_hpw(&exe, d, b, plan, hpw, &what);
            assert!(
                got.iter()
                    .zip(&one)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{what}: not bit-identical to one head a warp"
            );
            let own = attention_split(b.rows(), b.nh / hpw, b.max_visible());
            check_batch_hpw(&exe, d, b, own, hpw, &format!("{what}, its own plan"));
        }
    }
}

/// RMSNorm against the f64 reference: rows as wide as the residual (several load rounds
/// per lane), as a head (one load per lane), and widths that leave lanes idle; out of
/// place and in place.
#[test]
fn rms_norm_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "dense_harness");
    let eps = 1e-6f32;
    for (rows, cols) in [
        (1usize, 2048usize),
        (3, 2048),
        (13, 256),
        (37, 128),
        (9, 4100),
        (2, 64),
    ] {
        let x = vals(rows * cols, 31);
        let w: Vec<f32> = vals(cols, 32).iter().map(|v| 1.0 + 0.1 * v).collect();
        let inp = Input(Vec::new())
            .u32(1)
            .u32(rows as u32)
            .u32(cols as u32)
            .f32s(&[eps])
            .f32s(&x)
            .f32s(&w);
        let got = run(&exe, dir.path(), inp);
        let want = dense_ref::rms_norm(&x, &w, eps);
        let (out, inplace) = got.split_at(rows * cols);
        check(
            &format!("rms_norm {rows} x {cols} out of place"),
            out,
            &want,
        );
        check(
            &format!("rms_norm {rows} x {cols} in place"),
            inplace,
            &want,
        );
    }
}

/// The residual add is one f32 addition per element: exact.
#[test]
fn add_to_adds_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "dense_harness");
    let len = 1000usize; // not a multiple of the block
    let (x, y) = (vals(len, 12), vals(len, 13));
    let got = run(
        &exe,
        dir.path(),
        Input(Vec::new()).u32(5).u32(len as u32).f32s(&x).f32s(&y),
    );
    let want: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
    assert_eq!(got, want);
}

/// The tiled prefill attention against the f64 reference and the split kernels, head size
/// 64 (four query heads per KV head: 16 rows per tile): a fresh 37-row prefill (ragged:
/// its last tile holds 5 rows, the rest of it the next sequences' rows), a decode row, a
/// chunked prefill of 23 rows after 70 cached positions (mid-cache, tiles start inside a
/// K/V block), and a short one; then three query heads per KV head (tiles that cut rows
/// apart); and the mixed batch again with one K/V stage (`ATT_STAGES=1`, no copy ahead).
#[test]
fn tiled_attention_matches_the_reference_and_the_split_kernels_head_64() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "dense_harness");
    let d = dir.path();
    let mixed = Batch {
        nh: 8,
        nkv: 2,
        hd: 64,
        seqs: vec![(0, 37, 40), (50, 1, 64), (70, 23, 100), (3, 5, 8)],
    };
    check_tiled(
        &exe,
        d,
        &mixed,
        tiled_smem_floats(64),
        "tiled, mixed, hd 64",
    );
    let odd_group = Batch {
        nh: 12,
        nkv: 4,
        hd: 64,
        seqs: vec![(9, 30, 48), (0, 11, 11)],
    };
    check_tiled(
        &exe,
        d,
        &odd_group,
        tiled_smem_floats(64),
        "tiled, group 3, hd 64",
    );
    let one = compile_harness_with(d, "dense_harness", &["ATT_STAGES=1"]);
    let smem = tiled_smem_floats_for(64, 1);
    check_tiled(&one, d, &mixed, smem, "tiled, one stage, mixed, hd 64");
}

/// Head size 128 at the Qwen3-30B-A3B grouping (32 query heads over 4 KV heads: 8 rows per
/// tile): a chunked prefill of 40 rows after 100 cached positions (five K/V blocks, the last
/// one masked per row) beside a fresh 9-row prompt.
#[test]
fn tiled_attention_matches_the_reference_and_the_split_kernels_head_128() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "dense_harness");
    let b = Batch {
        nh: 32,
        nkv: 4,
        hd: 128,
        seqs: vec![(100, 40, 160), (0, 9, 16)],
    };
    check_tiled(
        &exe,
        dir.path(),
        &b,
        tiled_smem_floats(128),
        "tiled, hd 128",
    );
}
