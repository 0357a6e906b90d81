//! The tiled GEMM kernels (gemm.cu) on the device, for `hmoe-cuda-check` (the full run)
//! and `hmoe-cuda-check gemm` (only this): first the int8 tensor-core kernels
//! (gemm_mma.cu) against the f32 tiled ones (PASS/FAIL and a timing table, see
//! [`mma_timings`]), then kernel-only timings of the row kernels against the tiled ones at
//! prefill sizes with a PASS/FAIL of tiled against rows per type, the crossover that sets
//! `GEMM_MIN_TOKENS`, and a short sweep of the tile knobs.

use super::{items, layouts, Report, TIMING_EXPERTS, TIMING_REPS};
use anyhow::Result;
use hmoe_cuda::dense_ref;
use hmoe_cuda::verify::{compare, TestBatch};
use hmoe_cuda::verify_dense::vals;
use hmoe_cuda::{ExpertLayout, GpuExperts, KernelType};
use serde_json::{json, Value};
use std::time::Instant;

/// Tokens per expert of the expert timings (every token routed to all 8 experts).
const EXPERT_TOKENS: [usize; 2] = [64, 256];
/// Linear shapes (rows × cols: the q and the output projection) at `LINEAR_TOKENS`.
const LINEAR_SHAPES: [(usize, usize); 2] = [(4096, 2048), (2048, 4096)];
const LINEAR_TOKENS: usize = 512;
/// Tokens of the linear output checked against the f64 host reference (all 512 would take
/// the host tens of seconds per type; the others are checked against the row kernel).
const LINEAR_REF_TOKENS: usize = 8;
/// A module whose row kernels take every item and call (no count reaches the threshold).
const ROWS_ONLY: &[&str] = &["GEMM_MIN_TOKENS=1000000"];
/// A module whose tiled kernels take every item (from one token).
const ALL_TILED: &[&str] = &["GEMM_MIN_TOKENS=1"];
/// Tokens per expert of the crossover table (rows-only against all-tiled).
const CROSSOVER_TOKENS: [usize; 6] = [4, 8, 12, 16, 24, 32];
/// Tile knobs of the sweep (see gemm.cu): the register prefetch of the next chunk (bit 1
/// weights, bit 2 activations), tokens per thread, blocks per SM the registers must fit.
/// (Session 5 swept 8 knob sets and chose prefetch=0; each variant costs an NVRTC
/// compile, so the sweep keeps the default and the runner-up to stay comparable.)
const VARIANTS: &[(&str, &[&str])] = &[
    ("default (prefetch=0)", &[]),
    ("prefetch=1", &["GEMM_PREFETCH=1"]),
];
/// Seconds the sweep may take (it stops before the next variant after that): the whole
/// `gemm` mode should stay near 100 s.
const VARIANT_BUDGET_S: f64 = 30.0;
/// Expert layouts of the mma table (the benchmark models' Q4_K_M, with its Q6_K down, and
/// Q8_0; plain Q4_K) at `MMA_EXPERT_TOKENS` tokens per expert (256: the brief's prefill
/// size; 64: one token chunk, near where the row kernels take over).
#[cfg(feature = "cuda")]
const MMA_LAYOUTS: [&str; 3] = ["q4_k_m", "q4_k", "q8_0"];
#[cfg(feature = "cuda")]
const MMA_EXPERT_TOKENS: [usize; 2] = [256, 64];
/// mma against f32 tiled, linear on activations rounded as act_round rounds them: both
/// compute the same block dots (the mma exactly in integers), summed in f32 in another
/// order: a few ulps of a row's magnitude (the emulator measured ~3e-7). A wrong fragment,
/// scale or token is O(1); activations off the 8-bit grid (not rounded) ~1e-3.
#[cfg(feature = "cuda")]
const MMA_LINEAR_REL_TOL: f64 = 1e-5;
/// mma against f32 tiled, full expert pass: the SwiGLU products are rounded to 8 bits
/// before down, and one within f32 rounding of a rounding boundary may land a step away
/// in either pass, as between any two GPU passes: verify's kernel tolerances.
#[cfg(feature = "cuda")]
const MMA_PASS_REL_TOL: f64 = hmoe_cuda::verify::KERNEL_REL_L2_TOL;
#[cfg(feature = "cuda")]
const MMA_PASS_MAX_REL_TOL: f64 = hmoe_cuda::verify::KERNEL_MAX_REL_TOL;

