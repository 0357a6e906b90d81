//! Runs the CUDA kernels (src/kernels.cu) on the host through the thread-per-CUDA-thread
//! emulator in tests/emu/ and compares them with the CPU reference, for every weight type
//! (as gate/up and as down) and 1 ..= 16 tokens per expert (the token tiling). Needs g++
//! with C++20 (present wherever Rust links with the system toolchain).

use hmoe_cuda::verify::{compare, TestBatch};
use hmoe_cuda::{ExpertLayout, KernelType};
use hmoe_gguf::GgmlDType;
use std::path::Path;

#[path = "emu/build.rs"]
mod emu_build;
use emu_build::{compile_harness, compile_harness_with};
#[path = "emu/expert_io.rs"]
mod expert_io;
use expert_io::run_experts;

fn run_case(
    exe: &Path,
    dir: &Path,
    layout: ExpertLayout,
    n_items: usize,
    n_tokens: usize,
    top_k: usize,
) {
    let b = TestBatch::random(layout, n_items, n_tokens, top_k, 42 + n_tokens as u64).unwrap();
    let got = run_experts(exe, dir, &b);
    let want = b.reference().unwrap();
    let c = compare(&got, &want);
    println!(
        "{:?}/{:?} items {n_items} tokens {n_tokens}: rel_l2 {:.2e} max_rel {:.2e}",
        layout.gate_up, layout.down, c.rel_l2, c.max_rel
    );
    assert!(c.pass, "{:?}/{:?}: {c:?}", layout.gate_up, layout.down);
}

/// Each type once as gate/up and once as down (a rotation of the seven), one token: every
/// decoder against the CPU reference.
#[test]
fn every_type_matches_the_cpu_reference_in_the_emulator() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "harness");
    // Small shapes keep the emulator (one host thread per CUDA thread) fast; 256 is the
    // smallest width a k-quant row can have; hidden 512 walks rows in two steps.
    let (hidden, ffn) = (512, 256);
    let all = KernelType::ALL;
    for (i, gu) in all.iter().enumerate() {
        let dn = all[(i + 3) % all.len()];
        let layout = ExpertLayout::new(gu.ggml(), gu.ggml(), dn.ggml(), hidden, ffn).unwrap();
        run_case(&exe, dir.path(), layout, 2, 1, 2);
    }
}

/// Token tiling: one expert serving 1 ..= 16 tokens, so the kernels see each count of
/// valid tokens in a tile and in a second tile; then items serving different counts.
#[test]
fn token_counts_1_to_16_match_the_cpu_reference_in_the_emulator() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "harness");
    let (hidden, ffn) = (256, 256);
    let q4km =
        ExpertLayout::new(GgmlDType::Q4K, GgmlDType::Q4K, GgmlDType::Q6K, hidden, ffn).unwrap();
    for n in 1..=16 {
        run_case(&exe, dir.path(), q4km, 1, n, 1);
    }
    for (gu, dn) in [
        (GgmlDType::Q8_0, GgmlDType::Q8_0),
        (GgmlDType::Q5K, GgmlDType::BF16),
        (GgmlDType::F16, GgmlDType::F32),
    ] {
        let layout = ExpertLayout::new(gu, gu, dn, hidden, ffn).unwrap();
        run_case(&exe, dir.path(), layout, 1, 9, 1);
    }
    // 3 experts, top-2 of 11 tokens: items with different token counts in one launch.
    let q6 =
        ExpertLayout::new(GgmlDType::Q6K, GgmlDType::Q6K, GgmlDType::Q8_0, hidden, ffn).unwrap();
    run_case(&exe, dir.path(), q6, 3, 11, 2);
}

/// The tuning knobs hmoe-cuda-check compiles variants with (several output rows per warp,
/// more or fewer steps in flight, the one-token path through shared memory) give the same
/// results: one-token and tile paths.
#[test]
fn kernel_variants_match_the_cpu_reference_in_the_emulator() {
    let dir = tempfile::tempdir().unwrap();
    let q4km = ExpertLayout::new(GgmlDType::Q4K, GgmlDType::Q4K, GgmlDType::Q6K, 512, 256).unwrap();
    let q8 = ExpertLayout::new(GgmlDType::Q8_0, GgmlDType::Q8_0, GgmlDType::F16, 512, 256).unwrap();
    for defines in [
        &["RPW_GU=2", "RPW_DN=4"][..],
        &["RPW_DN=2", "U_ONE=8"],
        &["U_TILE=1"],
        &["ASYNC=1"],
        &["ASYNC=1", "RPW_DN=2"],
    ] {
        println!("variant {defines:?}");
        let exe = compile_harness_with(dir.path(), "harness", defines);
        run_case(&exe, dir.path(), q4km, 1, 1, 1);
        run_case(&exe, dir.path(), q4km, 1, 9, 1);
        run_case(&exe, dir.path(), q8, 2, 3, 2);
    }
}

/// Top-10 routing: every token sums 10 pairs in `combine`, more than one round of its
/// unrolled loads (8), and the down kernel sees 10 items.
#[test]
fn tokens_with_more_pairs_than_one_combine_round_match_the_cpu_reference() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "harness");
    let (hidden, ffn) = (256, 256);
    let q4km =
        ExpertLayout::new(GgmlDType::Q4K, GgmlDType::Q4K, GgmlDType::Q6K, hidden, ffn).unwrap();
    run_case(&exe, dir.path(), q4km, 10, 2, 10);
}
