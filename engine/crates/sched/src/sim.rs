//! The simulator: replays a routing trace through the same scheduler, cache and cost
//! model the engine uses, without computing anything, per policy and cache size.

use std::fmt::Write;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::belady::belady_hits;
use crate::cache::ExpertCache;
use crate::cost::CostModel;
use crate::error::{Result, SchedError};
use crate::policy::{make_policy, ValueParams};
use crate::profile::MachineProfile;
use crate::sched::{PredictedExpert, RoutedExpert, SchedConfig, Scheduler, SolverKind};
use crate::shape::{parse_bytes, ModelShape};
use crate::svg::{render, Panel, Series};
use crate::telemetry::{LayerTelemetry, StepTelemetry, Telemetry, TelemetryTotals};
use crate::trace::Trace;

/// A cache size: a share of all experts, or a whole-card VRAM budget from which the dense
/// weights and `reserve_bytes` (KV cache, activations) are taken first.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum CacheSize {
    /// Share of the model's experts (0..1).
    Fraction(f64),
    /// VRAM budget of the card in bytes.
    VramBudget(u64),
}

impl std::str::FromStr for CacheSize {
    type Err = SchedError;
    /// `20%` → fraction, `16GiB` → VRAM budget.
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p
                .trim()
                .parse()
                .map_err(|_| SchedError::BadSize(s.into()))?;
            if !(0.0..=100.0).contains(&v) {
                return Err(SchedError::BadSize(s.into()));
            }
            return Ok(CacheSize::Fraction(v / 100.0));
        }
        Ok(CacheSize::VramBudget(parse_bytes(t)?))
    }
}

impl CacheSize {
    /// Slots for `shape`.
    pub fn slots(&self, shape: &ModelShape, reserve_bytes: u64) -> usize {
        match *self {
            CacheSize::Fraction(f) => {
                ((f * shape.total_experts() as f64).round() as usize).min(shape.total_experts())
            }
            CacheSize::VramBudget(b) => ExpertCache::slots_for_budget(
                shape,
                b.saturating_sub(shape.dense_bytes + reserve_bytes),
            ),
        }
    }

    /// Label for tables.
    pub fn label(&self) -> String {
        match *self {
            CacheSize::Fraction(f) => format!("{:.0}%", f * 100.0),
            CacheSize::VramBudget(b) => format!("{:.0}GiB", b as f64 / (1u64 << 30) as f64),
        }
    }
}

/// Simulator options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SimOptions {
    /// VRAM kept for KV cache and activations when a size is a VRAM budget.
    pub reserve_bytes: u64,
    /// Steps replayed before counting (cache warm-up).
    pub warmup_steps: usize,
    /// Share of the trace's steps that profiles `static-hot`'s set.
    pub hot_prefix: f64,
    /// Also run `value` with next-layer prefetch (row `value+pf`).
    pub with_prefetch: bool,
    /// Scheduler settings (solver, background admission, prefetch thresholds).
    pub sched: SchedConfig,
    /// `value` policy parameters.
    pub value: ValueParams,
    /// Replay at most this many steps.
    pub max_steps: Option<usize>,
    /// Per-layer partitioned caches (every dynamic policy) instead of one global pool.
    pub partitioned: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            reserve_bytes: 1 << 30,
            warmup_steps: 50,
            hot_prefix: 0.2,
            with_prefetch: true,
            sched: SchedConfig::default(),
            value: ValueParams::default(),
            max_steps: None,
            partitioned: true,
        }
    }
}

/// What `hmoe simulate` takes.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulateArgs {
    /// Trace file (JSON lines).
    pub trace: PathBuf,
    /// Shape preset to cost the trace with (default: the trace's own shape).
    pub model_shape: Option<String>,
    /// Cache sizes (`8GiB`, `20%`).
    pub sizes: Vec<CacheSize>,
    /// Policy names.
    pub policies: Vec<String>,
    /// Built-in profile name (`h100`, `build`) or profile JSON path (default `h100`).
    pub profile: Option<String>,
    /// SVG plot path.
    pub out_svg: Option<PathBuf>,
    /// JSON report path.
    pub out_json: Option<PathBuf>,
    /// Options.
    pub options: SimOptions,
}

