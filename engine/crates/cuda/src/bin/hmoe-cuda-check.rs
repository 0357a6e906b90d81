//! `hmoe-cuda-check`: everything the CUDA expert backend needs to be trusted on a GPU
//! machine, in one run. Prints one PASS/FAIL line per check and a JSON summary.
//!
//!   hmoe-cuda-check [--out DIR] [--scratch DIR] [--quick]
//!   hmoe-cuda-check ptx FILE        # write the NVRTC PTX (sm_90) for ptxas, no GPU needed
//!   hmoe-cuda-check [--out DIR] gemm # only the tiled GEMM timings, checks and sweep
//!   hmoe-cuda-check [--out DIR] attention  # only the attention and fused per-head kernels
//!   hmoe-cuda-check [--out DIR] variants   # only the expert/linear kernel variant sweep
//!   hmoe-cuda-check [--out DIR] decode     # only the int8 (dp4a) decode pass vs the f32 fused pass
//!
//! Checks: device info; each kernel type against the CPU reference on random experts with
//! Qwen3-30B-A3B shapes (hidden 2048, expert FFN 768) for 1, 4, 16 and 128 tokens, with all
//! experts copied, half resident, all resident; the kernels alone (and the fused decode
//! pass) against the reference, the tiled GEMM against the row kernels; the dense-path
//! kernels the engine runs (`linear_*`, `rms_norm`, the fused `qk_norm_rope_kv` and
//! `add_rms_norm`, the split and tiled attention) against the f64 references, and the
//! device-resident dense path (`GpuDense`: attention blocks and head) against its host
//! reference; H2D bandwidth pinned / pageable / registered map and the three ways experts
//! reach the GPU; copy/compute overlap; arena out-of-memory handling (shrink with a
//! warning, refuse with an error); then (not with `--quick`) the kernel variant sweep.
//!
//! `--quick` runs every check above on fewer token counts (1 and 16 in the layer checks)
//! with fewer timed repetitions, builds no kernel variant beyond the one the GEMM check
//! compares against, and leaves out the variant sweep (`variants` runs it). Each part
//! prints `section <name>: <seconds> s` when it ends.

use anyhow::{bail, Context, Result};
use hmoe_cuda::verify::{compare, TestBatch, KERNEL_MAX_REL_TOL, KERNEL_REL_L2_TOL};
use hmoe_cuda::verify_dense::vals;
use hmoe_cuda::{probe, CudaError, ExpertLayout, GpuConfig, GpuExperts, GpuItem, HostSource};
use hmoe_gguf::GgmlDType;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;

#[path = "check/decode.rs"]
mod decode;
#[path = "check/dense.rs"]
mod dense;
#[path = "check/gemm.rs"]
mod gemm;

/// Qwen3-30B-A3B.
const HIDDEN: usize = 2048;
const FFN: usize = 768;
const TOP_K: usize = 8;
/// Distinct experts the random batches route to (a layer has 128; 64 keeps the CPU
/// reference quick while 128 tokens still give every expert ~16 rows).
const POOL: usize = 64;
/// Overlap below this fraction of the shorter operation means the copy stream does not
/// run concurrently with kernels (serial issue gives 0, perfect overlap 1; the copy engine
/// and SMs are independent, so anything real is close to 1).
const MIN_OVERLAP: f32 = 0.8;

#[derive(Default)]
struct Report {
    checks: Vec<Value>,
    failed: usize,
    /// (part, wall seconds) of the parts run so far.
    sections: Vec<(String, f64)>,
}

impl Report {
    fn check(&mut self, name: &str, pass: bool, detail: Value) {
        println!("{} {name} {detail}", if pass { "PASS" } else { "FAIL" });
        if !pass {
            self.failed += 1;
        }
        self.checks
            .push(json!({"check": name, "pass": pass, "detail": detail}));
    }
}

fn layouts() -> Vec<(&'static str, ExpertLayout)> {
    let l = |g, d| ExpertLayout::new(g, g, d, HIDDEN, FFN);
    [
        ("q8_0", GgmlDType::Q8_0, GgmlDType::Q8_0),
        ("q4_k_m", GgmlDType::Q4K, GgmlDType::Q6K),
        ("q4_k", GgmlDType::Q4K, GgmlDType::Q4K),
        ("q5_k", GgmlDType::Q5K, GgmlDType::Q5K),
        ("q6_k", GgmlDType::Q6K, GgmlDType::Q6K),
        ("f16/bf16", GgmlDType::F16, GgmlDType::BF16),
        ("f32", GgmlDType::F32, GgmlDType::F32),
    ]
    .into_iter()
    .filter_map(|(n, g, d)| l(g, d).ok().map(|x| (n, x)))
    .collect()
}

fn items<'a>(b: &'a TestBatch, which: &[usize]) -> Vec<GpuItem<'a>> {
    let l = &b.layout;
    which
        .iter()
        .map(|&i| {
            let o = b.offsets(i).map(|v| v as usize);
            GpuItem {
                expert: i as u16,
                slot_hint: None,
                gate: &b.weights[o[0]..o[0] + l.gate_bytes()],
                up: &b.weights[o[1]..o[1] + l.gate_bytes()],
                down: &b.weights[o[2]..o[2] + l.down_bytes()],
                rows: &b.rows[i],
                weights: &b.router[i],
            }
        })
        .collect()
}

