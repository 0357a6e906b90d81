//! `hmoe bench --sweep`: one loaded model measured under every placement setting in one
//! run (policies × VRAM budgets × prefetch on/off, routing from the model or replayed
//! from a synthetic trace), switching settings between runs without reloading.

use crate::api::RuntimeOptions;
use crate::bench::{bench_prompt, bench_prompt_from, decode_greedy, prefill};
use crate::error::Result;
use crate::generate::sampler::argmax;
use crate::moe::placer::TELEMETRY_BUFFER;
use crate::service::Engine;
use hmoe_sched::synth::{generate as synth_trace, SynthParams};
use hmoe_sched::StepTelemetry;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::broadcast::error::TryRecvError;

/// Trace steps generated for replay (longer than any decode run, so nothing repeats).
const REPLAY_STEPS: usize = 2048;
/// Prompt tokens before a replayed decode run.
const REPLAY_PROMPT: usize = 16;
/// Token offset of the untimed cold prompt (any offset gives other tokens than the
/// timed prompt's).
const COLD_PROMPT_OFFSET: u64 = 7_919;
/// Seed of the replayed trace (fixed: every setting sees the same routing).
const REPLAY_SEED: u64 = 42;

/// What to sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Cache policies (`cpu-only` runs once, with no budget).
    pub policies: Vec<String>,
    /// Expert VRAM budgets in bytes; `None`: the whole arena.
    pub budgets: Vec<Option<u64>>,
    /// Prefetch settings to try.
    pub prefetch: Vec<bool>,
    /// Routing sources: `false` = the model's router, `true` = replayed calibrated trace.
    pub replay: Vec<bool>,
    /// Prompt tokens for prefill (0: skip prefill timing, decode after a 1-token prompt).
    pub prompt_len: usize,
    /// Tokens decoded per setting.
    pub gen: usize,
    /// CPU threads (0: keep the engine's).
    pub threads: usize,
    /// Tokens decoded before the timed run (not timed, not counted): a new setting
    /// starts with an empty cache, and a cache is judged warm, as in a conversation.
    pub warmup: usize,
}

/// One measured setting.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    /// "model" (the router of the random-weight model) or "replay" (calibrated trace).
    pub routing: &'static str,
    /// Cache policy.
    pub policy: String,
    /// Expert VRAM budget asked for, bytes (None: the whole arena).
    pub budget_bytes: Option<u64>,
    /// Slots the scheduler's cache really had.
    pub cache_slots: u32,
    /// Next-layer prefetch.
    pub prefetch: bool,
    /// Prefill tokens per second with the cache as a conversation leaves it: after an
    /// untimed prefill of another prompt of the same length (as llama-bench warms up).
    /// Model routing only; 0 if not measured.
    pub prefill_tok_s: f64,
    /// Prefill tokens per second of that first prompt, right after the setting changed:
    /// the VRAM cache starts empty and fills while it runs (model routing only).
    pub cold_prefill_tok_s: f64,
    /// Decode tokens per second.
    pub decode_tok_s: f64,
    /// Prefill seconds in MoE layers, and of those the CPU and GPU shares' times
    /// (model routing only; zeros otherwise).
    pub prefill_moe_s: [f64; 3],
    /// Prefill seconds in the dense device's calls (0 with the dense path on the CPU), in
    /// the MoE blocks (routing, placement and the layers) and in the scheduler (model
    /// routing only): with `prefill_moe_s`, where prefill goes.
    pub prefill_dense_block_sched_s: [f64; 3],
    /// Routed experts found resident in decode.
    pub hit_rate: f64,
    /// Share of routed experts run on the GPU in decode.
    pub gpu_share: f64,
    /// Host→device GB/s during decode (demand + background loads, as planned).
    pub pcie_gb_s: f64,
    /// Median |predicted − measured| / measured of decode MoE layer times.
    pub layer_pred_err_median: f64,
    /// Median |predicted − measured| / measured of whole decode steps.
    pub step_pred_err_median: f64,
    /// The timed prefill's MoE layers (model routing only; NaN otherwise): median
    /// |predicted − measured| / measured of the layer time, and the median
    /// predicted ÷ measured of the CPU and of the GPU share (where the share ran): below 1
    /// the cost model thinks that side faster than it is.
    pub prefill_pred: [f64; 3],
    /// MoE milliseconds per decoded token (layers issued to both outputs, measured).
    pub moe_ms_per_token: f64,
    /// Of `moe_ms_per_token`: the CPU shares' time (host clock), summed over layers.
    pub moe_cpu_ms_per_token: f64,
    /// Of `moe_ms_per_token`: the GPU shares' time (CUDA events: upload, waits for copies,
    /// kernels, download), summed over layers.
    pub moe_gpu_ms_per_token: f64,
    /// Everything else per decoded token (attention, norms, routers, head, sampling).
    pub dense_ms_per_token: f64,
    /// Of `dense_ms_per_token`: host time in the GPU dense path's calls (0 on the CPU).
    pub dense_device_ms_per_token: f64,
    /// Scheduler (planning + feedback) seconds per decoded token.
    pub sched_s_per_token: f64,
    /// `sched_s_per_token` ÷ decode seconds per token.
    pub sched_share: f64,
    /// Of `sched_share`: the placement alone (`Placer::place`, on the host's path from the
    /// router to the experts; the feedback runs while the GPU computes).
    pub place_share: f64,
    /// Of `sched_share`: the part in the dense calls' hooks, after their kernels were
    /// launched (the layers' feedback, the steps' telemetry), hidden while the GPU runs.
    pub hooked_share: f64,
    /// Share of decode MoE layers routed on the device (`HMOE_DEVICE_ROUTING`).
    pub device_routed: f64,
}