impl SimulateArgs {
    /// Arguments with default options, built-in `h100` profile, the trace's own shape and
    /// no output files (set the public fields to change them).
    pub fn new(trace: impl Into<PathBuf>, sizes: Vec<CacheSize>, policies: Vec<String>) -> Self {
        Self {
            trace: trace.into(),
            model_shape: None,
            sizes,
            policies,
            profile: None,
            out_svg: None,
            out_json: None,
            options: SimOptions::default(),
        }
    }
}

/// Result of one policy at one size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimRow {
    /// Size label.
    pub size: String,
    /// Slots.
    pub slots: usize,
    /// Slots ÷ experts.
    pub cache_fraction: f64,
    /// Policy (`value+pf`: with prefetch).
    pub policy: String,
    /// GPU hits ÷ routed uses.
    pub hit_rate: f64,
    /// Belady's bound at this size.
    pub belady_hit_rate: f64,
    /// PCIe bytes per token.
    pub pcie_bytes_per_token: f64,
    /// Predicted seconds per token.
    pub time_per_token_s: f64,
    /// cpu-only time ÷ this time.
    pub speedup_vs_cpu_only: f64,
    /// Mean scheduler decision time per layer (plan + finish), nanoseconds.
    pub decision_ns: f64,
    /// Totals.
    pub totals: TelemetryTotals,
}

/// The simulator's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimReport {
    /// Trace source.
    pub trace_source: String,
    /// Shape costed.
    pub shape: String,
    /// Profile used.
    pub profile: String,
    /// Steps counted (after warm-up).
    pub steps: usize,
    /// Rows, by size then policy.
    pub rows: Vec<SimRow>,
}

/// Outcome of one policy run.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRun {
    /// Totals over counted steps.
    pub totals: TelemetryTotals,
    /// Mean decision time per layer (ns).
    pub decision_ns: f64,
}

/// Replays `trace` with one policy and slot count.
pub fn run_policy(
    trace: &Trace,
    shape: &ModelShape,
    profile: &MachineProfile,
    policy: &str,
    n_slots: usize,
    opts: &SimOptions,
    sched_cfg: SchedConfig,
) -> Result<PolicyRun> {
    let steps = opts.max_steps.unwrap_or(usize::MAX).min(trace.steps.len());
    let hot_steps = ((steps as f64 * opts.hot_prefix).round() as usize).max(1);
    let counts = trace.counts(hot_steps);
    let mut cost = CostModel::new(profile.clone());
    let mut sched = Scheduler::new(shape, &mut cost, sched_cfg);
    let saving = vec![
        sched.costs().hit_saving(1) / shape.expert_bytes().max(1) as f64;
        shape.n_layers as usize
    ];
    let pol = make_policy(policy, shape, Some(&counts), opts.value, &saving)?;
    let mut cache = ExpertCache::with_partition(shape, n_slots, pol, opts.partitioned);
    let mut tel = Telemetry::default();
    let mut routed: Vec<RoutedExpert> = Vec::new();
    let mut pred: Vec<PredictedExpert> = Vec::new();
    let (mut dec_ns, mut dec_n) = (0u128, 0u64);
    let mut plan = crate::sched::LayerPlan::default();
    let ebytes = shape.expert_bytes();
    for (si, step) in trace.steps.iter().take(steps).enumerate() {
        let mut layers = Vec::with_capacity(step.layers.len());
        let mut t = profile.token_fixed_s;
        for (l, layer) in step.layers.iter().enumerate() {
            routed.clear();
            routed.extend(layer.routed());
            pred.clear();
            pred.extend(layer.predicted());
            let t0 = Instant::now();
            sched.plan_layer_into(
                step.step, l as u16, &routed, &pred, &mut cache, 0.0, &mut plan,
            );
            sched.finish_layer(&mut cache);
            dec_ns += t0.elapsed().as_nanos();
            dec_n += 1;
            t += sched.dense_time(step.tokens) + plan.predicted.finish_s;
            if si >= opts.warmup_steps {
                layers.push(LayerTelemetry::from_plan(&plan, ebytes));
            }
        }
        if si >= opts.warmup_steps {
            tel.record(&StepTelemetry {
                step: step.step,
                n_tokens: step.tokens,
                layers,
                predicted_s: t,
                measured_s: None,
            });
        }
    }
    Ok(PolicyRun {
        totals: *tel.totals(),
        decision_ns: dec_ns as f64 / dec_n.max(1) as f64,
    })
}