fn median(mut v: Vec<f32>) -> f32 {
    v.sort_by(f32::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn kernel_checks(g: &mut GpuExperts, rep: &mut Report, quick: bool) -> Result<Value> {
    let mut rows = Vec::new();
    let mut layer = 0u16;
    for (name, layout) in layouts() {
        let tokens: &[usize] = if quick { &[1, 16] } else { &[1, 4, 16, 128] };
        for &n in tokens {
            layer += 1;
            let b = TestBatch::random(layout, POOL, n, TOP_K, 1000 + layer as u64)?;
            let used: Vec<usize> = (0..POOL).filter(|&i| !b.rows[i].is_empty()).collect();
            let half = &used[..used.len() / 2];
            let t0 = Instant::now();
            // full = first half + second half: each item's reference is computed once.
            let want_half = b.reference_of(half)?;
            let want: Vec<f32> = b
                .reference_of(&used[used.len() / 2..])?
                .iter()
                .zip(&want_half)
                .map(|(a, b)| a + b)
                .collect();
            let ref_s = t0.elapsed().as_secs_f64();
            // Accumulation into a non-zero output: out = base + experts.
            let base: Vec<f32> = b.x.iter().map(|v| v * 0.01).collect();
            let mut run = |which: &[usize]| -> Result<(Vec<f32>, hmoe_cuda::LayerTimings)> {
                let mut out = base.clone();
                let t = g.run_layer(&layout, layer, &b.x, n, &items(&b, which), &mut out)?;
                Ok((out.iter().zip(&base).map(|(o, b)| o - b).collect(), t))
            };
            let mut stage =
                |label: &str, which: &[usize], want: &[f32]| -> Result<hmoe_cuda::LayerTimings> {
                    let (got, t) = run(which)?;
                    let c = compare(&got, want);
                    rep.check(
                        &format!("kernel {name} tokens={n} {label}"),
                        c.pass,
                        json!({"rel_l2": c.rel_l2, "max_rel": c.max_rel, "items": which.len(),
                           "hits": t.hits, "fetches": t.fetches,
                           "tol_rel_l2": KERNEL_REL_L2_TOL, "tol_max_rel": KERNEL_MAX_REL_TOL}),
                    );
                    Ok(t)
                };
            stage("copied", half, &want_half)?;
            let mixed = stage("half-resident", &used, &want)?;
            stage("resident", &used, &want)?;
            // Timing: all resident, repeated.
            let mut gpu = Vec::new();
            let mut wall = Vec::new();
            for _ in 0..if quick { 3 } else { 10 } {
                let (_, t) = run(&used)?;
                gpu.push(t.gpu_ms);
                wall.push(t.wall_ms);
            }
            let (gpu_ms, wall_ms) = (median(gpu), median(wall));
            // submit_layer must return while the GPU works (the CPU share runs then).
            let its = items(&b, &used);
            let t0 = Instant::now();
            let pending = g.submit_layer(&layout, layer, &b.x, n, &its)?;
            let submit_us = t0.elapsed().as_secs_f64() * 1e6;
            let mut sink = vec![0f32; b.x.len()];
            let t = g.complete_layer(pending, &mut sink)?;
            println!(
                "  submit {name} tokens={n}: returned after {submit_us:.1} us, GPU took {:.1} us",
                t.gpu_ms * 1e3
            );
            let bytes = used.len() * layout.expert_bytes();
            rows.push(json!({"type": name, "tokens": n, "items": used.len(),
                "gpu_us": gpu_ms * 1e3, "wall_us": wall_ms * 1e3,
                "submit_us": submit_us, "submit_gpu_us": t.gpu_ms * 1e3,
                "weights_gb_per_s": bytes as f64 / (gpu_ms as f64 * 1e-3) / 1e9,
                "fetch_copy_ms": mixed.copy_ms, "fetch_bytes": mixed.copied_bytes,
                "cpu_reference_s": ref_s}));
            println!(
                "  time {name} tokens={n}: {} items, GPU {:.1} us (wall {:.1} us)",
                used.len(),
                gpu_ms * 1e3,
                wall_ms * 1e3
            );
        }
    }
    Ok(Value::Array(rows))
}

/// Timed passes per kernel-only measurement (mean of the passes between two events).
const TIMING_REPS: usize = 50;
/// The same with `--quick`: a pass is 30-150 us, so 10 still average out launch jitter to
/// a few percent (the checks on the outputs are the same).
const QUICK_TIMING_REPS: usize = 10;
/// Scale of the random dense matrices (quantised once per type and shape, [`quantized`]).
const DENSE_WEIGHT_SCALE: f32 = 0.03;

/// A `[rows, cols]` matrix of random values quantised to `t`: once per process and shape
/// (a K-quant matrix of 4096 x 2048 takes the host ~0.5 s; the kernel-only timings, the
/// dense checks and the variant sweep use the same ones).
fn quantized(t: hmoe_cuda::KernelType, rows: usize, cols: usize) -> Result<Vec<u8>> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Cache = Mutex<HashMap<(hmoe_cuda::KernelType, usize, usize), Vec<u8>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(w) = cache
        .lock()
        .ok()
        .and_then(|c| c.get(&(t, rows, cols)).cloned())
    {
        return Ok(w);
    }
    let wf: Vec<f32> = vals(rows * cols, 21)
        .iter()
        .map(|v| v * DENSE_WEIGHT_SCALE)
        .collect();
    let mut wq = vec![0u8; t.row_bytes(cols)? * rows];
    hmoe_quant::quantize(t.ggml(), &wf, &mut wq)?;
    if let Ok(mut c) = cache.lock() {
        c.insert((t, rows, cols), wq.clone());
    }
    Ok(wq)
}

/// Experts of the kernel-only timing: a decode step's top-8.
const TIMING_EXPERTS: usize = 8;

/// The expert kernels alone (no uploads, no downloads) on 8 experts that every token is
/// routed to, for 1, 4 and 8 tokens, per type: the unfused pass and the fused decode pass
/// (checked bit for bit against the unfused one); and `linear_*` on a 4096 × 2048 matrix
/// (the q projection) for 1 and 8 tokens. Each result is also checked against the
/// reference. Prints a table: microseconds per pass and GB/s of weights read.
fn kernel_only_timings(g: &mut GpuExperts, rep: &mut Report, reps: usize) -> Result<Value> {
    use hmoe_cuda::{dense_ref, KernelType};
    let mut rows = Vec::new();
    println!("kernel-only timings (mean of {reps} passes, weights already on the GPU):");
    for (name, layout) in layouts() {
        for n in [1usize, 4, 8] {
            let b = TestBatch::random(layout, TIMING_EXPERTS, n, TIMING_EXPERTS, 77 + n as u64)?;
            let all: Vec<usize> = (0..TIMING_EXPERTS).collect();
            let kt = g.time_expert_kernels(&[], &layout, &items(&b, &all), &b.x, n, reps)?;
            let c = compare(&kt.out, &b.reference()?);
            let (ms, mm) = (kt.pass_ms, kt.matmul_ms);
            let bytes = TIMING_EXPERTS * layout.expert_bytes();
            let gbs = bytes as f64 / (ms as f64 * 1e-3) / 1e9;
            let mm_gbs = bytes as f64 / (mm as f64 * 1e-3) / 1e9;
            rep.check(
                &format!("kernel-only {name} {TIMING_EXPERTS} experts x {n} tokens"),
                c.pass,
                json!({"rel_l2": c.rel_l2, "max_rel": c.max_rel, "us": ms * 1e3,
                    "weights_gb_per_s": gbs, "gate_up_down_us": mm * 1e3}),
            );
            // The fused decode pass (3 launches) must give the unfused pass's output
            // exactly: same dots, same rounding, same summation order.
            let fused_differ = kt
                .fused_out
                .iter()
                .zip(&kt.out)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            let fused_ran = kt.fused_out.len() == kt.out.len();
            rep.check(
                &format!("fused decode pass == unfused, bit for bit: {name} {TIMING_EXPERTS} experts x {n} tokens"),
                fused_ran && fused_differ == 0,
                json!({"ran": fused_ran, "values_differing": fused_differ,
                    "fused_us": kt.fused_ms * 1e3, "unfused_us": ms * 1e3}),
            );
            let fu = kt.fused_ms;
            let fu_gbs = bytes as f64 / (fu as f64 * 1e-3) / 1e9;
            println!(
                "  experts {name:>9} {TIMING_EXPERTS} x {n} tok: {:8.1} us {gbs:7.0} GB/s | fused {:8.1} us {fu_gbs:7.0} GB/s | gate_up+down alone {:8.1} us {mm_gbs:7.0} GB/s ({:.1} MB of weights)",
                ms * 1e3,
                fu * 1e3,
                mm * 1e3,
                bytes as f64 / 1e6
            );
            rows.push(
                json!({"kernel": "experts", "type": name, "experts": TIMING_EXPERTS,
                "tokens": n, "us": ms * 1e3, "weights_gb_per_s": gbs, "weight_bytes": bytes,
                "fused_us": fu * 1e3, "fused_gb_per_s": fu_gbs, "fused_values_differing": fused_differ,
                "gate_up_down_us": mm * 1e3, "gate_up_down_gb_per_s": mm_gbs}),
            );
        }
    }
    let (r, c) = (4096usize, HIDDEN);
    for t in KernelType::ALL {
        let wq = quantized(t, r, c)?;
        for n in [1usize, 8] {
            let x = vals(n * c, 22 + n as u64);
            let (got, ms) = g.time_dense_linear(&[], t, &wq, r, c, &x, reps)?;
            let cmp = compare(&got, &dense_ref::linear(t, &wq, r, c, &x)?);
            let gbs = wq.len() as f64 / (ms as f64 * 1e-3) / 1e9;
            rep.check(
                &format!("kernel-only linear {} {r}x{c} x {n} tokens", t.suffix()),
                cmp.pass,
                json!({"rel_l2": cmp.rel_l2, "max_rel": cmp.max_rel, "us": ms * 1e3, "weights_gb_per_s": gbs}),
            );
            println!(
                "  linear  {:>9} {r}x{c} x {n} tok: {:8.1} us {gbs:7.0} GB/s ({:.1} MB of weights)",
                t.suffix(),
                ms * 1e3,
                wq.len() as f64 / 1e6
            );
            rows.push(
                json!({"kernel": "linear", "type": t.suffix(), "rows": r, "cols": c,
                "tokens": n, "us": ms * 1e3, "weights_gb_per_s": gbs, "weight_bytes": wq.len()}),
            );
        }
    }
    Ok(Value::Array(rows))
}

/// Tuning variants of the expert and linear kernels (NVRTC defines, see kernels.cu):
/// the same kernel-only timing as `kernel_only_timings` for the main types, so one device
/// run shows which setting is fastest. `default` is the production build (MIN_BLOCKS=4,
/// U_ONE=4, U_TILE=2, RPW 1/1, ASYNC=0, TAIL=1); `min_blocks=0,tail=0` is the build
/// measured first in session 4 (with per-token warp sums then).
const VARIANTS: &[(&str, &[&str])] = &[
    ("default", &[]),
    ("async", &["ASYNC=1"]),
    ("tail=0", &["TAIL=0"]),
    ("min_blocks=0,tail=0", &["MIN_BLOCKS=0", "TAIL=0"]),
    ("u_tile=1", &["U_TILE=1"]),
    ("rpw_dn=2", &["RPW_DN=2"]),
    ("async,rpw_dn=2", &["ASYNC=1", "RPW_DN=2"]),
    ("u_one=2", &["U_ONE=2"]),
    ("async,min_blocks=3", &["ASYNC=1", "MIN_BLOCKS=3"]),
    ("rpw_dn=4,min_blocks=2", &["RPW_DN=4", "MIN_BLOCKS=2"]),
    ("rpw_gu=2,min_blocks=2", &["RPW_GU=2", "MIN_BLOCKS=2"]),
];
/// Seconds the variant sweep may take (most informative variants first; each variant is
/// an NVRTC compile and load of the whole source, ~7 s on the GPU machine).
const VARIANT_BUDGET_S: f64 = 150.0;

fn variant_timings(g: &mut GpuExperts, rep: &mut Report) -> Result<Value> {
    let started = Instant::now();
    let budget = VARIANT_BUDGET_S;
    use hmoe_cuda::{dense_ref, KernelType};
    let mut rows = Vec::new();
    println!("kernel variants (kernel-only, mean of {TIMING_REPS} passes; us/GB/s of weights per full pass, (us of gate_up+down alone | f: us of the fused decode pass)):");
    let cases: Vec<(&str, ExpertLayout)> = layouts()
        .into_iter()
        .filter(|(n, _)| ["q4_k_m", "q8_0", "q6_k"].contains(n))
        .collect();
    let batches: Vec<(usize, TestBatch)> = [1usize, 8]
        .iter()
        .flat_map(|&n| cases.iter().map(move |c| (n, c)))
        .map(|(n, (_, l))| {
            Ok((
                n,
                TestBatch::random(*l, TIMING_EXPERTS, n, TIMING_EXPERTS, 99 + n as u64)?,
            ))
        })
        .collect::<Result<_>>()?;
    let wants: Vec<Vec<f32>> = batches
        .iter()
        .map(|(_, b)| b.reference())
        .collect::<std::result::Result<_, _>>()?;
    let (r, c) = (4096usize, HIDDEN);
    let lin: Vec<(KernelType, Vec<u8>)> = [KernelType::Q4K, KernelType::Q8_0]
        .into_iter()
        .map(|t| Ok((t, quantized(t, r, c)?)))
        .collect::<Result<_>>()?;
    for (vname, defs) in VARIANTS {
        if started.elapsed().as_secs_f64() > budget {
            println!("  (variant sweep stopped after {budget} s: {vname} and later not run)");
            break;
        }
        let mut line = format!("  {vname:>22}:");
        for ((n, b), want) in batches.iter().zip(&wants) {
            let all: Vec<usize> = (0..TIMING_EXPERTS).collect();
            let name = cases
                .iter()
                .find(|(_, l)| *l == b.layout)
                .map_or("?", |c| c.0);
            match g.time_expert_kernels(defs, &b.layout, &items(b, &all), &b.x, *n, TIMING_REPS) {
                Ok(kt) => {
                    let (ms, mm) = (kt.pass_ms, kt.matmul_ms);
                    let cmp = compare(&kt.out, want);
                    let gbs = (TIMING_EXPERTS * b.layout.expert_bytes()) as f64
                        / (ms as f64 * 1e-3)
                        / 1e9;
                    if !cmp.pass {
                        rep.check(
                            &format!("variant {vname} experts {name} x {n}"),
                            false,
                            json!({"rel_l2": cmp.rel_l2, "max_rel": cmp.max_rel}),
                        );
                    }
                    let fused_same = kt.fused_out.len() == kt.out.len()
                        && kt
                            .fused_out
                            .iter()
                            .zip(&kt.out)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                    if !fused_same {
                        rep.check(
                            &format!("variant {vname} fused == unfused {name} x {n}"),
                            false,
                            json!({"fused_values": kt.fused_out.len()}),
                        );
                    }
                    line += &format!(
                        " {name}x{n} {:.1}us/{gbs:.0}({:.1}|f{:.1})",
                        ms * 1e3,
                        mm * 1e3,
                        kt.fused_ms * 1e3
                    );
                    rows.push(
                        json!({"variant": vname, "kernel": "experts", "type": name, "tokens": n,
                        "us": ms * 1e3, "weights_gb_per_s": gbs, "rel_l2": cmp.rel_l2,
                        "gate_up_down_us": mm * 1e3, "fused_us": kt.fused_ms * 1e3}),
                    );
                }
                Err(e) => {
                    println!("  {vname}: skipped ({e})");
                    rows.push(json!({"variant": vname, "error": e.to_string()}));
                    break;
                }
            }
        }
        for (t, wq) in &lin {
            for n in [1usize, 8] {
                let x = vals(n * c, 32 + n as u64);
                let res = g.time_dense_linear(defs, *t, wq, r, c, &x, TIMING_REPS);
                if let Err(e) = &res {
                    println!("  {vname} linear {}: skipped ({e})", t.suffix());
                }
                if let Ok((got, ms)) = res {
                    let cmp = compare(&got, &dense_ref::linear(*t, wq, r, c, &x)?);
                    let gbs = wq.len() as f64 / (ms as f64 * 1e-3) / 1e9;
                    if !cmp.pass {
                        rep.check(
                            &format!("variant {vname} linear {} x {n}", t.suffix()),
                            false,
                            json!({"rel_l2": cmp.rel_l2, "max_rel": cmp.max_rel}),
                        );
                    }
                    line += &format!(" lin_{}x{n} {:.1}us/{gbs:.0}", t.suffix(), ms * 1e3);
                    rows.push(json!({"variant": vname, "kernel": "linear", "type": t.suffix(), "tokens": n,
                        "us": ms * 1e3, "weights_gb_per_s": gbs, "rel_l2": cmp.rel_l2}));
                }
            }
        }
        println!("{line}");
    }
    Ok(Value::Array(rows))
}

fn bandwidth(g: &mut GpuExperts, scratch: &std::path::Path) -> Result<Value> {
    const MIB: usize = 1 << 20;
    let mut out = json!({});
    for (label, bytes, reps) in [("3MiB", 3 * MIB, 50), ("64MiB", 64 * MIB, 5)] {
        let pinned = g.h2d_bandwidth(bytes, HostSource::Staged, reps)?;
        let pageable = g.h2d_bandwidth(bytes, HostSource::Pageable, reps)?;
        println!("  H2D {label}: pinned {pinned:.1} GB/s, pageable {pageable:.1} GB/s");
        out[format!("pinned_{label}_gb_s")] = json!(pinned);
        out[format!("pageable_{label}_gb_s")] = json!(pageable);
    }
    // A file-backed map like the model's: register it and copy straight from it.
    let path = scratch.join("hmoe-cuda-check.map");
    let size = 256 * MIB;
    std::fs::write(&path, vec![7u8; size]).with_context(|| format!("write {}", path.display()))?;
    let file = std::fs::File::open(&path)?;
    // SAFETY: a private scratch file nobody else writes while mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }?;
    let unregistered = g.h2d_from(&map[..64 * MIB], 5)?;
    out["mmap_unregistered_64MiB_gb_s"] = json!(unregistered);
    let expert = 3 * MIB;
    let n_experts = 64;
    let mut modes = vec![HostSource::Pageable, HostSource::Staged];
    match g.register_host(&[&map[..]]) {
        Ok(_) => {
            let reg = g.h2d_from(&map[..64 * MIB], 5)?;
            println!(
                "  H2D from the map: unregistered {unregistered:.1} GB/s, registered {reg:.1} GB/s"
            );
            out["mmap_registered_64MiB_gb_s"] = json!(reg);
            modes.push(HostSource::Registered);
        }
        Err(e) => {
            println!("  cuMemHostRegister of a file map failed: {e}");
            out["mmap_register_error"] = json!(e.to_string());
        }
    }
    // End to end: 64 experts of 3 MiB from the map through each host path.
    // A distinct (fake) layer per mode, so no copy is skipped as already resident.
    for (m, mode) in modes.into_iter().enumerate() {
        g.set_host_source(mode)?;
        g.synchronize()?;
        let t0 = Instant::now();
        for i in 0..n_experts {
            let off = (i * expert) % (size - expert);
            let part = expert / 3;
            let p = [
                &map[off..off + part],
                &map[off + part..off + 2 * part],
                &map[off + 2 * part..off + 3 * part],
            ];
            g.prefetch((u16::MAX - m as u16, i as u16), None, p)?;
        }
        g.synchronize()?;
        let gbs = (n_experts * expert) as f64 / t0.elapsed().as_secs_f64() / 1e9;
        println!("  expert copies via {mode:?}: {gbs:.1} GB/s");
        out[format!("experts_{mode:?}_gb_s").to_lowercase()] = json!(gbs);
    }
    g.set_host_source(HostSource::Staged)?;
    let _ = std::fs::remove_file(&path);
    // The backend keeps the map registered until it drops: unmapping it first left a
    // registered hole that a later cuMemHostAlloc got back (CUDA_ERROR_ALREADY_MAPPED in
    // the overlap check). The map lives as long as the process instead.
    std::mem::forget(map);
    Ok(out)
}

fn oom_checks(rep: &mut Report, cfg: &GpuConfig, total: usize) {
    let slot = cfg.slot_bytes as u64;
    // More than the card has, any size accepted: must clamp to the free memory with a
    // warning.
    let ask = GpuConfig {
        budget_bytes: 4 * total as u64,
        min_slots: 1,
        ..cfg.clone()
    };
    let want = (ask.budget_bytes / slot) as usize;
    match GpuExperts::new(&ask) {
        Ok(g) => {
            let ok = g.n_slots() < want && g.warnings().iter().any(|w| w.contains("slots"));
            rep.check(
                "arena clamps a budget beyond the card",
                ok,
                json!({"asked_slots": want, "got_slots": g.n_slots(), "warnings": g.warnings()}),
            );
        }
        Err(e) => rep.check(
            "arena clamps a budget beyond the card",
            false,
            json!({"error": e.to_string()}),
        ),
    }
    // The driver's own out-of-memory error: pretend 4x the card is free, so allocations
    // fail until the arena has shrunk below what is really there.
    #[cfg(feature = "cuda")]
    {
        std::env::set_var(hmoe_cuda::ASSUME_FREE_ENV, (4 * total).to_string());
        let r = GpuExperts::new(&ask);
        std::env::remove_var(hmoe_cuda::ASSUME_FREE_ENV);
        match r {
            Ok(g) => {
                let ok = g.n_slots() < want
                    && g.warnings().iter().any(|w| w.contains("out of GPU memory"));
                rep.check(
                    "arena shrinks after real out-of-memory errors",
                    ok,
                    json!({"asked_slots": want, "got_slots": g.n_slots(),
                           "got_gib": (g.n_slots() as u64 * slot) as f64 / (1u64 << 30) as f64,
                           "warnings": g.warnings()}),
                );
            }
            Err(e) => rep.check(
                "arena shrinks after real out-of-memory errors",
                false,
                json!({"error": e.to_string()}),
            ),
        }
    }
    // More than the card has and a minimum above it: must refuse with OutOfMemory.
    let min_slots = (total as u64 * 5 / 4 / slot) as usize;
    let refuse = GpuConfig {
        budget_bytes: 4 * total as u64,
        min_slots,
        ..cfg.clone()
    };
    match GpuExperts::new(&refuse) {
        Ok(g) => rep.check(
            "arena refuses below its minimum",
            false,
            json!({"unexpected_slots": g.n_slots()}),
        ),
        Err(e) => rep.check(
            "arena refuses below its minimum",
            matches!(e, CudaError::OutOfMemory { .. }),
            json!({"error": e.to_string()}),
        ),
    }
}

/// The defines of check/gemm.rs's `ROWS_ONLY` and `ALL_TILED` modules (kept equal to
/// them: the prebuilt module is found by its define set).
#[cfg(feature = "cuda")]
const GEMM_ROWS_ONLY: &[&str] = &["GEMM_MIN_TOKENS=1000000"];
#[cfg(feature = "cuda")]
const GEMM_ALL_TILED: &[&str] = &["GEMM_MIN_TOKENS=1"];

/// What a run covers (the command line's subcommand).
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Everything (the default; `--quick` trims it).
    All,
    /// `gemm`: the tiled GEMM table, crossover and knob sweep.
    Gemm,
    /// `attention`: the attention and fused per-head kernels.
    Attention,
    /// `variants`: the expert/linear kernel variant sweep.
    Variants,
    /// `decode`: the int8 (dp4a) decode pass against the f32 fused pass.
    Decode,
    /// `mma`: the int8 mma kernels against the f32 tiled ones, and against the row kernel
    /// on matrices of few rows (no knob sweep: seconds, for A/B of `HMOE_CUDA_DEFINES`).
    Mma,
    /// `dense`: the dense-path kernels and the device-resident dense path (`GpuDense`)
    /// against their references.
    Dense,
}

