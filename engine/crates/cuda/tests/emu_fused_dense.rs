//! The fused dense-path kernels (`qk_norm_rope_kv`, `add_rms_norm` in src/dense.cu) in the
//! host emulator: bit-identical to the unfused kernels they replace (the same float
//! operations in the same order, so nothing may differ), and within float rounding of the
//! f64 references.

use hmoe_cuda::dense_ref;
use hmoe_cuda::verify::compare;
use hmoe_cuda::verify_dense::vals;
use std::path::Path;

#[path = "emu/build.rs"]
mod emu_build;
use emu_build::compile_harness;

fn run(exe: &Path, dir: &Path, words: &[u32]) -> Vec<f32> {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    emu_build::run_harness(exe, dir, "fused", &bytes)
}

fn bits(v: &[f32]) -> impl Iterator<Item = u32> + '_ {
    v.iter().map(|f| f.to_bits())
}

/// Asserts the fused and unfused halves of a harness output are the same bits.
fn same_bits<'a>(what: &str, out: &'a [f32]) -> (&'a [f32], &'a [f32]) {
    let (fused, plain) = out.split_at(out.len() / 2);
    let diff = fused
        .iter()
        .zip(plain)
        .position(|(a, b)| a.to_bits() != b.to_bits() && !(a.is_nan() && b.is_nan()));
    assert!(
        diff.is_none(),
        "{what}: fused differs from unfused at {diff:?}"
    );
    (fused, plain)
}

fn check(what: &str, got: &[f32], want: &[f32]) {
    let c = compare(got, want);
    println!("{what}: rel_l2 {:.2e} max_rel {:.2e}", c.rel_l2, c.max_rel);
    assert!(c.pass, "{what}: {c:?}");
}

#[test]
fn qk_norm_rope_kv_equals_norm_rope_and_kv_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = compile_harness(dir.path(), "fused_harness");
    let eps = 1e-6f32;
    // Every head size the shapes allow: the RoPE partner is a shuffle 4, 8 or 16 lanes
    // away, or (256) the lane's other group. Tokens of one sequence at scattered
    // positions (a chunk after cached history, and the cache's last row).
    for hd in [32usize, 64, 128, 256] {
        let (n, nh, nkv, cap) = (3usize, 4usize, 2usize, 50usize);
        let pos = [5u32, 17, 49];
        let inv: Vec<f32> = (0..hd / 2)
            .map(|i| 1.0f32 / 1e6f32.powf((2 * i) as f32 / hd as f32))
            .collect();
        let qnw: Vec<f32> = vals(hd, 11).iter().map(|v| 1.0 + 0.5 * v).collect();
        let knw: Vec<f32> = vals(hd, 12).iter().map(|v| 1.0 + 0.5 * v).collect();
        let (q, k, v) = (
            vals(n * nh * hd, 13),
            vals(n * nkv * hd, 14),
            vals(n * nkv * hd, 15),
        );
        let mut w = vec![0, n as u32, nh as u32, nkv as u32, hd as u32, cap as u32];
        w.push(eps.to_bits());
        w.extend(pos);
        for a in [&inv, &qnw, &knw, &q, &k, &v] {
            w.extend(bits(a));
        }
        let out = run(&exe, dir.path(), &w);
        let kvw = nkv * hd;
        assert_eq!(
            out.len(),
            2 * (q.len() + k.len() + 2 * cap * kvw),
            "output size"
        );
        let (fused, _) = same_bits(&format!("head_dim {hd}"), &out);
        // Against the f64 norm and the CPU path's RoPE.
        let want_q = dense_ref::rope(&dense_ref::rms_norm(&q, &qnw, eps), &pos, &inv, nh, hd);
        let want_k = dense_ref::rope(&dense_ref::rms_norm(&k, &knw, eps), &pos, &inv, nkv, hd);
        let (got_q, rest) = fused.split_at(q.len());
        let (got_k, rest) = rest.split_at(k.len());
        let (kc, vc) = rest.split_at(cap * kvw);
        check(&format!("q head_dim {hd}"), got_q, &want_q);
        check(&format!("k head_dim {hd}"), got_k, &want_k);
        for (t, &p) in pos.iter().enumerate() {
            let row = |c: &[f32]| c[p as usize * kvw..(p as usize + 1) * kvw].to_vec();
            assert_eq!(row(kc), got_k[t * kvw..(t + 1) * kvw], "K cache row {p}");
            assert_eq!(row(vc), v[t * kvw..(t + 1) * kvw], "V cache row {p}");
        }
        // Rows no token wrote stay untouched.
        let written = |r: usize| pos.contains(&(r as u32));
        for r in (0..cap).filter(|&r| !written(r)) {
            assert!(
                kc[r * kvw..(r + 1) * kvw].iter().all(|x| x.is_nan()),
                "K row {r}"
            );
            assert!(
                vc[r * kvw..(r + 1) * kvw].iter().all(|x| x.is_nan()),
                "V row {r}"
            );
        }
    }
}

#[test]
fn add_rms_norm_equals_add_then_norm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = compile_harness(dir.path(), "fused_harness");
    let eps = 1e-6f32;
    // 2048 wide (Qwen3-30B-A3B) and one wider than a lane's loads cover in one pass.
    for (rows, cols) in [(3usize, 2048usize), (2, 4096 + 64)] {
        let (x, y) = (vals(rows * cols, 21), vals(rows * cols, 22));
        let g: Vec<f32> = vals(cols, 23).iter().map(|v| 1.0 + 0.5 * v).collect();
        let mut w = vec![1, rows as u32, cols as u32, eps.to_bits()];
        for a in [&x, &y, &g] {
            w.extend(bits(a));
        }
        let out = run(&exe, dir.path(), &w);
        assert_eq!(out.len(), 4 * rows * cols, "output size");
        let (fused, _) = same_bits(&format!("add_rms_norm {rows}x{cols}"), &out);
        let sum: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
        assert_eq!(&fused[..sum.len()], &sum[..], "residual");
        check(
            &format!("add_rms_norm {rows}x{cols}"),
            &fused[sum.len()..],
            &dense_ref::rms_norm(&sum, &g, eps),
        );
    }
}