/// Checks that `shape` can cost `trace` (same layer and expert counts).
fn check_shape(trace: &Trace, shape: &ModelShape) -> Result<()> {
    let t = &trace.header.shape;
    if t.n_layers != shape.n_layers || t.n_experts != shape.n_experts {
        return Err(SchedError::InvalidArg(format!(
            "trace shape {} ({}x{}) does not match {} ({}x{})",
            t.name, t.n_layers, t.n_experts, shape.name, shape.n_layers, shape.n_experts
        )));
    }
    Ok(())
}

/// Runs every policy at every size on an in-memory trace.
pub fn simulate_trace(
    trace: &Trace,
    shape: &ModelShape,
    profile: &MachineProfile,
    sizes: &[CacheSize],
    policies: &[String],
    opts: &SimOptions,
) -> Result<SimReport> {
    check_shape(trace, shape)?;
    let steps = opts.max_steps.unwrap_or(usize::MAX).min(trace.steps.len());
    let mut rows = Vec::new();
    let no_pf = SchedConfig {
        prefetch: false,
        ..opts.sched
    };
    for size in sizes {
        let slots = size.slots(shape, opts.reserve_bytes);
        let (bh, bt) = belady_hits(&truncate(trace, steps), slots, opts.warmup_steps);
        let belady = bh as f64 / bt.max(1) as f64;
        let cpu = run_policy(trace, shape, profile, "cpu-only", 0, opts, no_pf)?;
        let cpu_t = cpu.totals.time_per_step();
        let mut runs: Vec<(String, PolicyRun)> = Vec::new();
        for p in policies {
            let run = if p == "cpu-only" {
                cpu.clone()
            } else {
                run_policy(trace, shape, profile, p, slots, opts, no_pf)?
            };
            runs.push((p.clone(), run));
        }
        if opts.with_prefetch && policies.iter().any(|p| p == "value") {
            let cfg = SchedConfig {
                prefetch: true,
                ..opts.sched
            };
            runs.push((
                "value+pf".into(),
                run_policy(trace, shape, profile, "value", slots, opts, cfg)?,
            ));
        }
        for (policy, run) in runs {
            let t = run.totals;
            rows.push(SimRow {
                size: size.label(),
                slots,
                cache_fraction: slots as f64 / shape.total_experts() as f64,
                policy,
                hit_rate: t.hit_rate(),
                belady_hit_rate: belady,
                pcie_bytes_per_token: t.pcie_bytes as f64 / t.tokens.max(1) as f64,
                time_per_token_s: t.wall_s / t.tokens.max(1) as f64,
                speedup_vs_cpu_only: cpu_t / t.time_per_step().max(1e-15),
                decision_ns: run.decision_ns,
                totals: t,
            });
        }
    }
    Ok(SimReport {
        trace_source: trace.header.source.clone(),
        shape: shape.name.clone(),
        profile: profile.name.clone(),
        steps: steps.saturating_sub(opts.warmup_steps),
        rows,
    })
}

fn truncate(trace: &Trace, steps: usize) -> Trace {
    if steps >= trace.steps.len() {
        return trace.clone();
    }
    Trace {
        header: trace.header.clone(),
        steps: trace.steps[..steps].to_vec(),
    }
}

