//! `hmoe-cuda-check decode`: the int8 (dp4a) decode pass (fused_q8.cu) on the device: 8
//! experts × 1 token at Qwen3-30B-A3B shapes for the Q4_K_M and Q8_0 layouts, checked
//! against the CPU reference and against the f32 fused pass, kernel-only timings of both
//! (µs per pass, GB/s of expert weights), and one engine layer (`run_layer`, the decode
//! branch that substitutes the int8 kernels) against the reference.

use super::{items, Report, FFN, HIDDEN, TIMING_EXPERTS};
use anyhow::Result;
use hmoe_cuda::verify::{compare, TestBatch};
use hmoe_cuda::{ExpertLayout, GpuConfig, GpuExperts, GpuItem};
use hmoe_gguf::GgmlDType;
use serde_json::{json, Value};

/// The layouts of the two benchmark models.
const LAYOUTS: [(&str, GgmlDType, GgmlDType); 2] = [
    ("q4_k_m", GgmlDType::Q4K, GgmlDType::Q6K),
    ("q8_0", GgmlDType::Q8_0, GgmlDType::Q8_0),
];
/// Timed passes per measurement (a pass is tens of µs: 200 keep the event resolution
/// and launch jitter well under 1 %, and the section within seconds).
const REPS: usize = 200;
/// Bound on ‖int8 − f32 fused‖ / ‖f32 fused‖. The integer dots are exact and the scales
/// the same, so the passes differ by f32 summation order (~1e-7 relative: measured 2e-7
/// to 3.4e-7 in the emulator) and by any SwiGLU product that order puts on the other side
/// of an 8-bit rounding boundary: one step (1/127 of its block's largest value) moves a
/// token's output by up to a few 1e-4, as it does against the reference (whose bound,
/// `KERNEL_REL_L2_TOL`, allows for it). A wrong scale or sub-block gives ≥ 1e-2.
const VS_FUSED_REL_L2_TOL: f64 = 1e-3;
/// The same for the largest element error relative to the largest magnitude.
const VS_FUSED_MAX_REL_TOL: f64 = 1e-3;
/// Expert pool of the engine-layer check (its slots: the first call copies them).
const LAYER_EXPERTS: usize = 8;

/// Knobs of the int8 kernels (fused_q8.cu) the sweep compiles and times, most
/// informative first: the Q4_K row walk instead of 16-byte chunks, rows per down block,
/// the register cap, row-steps in flight (`Q8_U_GU` only where the row walk runs: Q8_0).
const VARIANTS: &[&[&str]] = &[
    &["Q8_WIDE=0"],
    &["Q8_DN_ROWS=2"],
    &["Q8_DN_ROWS=4"],
    &["MIN_BLOCKS=3"],
    &["Q8_WIDE=0", "Q8_U_GU=4", "MIN_BLOCKS=3"],
    &["Q8_U_GU=1"],
    &["Q8_U_DN=2"],
];
/// Seconds the sweep may take (it stops before the next variant after that; each variant
/// is an NVRTC compile of the expert kernels).
const SWEEP_BUDGET_S: f64 = 40.0;