fn layout(name: &str) -> Option<ExpertLayout> {
    layouts().into_iter().find(|(n, _)| *n == name).map(|l| l.1)
}

fn quantized(t: KernelType, rows: usize, cols: usize) -> Result<Vec<u8>> {
    let wf: Vec<f32> = vals(rows * cols, 41).iter().map(|v| v * 0.03).collect();
    let mut wq = vec![0u8; t.row_bytes(cols)? * rows];
    hmoe_quant::quantize(t.ggml(), &wf, &mut wq)?;
    Ok(wq)
}

/// Row kernels against tiled, kernel-only, with a PASS/FAIL of tiled against rows: every
/// expert layout at 8 experts × 64 and × 256 tokens, every type's linear at 512 tokens.
pub fn gemm_timings(g: &mut GpuExperts, rep: &mut Report) -> Result<Value> {
    let mut rows = mma_timings(g, rep)?;
    println!("tiled GEMM vs row kernels (kernel-only, mean of {TIMING_REPS} passes; us per full pass (gate_up+down alone)):");
    for (name, layout) in layouts() {
        for n in EXPERT_TOKENS {
            let b = TestBatch::random(layout, TIMING_EXPERTS, n, TIMING_EXPERTS, 300 + n as u64)?;
            let all: Vec<usize> = (0..TIMING_EXPERTS).collect();
            let its = items(&b, &all);
            let old = g.time_expert_kernels(ROWS_ONLY, &layout, &its, &b.x, n, TIMING_REPS)?;
            let new = g.time_expert_kernels(&[], &layout, &its, &b.x, n, TIMING_REPS)?;
            let c = compare(&new.out, &old.out);
            let flop = 2.0 * (TIMING_EXPERTS * n * 3 * layout.hidden * layout.ffn) as f64;
            let tflops = flop / (new.matmul_ms as f64 * 1e-3) / 1e12;
            rep.check(
                &format!("gemm experts {name} {TIMING_EXPERTS} x {n} tokens: tiled vs rows"),
                c.pass,
                json!({"rel_l2": c.rel_l2, "max_rel": c.max_rel, "rows_us": old.pass_ms * 1e3,
                    "tiled_us": new.pass_ms * 1e3, "tiled_tflops": tflops}),
            );
            println!(
                "  experts {name:>9} {TIMING_EXPERTS} x {n:>3} tok: rows {:9.1} us ({:9.1}) | tiled {:8.1} us ({:8.1}) | x{:.1} | {tflops:.1} TFLOP/s",
                old.pass_ms * 1e3,
                old.matmul_ms * 1e3,
                new.pass_ms * 1e3,
                new.matmul_ms * 1e3,
                old.pass_ms / new.pass_ms
            );
            rows.push(json!({"kernel": "experts", "type": name, "tokens": n,
                "rows_us": old.pass_ms * 1e3, "rows_matmul_us": old.matmul_ms * 1e3,
                "tiled_us": new.pass_ms * 1e3, "tiled_matmul_us": new.matmul_ms * 1e3,
                "tiled_tflops": tflops, "rel_l2": c.rel_l2}));
        }
    }
    for t in KernelType::ALL {
        for (r, c) in LINEAR_SHAPES {
            let wq = quantized(t, r, c)?;
            let x = vals(LINEAR_TOKENS * c, 42);
            let (y_old, ms_old) = g.time_dense_linear(ROWS_ONLY, t, &wq, r, c, &x, TIMING_REPS)?;
            let (y_new, ms_new) = g.time_dense_linear(&[], t, &wq, r, c, &x, TIMING_REPS)?;
            let vs_rows = compare(&y_new, &y_old);
            let k = LINEAR_REF_TOKENS;
            let want = dense_ref::linear(t, &wq, r, c, &x[..k * c])?;
            let vs_ref = compare(&y_new[..k * r], &want);
            let tflops = 2.0 * (LINEAR_TOKENS * r * c) as f64 / (ms_new as f64 * 1e-3) / 1e12;
            rep.check(
                &format!(
                    "gemm linear {} {r}x{c} x {LINEAR_TOKENS} tokens: tiled vs rows and reference",
                    t.suffix()
                ),
                vs_rows.pass && vs_ref.pass,
                json!({"rel_l2_rows": vs_rows.rel_l2, "max_rel_rows": vs_rows.max_rel,
                    "rel_l2_ref": vs_ref.rel_l2, "max_rel_ref": vs_ref.max_rel,
                    "rows_us": ms_old * 1e3, "tiled_us": ms_new * 1e3, "tiled_tflops": tflops}),
            );
            println!(
                "  linear  {:>9} {r}x{c} x {LINEAR_TOKENS} tok: rows {:9.1} us | tiled {:8.1} us | x{:.1} | {tflops:.1} TFLOP/s",
                t.suffix(),
                ms_old * 1e3,
                ms_new * 1e3,
                ms_old / ms_new
            );
            rows.push(
                json!({"kernel": "linear", "type": t.suffix(), "rows": r, "cols": c,
                "tokens": LINEAR_TOKENS, "rows_us": ms_old * 1e3, "tiled_us": ms_new * 1e3,
                "tiled_tflops": tflops}),
            );
        }
    }
    Ok(Value::Array(rows))
}

