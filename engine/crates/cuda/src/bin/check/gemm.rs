//! The tiled GEMM kernels (gemm.cu) on the device, for `hmoe-cuda-check` (the full run)
//! and `hmoe-cuda-check gemm` (only this): kernel-only timings of the row kernels against
//! the tiled ones at prefill sizes with a PASS/FAIL of tiled against rows per type, the
//! crossover that sets `GEMM_MIN_TOKENS`, and a sweep of the tile knobs.

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
const VARIANTS: &[(&str, &[&str])] = &[
    ("default (prefetch=0)", &[]),
    ("prefetch=3", &["GEMM_PREFETCH=3"]),
    ("prefetch=1", &["GEMM_PREFETCH=1"]),
    ("prefetch=2", &["GEMM_PREFETCH=2"]),
    ("tn=2", &["GEMM_TN=2"]),
    ("min_blocks=1", &["GEMM_MIN_BLOCKS=1"]),
    ("tn=2,prefetch=3", &["GEMM_TN=2", "GEMM_PREFETCH=3"]),
    (
        "prefetch=0,min_blocks=3",
        &["GEMM_PREFETCH=0", "GEMM_MIN_BLOCKS=3"],
    ),
];
/// Seconds the sweep may take (it stops before the next variant after that).
const VARIANT_BUDGET_S: f64 = 120.0;

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
    let mut rows = Vec::new();
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