/// Runs one part of the check and records its wall time (`section <name>: <s> s`, and
/// `sections` in the JSON: a run cut by a timeout still shows where its time went). An
/// error becomes a FAIL line `<name> ran`; a value lands in `summary[<name>]`.
fn section(
    rep: &mut Report,
    summary: &mut Value,
    name: &str,
    part: impl FnOnce(&mut Report) -> Result<Option<Value>>,
) {
    let t0 = Instant::now();
    match part(rep) {
        Ok(Some(v)) => summary[name] = v,
        Ok(None) => {}
        Err(e) => rep.check(
            &format!("{name} ran"),
            false,
            json!({"error": format!("{e:#}")}),
        ),
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("section {name}: {secs:.1} s");
    rep.sections.push((name.to_string(), secs));
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("ptx") {
        let file = args.get(1).context("usage: hmoe-cuda-check ptx FILE")?;
        #[cfg(feature = "cuda")]
        {
            let ptx = hmoe_cuda::compile_kernels((9, 0))?;
            std::fs::write(file, ptx)?;
            println!("wrote {file}");
            return Ok(());
        }
        #[cfg(not(feature = "cuda"))]
        bail!("{file}: {}", CudaError::NotBuilt);
    }
    let mut out_dir: Option<PathBuf> = None;
    let mut scratch = std::env::temp_dir();
    let mut quick = false;
    let mut mode = Mode::All;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out_dir = it.next().map(PathBuf::from),
            "--scratch" => scratch = it.next().map(PathBuf::from).context("--scratch DIR")?,
            "--quick" => quick = true,
            "attention" => mode = Mode::Attention,
            "gemm" => mode = Mode::Gemm,
            "variants" => mode = Mode::Variants,
            "decode" => mode = Mode::Decode,
            "mma" => mode = Mode::Mma,
            "dense" => mode = Mode::Dense,
            o => bail!(
                "unknown argument `{o}` (--out DIR, --scratch DIR, --quick, ptx FILE, gemm, mma, dense, attention, variants, decode)"
            ),
        }
    }
    let mut rep = Report::default();
    let mut summary =
        json!({"tool": "hmoe-cuda-check", "version": env!("CARGO_PKG_VERSION"), "quick": quick});
    let run_start = Instant::now();
    let info = match probe(0) {
        Ok(info) => info,
        Err(e) => {
            rep.check("device", false, json!({"error": e.to_string()}));
            return finish(summary, rep, out_dir, run_start);
        }
    };
    rep.check("device", true, serde_json::to_value(&info)?);
    summary["device"] = serde_json::to_value(&info)?;
    // The variant modules this run will time, built on other threads meanwhile (NVRTC to
    // a CUBIN: a compile of the whole source and its ptxas, tens of seconds together).
    #[cfg(feature = "cuda")]
    {
        let mut sets: Vec<&[&str]> = Vec::new();
        match mode {
            Mode::All => {
                sets.push(GEMM_ROWS_ONLY);
                if !quick {
                    sets.extend(VARIANTS.iter().map(|v| v.1).filter(|d| !d.is_empty()));
                }
            }
            Mode::Gemm => sets.extend([GEMM_ROWS_ONLY, GEMM_ALL_TILED]),
            Mode::Variants => sets.extend(VARIANTS.iter().map(|v| v.1).filter(|d| !d.is_empty())),
            Mode::Attention | Mode::Decode | Mode::Mma | Mode::Dense => {}
        }
        GpuExperts::prebuild_variants(info.compute_capability, &sets);
    }
    let slot_bytes = layouts()
        .iter()
        .map(|(_, l)| l.expert_bytes())
        .max()
        .unwrap_or(0);
    let cfg = GpuConfig {
        ordinal: 0,
        budget_bytes: (POOL as u64 + 16) * slot_bytes as u64,
        slot_bytes,
        min_slots: POOL,
        hidden: HIDDEN,
        ffn: FFN,
        max_tokens: 128,
        top_k: TOP_K,
        host: HostSource::Staged,
        staging_buffers: 4,
    };
    match mode {
        Mode::Attention => {
            #[cfg(feature = "cuda")]
            section(&mut rep, &mut summary, "attention", |rep| {
                dense::attention_checks(rep, false).map(Some)
            });
        }
        Mode::Gemm => gemm_section(&cfg, &mut rep, &mut summary),
        Mode::Decode => decode::decode_section(&cfg, &mut rep, &mut summary),
        Mode::Dense => {
            section(&mut rep, &mut summary, "dense", |rep| {
                let mut g = GpuExperts::new(&cfg)?;
                dense::dense_checks(&mut g, rep).map(|_| None)
            });
            section(&mut rep, &mut summary, "gpu_dense", |rep| {
                dense::resident_checks(rep).map(|_| None)
            });
        }
        Mode::Mma => section(&mut rep, &mut summary, "mma_timings", |rep| {
            let mut g = GpuExperts::new(&cfg)?;
            gemm::mma_only(&mut g, rep).map(Some)
        }),
        Mode::Variants => section(&mut rep, &mut summary, "kernel_variants", |rep| {
            let mut g = GpuExperts::new(&cfg)?;
            variant_timings(&mut g, rep).map(Some)
        }),
        Mode::All => {
            if full_check(&cfg, &mut rep, &mut summary, &scratch, quick) {
                section(&mut rep, &mut summary, "oom", |rep| {
                    oom_checks(rep, &cfg, info.total_bytes);
                    Ok(None)
                });
                if quick {
                    println!(
                        "kernel variants: not with --quick (`hmoe-cuda-check variants` runs the sweep)"
                    );
                } else {
                    // Last, on a fresh instance: a variant that faulted would leave its
                    // context unusable for any check after it.
                    section(&mut rep, &mut summary, "kernel_variants", |rep| {
                        let mut g = GpuExperts::new(&cfg)?;
                        variant_timings(&mut g, rep).map(Some)
                    });
                }
            }
        }
    }
    finish(summary, rep, out_dir, run_start)
}

