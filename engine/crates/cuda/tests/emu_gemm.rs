//! The tiled GEMM kernels (src/gemm.cu) in the host emulator: against the row kernels
//! (kernels.cu, dense.cu) and against the f64 reference, for every weight type, on shapes
//! with ragged edges: token counts that are not multiples of the tile (a full tile plus a
//! few, fewer than one tile), rows that are not multiples of the tile (linear), rows that
//! end in a partial 64-value chunk (Q8_0 and float types), and passes whose items serve
//! very different token counts (some tiled, some left to the row kernels).
//!
//! The harnesses pick the kernel per item (experts) or per call (linear) by
//! `GEMM_MIN_TOKENS`, as src/gpu.rs does; each test builds them three ways: the default
//! threshold (mixed), `GEMM_MIN_TOKENS=1` (every item tiled, one-token items included) and
//! `GEMM_MIN_TOKENS=1000000` (the row kernels only: the kernels before gemm.cu).

use hmoe_cuda::dense_ref;
use hmoe_cuda::verify::{compare, TestBatch, KERNEL_MAX_REL_TOL, KERNEL_REL_L2_TOL};
use hmoe_cuda::verify_dense::vals;
use hmoe_cuda::{ExpertLayout, KernelType};
use hmoe_quant::quantize;
use std::path::{Path, PathBuf};

#[path = "emu/build.rs"]
mod emu_build;
use emu_build::compile_harness_with;
#[path = "emu/expert_io.rs"]
mod expert_io;
use expert_io::run_experts;
#[path = "emu/linear_io.rs"]
mod linear_io;
use linear_io::run_linear;

/// Harness builds: the default threshold, every item tiled, no item tiled.
const BUILDS: [&[&str]; 3] = [&[], &["GEMM_MIN_TOKENS=1"], &["GEMM_MIN_TOKENS=1000000"]];

/// Tiled against row kernels on the same inputs, linear (no rounding step between the
/// kernels and the output): both sum the same f32 products in another order, an error of
/// a few ulps times sqrt(cols) of the row's magnitude (~1e-6 relative at 1280 columns). A
/// wrong weight, token or row is O(1), a lost k-chunk O(sqrt(chunk / cols)) >= 0.2.
const ORDER_ONLY_REL_L2: f64 = 1e-5;
/// The same bound on the largest element error relative to the largest magnitude.
const ORDER_ONLY_MAX_REL: f64 = 1e-5;

fn builds(dir: &Path, harness: &str) -> Vec<PathBuf> {
    BUILDS
        .iter()
        .map(|d| compile_harness_with(dir, harness, d))
        .collect()
}

fn rel(got: &[f32], want: &[f32]) -> (f64, f64) {
    let c = compare(got, want);
    (c.rel_l2, c.max_rel)
}

/// Linear through every build of `exes` (the last one rows-only): each against the
/// reference, the others against the last.
fn check_linear(exes: &[PathBuf], dir: &Path, t: KernelType, rows: usize, cols: usize, n: usize) {
    let wf: Vec<f32> = vals(rows * cols, 5 + rows as u64)
        .iter()
        .map(|v| v * 0.05)
        .collect();
    let mut wq = vec![0u8; t.row_bytes(cols).unwrap() * rows];
    quantize(t.ggml(), &wf, &mut wq).unwrap();
    let x = vals(n * cols, 6 + n as u64);
    let want = dense_ref::linear(t, &wq, rows, cols, &x).unwrap();
    let got: Vec<Vec<f32>> = exes
        .iter()
        .map(|e| run_linear(e, dir, t, &wq, (rows, cols), &x))
        .collect();
    for (g, e) in got.iter().zip(exes) {
        let c = compare(g, &want);
        assert!(
            c.pass,
            "linear {} {rows}x{cols} n={n} {e:?}: {c:?}",
            t.suffix()
        );
    }
    let (tiled, rows_only) = got.split_at(got.len() - 1);
    for g in tiled {
        let (l2, mx) = rel(g, &rows_only[0]);
        println!(
            "linear {} {rows}x{cols} n={n}: tiled vs rows rel_l2 {l2:.1e} max_rel {mx:.1e}",
            t.suffix()
        );
        assert!(
            l2 <= ORDER_ONLY_REL_L2 && mx <= ORDER_ONLY_MAX_REL,
            "linear {} {rows}x{cols} n={n}: tiled vs rows {l2:.2e} / {mx:.2e}",
            t.suffix()
        );
    }
}

/// Every type; 200 rows (a full 128-row tile and 72 rows of a second); 16 tokens (the
/// threshold, a quarter tile), 70 (a tile and 6), 3 (below: row kernels unless tiled by
/// GEMM_MIN_TOKENS=1); columns with a partial last chunk where the type allows one.
#[test]
fn tiled_linear_matches_rows_and_reference_for_every_type() {
    let dir = tempfile::tempdir().unwrap();
    let exes = builds(dir.path(), "dense_harness");
    for t in KernelType::ALL {
        let cols = match t.block_elems() {
            256 => 512,
            32 => 352, // 5 whole chunks and half of one
            _ => 200,  // 3 whole chunks and 8 values
        };
        for n in [16, 70, 3] {
            check_linear(&exes, dir.path(), t, 200, cols, n);
        }
    }
}

/// Larger shapes: a q projection's columns (2048, 32 k-chunks, the prefetch across many
/// chunks), rows a multiple of the tile, 130 tokens (two tiles and 2).
#[test]
fn tiled_linear_long_rows() {
    let dir = tempfile::tempdir().unwrap();
    let exes = builds(dir.path(), "dense_harness");
    for t in [KernelType::Q4K, KernelType::Q6K, KernelType::Q8_0] {
        check_linear(&exes, dir.path(), t, 256, 2048, 130);
    }
}

