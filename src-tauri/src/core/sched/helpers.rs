//! Pure logic of the scheduler panel: coalescing per-step telemetry into at most one
//! frame per animation frame with windowed counters, and the what-if replay.

use std::collections::{BTreeSet, VecDeque};

use hmoe_engine::sched::sim::{simulate_trace, CacheSize, SimOptions};
use hmoe_engine::sched::{
    MachineProfile, ModelShape, Placement, StepTelemetry, Trace, POLICY_NAMES,
};

use super::models::{
    Counters, LayerTimes, SchedFrame, StepSummary, WhatIfReport, WhatIfRequest, WhatIfRow,
    PLACE_CPU, PLACE_GPU_FETCH, PLACE_GPU_HIT,
};
use crate::core::error::{AppError, AppResult};

/// Steps the counters average over ("the last N tokens" of the panel).
pub const WINDOW_STEPS: usize = 64;
/// Steps per frame shown in the timeline; faster streams skip the older steps of a
/// frame in the timeline (never in the counters).
pub const TIMELINE_PER_FRAME: usize = 16;
/// Cache sizes of the what-if replay, as shares of all experts.
pub const WHATIF_FRACTIONS: [f64; 5] = [0.05, 0.1, 0.2, 0.4, 0.6];
/// Steps of cache warm-up the replay does not count (fewer on short traces).
const WHATIF_WARMUP: usize = 50;
/// Longest replay (the latest steps), so a reply takes seconds, not minutes.
pub const WHATIF_MAX_STEPS: usize = 2000;

/// What the counters need of one step.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    tokens: u32,
    wall_s: f64,
    accesses: u32,
    hits: u32,
    cpu_runs: u32,
    pcie_bytes: u64,
    cpu_s: f64,
    gpu_s: f64,
}

/// Coalesces steps between two frames; keeps a window of recent steps for counters.
#[derive(Debug, Default)]
pub struct FrameAggregator {
    window: VecDeque<Sample>,
    /// Relative errors of recent measured layers (for the median).
    errors: VecDeque<f64>,
    frame: SchedFrame,
    evicted: BTreeSet<[u16; 2]>,
    loaded: BTreeSet<[u16; 2]>,
}

fn summary(s: &StepTelemetry) -> (StepSummary, Sample) {
    let mut sum = Sample {
        tokens: s.n_tokens,
        wall_s: s.measured_s.unwrap_or(s.predicted_s),
        ..Default::default()
    };
    let mut layers = Vec::with_capacity(s.layers.len());
    for l in &s.layers {
        sum.accesses += l.experts.len() as u32;
        sum.hits += l.hits;
        sum.cpu_runs += l
            .experts
            .iter()
            .filter(|e| e.placement == Placement::Cpu)
            .count() as u32;
        sum.pcie_bytes += l.bytes_fetched + l.bytes_prefetched;
        // The CPU share is timed; the GPU side is predicted until a GPU backend times it.
        sum.cpu_s += l.measured_s.unwrap_or(l.predicted.cpu_s);
        sum.gpu_s += l.predicted.gpu_s;
        layers.push(LayerTimes {
            cpu: l.predicted.cpu_s as f32,
            gpu: l.predicted.gpu_s as f32,
            pcie: l.predicted.pcie_s as f32,
            finish: l.predicted.finish_s as f32,
            measured: l.measured_s.map_or(-1.0, |m| m as f32),
        });
    }
    let st = StepSummary {
        step: s.step,
        n_tokens: s.n_tokens,
        wall_s: sum.wall_s as f32,
        predicted_s: s.layers.iter().map(|l| l.predicted.finish_s).sum::<f64>() as f32,
        accesses: sum.accesses,
        hits: sum.hits,
        pcie_bytes: sum.pcie_bytes,
        layers,
    };
    (st, sum)
}

fn place_code(p: Placement) -> u16 {
    match p {
        Placement::GpuHit => PLACE_GPU_HIT,
        Placement::GpuFetch => PLACE_GPU_FETCH,
        Placement::Cpu => PLACE_CPU,
    }
}

/// Median of a slice (None when empty).
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

impl FrameAggregator {
    /// A fresh aggregator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Steps waiting for the next frame.
    pub fn pending(&self) -> u32 {
        self.frame.steps
    }

    /// The engine dropped `n` steps this subscriber was too slow for.
    pub fn lagged(&mut self, n: u64) {
        self.frame.lagged += n;
    }

    /// Adds one step.
    pub fn push(&mut self, s: &StepTelemetry) {
        let (st, sample) = summary(s);
        for l in &s.layers {
            if let Some(m) = l.measured_s.filter(|&m| m > 0.0) {
                self.errors.push_back((l.predicted.finish_s - m).abs() / m);
            }
            for k in &l.evicted {
                self.evicted.insert([k.layer, k.expert]);
            }
            for k in &l.loaded {
                self.loaded.insert([k.layer, k.expert]);
            }
            for e in &l.experts {
                if e.placement == Placement::GpuFetch {
                    self.loaded.insert([l.layer, e.expert]);
                }
            }
        }
        let max_errors = WINDOW_STEPS * s.layers.len().max(1);
        while self.errors.len() > max_errors {
            self.errors.pop_front();
        }
        self.window.push_back(sample);
        while self.window.len() > WINDOW_STEPS {
            self.window.pop_front();
        }
        let f = &mut self.frame;
        f.steps += 1;
        f.tokens += s.n_tokens;
        f.last_step = s.step;
        f.current = s
            .layers
            .iter()
            .map(|l| {
                l.experts
                    .iter()
                    .map(|e| [e.expert, place_code(e.placement)])
                    .collect()
            })
            .collect();
        f.timeline.push(st);
        if f.timeline.len() > TIMELINE_PER_FRAME {
            f.timeline.remove(0);
        }
    }

