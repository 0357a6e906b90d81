//! The hybrid scheduler (`hmoe-sched`) as the MoE dispatcher's placer: it plans every
//! layer of every step, learns from measured times, records the routing trace and
//! publishes per-step telemetry.

#[cfg(test)]
mod host_time;
mod record;

use super::dispatch::{LayerMeasure, LayerPlacement, Placer};
use super::stats::{policy_scores, residency_map, AppliedOptions, ExpertStats, SchedSnapshot};
use super::WorkItem;
use crate::backend::cuda::SlotHints;
use crate::error::{EngineError, Result};
use crate::info::ModelInfo;
use hmoe_gguf::GgmlDType;
use hmoe_sched::shape::{ExpertQuant, ExpertWork};
use hmoe_sched::{
    make_policy, CostModel, ExpertCache, LayerPlan, MachineProfile, ModelShape, PredictedExpert,
    QuantType, RoutedExpert, SchedConfig, Scheduler, StepTelemetry, Telemetry, TelemetryTotals,
    Trace, TraceHeader, TraceStep, ValueParams,
};
use record::{Measured, Sample, StepRecord};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Steps of telemetry kept for slow subscribers before they start skipping.
pub const TELEMETRY_BUFFER: usize = 512;
/// Steps between refreshes of the published prediction error (`TelemetryHub`). Its
/// median over the last 4096 layers took ~15 µs of a decode step's ~50 µs of bookkeeping
/// on the build machine (placer_host_time, session 12), then on the token's critical path
/// (now in `publish`, mostly inside a dense call's hook); a live panel needs it a few times
/// a second, not at every token.
pub const ERROR_PUBLISH_STEPS: u64 = 8;
/// Steps between re-reads of the refined cost model into the scheduler: measured layers
/// refit the model every step, plans follow them this often (a refit is a small solve).
const COST_REFRESH_STEPS: u64 = 16;
/// Steps of routing trace kept for export and the what-if replay: between this many and
/// twice as many, the newest. A decode step of Qwen3-30B-A3B takes ~14 KB (48 layers of
/// routed and predicted experts): an unbounded trace grew ~10 GB an hour at 200 tok/s.
pub const TRACE_KEEP_STEPS: usize = 4096;

/// The scheduler's name for a weight type the kernels compute with.
pub fn quant_type(t: GgmlDType) -> Option<QuantType> {
    Some(match t {
        GgmlDType::F32 => QuantType::F32,
        GgmlDType::F16 => QuantType::F16,
        GgmlDType::BF16 => QuantType::BF16,
        GgmlDType::Q8_0 => QuantType::Q8_0,
        GgmlDType::Q4K => QuantType::Q4_K,
        GgmlDType::Q5K => QuantType::Q5_K,
        GgmlDType::Q6K => QuantType::Q6_K,
        _ => return None,
    })
}

fn quant(name: &str, t: GgmlDType) -> Result<QuantType> {
    quant_type(t).ok_or_else(|| EngineError::UnsupportedTensorType {
        name: name.into(),
        dtype: t,
    })
}

/// The scheduler's view of a loaded model.
pub fn model_shape(info: &ModelInfo, types: [GgmlDType; 3]) -> Result<ModelShape> {
    let c = &info.config;
    Ok(ModelShape {
        name: info.name.clone(),
        n_layers: c.n_layers as u16,
        n_experts: c.n_experts as u16,
        top_k: c.top_k as u16,
        hidden: c.hidden as u32,
        expert_ffn: c.expert_ffn as u32,
        expert_quant: ExpertQuant {
            gate: quant("ffn_gate_exps", types[0])?,
            up: quant("ffn_up_exps", types[1])?,
            down: quant("ffn_down_exps", types[2])?,
        },
        dense_bytes: info.dense_bytes,
    })
}

/// Shared, cheap-to-read outputs of the placer.
#[derive(Clone)]
pub struct TelemetryHub {
    /// Per-step telemetry stream.
    pub sender: broadcast::Sender<Arc<StepTelemetry>>,
    /// Running totals.
    pub totals: Arc<Mutex<TelemetryTotals>>,
    /// The routing trace, its newest [`TRACE_KEEP_STEPS`] to twice as many steps.
    pub trace: Arc<Mutex<Trace>>,
    /// The cost model's median relative error of predicted vs measured layer time,
    /// refreshed at the end of every [`ERROR_PUBLISH_STEPS`]-th step (the first included).
    pub prediction_error: Arc<Mutex<Option<f64>>>,
}

