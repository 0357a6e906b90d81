//! The int8 tensor-core GEMM kernels (src/gemm_mma.cu) in the host emulator, whose
//! `mma_s8` is emu.h's warp collective over the PTX fragment layout (so a wrong fragment
//! index fails here): against the f32 tiled kernels (src/gemm.cu) on the same rounded
//! inputs, and against the f64 reference, for Q8_0, Q4_K and Q6_K, with ragged shapes: a full
//! 128-row tile plus a partial one, token counts of a tile plus a few, fewer than one
//! n-tile, one past a warp's 32 tokens; Q8_0 rows ending in a partial 256-value step (a
//! partial first half, an empty second half, a partial second half); expert passes whose
//! items serve different token counts, Q4_K_M's pass (Q6_K down), and a pass whose Q5_K
//! gate/up has no mma kernel (the f32 tiled fallback beside an mma down).
//! The harness (tests/emu/mma_harness.cpp) is built with `GEMM_MIN_TOKENS=1`: every item
//! is tiled, whatever its size.

use hmoe_cuda::dense_ref;
use hmoe_cuda::verify::{compare, TestBatch};
use hmoe_cuda::verify_dense::vals;
use hmoe_cuda::{ExpertLayout, KernelType};
use hmoe_quant::quantize;
use std::path::{Path, PathBuf};

#[path = "emu/build.rs"]
mod emu_build;
use emu_build::{compile_harness_with, run_harness};

/// mma against f32 tiled (or the f64 reference) on the same rounded inputs: the mma sums
/// each 32-value block exactly in integers and the f32 kernel rounds each product, both
/// then add blocks in f32 in another order: a few ulps times sqrt(blocks) of the row's
/// magnitude (the f32 tiled kernel is within 1e-5 of the row kernels, tests/emu_gemm.rs).
/// A wrong fragment index, scale or token is O(1); a lost 32-value block of a 512-value
/// row O(0.25); an activation re-quantised off its act_round grid ~1e-3.
const ORDER_ONLY_REL_L2: f64 = 1e-5;
/// The same bound on the largest element error relative to the largest magnitude.
const ORDER_ONLY_MAX_REL: f64 = 1e-5;
/// The whole mma expert pass (its own SwiGLU products rounded before down) against the
/// f64 reference: a product within f32 rounding of an 8-bit rounding boundary may land one
/// step from the reference's, as for every GPU pass (hmoe_cuda::verify's tolerances).
use hmoe_cuda::verify::{KERNEL_MAX_REL_TOL, KERNEL_REL_L2_TOL};

fn harness(dir: &Path) -> PathBuf {
    compile_harness_with(dir, "mma_harness", &["GEMM_MIN_TOKENS=1"])
}

fn code(t: KernelType) -> u32 {
    KernelType::ALL.iter().position(|&k| k == t).unwrap() as u32
}

fn push32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn pushf(v: &mut Vec<u8>, xs: &[f32]) {
    xs.iter()
        .for_each(|x| v.extend_from_slice(&x.to_le_bytes()));
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    let c = compare(got, want);
    println!("{what}: rel_l2 {:.1e} max_rel {:.1e}", c.rel_l2, c.max_rel);
    assert!(
        got.iter().all(|v| v.is_finite()) && got.len() == want.len(),
        "{what}: lengths {} / {} or a non-finite value",
        got.len(),
        want.len()
    );
    assert!(
        c.rel_l2 <= ORDER_ONLY_REL_L2 && c.max_rel <= ORDER_ONLY_MAX_REL,
        "{what}: {c:?}"
    );
}

/// Linear `rows × cols` of type `t` on `n` tokens: mma against f32 tiled and the reference.
fn check_linear(exe: &Path, dir: &Path, t: KernelType, rows: usize, cols: usize, n: usize) {
    let wf: Vec<f32> = vals(rows * cols, 11 + rows as u64)
        .iter()
        .map(|v| v * 0.05)
        .collect();
    let mut wq = vec![0u8; t.row_bytes(cols).unwrap() * rows];
    quantize(t.ggml(), &wf, &mut wq).unwrap();
    let x = vals(n * cols, 12 + n as u64);
    let mut input = Vec::new();
    for v in [
        0,
        code(t),
        rows as u32,
        cols as u32,
        n as u32,
        wq.len() as u32,
    ] {
        push32(&mut input, v);
    }
    input.extend_from_slice(&wq);
    pushf(&mut input, &x);
    let out = run_harness(exe, dir, "mma_lin", &input);
    assert_eq!(out.len(), n * cols + 2 * n * rows, "harness output size");
    let (xr, y) = out.split_at(n * cols);
    let (tiled, mma) = y.split_at(n * rows);
    let what = format!("linear {} {rows}x{cols} n={n}", t.suffix());
    assert_close(&format!("{what} mma vs f32 tiled"), mma, tiled);
    let want = dense_ref::linear(t, &wq, rows, cols, xr).unwrap();
    assert_close(&format!("{what} mma vs reference"), mma, &want);
}