/// Every check on one backend instance (dropped before the out-of-memory checks, which
/// start their own): false when the instance does not start.
fn full_check(
    cfg: &GpuConfig,
    rep: &mut Report,
    summary: &mut Value,
    scratch: &std::path::Path,
    quick: bool,
) -> bool {
    let t_start = Instant::now();
    let mut g = match GpuExperts::new(cfg) {
        Ok(g) => g,
        Err(e) => {
            rep.check(
                "start-up (context, NVRTC, arena)",
                false,
                json!({"error": e.to_string()}),
            );
            return false;
        }
    };
    rep.check("start-up (context, NVRTC, arena)", true,
        json!({"slots": g.n_slots(), "slot_bytes": g.slot_bytes(), "seconds": t_start.elapsed().as_secs_f64(), "warnings": g.warnings()}));
    rep.sections
        .push(("start-up".into(), t_start.elapsed().as_secs_f64()));
    section(rep, summary, "kernel_timings", |rep| {
        kernel_checks(&mut g, rep, quick).map(Some)
    });
    let reps = if quick {
        QUICK_TIMING_REPS
    } else {
        TIMING_REPS
    };
    section(rep, summary, "kernel_only_timings", |rep| {
        kernel_only_timings(&mut g, rep, reps).map(Some)
    });
    section(rep, summary, "gemm_timings", |rep| {
        gemm::gemm_timings(&mut g, rep).map(Some)
    });
    section(rep, summary, "dense", |rep| {
        dense::dense_checks(&mut g, rep).map(|_| None)
    });
    section(rep, summary, "gpu_dense", |rep| {
        dense::resident_checks(rep).map(|_| None)
    });
    #[cfg(feature = "cuda")]
    section(rep, summary, "attention", |rep| {
        dense::attention_checks(rep, quick).map(Some)
    });
    section(rep, summary, "bandwidth", |_| {
        bandwidth(&mut g, scratch).map(Some)
    });
    section(rep, summary, "overlap", |rep| {
        // ~5 ms each: 256 MiB at ~54 GB/s; 10 M cycles at ~2 GHz.
        match g.overlap_probe(256 << 20, 10_000_000) {
            Ok(o) => rep.check("copy stream overlaps kernels", o.overlap >= MIN_OVERLAP,
                json!({"copy_ms": o.copy_ms, "compute_ms": o.compute_ms, "both_ms": o.both_ms, "overlap": o.overlap, "min": MIN_OVERLAP})),
            Err(e) => rep.check("copy stream overlaps kernels", false, json!({"error": e.to_string()})),
        }
        Ok(None)
    });
    true
}