/// Scheduler settings a [`SchedPlacer`] can change between generations.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacerOptions {
    /// Cache policy name (one of [`hmoe_sched::POLICY_NAMES`]).
    pub policy: String,
    /// Requested VRAM budget for experts (None: what the card has free).
    pub vram_budget_bytes: Option<u64>,
    /// Next-layer prefetch.
    pub prefetch: bool,
}

/// Placer backed by the hybrid scheduler.
pub struct SchedPlacer {
    shape: ModelShape,
    cost: CostModel,
    sched: Scheduler,
    cache: ExpertCache,
    options: PlacerOptions,
    /// The GPU experts may run on (None: none, every plan is all-CPU).
    gpu: Option<String>,
    /// Expert VRAM the GPU backend really has (the budget is clamped to it), and where
    /// the plan's slots are published for it.
    gpu_arena: Option<(u64, Arc<SlotHints>)>,
    stats: ExpertStats,
    last_step: Option<Arc<StepTelemetry>>,
    plan: LayerPlan,
    step: u64,
    step_tokens: u32,
    /// The step in progress: plans, routing, measurements and cost samples.
    record: StepRecord,
    /// The last ended step, its cost-model update, telemetry and trace not yet done (see
    /// [`Placer::publish`]).
    unpublished: Option<Unpublished>,
    /// An emptied record, swapped in when a step ends (no allocation once warm).
    spare: StepRecord,
    /// A layer planned by `place_demand` whose background loads are not planned yet.
    background: Option<u16>,
    telemetry: Telemetry,
    hub: TelemetryHub,
    routed: Vec<RoutedExpert>,
    next: Vec<PredictedExpert>,
    /// One expert's work and bytes (the shape's, computed once).
    work: ExpertWork,
    expert_bytes: u64,
    /// Scratch of the per-step prediction-error median.
    err_scratch: Vec<f64>,
}

impl SchedPlacer {
    /// A placer for `shape` with policy `policy`, `vram_budget` bytes of expert cache
    /// (0 without a GPU) and the machine profile `profile`.
    pub fn new(
        shape: ModelShape,
        policy: &str,
        vram_budget: u64,
        prefetch: bool,
        profile: MachineProfile,
        hub: TelemetryHub,
    ) -> Result<Self> {
        let mut cost = CostModel::new(profile);
        cost.set_layers(shape.n_layers);
        let options = PlacerOptions {
            policy: policy.to_string(),
            vram_budget_bytes: Some(vram_budget),
            prefetch,
        };
        let (sched, cache) = Self::build(&shape, &mut cost, &options, vram_budget)?;
        let stats = ExpertStats::new(shape.total_experts());
        let (work, expert_bytes) = (shape.expert_work(), shape.expert_bytes());
        Ok(Self {
            shape,
            cost,
            sched,
            cache,
            options,
            gpu: None,
            gpu_arena: None,
            stats,
            last_step: None,
            plan: LayerPlan::default(),
            step: 0,
            step_tokens: 0,
            record: StepRecord::default(),
            unpublished: None,
            spare: StepRecord::default(),
            background: None,
            telemetry: Telemetry::default(),
            hub,
            routed: Vec::new(),
            next: Vec::new(),
            work,
            expert_bytes,
            err_scratch: Vec::new(),
        })
    }

    fn build(
        shape: &ModelShape,
        cost: &mut CostModel,
        options: &PlacerOptions,
        expert_vram: u64,
    ) -> Result<(Scheduler, ExpertCache)> {
        let config = SchedConfig {
            prefetch: options.prefetch,
            ..Default::default()
        };
        let sched = Scheduler::new(shape, cost, config);
        let saving = vec![
            sched.costs().hit_saving(1) / shape.expert_bytes().max(1) as f64;
            shape.n_layers as usize
        ];
        let policy = make_policy(
            &options.policy,
            shape,
            None,
            ValueParams::default(),
            &saving,
        )
        .map_err(|e| EngineError::InvalidRequest(e.to_string()))?;
        let slots = ExpertCache::slots_for_budget(shape, expert_vram);
        Ok((
            sched,
            ExpertCache::with_partition(shape, slots, policy, true),
        ))
    }

    /// Replans with new settings from the next step on, keeping the calibrated cost
    /// model, the statistics and the trace. The cache starts empty (a new policy has no
    /// history for what is resident). Without a GPU the budget is recorded but the cache
    /// has no slots.
    pub fn reconfigure(&mut self, options: PlacerOptions) -> Result<()> {
        self.settle_background();
        // The new scheduler starts from the model with every measurement so far; the last
        // step's telemetry goes out under the settings it ran with.
        self.publish_step();
        self.apply_samples();
        let vram = match (&self.gpu, &self.gpu_arena) {
            (Some(_), Some((arena, _))) => options.vram_budget_bytes.unwrap_or(*arena).min(*arena),
            (Some(_), None) => options.vram_budget_bytes.unwrap_or(0),
            (None, _) => 0,
        };
        let (sched, cache) = Self::build(&self.shape, &mut self.cost, &options, vram)?;
        self.sched = sched;
        self.cache = cache;
        self.options = options;
        self.last_step = None;
        Ok(())
    }

