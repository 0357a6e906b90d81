//! The int8 (dp4a) decode pass (src/fused_q8.cu: gate_up_q8 quantising x itself and the
//! products for the down weights, down_combine_q8) in the host emulator, against the f64
//! CPU reference and against the f32 fused pass (src/fused.cu) on the same batch: Q4_K_M
//! (Q4_K gate/up, Q6_K down: x and products as Q8_K), Q8_0 (Q8_0 both), and the crossed
//! formats (Q5_K with Q8_0 down, Q8_0 with Q6_K down); one token × 8 experts, several
//! tokens sharing experts in two gate_up launches; x as given and x already rounded by
//! act_round (the backend before gpu.rs skips that launch), on the counters the earlier
//! passes left (which must end zero).

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

/// Bound on ‖int8 − f32 fused‖ / ‖f32 fused‖. The integer dots are exact and the scales
/// the same, so the passes differ by f32 summation order (~1e-7 relative: measured 2e-7
/// to 3.4e-7 in the emulator) and by any SwiGLU product that order puts on the other side
/// of an 8-bit rounding boundary: one step (1/127 of its block's largest value) moves a
/// token's output by up to a few 1e-4, as it does against the reference (whose bound,
/// `KERNEL_REL_L2_TOL`, allows for it). A wrong scale or sub-block gives ≥ 1e-2.
const VS_FUSED_REL_L2_TOL: f64 = 1e-3;
/// The same for the largest element error relative to the largest magnitude.
const VS_FUSED_MAX_REL_TOL: f64 = 1e-3;

/// Hidden 512: two 256-value steps per gate/up row, 2 Q8_K blocks / 16 Q8_0 blocks of x
/// (quantised by two warps / all eight). FFN 512: two Q8_K blocks of products (each
/// counted by 32 gate_up blocks), down rows of two steps. (The emulator runs every CUDA
/// thread as a host thread: these shapes keep a case to tens of seconds on 2 cores.)
const HIDDEN: usize = 512;
const FFN: usize = 512;

/// What the harness wrote.
struct Outputs {
    fused: Vec<f32>,
    q8: Vec<f32>,
    q8_rounded_x: Vec<f32>,
    act_fused: Vec<f32>,
    act_q8: Vec<f32>,
    nonzero_counters: u32,
}

fn run(exe: &Path, dir: &Path, c: &Case) -> (TestBatch, Outputs) {
    let l = c.layout;
    let seed = 11 + (c.n_items * 31 + c.n_tokens) as u64;
    let b = TestBatch::random(l, c.n_items, c.n_tokens, c.top_k, seed).unwrap();
    let (input, bl) = fused_pass_input(&b, c.split);
    let mut v = run_harness(exe, dir, "fused_q8", &input);
    let (n_out, n_act) = (c.n_tokens * l.hidden, bl.n_pairs * l.ffn);
    assert_eq!(v.len(), 3 * n_out + 2 * n_act + 1, "harness output size");
    let nonzero_counters = v.pop().unwrap().to_bits();
    let mut take = |n: usize| v.drain(..n).collect::<Vec<f32>>();
    let o = Outputs {
        fused: take(n_out),
        q8: take(n_out),
        q8_rounded_x: take(n_out),
        act_fused: take(n_act),
        act_q8: take(n_act),
        nonzero_counters,
    };
    (b, o)
}

/// Relative L2 and max errors of `got` against `want` within the vs-fused bounds.
fn near(got: &[f32], want: &[f32]) -> (bool, f64, f64) {
    let c = compare(got, want);
    let ok = c.rel_l2 <= VS_FUSED_REL_L2_TOL && c.max_rel <= VS_FUSED_MAX_REL_TOL;
    (ok && got.iter().all(|v| v.is_finite()), c.rel_l2, c.max_rel)
}