/// `hmoe-cuda-check gemm`: the tiled GEMM table, its crossover and its knob sweep (each
/// variant on a fresh instance: one that faulted would leave its context unusable).
fn gemm_section(cfg: &GpuConfig, rep: &mut Report, summary: &mut Value) {
    type Step = fn(&mut GpuExperts, &mut Report) -> Result<Value>;
    let steps: [(&str, Step); 3] = [
        ("gemm_timings", gemm::gemm_timings),
        ("gemm_crossover", gemm::gemm_crossover),
        ("gemm_variants", gemm::gemm_variants),
    ];
    for (key, step) in steps {
        section(rep, summary, key, |rep| {
            let mut g = GpuExperts::new(cfg)?;
            step(&mut g, rep).map(Some)
        });
    }
}

/// Prints the JSON summary, the time per part and the count, writes the summary to
/// `out_dir`, exits 1 on a failure.
fn finish(
    mut summary: Value,
    rep: Report,
    out_dir: Option<PathBuf>,
    started: Instant,
) -> Result<()> {
    summary["checks"] = Value::Array(rep.checks.clone());
    summary["failed"] = json!(rep.failed);
    let total = started.elapsed().as_secs_f64();
    summary["sections"] = json!(rep
        .sections
        .iter()
        .map(|(n, s)| json!({"section": n, "seconds": s}))
        .collect::<Vec<_>>());
    summary["seconds"] = json!(total);
    let text = serde_json::to_string_pretty(&summary)?;
    println!("{text}");
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("cuda-check.json"), &text)?;
    }
    let parts: Vec<String> = rep
        .sections
        .iter()
        .map(|(n, s)| format!("{n} {s:.1}"))
        .collect();
    println!("time: {total:.1} s ({})", parts.join(", "));
    println!("{} checks, {} failed", rep.checks.len(), rep.failed);
    if rep.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