    /// Plans for a GPU backend named `name` with `arena_bytes` of expert VRAM (counted in
    /// the scheduler's expert size), publishing each layer's slots into `hints`.
    pub fn set_gpu(&mut self, name: String, arena_bytes: u64, hints: Arc<SlotHints>) -> Result<()> {
        self.gpu = Some(name);
        self.gpu_arena = Some((arena_bytes, hints));
        self.reconfigure(self.options.clone())
    }

    /// Settings in force.
    pub fn options(&self) -> &PlacerOptions {
        &self.options
    }

    /// The cache map and per-expert statistics now (`threads`: the CPU pool's size). The
    /// statistics count the published steps: call [`Placer::publish`] first for all.
    pub fn snapshot(&self, threads: usize) -> SchedSnapshot {
        let last = self.last_step.as_ref().map_or(&[][..], |s| &s.layers[..]);
        let used = self.cache.resident_count() as u64 * self.shape.expert_bytes();
        SchedSnapshot {
            steps: self.step,
            n_layers: self.shape.n_layers,
            n_experts: self.shape.n_experts,
            top_k: self.shape.top_k,
            expert_bytes: self.shape.expert_bytes(),
            gpu: self.gpu.clone(),
            applied: AppliedOptions {
                policy: self.options.policy.clone(),
                vram_budget_bytes: self.options.vram_budget_bytes,
                prefetch: self.options.prefetch,
                threads,
            },
            cache_slots: self.cache.n_slots() as u32,
            cache_resident: self.cache.resident_count() as u32,
            cache_bytes_used: used,
            stats: self.stats.clone(),
            score: policy_scores(&self.shape, &self.cache, self.step as f64),
            residency: residency_map(&self.shape, &self.cache, last),
            prediction_error: self.prediction_error(),
        }
    }

    /// A new hub with an empty trace for `shape`.
    pub fn hub(shape: &ModelShape) -> TelemetryHub {
        TelemetryHub {
            sender: broadcast::channel(TELEMETRY_BUFFER).0,
            totals: Arc::new(Mutex::new(TelemetryTotals::default())),
            trace: Arc::new(Mutex::new(Trace {
                header: TraceHeader::new(shape.clone(), "hmoe-engine"),
                steps: Vec::new(),
            })),
            prediction_error: Arc::new(Mutex::new(None)),
        }
    }

    /// The cost model's prediction error so far (median relative error of layer times).
    pub fn prediction_error(&self) -> Option<f64> {
        self.cost.error_report().map(|r| r.median_rel)
    }

    /// The demand part of a layer's plan into `out`'s CPU and GPU lists (see
    /// [`Placer::place_demand`]); its background part waits in `self.plan`.
    fn plan_demand(
        &mut self,
        layer: usize,
        items: &[WorkItem],
        next: &[(u16, f32)],
        out: &mut LayerPlacement,
    ) {
        self.settle_background();
        self.routed.clear();
        self.routed.extend(items.iter().map(|it| RoutedExpert {
            expert: it.expert,
            n_tokens: it.rows.len() as u32,
            weight: it.weights.iter().sum(),
        }));
        self.next.clear();
        self.next.extend(
            next.iter()
                .map(|&(expert, prob)| PredictedExpert { expert, prob }),
        );
        self.sched.plan_demand_into(
            self.step,
            layer as u16,
            &self.routed,
            &self.next,
            &mut self.cache,
            0.0,
            &mut self.plan,
        );
        if let Some((_, hints)) = &self.gpu_arena {
            let planned = self.plan.gpu_hit.iter().chain(&self.plan.gpu_fetch);
            hints.publish(
                layer as u16,
                planned.filter_map(|p| Some((p.expert, p.slot?))),
            );
        }
        let index_of = |e: u16| items.iter().position(|it| it.expert == e);
        out.gpu.clear();
        out.gpu.extend(
            self.plan
                .gpu_hit
                .iter()
                .chain(&self.plan.gpu_fetch)
                .filter_map(|p| index_of(p.expert)),
        );
        out.cpu.clear();
        out.cpu
            .extend(self.plan.cpu.iter().filter_map(|p| index_of(p.expert)));
    }