fn check(exe: &Path, dir: &Path, c: &Case) {
    let l = c.layout;
    let what = format!(
        "{:?}/{:?} {} items x {} tokens top-{} split {}",
        l.gate_up, l.down, c.n_items, c.n_tokens, c.top_k, c.split
    );
    let t0 = std::time::Instant::now();
    let (b, o) = run(exe, dir, c);
    let reference = b.reference().unwrap();
    let cmp = compare(&o.q8, &reference);
    assert!(cmp.pass, "{what}: int8 pass vs the CPU reference: {cmp:?}");
    let (ok, l2, mx) = near(&o.q8, &o.fused);
    assert!(
        ok,
        "{what}: int8 vs f32 fused output: rel_l2 {l2:.2e} max_rel {mx:.2e}"
    );
    let (ok_act, l2a, mxa) = near(&o.act_q8, &o.act_fused);
    assert!(
        ok_act,
        "{what}: int8 vs f32 fused rounded products: rel_l2 {l2a:.2e} max_rel {mxa:.2e}"
    );
    let (ok_x, l2x, mxx) = near(&o.q8_rounded_x, &o.q8);
    assert!(
        ok_x,
        "{what}: x rounded first vs not: rel_l2 {l2x:.2e} max_rel {mxx:.2e}"
    );
    assert_eq!(o.nonzero_counters, 0, "{what}: counters not reset");
    println!(
        "{what}: vs reference rel_l2 {:.2e} max_rel {:.2e}; vs fused {l2:.2e}/{mx:.2e}, products {l2a:.2e}/{mxa:.2e}; rounded x {l2x:.2e}/{mxx:.2e} ({:.1} s)",
        cmp.rel_l2,
        cmp.max_rel,
        t0.elapsed().as_secs_f64()
    );
}

fn layout(g: GgmlDType, d: GgmlDType) -> ExpertLayout {
    ExpertLayout::new(g, g, d, HIDDEN, FFN).unwrap()
}

#[test]
fn int8_pass_q4_k_m_matches_reference_and_fused_pass() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "fused_q8_harness");
    let l = layout(GgmlDType::Q4K, GgmlDType::Q6K);
    // A decode token: 8 experts in one launch.
    check(&exe, dir.path(), &case(l, 8, 1, 8, 0));
    // 3 sequences, top-4 of 6 experts: items of 1-3 tokens (gate_up_q8's token loop), hits
    // and fetches in two gate_up launches on the same counters.
    check(&exe, dir.path(), &case(l, 6, 3, 4, 2));
}

#[test]
fn int8_pass_q8_0_matches_reference_and_fused_pass() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "fused_q8_harness");
    let l = layout(GgmlDType::Q8_0, GgmlDType::Q8_0);
    check(&exe, dir.path(), &case(l, 8, 1, 8, 3));
    check(&exe, dir.path(), &case(l, 4, 2, 3, 1));
}

/// The other pairings the kernels cover: Q5_K gate/up (x as Q8_K) with Q8_0 down
/// (products as Q8_0), Q8_0 gate/up (x as Q8_0) with Q6_K down (products as Q8_K), and
/// Q6_K / Q4_K, the remaining two types in each role.
#[test]
fn int8_pass_crossed_formats_match_reference_and_fused_pass() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "fused_q8_harness");
    for (g, d) in [
        (GgmlDType::Q5K, GgmlDType::Q8_0),
        (GgmlDType::Q8_0, GgmlDType::Q6K),
        (GgmlDType::Q6K, GgmlDType::Q4K),
        (GgmlDType::Q4K, GgmlDType::Q5K),
    ] {
        check(&exe, dir.path(), &case(layout(g, d), 4, 1, 4, 0));
    }
}

/// Q8_WIDE=1 (the default: 16-byte Q4_K chunks for rows of a multiple of 1024 values; the
/// other tests' rows of 512 take the row walk) with 4 down rows per block: Q4_K_M at
/// hidden 2048 (two warp-steps of 4 super-blocks), FFN 256.
#[test]
fn int8_pass_wide_q4_k_variant_matches_reference_and_fused_pass() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness_with(
        dir.path(),
        "fused_q8_harness",
        &["Q8_WIDE=1", "Q8_DN_ROWS=4"],
    );
    let l = ExpertLayout::new(GgmlDType::Q4K, GgmlDType::Q4K, GgmlDType::Q6K, 2048, 256).unwrap();
    check(&exe, dir.path(), &case(l, 4, 1, 4, 0));
}

/// The knobs (fused_q8.cu): 2 down rows per block walked one step at a time and gate/up
/// one step at a time; more gate/up steps in flight than a row has (the tail group only).
#[test]
fn int8_pass_variants_match_reference_and_fused_pass() {
    let dir = tempfile::tempdir().unwrap();
    for defines in [
        &["Q8_DN_ROWS=2", "Q8_U_DN=2", "Q8_U_GU=1"][..],
        &["Q8_U_GU=4"],
    ] {
        println!("variant {defines:?}");
        let exe = compile_harness_with(dir.path(), "fused_q8_harness", defines);
        for (g, d) in [
            (GgmlDType::Q4K, GgmlDType::Q6K),
            (GgmlDType::Q8_0, GgmlDType::Q8_0),
        ] {
            check(&exe, dir.path(), &case(layout(g, d), 4, 1, 4, 0));
        }
    }
}
