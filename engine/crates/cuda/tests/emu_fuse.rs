//! The fused decode pass (src/fused.cu: gate_up with the products' rounding, down with
//! combine) in the host emulator against the unfused pass (act_round, gate_up, act_round,
//! down, combine) on the same rounded x — bit for bit, products and output — and against
//! the f64 CPU reference, for each activation format the down weights ask for (Q8_K after
//! Q4_K_M, Q8_0, bf16, none for f32); one token × 8 experts, several decode sequences
//! sharing some experts, the items launched in one or two gate_up launches (hits, then
//! fetches), and a second fused pass on the counters the first left.

use hmoe_cuda::verify::{compare, TestBatch};
use hmoe_cuda::ExpertLayout;
use hmoe_gguf::GgmlDType;
use std::path::Path;

#[path = "emu/build.rs"]
mod emu_build;
use emu_build::{compile_harness, compile_harness_with, run_harness};
#[path = "emu/expert_io.rs"]
mod expert_io;
use expert_io::{case, fused_pass_input, PassCase as Case};

/// Index of the first value whose bits differ (NaN included), if any.
fn first_difference(a: &[f32], b: &[f32]) -> Option<usize> {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .position(|(x, y)| x.to_bits() != y.to_bits())
}

fn run(exe: &Path, dir: &Path, c: &Case) {
    let l = c.layout;
    let seed = 7 + (c.n_items * 31 + c.n_tokens) as u64;
    let b = TestBatch::random(l, c.n_items, c.n_tokens, c.top_k, seed).unwrap();
    let (input, bl) = fused_pass_input(&b, c.split);
    assert!(
        bl.max_item_rows <= 8,
        "a decode case: every item serves at most TT tokens"
    );
    let t0 = std::time::Instant::now();
    let mut v = run_harness(exe, dir, "fuse", &input);
    let (n_out, n_act) = (c.n_tokens * l.hidden, bl.n_pairs * l.ffn);
    assert_eq!(v.len(), 3 * n_out + 2 * n_act + 1, "harness output size");
    let nonzero = v.pop().unwrap().to_bits();
    let (unfused, rest) = v.split_at(n_out);
    let (fused, rest) = rest.split_at(n_out);
    let (again, rest) = rest.split_at(n_out);
    let (act_unfused, act_fused) = rest.split_at(n_act);
    let what = format!(
        "{:?}/{:?} {} items x {} tokens top-{} split {}",
        l.gate_up, l.down, c.n_items, c.n_tokens, c.top_k, c.split
    );
    assert_eq!(
        first_difference(act_fused, act_unfused),
        None,
        "{what}: rounded products differ"
    );
    assert_eq!(
        first_difference(fused, unfused),
        None,
        "{what}: fused output differs from unfused"
    );
    assert_eq!(
        first_difference(again, fused),
        None,
        "{what}: second fused pass differs"
    );
    assert_eq!(nonzero, 0, "{what}: counters not reset");
    let cmp = compare(fused, &b.reference().unwrap());
    println!(
        "{what}: bit-identical; rel_l2 {:.2e} max_rel {:.2e} ({:.1} s in the emulator)",
        cmp.rel_l2,
        cmp.max_rel,
        t0.elapsed().as_secs_f64()
    );
    assert!(cmp.pass, "{what}: {cmp:?}");
}

/// (gate/up, down) of the formats a model ships: Q4_K_M (products to Q8_K), Q8_0 (to
/// Q8_0), bf16 (to bf16), f32 (not rounded).
fn formats(ffn: usize) -> Vec<ExpertLayout> {
    [
        (GgmlDType::Q4K, GgmlDType::Q6K),
        (GgmlDType::Q8_0, GgmlDType::Q8_0),
        (GgmlDType::BF16, GgmlDType::BF16),
        (GgmlDType::F32, GgmlDType::F32),
    ]
    .into_iter()
    .map(|(g, d)| ExpertLayout::new(g, g, d, HIDDEN, ffn).unwrap())
    .collect()
}

/// Hidden 256: one 256-element step per gate/up row (the emulator runs every CUDA thread
/// as a host thread; small shapes keep it to seconds per case).
const HIDDEN: usize = 256;
/// FFN 256: one Q8_K block of products (32 gate_up blocks arrive at it), 8 Q8_0 blocks
/// (4 arrive at each). FFN_2: two Q8_K blocks, so a block's counter is not the item's.
const FFN: usize = 256;
const FFN_2: usize = 512;

#[test]
fn fused_decode_pass_is_bit_identical_to_the_unfused_pass() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "fuse_harness");
    for layout in formats(FFN) {
        // A decode token: 8 experts, one launch.
        run(&exe, dir.path(), &case(layout, 8, 1, 8, 0));
        // 3 sequences, top-4 of 6 experts (shared and distinct ones), hits and fetches in
        // two gate_up launches on the same counters.
        run(&exe, dir.path(), &case(layout, 6, 3, 4, 2));
    }
}

/// Two Q8_K blocks of products with 8 tokens on the same 8 experts (every item a full
/// tile of TT); 5 tokens over 16 experts with top-10 (more pairs per token than warps
/// per block: two rounds of down_combine's in-order sum).
#[test]
fn fused_decode_pass_with_full_tiles_and_more_pairs_than_warps() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "fuse_harness");
    run(&exe, dir.path(), &case(formats(FFN_2)[0], 8, 8, 8, 3));
    run(&exe, dir.path(), &case(formats(FFN)[1], 16, 5, 10, 8));
}

/// The tuning knobs change which gate_up blocks share a block of products (RPW_GU=2: 16
/// rows a block; 2 blocks arrive at each Q8_0 block) and the row walk (ASYNC=1: down
/// rows through shared memory): still bit-identical.
#[test]
fn fused_decode_pass_variants_stay_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let f = formats(FFN);
    for defines in [&["RPW_GU=2", "RPW_DN=2"][..], &["ASYNC=1"]] {
        println!("variant {defines:?}");
        let exe = compile_harness_with(dir.path(), "fuse_harness", defines);
        for layout in [f[0], f[1]] {
            run(&exe, dir.path(), &case(layout, 8, 2, 8, 5));
        }
    }
}