    /// A layer whose background loads were not asked for before another call plans none:
    /// its record goes in as it stands.
    fn settle_background(&mut self) {
        if self.background.take().is_some() {
            self.sched.finish_accesses(&mut self.cache);
            self.record.push_layer(&self.plan, &self.routed, &self.next);
        }
    }

    /// Applies the cost-model samples of the layers run so far.
    fn apply_samples(&mut self) {
        self.record.apply_samples(&mut self.cost, &self.work);
    }

    /// Builds and sends the ended step's telemetry, statistics and trace, if one waits.
    fn publish_step(&mut self) {
        let Some(u) = self.unpublished.take() else {
            return;
        };
        let mut record = u.record;
        // The cost model learns from the step (the next plans see it after
        // `update_costs`, below).
        record.apply_samples(&mut self.cost, &self.work);
        let predicted_s = record.predicted_s() + self.cost.dense_step_s(u.n_tokens);
        // What the step took outside its measured MoE layers refits the dense term.
        if let Some(moe) = record.measured_s().filter(|_| u.measured_s > 0.0) {
            self.cost.observe_step(predicted_s, u.measured_s);
            self.cost.observe_dense_step(u.n_tokens, u.measured_s - moe);
        }
        if u.step.is_multiple_of(ERROR_PUBLISH_STEPS) {
            let error = self.cost.layer_error_median(&mut self.err_scratch);
            if let Ok(mut e) = self.hub.prediction_error.lock() {
                *e = error;
            }
        }
        if (u.step + 1).is_multiple_of(COST_REFRESH_STEPS) {
            self.sched.update_costs(&mut self.cost);
        }
        let step = StepTelemetry {
            step: u.step,
            n_tokens: u.n_tokens,
            layers: record.telemetry(self.expert_bytes),
            predicted_s,
            measured_s: Some(u.measured_s),
        };
        self.telemetry.record(&step);
        for l in &step.layers {
            self.stats.record(&self.shape, step.step, l);
        }
        let trace = TraceStep {
            step: u.step,
            tokens: u.n_tokens,
            layers: record.trace(),
        };
        // Its samples were applied above: only the buffers are kept.
        record.clear_layers();
        self.spare = record;
        if let Ok(mut t) = self.hub.totals.lock() {
            *t = *self.telemetry.totals();
        }
        if let Ok(mut tr) = self.hub.trace.lock() {
            push_bounded(&mut tr, trace, TRACE_KEEP_STEPS);
        }
        let step = Arc::new(step);
        self.last_step = Some(step.clone());
        // No subscriber is fine: telemetry is always produced, cheaply.
        let _ = self.hub.sender.send(step);
    }
}

/// An ended step whose telemetry is not built yet.
#[derive(Debug)]
struct Unpublished {
    step: u64,
    n_tokens: u32,
    measured_s: f64,
    record: StepRecord,
}

/// Appends `step`; past `2 × keep` steps, drops all but the newest `keep` (one move per
/// `keep` steps, not one per step).
fn push_bounded(trace: &mut Trace, step: TraceStep, keep: usize) {
    trace.steps.push(step);
    let keep = keep.max(1);
    if trace.steps.len() > 2 * keep {
        let drop = trace.steps.len() - keep;
        trace.steps.drain(..drop);
    }
}

/// Mean token rows of a non-empty share's items.
fn mean_tokens(items: &[WorkItem]) -> f64 {
    items.iter().map(|it| it.rows.len()).sum::<usize>() as f64 / items.len().max(1) as f64
}

impl Placer for SchedPlacer {
    fn begin_step(&mut self, n_tokens: usize) {
        self.settle_background();
        // A step cut short (cancelled) leaves no telemetry, but its samples count, after
        // those of the step before it.
        if self.record.has_samples() {
            self.publish_step();
            self.apply_samples();
        }
        self.step_tokens = n_tokens as u32;
        self.record.clear_layers();
    }

    fn place(
        &mut self,
        layer: usize,
        items: &[WorkItem],
        next: &[(u16, f32)],
        gpu: bool,
        out: &mut LayerPlacement,
    ) {
        self.place_demand(layer, items, next, gpu, out);
        self.place_background(&mut out.loads);
    }

    fn place_demand(
        &mut self,
        layer: usize,
        items: &[WorkItem],
        next: &[(u16, f32)],
        _gpu: bool,
        out: &mut LayerPlacement,
    ) {
        self.plan_demand(layer, items, next, out);
        out.loads.clear();
        self.background = Some(layer as u16);
    }