    /// Counters over the window.
    pub fn counters(&self) -> Counters {
        let mut t = Sample::default();
        for s in &self.window {
            t.tokens += s.tokens;
            t.wall_s += s.wall_s;
            t.accesses += s.accesses;
            t.hits += s.hits;
            t.cpu_runs += s.cpu_runs;
            t.pcie_bytes += s.pcie_bytes;
            t.cpu_s += s.cpu_s;
            t.gpu_s += s.gpu_s;
        }
        let per_wall = |x: f64| if t.wall_s > 0.0 { x / t.wall_s } else { 0.0 };
        let errors: Vec<f64> = self.errors.iter().copied().collect();
        Counters {
            window_steps: self.window.len() as u32,
            tok_s: per_wall(t.tokens as f64),
            hit_rate: t.hits as f64 / t.accesses.max(1) as f64,
            pcie_gbps: per_wall(t.pcie_bytes as f64) / 1e9,
            cpu_util: per_wall(t.cpu_s).min(1.0),
            gpu_util: per_wall(t.gpu_s).min(1.0),
            cost_error: median(&errors),
            cpu_share: t.cpu_runs as f64 / t.accesses.max(1) as f64,
        }
    }

    /// The frame of the steps since the last flush (None if there were none).
    pub fn flush(&mut self) -> Option<SchedFrame> {
        if self.frame.steps == 0 {
            return None;
        }
        let mut f = std::mem::take(&mut self.frame);
        f.evicted = std::mem::take(&mut self.evicted).into_iter().collect();
        f.loaded = std::mem::take(&mut self.loaded).into_iter().collect();
        f.counters = self.counters();
        Some(f)
    }
}

/// The steps of `trace` from `from_step` on (the latest `max_steps` of them).
pub fn slice_trace(trace: &Trace, from_step: Option<u64>, max_steps: usize) -> Trace {
    let from = from_step.unwrap_or(0);
    let steps: Vec<_> = trace.steps.iter().filter(|s| s.step >= from).collect();
    let skip = steps.len().saturating_sub(max_steps);
    Trace {
        header: trace.header.clone(),
        steps: steps.into_iter().skip(skip).cloned().collect(),
    }
}

/// Replays `trace` under every policy at [`WHATIF_FRACTIONS`] of the experts.
pub fn what_if(
    trace: &Trace,
    shape: &ModelShape,
    req: &WhatIfRequest,
    current_policy: &str,
) -> AppResult<WhatIfReport> {
    let trace = slice_trace(trace, req.from_step, WHATIF_MAX_STEPS);
    if trace.steps.len() < 2 {
        return Err(AppError::State(
            "nothing to replay yet: generate a reply first".into(),
        ));
    }
    let profile_name = req.profile.as_deref().unwrap_or("h100");
    if !["h100", "build"].contains(&profile_name) {
        return Err(AppError::invalid("profile", "one of h100, build"));
    }
    let profile = MachineProfile::builtin_or_load(profile_name)
        .map_err(|e| AppError::Engine(e.to_string()))?;
    let warmup = WHATIF_WARMUP.min(trace.steps.len() / 5);
    let opts = SimOptions {
        warmup_steps: warmup,
        ..SimOptions::default()
    };
    let sizes: Vec<CacheSize> = WHATIF_FRACTIONS
        .iter()
        .map(|&f| CacheSize::Fraction(f))
        .collect();
    let policies: Vec<String> = POLICY_NAMES.iter().map(|p| p.to_string()).collect();
    let rep = simulate_trace(&trace, shape, &profile, &sizes, &policies, &opts)
        .map_err(|e| AppError::Engine(e.to_string()))?;
    let mut row_policies: Vec<String> = Vec::new();
    let rows = rep
        .rows
        .iter()
        .map(|r| {
            if !row_policies.contains(&r.policy) {
                row_policies.push(r.policy.clone());
            }
            WhatIfRow {
                policy: r.policy.clone(),
                size: r.size.clone(),
                cache_fraction: r.cache_fraction,
                hit_rate: r.hit_rate,
                belady_hit_rate: r.belady_hit_rate,
                tok_s: if r.time_per_token_s > 0.0 {
                    1.0 / r.time_per_token_s
                } else {
                    0.0
                },
                speedup: r.speedup_vs_cpu_only,
                pcie_bytes_per_token: r.pcie_bytes_per_token,
            }
        })
        .collect();
    let tokens = trace
        .steps
        .iter()
        .skip(warmup)
        .map(|s| s.tokens as u64)
        .sum();
    Ok(WhatIfReport {
        steps: rep.steps,
        tokens,
        warmup_steps: warmup,
        profile: rep.profile,
        shape: rep.shape,
        current_policy: current_policy.to_string(),
        policies: row_policies,
        sizes: sizes.iter().map(|s| s.label()).collect(),
        rows,
    })
}

/// Checks that `svg` is an SVG document of at most `max_bytes` (the plot the UI hands
/// over for saving).
pub fn check_svg(svg: &str, max_bytes: usize) -> AppResult<()> {
    if svg.len() > max_bytes {
        return Err(AppError::invalid(
            "svg",
            format!("larger than {max_bytes} bytes"),
        ));
    }
    let head = svg.trim_start();
    if !(head.starts_with("<svg") || head.starts_with("<?xml"))
        || !svg.trim_end().ends_with("</svg>")
    {
        return Err(AppError::invalid("svg", "not an SVG document"));
    }
    Ok(())
}
