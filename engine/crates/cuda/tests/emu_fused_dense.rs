//! The fused dense-path kernels (`qk_norm_rope_kv`, `add_rms_norm` in src/dense.cu) in the
//! host emulator against the f64 references of `dense_ref` (the engine's CPU semantics:
//! per-head RMSNorm, NeoX RoPE with an f32 angle and f64 cos/sin, the cache rows written
//! by position, the residual add in f32).

use hmoe_cuda::dense_ref;
use hmoe_cuda::verify::compare;
use hmoe_cuda::verify_dense::vals;
use std::path::Path;

#[path = "emu/build.rs"]
mod emu_build;
use emu_build::compile_harness;

/// Pass bound (relative L2 and largest element error relative to the largest reference
/// value) against the f64 references: the kernels do a few f32 operations per value (an
/// RMSNorm sum over at most a few thousand squares, one rotation with the reference's own
/// f32 angle), ~1e-7 here; a wrong RoPE partner, position, head or weight is O(1). The
/// same bound as `hmoe-cuda-check`'s device check of these kernels.
const FUSED_TOL: f64 = 1e-5;

fn run(exe: &Path, dir: &Path, words: &[u32]) -> Vec<f32> {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    emu_build::run_harness(exe, dir, "fused", &bytes)
}

fn bits(v: &[f32]) -> impl Iterator<Item = u32> + '_ {
    v.iter().map(|f| f.to_bits())
}

fn check(what: &str, got: &[f32], want: &[f32]) {
    let c = compare(got, want);
    println!("{what}: rel_l2 {:.2e} max_rel {:.2e}", c.rel_l2, c.max_rel);
    assert!(
        c.pass && c.rel_l2 <= FUSED_TOL && c.max_rel <= FUSED_TOL,
        "{what}: {c:?} (tolerance {FUSED_TOL:.0e})"
    );
}

#[test]
fn qk_norm_rope_kv_matches_norm_rope_and_the_cache_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = compile_harness(dir.path(), "fused_harness");
    let eps = 1e-6f32;
    // Every head size the shapes allow: the RoPE partner is a shuffle 4, 8 or 16 lanes
    // away, or (256) the lane's other group. Tokens of one sequence at scattered
    // positions (a chunk after cached history, and the cache's last row); at head 128
    // (Qwen3) the first position and one of 40k (angles of ~4e4 radians, where an f32
    // angle or an f32 cos/sin would drift from the CPU path's).
    for hd in [32usize, 64, 128, 256] {
        let (n, nh, nkv) = (3usize, 4usize, 2usize);
        let (pos, cap) = match hd {
            128 => ([0u32, 4095, 40_000], 40_001usize),
            _ => ([5u32, 17, 49], 50usize),
        };
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
        assert_eq!(out.len(), q.len() + k.len() + 2 * cap * kvw, "output size");
        // Against the f64 norm and the CPU path's RoPE.
        let want_q = dense_ref::rope(&dense_ref::rms_norm(&q, &qnw, eps), &pos, &inv, nh, hd);
        let want_k = dense_ref::rope(&dense_ref::rms_norm(&k, &knw, eps), &pos, &inv, nkv, hd);
        let (got_q, rest) = out.split_at(q.len());
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
fn add_rms_norm_matches_the_add_and_the_norm() {
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
        assert_eq!(out.len(), 2 * rows * cols, "output size");
        // The residual is one f32 add per element: exact.
        let sum: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
        assert_eq!(&out[..sum.len()], &sum[..], "residual");
        check(
            &format!("add_rms_norm {rows}x{cols}"),
            &out[sum.len()..],
            &dense_ref::rms_norm(&sum, &g, eps),
        );
    }
}