/// Where tiled starts to win: q4_k_m experts (8 × n tokens) and q4_k linear 4096×2048 at
/// the crossover token counts, rows-only against all-tiled.
pub fn gemm_crossover(g: &mut GpuExperts, rep: &mut Report) -> Result<Value> {
    let mut rows = Vec::new();
    let Some(l) = layout("q4_k_m") else {
        return Ok(Value::Array(rows));
    };
    let wq = quantized(KernelType::Q4K, 4096, 2048)?;
    println!("tiled GEMM crossover (us per pass: rows only | all tiled):");
    for n in CROSSOVER_TOKENS {
        let b = TestBatch::random(l, TIMING_EXPERTS, n, TIMING_EXPERTS, 500 + n as u64)?;
        let all: Vec<usize> = (0..TIMING_EXPERTS).collect();
        let its = items(&b, &all);
        let old = g.time_expert_kernels(ROWS_ONLY, &l, &its, &b.x, n, TIMING_REPS)?;
        let new = g.time_expert_kernels(ALL_TILED, &l, &its, &b.x, n, TIMING_REPS)?;
        let c = compare(&new.out, &old.out);
        if !c.pass {
            rep.check(
                &format!("gemm crossover experts q4_k_m x {n}: tiled vs rows"),
                false,
                json!({"rel_l2": c.rel_l2, "max_rel": c.max_rel}),
            );
        }
        let x = vals(n * 2048, 43);
        let (_, lo) =
            g.time_dense_linear(ROWS_ONLY, KernelType::Q4K, &wq, 4096, 2048, &x, TIMING_REPS)?;
        let (_, ln) =
            g.time_dense_linear(ALL_TILED, KernelType::Q4K, &wq, 4096, 2048, &x, TIMING_REPS)?;
        println!(
            "  {n:>3} tok: experts q4_k_m {:8.1} | {:8.1}   linear q4_k 4096x2048 {:7.1} | {:7.1}",
            old.pass_ms * 1e3,
            new.pass_ms * 1e3,
            lo * 1e3,
            ln * 1e3
        );
        rows.push(json!({"tokens": n, "experts_rows_us": old.pass_ms * 1e3,
            "experts_tiled_us": new.pass_ms * 1e3, "linear_rows_us": lo * 1e3,
            "linear_tiled_us": ln * 1e3}));
    }
    Ok(Value::Array(rows))
}