/// The int8 pass's output and mean ms (alone, and after `act_round` of x), from the
/// backend's kernels (`variant` empty) or a variant module.
#[cfg(feature = "cuda")]
fn int8_pass(
    g: &mut GpuExperts,
    variant: &[&str],
    l: &ExpertLayout,
    its: &[GpuItem<'_>],
    x: &[f32],
) -> Result<(Vec<f32>, f32, f32)> {
    let t = g.time_int8_decode_pass(variant, l, its, x, 1, REPS)?;
    Ok((t.out, t.ms, t.with_act_round_ms))
}

#[cfg(not(feature = "cuda"))]
fn int8_pass(
    _g: &mut GpuExperts,
    _variant: &[&str],
    _l: &ExpertLayout,
    _its: &[GpuItem<'_>],
    _x: &[f32],
) -> Result<(Vec<f32>, f32, f32)> {
    anyhow::bail!("{}", hmoe_cuda::CudaError::NotBuilt)
}

/// GB/s of `bytes` read in `ms`.
fn gbs(bytes: usize, ms: f32) -> f64 {
    bytes as f64 / (ms as f64 * 1e-3) / 1e9
}

/// Runs the section on a fresh backend instance (a kernel that faulted leaves its
/// context unusable for anything after it).
pub fn decode_section(cfg: &GpuConfig, rep: &mut Report, summary: &mut Value) {
    match GpuExperts::new(cfg)
        .map_err(anyhow::Error::from)
        .and_then(|mut g| decode_checks(&mut g, rep))
    {
        Ok(v) => summary["int8_decode"] = v,
        Err(e) => rep.check(
            "int8 decode checks ran",
            false,
            json!({"error": format!("{e:#}")}),
        ),
    }
}

fn decode_checks(g: &mut GpuExperts, rep: &mut Report) -> Result<Value> {
    let mut rows = Vec::new();
    let mut table = Vec::new();
    for (k, (name, gt, dt)) in LAYOUTS.into_iter().enumerate() {
        let layout = ExpertLayout::new(gt, gt, dt, HIDDEN, FFN)?;
        let b = TestBatch::random(layout, TIMING_EXPERTS, 1, TIMING_EXPERTS, 91 + k as u64)?;
        let all: Vec<usize> = (0..TIMING_EXPERTS).collect();
        let its = items(&b, &all);
        let kt = g.time_expert_kernels(&[], &layout, &its, &b.x, 1, REPS)?;
        let (out, ms, ms_round) = int8_pass(g, &[], &layout, &its, &b.x)?;
        let want = b.reference()?;
        let c_ref = compare(&out, &want);
        let c_fused_ref = compare(&kt.fused_out, &want);
        rep.check(
            &format!("int8 decode pass vs reference: {name} {TIMING_EXPERTS} experts x 1 token"),
            c_ref.pass,
            json!({"rel_l2": c_ref.rel_l2, "max_rel": c_ref.max_rel,
                "f32_fused_rel_l2": c_fused_ref.rel_l2, "f32_fused_max_rel": c_fused_ref.max_rel}),
        );
        let c = compare(&out, &kt.fused_out);
        rep.check(
            &format!(
                "int8 decode pass vs f32 fused pass: {name} {TIMING_EXPERTS} experts x 1 token"
            ),
            kt.fused_out.len() == out.len()
                && c.rel_l2 <= VS_FUSED_REL_L2_TOL
                && c.max_rel <= VS_FUSED_MAX_REL_TOL,
            json!({"rel_l2": c.rel_l2, "max_rel": c.max_rel,
                "tol_rel_l2": VS_FUSED_REL_L2_TOL, "tol_max_rel": VS_FUSED_MAX_REL_TOL}),
        );
        let bytes = TIMING_EXPERTS * layout.expert_bytes();
        let fu = kt.fused_ms;
        table.push(format!(
            "  {name:>7} {:6.1} MB | f32 fused {:7.1} us {:6.0} GB/s | int8 {:7.1} us {:6.0} GB/s | int8 + act_round {:7.1} us {:6.0} GB/s | x{:.2} (x{:.2} with act_round) | unfused {:7.1} us",
            bytes as f64 / 1e6,
            fu * 1e3,
            gbs(bytes, fu),
            ms * 1e3,
            gbs(bytes, ms),
            ms_round * 1e3,
            gbs(bytes, ms_round),
            fu / ms,
            fu / ms_round,
            kt.pass_ms * 1e3,
        ));
        rows.push(
            json!({"layout": name, "experts": TIMING_EXPERTS, "tokens": 1,
            "weight_bytes": bytes, "f32_fused_us": fu * 1e3, "int8_us": ms * 1e3,
            "int8_with_act_round_us": ms_round * 1e3, "unfused_us": kt.pass_ms * 1e3,
            "int8_gb_per_s": gbs(bytes, ms), "f32_fused_gb_per_s": gbs(bytes, fu)}),
        );
        layer_check(g, rep, name, layout, 200 + k as u16)?;
    }
    println!(
        "int8 (dp4a) decode pass vs f32 fused (kernel-only, mean of {REPS} passes, {TIMING_EXPERTS} experts x 1 token, hidden {HIDDEN}, ffn {FFN}; f32 fused and int8 + act_round: 3 launches, int8: 2):"
    );
    for line in table {
        println!("{line}");
    }
    let sweep = sweep(g, rep)?;
    Ok(json!({"passes": rows, "variants": sweep}))
}

/// The int8 pass compiled with each of [`VARIANTS`] (within [`SWEEP_BUDGET_S`]): µs per
/// pass per layout, and a FAIL where a variant's output leaves the reference's bounds.
fn sweep(g: &mut GpuExperts, rep: &mut Report) -> Result<Value> {
    let started = std::time::Instant::now();
    let mut cases = Vec::new();
    for (k, (name, gt, dt)) in LAYOUTS.into_iter().enumerate() {
        let layout = ExpertLayout::new(gt, gt, dt, HIDDEN, FFN)?;
        let b = TestBatch::random(layout, TIMING_EXPERTS, 1, TIMING_EXPERTS, 91 + k as u64)?;
        let want = b.reference()?;
        cases.push((name, layout, b, want));
    }
    println!(
        "int8 decode pass variants (us per pass, 2 launches; x{TIMING_EXPERTS} experts x 1 token):"
    );
    let mut out = Vec::new();
    for v in std::iter::once(&[][..]).chain(VARIANTS.iter().copied()) {
        if started.elapsed().as_secs_f64() > SWEEP_BUDGET_S {
            println!("  (sweep budget of {SWEEP_BUDGET_S} s spent: later variants skipped)");
            break;
        }
        let label = if v.is_empty() {
            "default".to_string()
        } else {
            v.join(",")
        };
        let mut line = format!("  {label:>28}");
        let mut row = Vec::new();
        for (name, layout, b, want) in &cases {
            let all: Vec<usize> = (0..TIMING_EXPERTS).collect();
            match int8_pass(g, v, layout, &items(b, &all), &b.x) {
                Ok((got, ms, _)) => {
                    let c = compare(&got, want);
                    if !c.pass {
                        rep.check(
                            &format!("int8 variant {label} vs reference: {name}"),
                            false,
                            json!({"rel_l2": c.rel_l2, "max_rel": c.max_rel}),
                        );
                    }
                    line += &format!(" | {name} {:6.1} us", ms * 1e3);
                    row.push(json!({"layout": name, "us": ms * 1e3, "pass": c.pass}));
                }
                Err(e) => {
                    line += &format!(" | {name} skipped ({e})");
                    row.push(json!({"layout": name, "error": e.to_string()}));
                }
            }
        }
        println!("{line}");
        out.push(json!({"variant": label, "results": row}));
    }
    Ok(Value::Array(out))
}

/// One decode layer through the engine's path (`run_layer`: copy, fused branch, download)
/// against the reference, twice (copied, then resident).
fn layer_check(
    g: &mut GpuExperts,
    rep: &mut Report,
    name: &str,
    layout: ExpertLayout,
    layer: u16,
) -> Result<()> {
    let b = TestBatch::random(layout, LAYER_EXPERTS, 1, LAYER_EXPERTS, 500 + layer as u64)?;
    let all: Vec<usize> = (0..LAYER_EXPERTS).collect();
    let want = b.reference()?;
    for stage in ["copied", "resident"] {
        let mut out = vec![0f32; HIDDEN];
        g.run_layer(&layout, layer, &b.x, 1, &items(&b, &all), &mut out)?;
        let c = compare(&out, &want);
        rep.check(
            &format!("engine decode layer (int8 pass where covered) vs reference: {name} {stage}"),
            c.pass,
            json!({"rel_l2": c.rel_l2, "max_rel": c.max_rel}),
        );
    }
    Ok(())
}