/// `hmoe simulate`: loads the trace and profile, runs, writes the SVG and JSON if asked.
pub fn simulate(args: &SimulateArgs) -> Result<SimReport> {
    let trace = Trace::load(&args.trace)?;
    let shape = match &args.model_shape {
        Some(s) => ModelShape::preset(s)?,
        None => trace.header.shape.clone(),
    };
    let profile = MachineProfile::builtin_or_load(args.profile.as_deref().unwrap_or("h100"))?;
    if args.sizes.is_empty() || args.policies.is_empty() {
        return Err(SchedError::InvalidArg(
            "need at least one cache size and one policy".into(),
        ));
    }
    let report = simulate_trace(
        &trace,
        &shape,
        &profile,
        &args.sizes,
        &args.policies,
        &args.options,
    )?;
    if let Some(p) = &args.out_svg {
        std::fs::write(p, report.svg()).map_err(|source| SchedError::Io {
            op: "write",
            path: p.clone(),
            source,
        })?;
    }
    if let Some(p) = &args.out_json {
        let j = serde_json::to_string_pretty(&report).map_err(|source| SchedError::Json {
            path: p.clone(),
            line: 1,
            source,
        })?;
        std::fs::write(p, j).map_err(|source| SchedError::Io {
            op: "write",
            path: p.clone(),
            source,
        })?;
    }
    Ok(report)
}

impl SimReport {
    /// A text table.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "trace: {}\nshape: {}  profile: {}  steps counted: {}",
            self.trace_source, self.shape, self.profile, self.steps
        );
        let _ = writeln!(
            o,
            "{:>7} {:>5} {:>6} {:>10} {:>6} {:>7} {:>9} {:>8} {:>7} {:>6} {:>7}",
            "size",
            "slots",
            "%exp",
            "policy",
            "hit%",
            "belady%",
            "MB/tok",
            "ms/tok",
            "tok/s",
            "x cpu",
            "ns/dec"
        );
        for r in &self.rows {
            let _ = writeln!(
                o,
                "{:>7} {:>5} {:>6.1} {:>10} {:>6.1} {:>7.1} {:>9.1} {:>8.2} {:>7.1} {:>6.2} {:>7.0}",
                r.size,
                r.slots,
                r.cache_fraction * 100.0,
                r.policy,
                r.hit_rate * 100.0,
                r.belady_hit_rate * 100.0,
                r.pcie_bytes_per_token / 1e6,
                r.time_per_token_s * 1e3,
                1.0 / r.time_per_token_s.max(1e-15),
                r.speedup_vs_cpu_only,
                r.decision_ns
            );
        }
        o
    }

    /// Hit rate and time per token against cache size, one line per policy + Belady.
    pub fn svg(&self) -> String {
        let mut policies: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !policies.contains(&r.policy.as_str()) {
                policies.push(&r.policy);
            }
        }
        // Sizes may mix fractions and VRAM budgets: plot by cache fraction, in order.
        let sorted = |mut v: Vec<(f64, f64)>| {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            v.dedup_by(|a, b| a.0 == b.0);
            v
        };
        let line = |p: &str, f: &dyn Fn(&SimRow) -> f64| Series {
            name: p.to_string(),
            points: sorted(
                self.rows
                    .iter()
                    .filter(|r| r.policy == p)
                    .map(|r| (r.cache_fraction * 100.0, f(r)))
                    .collect(),
            ),
            dashed: false,
        };
        let mut hit: Vec<Series> = policies
            .iter()
            .map(|p| line(p, &|r| r.hit_rate * 100.0))
            .collect();
        let bel = sorted(
            self.rows
                .iter()
                .map(|r| (r.cache_fraction * 100.0, r.belady_hit_rate * 100.0))
                .collect(),
        );
        hit.push(Series {
            name: "belady (bound)".into(),
            points: bel,
            dashed: true,
        });
        let time: Vec<Series> = policies
            .iter()
            .map(|p| line(p, &|r| r.time_per_token_s * 1e3))
            .collect();
        let x = "cache size (% of experts)".to_string();
        render(
            &[
                Panel {
                    title: format!("hit rate — {}", self.shape),
                    x_label: x.clone(),
                    y_label: "hit rate (%)".into(),
                    series: hit,
                },
                Panel {
                    title: format!("decode time/token — {}", self.profile),
                    x_label: x,
                    y_label: "ms per token (predicted)".into(),
                    series: time,
                },
            ],
            520.0,
            380.0,
        )
    }
}