    fn place_background(&mut self, loads: &mut Vec<(u16, u16, u32)>) {
        if self.background.take().is_none() {
            return;
        }
        self.sched
            .plan_background_into(&self.next, &mut self.cache, 0.0, &mut self.plan);
        if self.gpu_arena.is_some() {
            loads.extend(
                self.plan
                    .prefetch
                    .iter()
                    .map(|l| (l.key.layer, l.key.expert, l.slot)),
            );
        }
        self.record.push_layer(&self.plan, &self.routed, &self.next);
    }

    fn observe(&mut self, layer: usize, m: &LayerMeasure<'_>) {
        self.settle_background();
        // Samples only here; the cost model takes them at the end of the step. The
        // layer's own record: the deferred GPU layer is observed after the next layer
        // was planned (its prediction and measurement must not pair with that one's).
        let measured = Measured {
            wall_s: m.wall_s,
            cpu_s: m.cpu_s,
            gpu_s: m.gpu.map(|t| t.gpu_ms as f64 / 1e3),
            copy_s: m.gpu.map(|t| t.copy_ms as f64 / 1e3),
        };
        let predicted = self.record.measure(layer as u16, measured).unwrap_or(0.0);
        if predicted > 0.0 && m.wall_s > 0.0 {
            self.record.sample(Sample::Layer {
                predicted_s: predicted,
                measured_s: m.wall_s,
            });
        }
        // Layers with GPU work: what the wall time exceeds the busier side by is the
        // host's overhead (plus the join when the layer was split with the CPU).
        if m.gpu.is_some() && m.wall_s > 0.0 {
            let busy = m.cpu_s.max(m.gpu.map_or(0.0, |t| t.gpu_ms as f64 / 1e3));
            self.record.sample(Sample::Sync {
                residual_s: m.wall_s - busy,
                split: !m.cpu_items.is_empty(),
            });
        }
        // Each share gives its mean expert: the model is linear in the token count, so
        // the share's time over its size is the cost of an expert at the mean count
        // (decode: one token each; prefill: mixed counts, the only samples of the
        // per-token cost at prefill sizes: without them a prefill plan leant on the
        // start-up calibration; on the H100 machine that predicted a prefill layer's GPU
        // share at 1.1-1.6x its measured time and gave the CPU too much).
        if !m.cpu_items.is_empty() {
            self.record.sample(Sample::CpuExpert {
                tokens: mean_tokens(m.cpu_items),
                seconds: m.cpu_s / m.cpu_items.len() as f64,
            });
        }
        if let Some(t) = m.gpu {
            let n = m.gpu_items.len();
            // Compute samples only when no copy was waited for.
            if t.fetches == 0 && n > 0 && t.gpu_ms > 0.0 {
                self.record.sample(Sample::GpuExpert {
                    tokens: mean_tokens(m.gpu_items),
                    seconds: t.gpu_ms as f64 / 1e3 / n as f64,
                });
            }
            if t.fetches > 0 && t.copied_bytes > 0 && t.copy_ms > 0.0 {
                let f = t.fetches as f64;
                self.record.sample(Sample::Pcie {
                    bytes: (t.copied_bytes as f64 / f) as u64,
                    seconds: t.copy_ms as f64 / 1e3 / f,
                });
            }
        }
        self.sched.finish_layer(&mut self.cache);
    }

    fn end_step(&mut self, measured_s: f64) {
        self.settle_background();
        // Everything else waits for `publish`, in the order it had here: in the engine,
        // the next step's first dense call's hook, while the GPU runs (~45 µs a decode
        // step on the GPU machine, on the token's path here). No plan reads the cost
        // model before then: the scheduler takes it in `update_costs`, done there too.
        // At most one step waits: an older one (no GPU wait came between) goes out now.
        self.publish_step();
        let record = std::mem::replace(&mut self.record, std::mem::take(&mut self.spare));
        self.unpublished = Some(Unpublished {
            step: self.step,
            n_tokens: self.step_tokens,
            measured_s,
            record,
        });
        self.step += 1;
    }

    fn publish(&mut self) {
        self.publish_step();
    }

    fn reconfigure(&mut self, options: &PlacerOptions) -> Result<()> {
        SchedPlacer::reconfigure(self, options.clone())
    }

    fn runs_gpu_experts(&self) -> bool {
        self.gpu_arena.is_some() && self.cache.n_slots() > 0 && self.options.policy != "cpu-only"
    }

    fn gpu_slots(&self) -> Option<usize> {
        self.gpu_arena.as_ref().map(|_| self.cache.n_slots())
    }

    fn snapshot(&self, threads: usize) -> Option<SchedSnapshot> {
        Some(SchedPlacer::snapshot(self, threads))
    }
}

#[cfg(test)]
mod tests;