/// The knobs of the device sweep (32-token tiles, no register cap, each prefetch mode),
/// every call tiled (GEMM_MIN_TOKENS=1), against the reference and the row kernels.
#[test]
fn tiled_linear_knobs() {
    let dir = tempfile::tempdir().unwrap();
    let rows_only = compile_harness_with(dir.path(), "dense_harness", BUILDS[2]);
    for defs in [
        &["GEMM_TN=2"][..],
        &["GEMM_TN=2", "GEMM_MIN_BLOCKS=0"],
        &["GEMM_PREFETCH=1"],
        &["GEMM_PREFETCH=2"],
        &["GEMM_PREFETCH=3"],
        &["GEMM_TN=2", "GEMM_PREFETCH=3"],
    ] {
        let all: Vec<&str> = defs.iter().chain(BUILDS[1]).copied().collect();
        let exes = [
            compile_harness_with(dir.path(), "dense_harness", &all),
            rows_only.clone(),
        ];
        for t in [
            KernelType::Q4K,
            KernelType::Q6K,
            KernelType::Q8_0,
            KernelType::F16,
        ] {
            let cols = if t.block_elems() == 256 { 512 } else { 352 };
            check_linear(&exes, dir.path(), t, 150, cols, 45);
        }
    }
}

/// Item sizes of one pass: 70 (a tile and 6), 16 (the threshold), 15 (just below), 3,
/// 64 (exactly a tile), 1.
const RAGGED: [usize; 6] = [70, 16, 15, 3, 64, 1];

/// A batch of 80 token rows whose items serve `sizes` tokens (at most 80 each).
fn ragged_batch(layout: ExpertLayout, sizes: &[usize], seed: u64) -> TestBatch {
    let n_tokens = 80;
    let mut b = TestBatch::random(layout, sizes.len(), n_tokens, 1, seed).unwrap();
    let mut s = seed;
    for (i, &n) in sizes.iter().enumerate() {
        // n distinct tokens, spread over the input: (start + 7 k) mod 80, 7 coprime to 80.
        let start = (i * 13) % n_tokens;
        b.rows[i] = (0..n)
            .map(|k| ((start + 7 * k) % n_tokens) as u32)
            .collect();
        b.router[i] = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                0.05 + (s >> 40) as f32 / (1u64 << 24) as f32 * 0.2
            })
            .collect();
    }
    b
}

/// The expert pass through all three builds: each against the reference (the same
/// tolerance as the row kernels: a SwiGLU product within f32 rounding of a Q8_K/Q8_0
/// rounding boundary may land one step from the reference's, in either build), and
/// mixed and all-tiled against the row kernels under that tolerance too.
fn check_experts(exes: &[PathBuf], dir: &Path, layout: ExpertLayout, sizes: &[usize], seed: u64) {
    let b = ragged_batch(layout, sizes, seed);
    let want = b.reference().unwrap();
    let got: Vec<Vec<f32>> = exes.iter().map(|e| run_experts(e, dir, &b)).collect();
    for (g, d) in got.iter().zip(BUILDS) {
        let c = compare(g, &want);
        println!(
            "experts {:?}/{:?} {d:?}: rel_l2 {:.1e} max_rel {:.1e}",
            layout.gate_up, layout.down, c.rel_l2, c.max_rel
        );
        assert!(
            c.pass,
            "{:?}/{:?} {d:?}: {c:?}",
            layout.gate_up, layout.down
        );
    }
    for g in &got[..2] {
        let (l2, mx) = rel(g, &got[2]);
        assert!(
            l2 <= KERNEL_REL_L2_TOL && mx <= KERNEL_MAX_REL_TOL,
            "{:?}/{:?}: tiled vs rows {l2:.2e} / {mx:.2e}",
            layout.gate_up,
            layout.down
        );
    }
}

/// Every type as gate/up and as down (a rotation of the seven), hidden 512 (8 k-chunks of
/// gate/up), FFN 256 (4 k-chunks of down; 4 gate/up row tiles of 64 outputs).
#[test]
fn tiled_experts_match_rows_and_reference_for_every_type() {
    let dir = tempfile::tempdir().unwrap();
    let exes = builds(dir.path(), "harness");
    let all = KernelType::ALL;
    for (i, gu) in all.iter().enumerate() {
        let dn = all[(i + 3) % all.len()];
        let layout = ExpertLayout::new(gu.ggml(), gu.ggml(), dn.ggml(), 512, 256).unwrap();
        check_experts(&exes, dir.path(), layout, &RAGGED, 50 + i as u64);
    }
}

/// The Qwen3-30B-A3B expert shape (hidden 2048, FFN 768: 12 gate/up row tiles, 16 down
/// row tiles, 32 and 12 k-chunks), Q4_K_M.
#[test]
fn tiled_experts_model_shape() {
    let dir = tempfile::tempdir().unwrap();
    let exes = builds(dir.path(), "harness");
    let layout = ExpertLayout::new(
        KernelType::Q4K.ggml(),
        KernelType::Q4K.ggml(),
        KernelType::Q6K.ggml(),
        2048,
        768,
    )
    .unwrap();
    // Fewer items than RAGGED: the emulator's row kernels at hidden 2048 are slow.
    check_experts(&exes, dir.path(), layout, &[70, 15, 1], 7);
}
