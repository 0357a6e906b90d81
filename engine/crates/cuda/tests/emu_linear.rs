//! The dense `linear_*` kernels (src/dense.cu, row walk in kernels.cu's `rows_dot`) in the
//! host emulator against the f64 reference: every weight type, row counts that leave a
//! block of warps partly empty, rows that end in a partial 256-element step (Q8_0 and
//! float types), rows long enough for the walk's multi-step groups, and 1 ..= 16 tokens
//! (one and two token tiles).

use hmoe_cuda::dense_ref;
use hmoe_cuda::verify::compare;
use hmoe_cuda::verify_dense::vals;
use hmoe_cuda::KernelType;
use hmoe_quant::quantize;
use std::path::Path;

#[path = "emu/build.rs"]
mod emu_build;
use emu_build::{compile_harness, compile_harness_with};
#[path = "emu/linear_io.rs"]
mod linear_io;
use linear_io::run_linear;

/// Runs op 0 (linear) of tests/emu/dense_harness.cpp and checks it against the reference.
fn check_linear(exe: &Path, dir: &Path, t: KernelType, rows: usize, cols: usize, n: usize) {
    let wf: Vec<f32> = vals(rows * cols, 3 + rows as u64)
        .iter()
        .map(|v| v * 0.05)
        .collect();
    let mut wq = vec![0u8; t.row_bytes(cols).unwrap() * rows];
    quantize(t.ggml(), &wf, &mut wq).unwrap();
    let x = vals(n * cols, 4 + n as u64);
    let want = dense_ref::linear(t, &wq, rows, cols, &x).unwrap();
    let got = run_linear(exe, dir, t, &wq, (rows, cols), &x);
    let c = compare(&got, &want);
    println!(
        "linear {} {rows}x{cols} tokens {n}: rel_l2 {:.2e} max_rel {:.2e}",
        t.suffix(),
        c.rel_l2,
        c.max_rel
    );
    assert!(c.pass, "linear {} {rows}x{cols} n={n}: {c:?}", t.suffix());
}

#[test]
fn linear_matches_the_reference_for_every_type_in_the_emulator() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "dense_harness");
    for t in KernelType::ALL {
        // k-quants: whole 256-element steps; Q8_0: 11 blocks (a step of 3 blocks at the
        // end); float types: 200 columns (a step of 200 elements, half a run group).
        let cols = match t.block_elems() {
            256 => 512,
            32 => 352,
            _ => 200,
        };
        for (rows, n) in [(13, 1), (37, 5), (8, 9)] {
            check_linear(&exe, dir.path(), t, rows, cols, n);
        }
        // Long rows: the walk's groups of several steps, then the single steps left
        // (5 steps for k-quants; 41 Q8_0 blocks and 1096 floats end in a partial step).
        let long = match t.block_elems() {
            256 => 1280,
            32 => 1312,
            _ => 1096,
        };
        for n in [1, 3] {
            check_linear(&exe, dir.path(), t, 5, long, n);
        }
    }
}

#[test]
fn linear_token_counts_1_to_16_in_the_emulator() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "dense_harness");
    for n in 1..=16 {
        check_linear(&exe, dir.path(), KernelType::Q4K, 11, 256, n);
    }
    for n in [2, 8, 16] {
        check_linear(&exe, dir.path(), KernelType::Q8_0, 19, 96, n);
        check_linear(&exe, dir.path(), KernelType::Q6K, 5, 768, n);
    }
}

/// The one-token path through shared memory (variant ASYNC=1): every type, rows that start
/// at every address parity (Q6_K, Q8_0 rows of odd byte counts), partial last steps, and
/// rows of 1 to 6 steps (fewer and more steps than the ring has stages).
#[test]
fn linear_async_variant_in_the_emulator() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness_with(dir.path(), "dense_harness", &["ASYNC=1"]);
    for t in KernelType::ALL {
        let cols: &[usize] = match t.block_elems() {
            256 => &[256, 1536],
            32 => &[352, 1312],
            _ => &[200, 1096],
        };
        for &c in cols {
            check_linear(&exe, dir.path(), t, 7, c, 1);
        }
        check_linear(&exe, dir.path(), t, 7, cols[1], 3);
    }
}

/// `U_LIN=8` (the decode row walk with a whole 2048-column row in flight, which
/// HMOE_CUDA_DEFINES can select at run time): rows of 1, 3, 8, 9 and 17 steps cover its
/// groups and every tail size.
#[test]
fn linear_u_lin_8_variant_in_the_emulator() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness_with(dir.path(), "dense_harness", &["U_LIN=8"]);
    for t in [
        KernelType::Q4K,
        KernelType::Q6K,
        KernelType::Q8_0,
        KernelType::F32,
    ] {
        for steps in [1usize, 3, 8, 9, 17] {
            check_linear(&exe, dir.path(), t, 5, 256 * steps, 1);
        }
    }
}