/// The tile knobs: q4_k_m and q8_0 experts 8 × 256 tokens, q4_k linear 4096×2048 × 512.
pub fn gemm_variants(g: &mut GpuExperts, rep: &mut Report) -> Result<Value> {
    let started = Instant::now();
    let mut rows = Vec::new();
    let n = 256;
    let cases: Vec<(&str, TestBatch)> = ["q4_k_m", "q8_0"]
        .into_iter()
        .filter_map(|name| layout(name).map(|l| (name, l)))
        .map(|(name, l)| {
            Ok((
                name,
                TestBatch::random(l, TIMING_EXPERTS, n, TIMING_EXPERTS, 600)?,
            ))
        })
        .collect::<Result<_>>()?;
    let wq = quantized(KernelType::Q4K, 4096, 2048)?;
    let x = vals(LINEAR_TOKENS * 2048, 44);
    let mut base: Vec<Vec<f32>> = Vec::new();
    println!(
        "tiled GEMM variants (kernel-only us per pass; experts 8 x {n}, linear x {LINEAR_TOKENS}):"
    );
    for (vname, defs) in VARIANTS {
        if started.elapsed().as_secs_f64() > VARIANT_BUDGET_S {
            println!("  (sweep stopped after {VARIANT_BUDGET_S} s: {vname} and later not run)");
            break;
        }
        let mut line = format!("  {vname:>30}:");
        let mut outs = Vec::new();
        let mut run = || -> Result<()> {
            for (name, b) in &cases {
                let all: Vec<usize> = (0..TIMING_EXPERTS).collect();
                let kt =
                    g.time_expert_kernels(defs, &b.layout, &items(b, &all), &b.x, n, TIMING_REPS)?;
                line += &format!(
                    " {name} {:.1} ({:.1})",
                    kt.pass_ms * 1e3,
                    kt.matmul_ms * 1e3
                );
                rows.push(
                    json!({"variant": vname, "kernel": "experts", "type": name, "tokens": n,
                    "us": kt.pass_ms * 1e3, "matmul_us": kt.matmul_ms * 1e3}),
                );
                outs.push(kt.out);
            }
            let (y, ms) =
                g.time_dense_linear(defs, KernelType::Q4K, &wq, 4096, 2048, &x, TIMING_REPS)?;
            line += &format!(" lin_q4_k {:.1}", ms * 1e3);
            rows.push(json!({"variant": vname, "kernel": "linear", "type": "q4_k",
                "tokens": LINEAR_TOKENS, "us": ms * 1e3}));
            outs.push(y);
            Ok(())
        };
        match run() {
            Ok(()) => println!("{line}"),
            Err(e) => {
                println!("  {vname}: skipped ({e:#})");
                rows.push(json!({"variant": vname, "error": format!("{e:#}")}));
                continue;
            }
        }
        // Every variant against the default build's outputs.
        if base.is_empty() {
            base = outs;
        } else {
            for (o, b) in outs.iter().zip(&base) {
                let c = compare(o, b);
                if !c.pass {
                    rep.check(
                        &format!("gemm variant {vname} matches the default"),
                        false,
                        json!({"rel_l2": c.rel_l2, "max_rel": c.max_rel}),
                    );
                }
            }
        }
    }
    Ok(Value::Array(rows))
}

/// `x` rounded as `act_round` (kernels.cu `round_block`) rounds the activations for
/// weights of type `t`: Q8_0 blocks of 32 (d = amax / 127) or Q8_K blocks of 256 (the
/// first value of largest magnitude maps to -127); other formats unchanged.
#[cfg(feature = "cuda")]
fn act_rounded(t: KernelType, x: &[f32]) -> Vec<f32> {
    let (fmt, block) = t.act_format();
    if fmt != 2 && fmt != 3 {
        return x.to_vec();
    }
    let mut out = Vec::with_capacity(x.len());
    for b in x.chunks(block) {
        let (mut amax, mut mx) = (0f32, 0f32);
        for &v in b {
            if v.abs() > amax {
                (amax, mx) = (v.abs(), v);
            }
        }
        if amax == 0.0 {
            out.extend(std::iter::repeat_n(0.0, b.len()));
            continue;
        }
        let (d, iscale) = if fmt == 2 {
            let d = amax / 127.0;
            (d, 1.0 / d)
        } else {
            let is = -127.0 / mx;
            (1.0 / is, is)
        };
        out.extend(
            b.iter()
                .map(|v| (v * iscale).round_ties_even().clamp(-127.0, 127.0) * d),
        );
    }
    out
}

/// Back to the kernels the tables after the mma ones time: mma only with
/// `HMOE_CUDA_MMA=1` (the f32 tiled tables of `gemm_timings` follow).
#[cfg(feature = "cuda")]
fn restore_mma_choice(g: &mut GpuExperts) {
    g.set_gemm_mma(std::env::var("HMOE_CUDA_MMA").is_ok_and(|v| v == "1"));
}

/// Matrices of few rows (the prefill layer's wk / wv and router) timed on the row kernel and
/// on the int8 mma kernel at [`FEW_ROWS_TOKENS`] tokens: where `MMA_LINEAR_MIN_ROWS` lies.
#[cfg(feature = "cuda")]
const FEW_ROWS_SHAPES: [(usize, usize); 3] = [(512, 2048), (256, 2048), (128, 2048)];
/// Tokens of the few-rows table: a 1024-token prefill step.
#[cfg(feature = "cuda")]
const FEW_ROWS_TOKENS: usize = 1024;

/// `hmoe-cuda-check mma`: the mma table of [`gemm_timings`] and the few-rows table.
pub fn mma_only(g: &mut GpuExperts, rep: &mut Report) -> Result<Value> {
    let mut rows = mma_timings(g, rep)?;
    rows.extend(few_rows(g)?);
    Ok(json!(rows))
}