/// What a sweep row's job on the engine thread measured (seconds).
struct EngineTimes {
    prefill_s: f64,
    /// The first, cold prefill (0 when not run).
    cold_prefill_s: f64,
    decode_s: f64,
    /// Scheduler time in the timed decode steps, and of it the placement alone.
    sched_s: f64,
    place_s: f64,
    hooked_s: f64,
    /// The dense device's calls in the timed decode steps.
    device_s: f64,
    /// Prefill: dense device calls, MoE blocks, scheduler.
    prefill_split: [f64; 3],
    /// Share of the timed decode steps' MoE layers routed on the device.
    routed_share: f64,
}

/// The steps of the timed prompt among a row's many-token steps: its chunks come last.
/// What a prefill layer placed where, summed over the timed prompt's layers: the data
/// behind the cost model's prefill error (which side it mispredicts, at what share size).
#[derive(Debug, Default)]
struct PrefillMix {
    layers: u64,
    /// Experts and their tokens: `[cpu, gpu hit, gpu fetch]`.
    experts: [u64; 3],
    tokens: [u64; 3],
    /// Predicted and measured seconds: `[cpu, gpu]`.
    predicted: [f64; 2],
    measured: [f64; 2],
    copy_s: f64,
}

impl PrefillMix {
    fn add(&mut self, l: &hmoe_sched::LayerTelemetry) {
        use hmoe_sched::Placement;
        self.layers += 1;
        for e in &l.experts {
            let i = match e.placement {
                Placement::Cpu => 0,
                Placement::GpuHit => 1,
                Placement::GpuFetch => 2,
            };
            self.experts[i] += 1;
            self.tokens[i] += e.n_tokens as u64;
        }
        self.predicted[0] += l.predicted.cpu_s;
        self.predicted[1] += l.predicted.gpu_s;
        self.measured[0] += l.measured_cpu_s.unwrap_or(0.0);
        self.measured[1] += l.measured_gpu_s.unwrap_or(0.0);
        self.copy_s += l.measured_copy_s.unwrap_or(0.0);
    }