/// Solver option for callers that want the exact solver in simulations.
pub fn exact_solver(mut opts: SimOptions) -> SimOptions {
    opts.sched.solver = SolverKind::Exact;
    opts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{generate, SynthParams};

    #[test]
    fn simulate_writes_table_json_and_svg_from_a_trace_file() {
        let dir = std::env::temp_dir().join(format!("hmoe-sim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut shape = ModelShape::preset("qwen3-30b-a3b:q4_k_m").unwrap();
        shape.n_layers = 3;
        let trace_path = dir.join("t.jsonl");
        generate(&shape, &SynthParams::qwen3_calibrated(), 80, 1)
            .save(&trace_path)
            .unwrap();
        let args = SimulateArgs {
            trace: trace_path,
            model_shape: None,
            sizes: vec!["20%".parse().unwrap(), "2GiB".parse().unwrap()],
            policies: vec!["cpu-only".into(), "lru".into(), "value".into()],
            profile: Some("h100".into()),
            out_svg: Some(dir.join("p.svg")),
            out_json: Some(dir.join("r.json")),
            options: SimOptions {
                warmup_steps: 10,
                ..SimOptions::default()
            },
        };
        let r = simulate(&args).unwrap();
        // 2 sizes × (3 policies + value+pf).
        assert_eq!(r.rows.len(), 8);
        assert!(r.table().contains("value+pf"));
        for row in &r.rows {
            assert!(row.hit_rate <= 1.0 && row.time_per_token_s > 0.0);
            if row.policy == "cpu-only" {
                assert_eq!(row.hit_rate, 0.0);
                assert!((row.speedup_vs_cpu_only - 1.0).abs() < 1e-12);
            }
        }
        let back: SimReport =
            serde_json::from_str(&std::fs::read_to_string(dir.join("r.json")).unwrap()).unwrap();
        assert_eq!(back, r);
        assert!(std::fs::read_to_string(dir.join("p.svg"))
            .unwrap()
            .contains("belady"));
        // A shape of another layer count is refused.
        let bad = SimulateArgs {
            model_shape: Some("qwen3-30b-a3b:q8_0".into()),
            ..args
        };
        assert!(simulate(&bad).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod prefill_step_tests {
    use super::*;
    use crate::synth::{generate, generate_prefill, SynthParams};

    /// Whether one 1024-token prefill step leaves the cache worse for the decode that
    /// follows than two 512-token steps (on the GPU machine the 8 GiB decode after
    /// 1024-token steps was slower in 3 of 4 A/B pairs, session 9). In the scheduler alone
    /// it does not: the same hits, CPU runs and fetches within a point, so the cause lies
    /// outside the cache state (the online cost model, the device).
    #[test]
    fn the_prefill_step_size_leaves_decode_the_same_cache() {
        let shape = ModelShape::preset("qwen3-30b-a3b:q4_k_m").unwrap();
        let profile = MachineProfile::h100_box();
        // The engine's 8 GiB row: 2807 slots.
        let slots = ((8u64 << 30) / shape.expert_bytes()) as usize;
        let params = SynthParams::qwen3_calibrated();
        let decode = generate(&shape, &params, 60, 5);
        for policy in ["lru", "value"] {
            let mut hit = Vec::new();
            for (chunks, tokens) in [(2usize, 512u32), (1, 1024)] {
                let mut trace = generate_prefill(&shape, &params, chunks, tokens, 11);
                let base = trace.steps.len() as u64;
                trace
                    .steps
                    .extend(decode.steps.iter().cloned().map(|mut s| {
                        s.step += base;
                        s
                    }));
                let opts = SimOptions {
                    warmup_steps: chunks,
                    ..SimOptions::default()
                };
                let t = run_policy(&trace, &shape, &profile, policy, slots, &opts, opts.sched)
                    .unwrap()
                    .totals;
                assert_eq!(t.steps, 60, "{policy}: decode steps only");
                hit.push(t.hits as f64 / t.accesses.max(1) as f64);
            }
            assert!(
                (hit[0] - hit[1]).abs() < 0.01,
                "{policy}: decode hit rate {:.3} after 2x512, {:.3} after 1x1024",
                hit[0],
                hit[1]
            );
        }
    }
}