/// The row kernel against the mma kernel on [`FEW_ROWS_SHAPES`] (unrounded inputs, as the
/// dense path gives them: the mma kernel quantises them, so the two differ by ~1e-3).
#[cfg(feature = "cuda")]
fn few_rows(g: &mut GpuExperts) -> Result<Vec<Value>> {
    let mut rows = Vec::new();
    if !g.set_gemm_mma(true) {
        return Ok(rows);
    }
    println!("row kernel vs int8 mma on few rows (kernel-only, mean of {TIMING_REPS} passes, {FEW_ROWS_TOKENS} tokens):");
    for t in [KernelType::Q4K, KernelType::Q6K, KernelType::Q8_0] {
        for (r, c) in FEW_ROWS_SHAPES {
            let wq = quantized(t, r, c)?;
            let x = vals(FEW_ROWS_TOKENS * c, 46);
            let shape = (wq.as_slice(), r, c);
            let (y_rows, ms_rows) =
                g.time_dense_linear_from(&[], t, shape, &x, TIMING_REPS, Some(u32::MAX))?;
            let (y_mma, ms_mma) =
                g.time_dense_linear_from(&[], t, shape, &x, TIMING_REPS, Some(0))?;
            let d = compare(&y_mma, &y_rows);
            println!(
                "  linear {:>6} {r:>4}x{c} x {FEW_ROWS_TOKENS} tok: rows {:8.1} us | mma {:8.1} us | x{:.2} | rel_l2 {:.1e}",
                t.suffix(),
                ms_rows * 1e3,
                ms_mma * 1e3,
                ms_rows / ms_mma,
                d.rel_l2
            );
            rows.push(
                json!({"kernel": "few_rows", "type": t.suffix(), "rows": r, "cols": c,
                "tokens": FEW_ROWS_TOKENS, "rows_us": ms_rows * 1e3, "mma_us": ms_mma * 1e3,
                "rel_l2": d.rel_l2}),
            );
        }
    }
    restore_mma_choice(g);
    Ok(rows)
}

#[cfg(not(feature = "cuda"))]
fn few_rows(_: &mut GpuExperts) -> Result<Vec<Value>> {
    Ok(Vec::new())
}

/// The int8 tensor-core kernels (gemm_mma.cu) against the f32 tiled kernels, kernel-only,
/// on the same inputs: 8 experts × 256 and × 64 tokens of each of [`MMA_LAYOUTS`], Q4_K, Q8_0 and
/// Q6_K linear 2048×4096 and 4096×2048 at 512 tokens. PASS/FAIL per case (relative error
/// against [`MMA_LINEAR_REL_TOL`] / [`MMA_PASS_REL_TOL`]), then the table.
#[cfg(feature = "cuda")]
fn mma_timings(g: &mut GpuExperts, rep: &mut Report) -> Result<Vec<Value>> {
    let mut rows = Vec::new();
    if !g.set_gemm_mma(true) {
        rep.check(
            "gemm mma kernels available (sm_80 or later)",
            false,
            json!({}),
        );
        return Ok(rows);
    }
    let result = mma_cases(g, rep, &mut rows);
    restore_mma_choice(g);
    result?;
    Ok(rows)
}

#[cfg(not(feature = "cuda"))]
fn mma_timings(_: &mut GpuExperts, _: &mut Report) -> Result<Vec<Value>> {
    Ok(Vec::new())
}