#[test]
fn mma_linear_matches_tiled_and_reference() {
    let dir = tempfile::tempdir().unwrap();
    let exe = harness(dir.path());
    // 200 rows: a full tile and 72 rows of a second. 70 tokens: a tile and 6 (one n-tile
    // of the second chunk), 33: one token past the first token warp, 5: under one n-tile.
    for n in [70, 33, 5] {
        check_linear(&exe, dir.path(), KernelType::Q4K, 200, 512, n);
    }
    for n in [70, 5] {
        check_linear(&exe, dir.path(), KernelType::Q6K, 200, 512, n);
    }
    // Q8_0: 352 = a step and 3 blocks (the second step's first half partial, its second
    // half empty), 416 = a step, a half and a block (the second half partial).
    for cols in [352, 416] {
        check_linear(&exe, dir.path(), KernelType::Q8_0, 200, cols, 70);
    }
    check_linear(&exe, dir.path(), KernelType::Q8_0, 130, 256, 5);
    // A q projection's 2048 columns: 8 steps accumulated.
    check_linear(&exe, dir.path(), KernelType::Q4K, 130, 2048, 40);
}

/// A batch of 80 token rows whose items serve `sizes` tokens (at most 80 each), as
/// tests/emu_gemm.rs's ragged batches.
fn ragged_batch(layout: ExpertLayout, sizes: &[usize], seed: u64) -> TestBatch {
    let n_tokens = 80;
    let mut b = TestBatch::random(layout, sizes.len(), n_tokens, 1, seed).unwrap();
    let mut s = seed;
    for (i, &n) in sizes.iter().enumerate() {
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

/// The expert pass of `b` through the harness (op 1: tests/emu/harness.cpp's input).
/// Returns act tiled, act mma, y tiled, y mma, out mma.
fn run_experts(exe: &Path, dir: &Path, b: &TestBatch) -> [Vec<f32>; 5] {
    let l = b.layout;
    let mut packed = Vec::new();
    let bl = b.pack(|i| b.offsets(i)[0], &mut packed).unwrap();
    let mut input = Vec::new();
    push32(&mut input, 1);
    for v in [
        code(l.gate_up),
        code(l.down),
        l.hidden as u32,
        l.ffn as u32,
        b.n_tokens as u32,
        b.weights.len() as u32,
        packed.len() as u32,
    ] {
        push32(&mut input, v);
    }
    input.extend_from_slice(&b.weights);
    input.extend_from_slice(&packed);
    for v in [
        bl.items,
        bl.rows,
        bl.weights,
        bl.tok_start,
        bl.tok_pairs,
        bl.n_items,
        bl.n_pairs,
    ] {
        push32(&mut input, v as u32);
    }
    pushf(&mut input, &b.x);
    let out = run_harness(exe, dir, "mma_experts", &input);
    let (na, ny, no) = (
        bl.n_pairs * l.ffn,
        bl.n_pairs * l.hidden,
        b.n_tokens * l.hidden,
    );
    assert_eq!(out.len(), 2 * na + 2 * ny + no, "harness output size");
    let mut parts = Vec::new();
    let mut rest = &out[..];
    for len in [na, na, ny, ny, no] {
        let (a, r) = rest.split_at(len);
        parts.push(a.to_vec());
        rest = r;
    }
    parts.try_into().unwrap()
}

fn check_experts(exe: &Path, dir: &Path, layout: ExpertLayout, sizes: &[usize], seed: u64) {
    let b = ragged_batch(layout, sizes, seed);
    let [at, am, yt, ym, out] = run_experts(exe, dir, &b);
    let what = format!("experts {:?}/{:?}", layout.gate_up, layout.down);
    assert_close(&format!("{what} gate_up mma vs f32 tiled"), &am, &at);
    assert_close(&format!("{what} down mma vs f32 tiled"), &ym, &yt);
    let c = compare(&out, &b.reference().unwrap());
    println!(
        "{what} mma pass vs reference: rel_l2 {:.1e} max_rel {:.1e}",
        c.rel_l2, c.max_rel
    );
    assert!(
        c.pass && c.rel_l2 <= KERNEL_REL_L2_TOL && c.max_rel <= KERNEL_MAX_REL_TOL,
        "{what}: {c:?}"
    );
}

/// Item sizes of one pass: 70 (a tile and 6), 33 (one past a token warp), 5, 64 (a tile).
const RAGGED: [usize; 4] = [70, 33, 5, 64];

#[test]
fn mma_experts_match_tiled_and_reference() {
    let dir = tempfile::tempdir().unwrap();
    let exe = harness(dir.path());
    // hidden 512 (2 steps of gate_up), FFN 256 (4 gate_up row tiles of 64 outputs, one
    // step of down; 2 down row tiles of 128).
    for (i, (gu, dn)) in [
        (KernelType::Q8_0, KernelType::Q8_0),
        (KernelType::Q4K, KernelType::Q4K),
        (KernelType::Q4K, KernelType::Q6K),
        (KernelType::Q6K, KernelType::Q4K),
        (KernelType::Q5K, KernelType::Q8_0),
    ]
    .into_iter()
    .enumerate()
    {
        let layout = ExpertLayout::new(gu.ggml(), gu.ggml(), dn.ggml(), 512, 256).unwrap();
        check_experts(&exe, dir.path(), layout, &RAGGED, 70 + i as u64);
    }
}