    /// Per-layer means, one line.
    fn report(&self) -> String {
        let n = self.layers.max(1) as f64;
        let per = |i: usize| {
            let e = self.experts[i] as f64;
            format!(
                "{:.1} ({:.1} tok)",
                e / n,
                self.tokens[i] as f64 / e.max(1.0)
            )
        };
        format!(
            "prefill mix a layer ({} layers): CPU {} experts, predicted {:.3} ms, measured \
             {:.3} ms; GPU {} hits + {} fetched, predicted {:.3} ms, measured {:.3} ms, copy \
             {:.3} ms",
            self.layers,
            per(0),
            self.predicted[0] / n * 1e3,
            self.measured[0] / n * 1e3,
            per(1),
            per(2),
            self.predicted[1] / n * 1e3,
            self.measured[1] / n * 1e3,
            self.copy_s / n * 1e3,
        )
    }
}

fn timed_prompt_steps<T>(many: &[T], prompt_len: usize, chunk: usize) -> &[T] {
    let chunks = prompt_len.div_ceil(chunk.max(1));
    &many[many.len().saturating_sub(chunks)..]
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rel(pred: f64, meas: f64) -> Option<f64> {
    (meas > 0.0 && pred.is_finite()).then(|| (pred - meas).abs() / meas)
}

/// Predicted ÷ measured, where the share ran (both times positive).
fn ratio(pred: f64, meas: Option<f64>) -> Option<f64> {
    meas.filter(|&m| m > 0.0 && pred > 0.0).map(|m| pred / m)
}

/// Runs every setting of `opts` on `engine` and returns one row per setting.
pub fn sweep(
    engine: &Engine,
    opts: &SweepOptions,
    mut progress: impl FnMut(&SweepRow),
) -> Result<Vec<SweepRow>> {
    let base = engine.runtime_options();
    let threads = if opts.threads > 0 {
        opts.threads
    } else {
        base.threads
    };
    let trace = synth_trace(
        engine.model_shape(),
        &SynthParams::qwen3_calibrated(),
        REPLAY_STEPS,
        REPLAY_SEED,
    );
    let mut rows = Vec::new();
    for &replay in &opts.replay {
        for policy in &opts.policies {
            let cpu_only = policy == "cpu-only";
            let budgets: Vec<Option<u64>> = if cpu_only {
                vec![Some(0)]
            } else {
                opts.budgets.clone()
            };
            for budget in budgets {
                let prefetches: Vec<bool> = if cpu_only {
                    vec![false]
                } else {
                    opts.prefetch.clone()
                };
                for prefetch in prefetches {
                    engine.set_runtime_options(RuntimeOptions {
                        threads,
                        policy: policy.clone(),
                        vram_budget_bytes: budget,
                        prefetch,
                    })?;
                    let row = run_one(
                        engine,
                        opts,
                        replay.then(|| trace.clone()),
                        policy,
                        budget,
                        prefetch,
                    )?;
                    progress(&row);
                    rows.push(row);
                }
            }
        }
    }
    engine.set_runtime_options(base)?;
    Ok(rows)
}

fn run_one(
    engine: &Engine,
    opts: &SweepOptions,
    replay: Option<hmoe_sched::Trace>,
    policy: &str,
    budget: Option<u64>,
    prefetch: bool,
) -> Result<SweepRow> {
    let replaying = replay.is_some();
    let vocab_size = engine.info().config.vocab_size;
    // Replayed rows time decode only: a short prompt is enough to start it.
    let prompt_len = if replaying {
        REPLAY_PROMPT
    } else {
        opts.prompt_len.max(1)
    };
    let gen = opts.gen.max(1);
    let warmup = opts.warmup;
    let chunk = engine.prefill_chunk();
    let mut rx = engine.subscribe_telemetry();
    let m = engine.with_model(move |model, moe| -> Result<EngineTimes> {
        // The cold prompt: other tokens than the timed one (a new message in a chat).
        let cold_prefill_s = if replaying {
            0.0
        } else {
            let cold = bench_prompt_from(prompt_len, vocab_size, COLD_PROMPT_OFFSET);
            let mut cache = model.new_cache(prompt_len);
            let t = Instant::now();
            prefill(model, moe, &mut cache, &cold, chunk)?;
            t.elapsed().as_secs_f64()
        };
        let prompt = bench_prompt(prompt_len, vocab_size);
        let mut cache = model.new_cache(prompt_len + warmup + gen + 1);
        let (dense0, block0, sched0) = (
            model.device_dense_seconds(),
            model.moe_block_seconds(),
            moe.summary().sched_seconds,
        );
        let t0 = Instant::now();
        let last = prefill(model, moe, &mut cache, &prompt, chunk)?;
        let prefill_s = t0.elapsed().as_secs_f64();
        let prefill_split = [
            model.device_dense_seconds() - dense0,
            model.moe_block_seconds() - block0,
            moe.summary().sched_seconds - sched0,
        ];
        moe.set_routing_replay(replay);
        let tok = decode_greedy(model, moe, &mut cache, argmax(&last), warmup)?;
        let before = moe.summary().clone();
        let device0 = model.device_dense_seconds();
        let t1 = Instant::now();
        decode_greedy(model, moe, &mut cache, tok, gen)?;
        let decode_s = t1.elapsed().as_secs_f64();
        let after = moe.summary();
        let routed = (after.routed_layers - before.routed_layers) as f64;
        let times = EngineTimes {
            prefill_s,
            cold_prefill_s,
            decode_s,
            sched_s: after.sched_seconds - before.sched_seconds,
            place_s: after.place_seconds - before.place_seconds,
            hooked_s: after.hooked_sched_seconds - before.hooked_sched_seconds,
            device_s: model.device_dense_seconds() - device0,
            prefill_split,
            routed_share: routed / (gen * model.cfg.n_layers).max(1) as f64,
        };
        moe.set_routing_replay(None);
        // The last step's telemetry waits for a GPU wait that will not come: out now.
        moe.publish_telemetry();
        Ok(times)
    })??;
    let EngineTimes {
        prefill_s,
        cold_prefill_s,
        decode_s,
        sched_s,
        place_s,
        hooked_s,
        device_s,
        prefill_split,
        routed_share: routed_layers,
    } = m;
    let mut steps: Vec<Arc<StepTelemetry>> = Vec::new();
    let mut skipped = 0u64;
    loop {
        match rx.try_recv() {
            Ok(s) => steps.push(s),
            // A row of more steps than the channel keeps: its first ones are gone, the
            // rest still come (the decode columns use the last steps).
            Err(TryRecvError::Lagged(n)) => skipped += n,
            Err(_) => break,
        }
    }
    if skipped > 0 {
        tracing::warn!(
            "{skipped} early steps of the {policy} row fell out of the telemetry buffer \
             ({TELEMETRY_BUFFER} steps): its prefill columns may miss them"
        );
    }
    // The timed decode steps are the last `gen` one-token steps (warm-up comes first).
    let ones: Vec<&StepTelemetry> = steps
        .iter()
        .filter(|s| s.n_tokens == 1)
        .map(|s| &**s)
        .collect();
    let decode = &ones[ones.len().saturating_sub(gen)..];
    // Prefill: the timed prompt's chunks (the last many-token steps: the cold prompt's
    // come first), MoE wall and its CPU/GPU shares.
    let many: Vec<&StepTelemetry> = steps
        .iter()
        .filter(|s| s.n_tokens > 1)
        .map(|s| &**s)
        .collect();
    let mut prefill_moe = [0.0f64; 3];
    let (mut p_err, mut p_cpu, mut p_gpu) = (Vec::new(), Vec::new(), Vec::new());
    let mut mix = PrefillMix::default();
    for s in timed_prompt_steps(&many, prompt_len, chunk) {
        for l in &s.layers {
            mix.add(l);
            if let Some(e) = l.measured_s.and_then(|m| rel(l.predicted.finish_s, m)) {
                p_err.push(e);
            }
            p_cpu.extend(ratio(l.predicted.cpu_s, l.measured_cpu_s));
            p_gpu.extend(ratio(l.predicted.gpu_s, l.measured_gpu_s));
            prefill_moe[0] += l.measured_s.unwrap_or(0.0);
            prefill_moe[1] += l.measured_cpu_s.unwrap_or(0.0);
            prefill_moe[2] += l.measured_gpu_s.unwrap_or(0.0);
        }
    }
    if !replaying {
        tracing::info!(
            "{policy} budget {budget:?} prefetch {prefetch}: {}",
            mix.report()
        );
    }
    let (mut moe_s, mut cpu_s, mut gpu_s) = (0.0, 0.0, 0.0);
    let (mut routed, mut hits, mut on_gpu, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let (mut layer_err, mut step_err) = (Vec::new(), Vec::new());
    for s in decode {
        for l in &s.layers {
            routed += l.experts.len() as u64;
            hits += l.hits as u64;
            on_gpu += l
                .experts
                .iter()
                .filter(|e| e.placement != hmoe_sched::Placement::Cpu)
                .count() as u64;
            bytes += l.bytes_fetched + l.bytes_prefetched;
            moe_s += l.measured_s.unwrap_or(0.0);
            cpu_s += l.measured_cpu_s.unwrap_or(0.0);
            gpu_s += l.measured_gpu_s.unwrap_or(0.0);
            if let Some(e) = l.measured_s.and_then(|m| rel(l.predicted.finish_s, m)) {
                layer_err.push(e);
            }
        }
        if let Some(e) = s.measured_s.and_then(|m| rel(s.predicted_s, m)) {
            step_err.push(e);
        }
    }
    let snap = engine.scheduler_snapshot()?;
    let per_token = decode_s / gen as f64;
    Ok(SweepRow {
        routing: if replaying { "replay" } else { "model" },
        policy: policy.to_string(),
        budget_bytes: budget,
        cache_slots: snap.cache_slots,
        prefetch,
        prefill_tok_s: if replaying {
            0.0
        } else {
            prompt_len as f64 / prefill_s
        },
        cold_prefill_tok_s: if cold_prefill_s > 0.0 {
            prompt_len as f64 / cold_prefill_s
        } else {
            0.0
        },
        decode_tok_s: gen as f64 / decode_s,
        prefill_moe_s: if replaying { [0.0; 3] } else { prefill_moe },
        prefill_dense_block_sched_s: if replaying { [0.0; 3] } else { prefill_split },
        hit_rate: hits as f64 / routed.max(1) as f64,
        gpu_share: on_gpu as f64 / routed.max(1) as f64,
        pcie_gb_s: bytes as f64 / decode_s / 1e9,
        layer_pred_err_median: median(layer_err),
        step_pred_err_median: median(step_err),
        prefill_pred: [median(p_err), median(p_cpu), median(p_gpu)],
        moe_ms_per_token: moe_s / gen as f64 * 1e3,
        moe_cpu_ms_per_token: cpu_s / gen as f64 * 1e3,
        moe_gpu_ms_per_token: gpu_s / gen as f64 * 1e3,
        dense_ms_per_token: (per_token - moe_s / gen as f64) * 1e3,
        dense_device_ms_per_token: device_s / gen as f64 * 1e3,
        sched_s_per_token: sched_s / gen as f64,
        sched_share: sched_s / gen as f64 / per_token,
        place_share: place_s / gen as f64 / per_token,
        hooked_share: hooked_s / gen as f64 / per_token,
        device_routed: routed_layers,
    })
}

/// Prints rows as a Markdown table.
pub fn print_table(rows: &[SweepRow]) {
    println!("| routing | policy | budget | slots | prefetch | prefill tok/s | cold prefill tok/s | prefill MoE s (CPU/GPU) | prefill dense/MoE-block/sched s | prefill layer err (pred/meas CPU, GPU) | decode tok/s | hit rate | GPU share | PCIe GB/s | layer err | step err | MoE ms/tok | MoE CPU ms | MoE GPU ms | dense ms/tok | dense GPU calls ms | sched us/token | sched share | place share | hooked share | device-routed |");
    println!(
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in rows {
        println!("{}", row_line(r));
    }
}

/// One row of [`print_table`].
pub fn row_line(r: &SweepRow) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.2} ({:.2}/{:.2}) | {:.2}/{:.2}/{:.2} | {:.1}% ({:.2}, {:.2}) | {:.2} | {:.1}% | {:.1}% | {:.2} | {:.1}% | {:.1}% | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.2}% | {:.2}% | {:.2}% | {:.0}% |",
        r.routing,
        r.policy,
        r.budget_bytes.map_or("all".into(), |b| if b >= 1 << 30 {
            format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
        } else {
            format!("{} MiB", b >> 20)
        }),
        r.cache_slots,
        if r.prefetch { "on" } else { "off" },
        r.prefill_tok_s,
        r.cold_prefill_tok_s,
        r.prefill_moe_s[0],
        r.prefill_moe_s[1],
        r.prefill_moe_s[2],
        r.prefill_dense_block_sched_s[0],
        r.prefill_dense_block_sched_s[1],
        r.prefill_dense_block_sched_s[2],
        r.prefill_pred[0] * 100.0,
        r.prefill_pred[1],
        r.prefill_pred[2],
        r.decode_tok_s,
        r.hit_rate * 100.0,
        r.gpu_share * 100.0,
        r.pcie_gb_s,
        r.layer_pred_err_median * 100.0,
        r.step_pred_err_median * 100.0,
        r.moe_ms_per_token,
        r.moe_cpu_ms_per_token,
        r.moe_gpu_ms_per_token,
        r.dense_ms_per_token,
        r.dense_device_ms_per_token,
        r.sched_s_per_token * 1e6,
        r.sched_share * 100.0,
        r.place_share * 100.0,
        r.hooked_share * 100.0,
        r.device_routed * 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_timed_prompts_chunks_count_as_its_prefill() {
        // A cold 1024-token prompt in 512-token chunks, then the timed one.
        let steps = ["cold 1", "cold 2", "timed 1", "timed 2"];
        assert_eq!(
            timed_prompt_steps(&steps, 1024, 512),
            ["timed 1", "timed 2"]
        );
        // A last partial chunk is a step too.
        assert_eq!(timed_prompt_steps(&steps, 1000, 384), &steps[1..]);
        // Fewer steps than chunks (replayed rows run no cold prompt): all of them.
        assert_eq!(timed_prompt_steps(&steps[..1], 1024, 512), &steps[..1]);
        assert!(timed_prompt_steps::<u8>(&[], 20, 0).is_empty());
    }

    #[test]
    fn the_prefill_mix_counts_each_placement_and_means_per_layer() {
        use hmoe_sched::{telemetry::ExpertEvent, LayerTelemetry, Placement, PlanTiming};
        let e = |expert, placement, n_tokens| ExpertEvent {
            expert,
            placement,
            n_tokens,
        };
        let layer = LayerTelemetry {
            layer: 0,
            experts: vec![
                e(0, Placement::Cpu, 10),
                e(1, Placement::Cpu, 30),
                e(2, Placement::GpuHit, 40),
                e(3, Placement::GpuFetch, 8),
            ],
            predicted: PlanTiming {
                cpu_s: 2e-3,
                gpu_s: 1e-3,
                pcie_s: 0.0,
                finish_s: 2e-3,
            },
            measured_s: Some(2e-3),
            measured_cpu_s: Some(1e-3),
            measured_gpu_s: Some(3e-3),
            measured_copy_s: Some(0.5e-3),
            bytes_fetched: 0,
            bytes_prefetched: 0,
            evictions: 0,
            prefetches: 0,
            hits: 1,
            prefetch_hits: 0,
            evicted: vec![],
            loaded: vec![],
        };
        let mut mix = PrefillMix::default();
        mix.add(&layer);
        mix.add(&layer);
        assert_eq!(
            mix.report(),
            "prefill mix a layer (2 layers): CPU 2.0 (20.0 tok) experts, predicted 2.000 ms, \
             measured 1.000 ms; GPU 1.0 (40.0 tok) hits + 1.0 (8.0 tok) fetched, predicted \
             1.000 ms, measured 3.000 ms, copy 0.500 ms"
        );
    }
}