#[cfg(feature = "cuda")]
fn mma_cases(g: &mut GpuExperts, rep: &mut Report, rows: &mut Vec<Value>) -> Result<()> {
    let mut table = Vec::new();
    for (name, n) in MMA_EXPERT_TOKENS
        .iter()
        .flat_map(|&n| MMA_LAYOUTS.iter().map(move |&name| (name, n)))
    {
        let Some(l) = layout(name) else { continue };
        let b = TestBatch::random(l, TIMING_EXPERTS, n, TIMING_EXPERTS, 700 + n as u64)?;
        let all: Vec<usize> = (0..TIMING_EXPERTS).collect();
        let its = items(&b, &all);
        g.set_gemm_mma(false);
        let old = g.time_expert_kernels(&[], &l, &its, &b.x, n, TIMING_REPS)?;
        g.set_gemm_mma(true);
        let new = g.time_expert_kernels(&[], &l, &its, &b.x, n, TIMING_REPS)?;
        let c = compare(&new.out, &old.out);
        let flop = 2.0 * (TIMING_EXPERTS * n * 3 * l.hidden * l.ffn) as f64;
        let tflops = |ms: f32| flop / (ms as f64 * 1e-3) / 1e12;
        rep.check(
            &format!("gemm mma experts {name} {TIMING_EXPERTS} x {n} tokens: mma vs f32 tiled"),
            c.pass && c.rel_l2 <= MMA_PASS_REL_TOL && c.max_rel <= MMA_PASS_MAX_REL_TOL,
            json!({"rel_l2": c.rel_l2, "max_rel": c.max_rel, "tol_rel_l2": MMA_PASS_REL_TOL,
                "tol_max_rel": MMA_PASS_MAX_REL_TOL}),
        );
        table.push(format!(
            "  experts {name:>6} {TIMING_EXPERTS} x {n} tok: f32 tiled {:8.1} us (matmul {:8.1}) | mma {:8.1} us (matmul {:8.1}) | x{:.2} | mma matmul {:.1} TFLOP/s",
            old.pass_ms * 1e3,
            old.matmul_ms * 1e3,
            new.pass_ms * 1e3,
            new.matmul_ms * 1e3,
            old.pass_ms / new.pass_ms,
            tflops(new.matmul_ms)
        ));
        rows.push(json!({"kernel": "mma_experts", "type": name, "tokens": n,
            "f32_us": old.pass_ms * 1e3, "f32_matmul_us": old.matmul_ms * 1e3,
            "mma_us": new.pass_ms * 1e3, "mma_matmul_us": new.matmul_ms * 1e3,
            "mma_matmul_tflops": tflops(new.matmul_ms), "rel_l2": c.rel_l2}));
    }
    for t in [KernelType::Q4K, KernelType::Q8_0, KernelType::Q6K] {
        for (r, c) in LINEAR_SHAPES {
            let wq = quantized(t, r, c)?;
            let x = act_rounded(t, &vals(LINEAR_TOKENS * c, 45));
            g.set_gemm_mma(false);
            let (y_old, ms_old) = g.time_dense_linear(&[], t, &wq, r, c, &x, TIMING_REPS)?;
            g.set_gemm_mma(true);
            let (y_new, ms_new) = g.time_dense_linear(&[], t, &wq, r, c, &x, TIMING_REPS)?;
            let vs_f32 = compare(&y_new, &y_old);
            let k = LINEAR_REF_TOKENS;
            let want = dense_ref::linear(t, &wq, r, c, &x[..k * c])?;
            let vs_ref = compare(&y_new[..k * r], &want);
            let ok = |c: &hmoe_cuda::verify::Comparison| {
                c.rel_l2 <= MMA_LINEAR_REL_TOL && c.max_rel <= MMA_LINEAR_REL_TOL
            };
            rep.check(
                &format!(
                    "gemm mma linear {} {r}x{c} x {LINEAR_TOKENS} tokens: mma vs f32 tiled and reference",
                    t.suffix()
                ),
                ok(&vs_f32) && ok(&vs_ref) && y_new.iter().all(|v| v.is_finite()),
                json!({"rel_l2_f32": vs_f32.rel_l2, "max_rel_f32": vs_f32.max_rel,
                    "rel_l2_ref": vs_ref.rel_l2, "max_rel_ref": vs_ref.max_rel,
                    "tol": MMA_LINEAR_REL_TOL}),
            );
            let tflops = |ms: f32| 2.0 * (LINEAR_TOKENS * r * c) as f64 / (ms as f64 * 1e-3) / 1e12;
            table.push(format!(
                "  linear  {:>6} {r}x{c} x {LINEAR_TOKENS} tok: f32 tiled {:8.1} us | mma {:8.1} us | x{:.2} | mma {:.1} TFLOP/s",
                t.suffix(),
                ms_old * 1e3,
                ms_new * 1e3,
                ms_old / ms_new,
                tflops(ms_new)
            ));
            rows.push(
                json!({"kernel": "mma_linear", "type": t.suffix(), "rows": r, "cols": c,
                "tokens": LINEAR_TOKENS, "f32_us": ms_old * 1e3, "mma_us": ms_new * 1e3,
                "mma_tflops": tflops(ms_new), "rel_l2": vs_f32.rel_l2}),
            );
        }
    }
    println!("int8 mma vs f32 tiled GEMM (kernel-only, mean of {TIMING_REPS} passes; experts: us per full pass, matmul = gate_up + down alone):");
    for line in table {
        println!("{line}");
    }
    Ok(())
}
