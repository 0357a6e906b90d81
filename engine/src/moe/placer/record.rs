//! The placer's per-step record. Between two layers the engine streams expert weights
//! and runs the dense path, so every cache line and every `malloc` the placer touches
//! per layer is a cold miss: each layer only appends its plan, routing, measurement and
//! cost-model samples to flat buffers reused from step to step (no allocation once
//! warm), and the step's telemetry, trace and cost-model updates are built or applied
//! once, at the end of the step, in the order the layers produced them.

use hmoe_sched::shape::ExpertWork;
use hmoe_sched::telemetry::ExpertEvent;
use hmoe_sched::{
    CostModel, ExpertKey, LayerPlan, LayerTelemetry, Placement, PlanTiming, PredictedExpert,
    RoutedExpert, TraceLayer,
};
use std::ops::Range;

/// What a layer's execution measured (seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Measured {
    /// Issue to both outputs.
    pub wall_s: f64,
    /// CPU share.
    pub cpu_s: f64,
    /// GPU share (CUDA events), if the CUDA backend ran one.
    pub gpu_s: Option<f64>,
    /// Copy stream of the demand fetches (CUDA events).
    pub copy_s: Option<f64>,
}

/// One cost-model observation, applied at the end of the step (the scheduler reads the
/// model only between steps, so deferring changes no plan).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Sample {
    /// [`CostModel::observe_layer`].
    Layer { predicted_s: f64, measured_s: f64 },
    /// [`CostModel::observe_sync`].
    Sync { residual_s: f64, split: bool },
    /// [`CostModel::observe_cpu_expert`]: the CPU share's mean expert (its mean token
    /// count, its time over its size).
    CpuExpert { tokens: f64, seconds: f64 },
    /// [`CostModel::observe_gpu_expert`]: the GPU share's mean expert.
    GpuExpert { tokens: f64, seconds: f64 },
    /// [`CostModel::observe_pcie`].
    Pcie { bytes: u64, seconds: f64 },
}

impl Sample {
    fn apply(self, cost: &mut CostModel, work: &ExpertWork) {
        match self {
            Sample::Layer {
                predicted_s,
                measured_s,
            } => cost.observe_layer(predicted_s, measured_s),
            Sample::Sync { residual_s, split } => cost.observe_sync(residual_s, split),
            Sample::CpuExpert { tokens, seconds } => cost.observe_cpu_expert(work, tokens, seconds),
            Sample::GpuExpert { tokens, seconds } => cost.observe_gpu_expert(work, tokens, seconds),
            Sample::Pcie { bytes, seconds } => cost.observe_pcie(bytes, seconds),
        }
    }
}

/// One layer: its plan's summary and where its lists lie in the flat buffers.
#[derive(Debug, Clone)]
struct LayerRecord {
    layer: u16,
    predicted: PlanTiming,
    hits: u32,
    prefetch_hits: u32,
    n_fetch: usize,
    events: Range<usize>,
    evicted: Range<usize>,
    loaded: Range<usize>,
    routed: Range<usize>,
    pred: Range<usize>,
    measured: Option<Measured>,
}

/// The layers of the step in progress.
#[derive(Debug, Default)]
pub(super) struct StepRecord {
    layers: Vec<LayerRecord>,
    events: Vec<ExpertEvent>,
    evicted: Vec<ExpertKey>,
    loaded: Vec<ExpertKey>,
    routed: Vec<RoutedExpert>,
    pred: Vec<(u16, f32)>,
    samples: Vec<Sample>,
}

/// Appends `items` to `v` and returns where they landed.
fn append<T>(v: &mut Vec<T>, items: impl IntoIterator<Item = T>) -> Range<usize> {
    let start = v.len();
    v.extend(items);
    start..v.len()
}

impl StepRecord {
    /// Forgets the layers (keeps the buffers). Pending samples stay: see
    /// [`StepRecord::apply_samples`].
    pub fn clear_layers(&mut self) {
        self.layers.clear();
        self.events.clear();
        self.evicted.clear();
        self.loaded.clear();
        self.routed.clear();
        self.pred.clear();
    }

    /// Records a layer's plan, its routed experts and the next-layer prediction.
    pub fn push_layer(
        &mut self,
        plan: &LayerPlan,
        routed: &[RoutedExpert],
        pred: &[PredictedExpert],
    ) {
        // Telemetry order: hits, fetches (copy order), CPU (as `LayerTelemetry::from_plan`).
        let events = append(
            &mut self.events,
            [
                (&plan.gpu_hit, Placement::GpuHit),
                (&plan.gpu_fetch, Placement::GpuFetch),
                (&plan.cpu, Placement::Cpu),
            ]
            .into_iter()
            .flat_map(|(v, placement)| {
                v.iter().map(move |e| ExpertEvent {
                    expert: e.expert,
                    placement,
                    n_tokens: e.n_tokens,
                })
            }),
        );
        let rec = LayerRecord {
            layer: plan.layer,
            predicted: plan.predicted,
            hits: plan.hits,
            prefetch_hits: plan.prefetch_hits,
            n_fetch: plan.gpu_fetch.len(),
            events,
            evicted: append(&mut self.evicted, plan.evict.iter().copied()),
            loaded: append(&mut self.loaded, plan.prefetch.iter().map(|l| l.key)),
            routed: append(&mut self.routed, routed.iter().copied()),
            pred: append(&mut self.pred, pred.iter().map(|p| (p.expert, p.prob))),
            measured: None,
        };
        self.layers.push(rec);
    }

    /// Records the measurement of `layer` (the latest record of it: with the GPU dense
    /// path a layer is observed after the next one was planned) and returns its
    /// predicted MoE time (`None`: the layer was not planned in this step).
    pub fn measure(&mut self, layer: u16, m: Measured) -> Option<f64> {
        let l = self.layers.iter_mut().rev().find(|l| l.layer == layer)?;
        l.measured = Some(m);
        Some(l.predicted.finish_s)
    }

    /// Queues a cost-model sample.
    pub fn sample(&mut self, s: Sample) {
        self.samples.push(s);
    }

    /// Whether cost-model samples are queued.
    pub fn has_samples(&self) -> bool {
        !self.samples.is_empty()
    }

    /// Applies the queued samples to `cost`, oldest first, and drops them.
    pub fn apply_samples(&mut self, cost: &mut CostModel, work: &ExpertWork) {
        for s in self.samples.drain(..) {
            s.apply(cost, work);
        }
    }

    /// Sum of the layers' predicted MoE finish times.
    pub fn predicted_s(&self) -> f64 {
        self.layers.iter().map(|l| l.predicted.finish_s).sum()
    }

    /// Sum of the measured layer times, if every layer was measured.
    pub fn measured_s(&self) -> Option<f64> {
        self.layers
            .iter()
            .map(|l| l.measured.map(|m| m.wall_s))
            .sum()
    }

    /// The layers' telemetry (`expert_bytes`: bytes per expert copy).
    pub fn telemetry(&self, expert_bytes: u64) -> Vec<LayerTelemetry> {
        self.layers
            .iter()
            .map(|l| {
                let (n_evict, n_load) = (l.evicted.len(), l.loaded.len());
                LayerTelemetry {
                    layer: l.layer,
                    experts: self.events[l.events.clone()].to_vec(),
                    predicted: l.predicted,
                    measured_s: l.measured.map(|m| m.wall_s),
                    measured_cpu_s: l.measured.map(|m| m.cpu_s),
                    measured_gpu_s: l.measured.and_then(|m| m.gpu_s),
                    measured_copy_s: l.measured.and_then(|m| m.copy_s),
                    bytes_fetched: l.n_fetch as u64 * expert_bytes,
                    bytes_prefetched: n_load as u64 * expert_bytes,
                    evictions: n_evict as u32,
                    prefetches: n_load as u32,
                    hits: l.hits,
                    prefetch_hits: l.prefetch_hits,
                    evicted: self.evicted[l.evicted.clone()].to_vec(),
                    loaded: self.loaded[l.loaded.clone()].to_vec(),
                }
            })
            .collect()
    }

    /// The layers' routing as trace layers.
    pub fn trace(&self) -> Vec<TraceLayer> {
        self.layers
            .iter()
            .map(|l| {
                let r = &self.routed[l.routed.clone()];
                TraceLayer {
                    e: r.iter().map(|r| r.expert).collect(),
                    n: r.iter().map(|r| r.n_tokens).collect(),
                    w: r.iter().map(|r| r.weight).collect(),
                    pred: self.pred[l.pred.clone()].to_vec(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{
        LayerMeasure, LayerPlacement, Placer, SchedPlacer, WorkItem, ERROR_PUBLISH_STEPS,
    };
    use crate::backend::cuda::SlotHints;
    use hmoe_cuda::LayerTimings;
    use hmoe_sched::synth::{generate, SynthParams};
    use hmoe_sched::{CostModel, LayerTelemetry, MachineProfile, ModelShape, TraceLayer};
    use std::sync::Arc;

    /// What the placer did per layer before the step record: the cost model observed
    /// at once, the telemetry built from the plan.
    fn observe_now(c: &mut CostModel, p: &SchedPlacer, m: &LayerMeasure<'_>) {
        let work = &p.work;
        if p.plan.predicted.finish_s > 0.0 && m.wall_s > 0.0 {
            c.observe_layer(p.plan.predicted.finish_s, m.wall_s);
        }
        if let Some(t) = m.gpu {
            let busy = m.cpu_s.max(t.gpu_ms as f64 / 1e3);
            c.observe_sync(m.wall_s - busy, !m.cpu_items.is_empty());
        }
        let mean = |items: &[WorkItem]| {
            items.iter().map(|it| it.rows.len()).sum::<usize>() as f64 / items.len() as f64
        };
        if !m.cpu_items.is_empty() {
            let k = m.cpu_items.len() as f64;
            c.observe_cpu_expert(work, mean(m.cpu_items), m.cpu_s / k);
        }
        if let Some(t) = m.gpu.filter(|_| !m.gpu_items.is_empty()) {
            let tokens = mean(m.gpu_items);
            if t.fetches == 0 && t.gpu_ms > 0.0 {
                let per = t.gpu_ms as f64 / 1e3 / m.gpu_items.len() as f64;
                c.observe_gpu_expert(work, tokens, per);
            }
            if t.fetches > 0 {
                let f = t.fetches as f64;
                c.observe_pcie(
                    (t.copied_bytes as f64 / f) as u64,
                    t.copy_ms as f64 / 1e3 / f,
                );
            }
        }
    }

    #[test]
    fn deferred_telemetry_trace_and_samples_equal_the_per_layer_ones() {
        // The real shape (a cold expert is worth a copy at 64 tokens), 4 layers run.
        let shape = ModelShape::preset("qwen3-30b-a3b:q4_k_m").expect("shape");
        let hub = SchedPlacer::hub(&shape);
        let profile = MachineProfile::h100_box();
        let arena = shape.expert_bytes() * 400;
        let mut p = SchedPlacer::new(shape.clone(), "value", arena, true, profile, hub.clone())
            .expect("placer");
        p.set_gpu("test GPU".into(), arena, Arc::new(SlotHints::default()))
            .expect("gpu");
        let mut reference = p.cost.clone();
        let trace = generate(&shape, &SynthParams::qwen3_calibrated(), 40, 7);
        let mut out = LayerPlacement::default();
        let (mut fetched, mut split) = (0, 0);
        for (s, step) in trace.steps.iter().enumerate() {
            // Every fifth step is cut short after two layers (a cancelled generation):
            // no telemetry, but its measurements still reach the cost model. Every third
            // is a 64-token chunk (the GPU then fetches).
            let cut = s % 5 == 4;
            let tokens = if s % 3 == 1 { 64 } else { 1 };
            p.begin_step(tokens);
            let (mut want_tel, mut want_trace) = (Vec::new(), Vec::new());
            for (l, tl) in step.layers.iter().enumerate().take(if cut { 2 } else { 4 }) {
                // A chunk's experts serve different token counts (its shares' samples
                // are of their mean expert).
                let items: Vec<WorkItem> = tl
                    .routed()
                    .enumerate()
                    .map(|(i, r)| {
                        let n = if tokens > 1 { tokens - (i % 3) * 8 } else { 1 };
                        WorkItem {
                            expert: r.expert,
                            rows: (0..n as u32).collect(),
                            weights: vec![r.weight; n],
                        }
                    })
                    .collect();
                p.place(l, &items, &tl.pred, true, &mut out);
                let pick = |idx: &[usize]| idx.iter().map(|&i| items[i].clone()).collect();
                let (cpu, gpu): (Vec<WorkItem>, Vec<WorkItem>) = (pick(&out.cpu), pick(&out.gpu));
                let fetches = p.plan.gpu_fetch.len() as u32;
                let x = 1.0 + (s * 4 + l) as f64 * 0.01;
                let timings = LayerTimings {
                    hits: p.plan.gpu_hit.len() as u32,
                    fetches,
                    copied_bytes: fetches as u64 * shape.expert_bytes(),
                    copy_ms: 0.07 * fetches as f32,
                    gpu_ms: (0.012 * gpu.len() as f64 * x) as f32,
                    wall_ms: 0.0,
                };
                let m = LayerMeasure {
                    cpu_items: &cpu,
                    cpu_s: 60e-6 * cpu.len() as f64 * x,
                    gpu_items: &gpu,
                    gpu: (!gpu.is_empty()).then_some(timings),
                    wall_s: 150e-6 * x,
                };
                fetched += fetches;
                split += usize::from(!cpu.is_empty() && !gpu.is_empty());
                let mut t = LayerTelemetry::from_plan(&p.plan, shape.expert_bytes());
                t.measured_s = Some(m.wall_s);
                t.measured_cpu_s = Some(m.cpu_s);
                t.measured_gpu_s = m.gpu.map(|t| t.gpu_ms as f64 / 1e3);
                t.measured_copy_s = m.gpu.map(|t| t.copy_ms as f64 / 1e3);
                want_tel.push(t);
                want_trace.push(TraceLayer {
                    e: items.iter().map(|it| it.expert).collect(),
                    n: items.iter().map(|it| it.rows.len() as u32).collect(),
                    w: items.iter().map(|it| it.weights.iter().sum()).collect(),
                    pred: tl.pred.clone(),
                });
                observe_now(&mut reference, &p, &m);
                p.observe(l, &m);
            }
            if cut {
                continue;
            }
            let measured = 5e-3 + s as f64 * 1e-5;
            let moe: f64 = want_tel.iter().filter_map(|t| t.measured_s).sum();
            let pred: f64 = want_tel.iter().map(|t| t.predicted.finish_s).sum::<f64>()
                + reference.dense_step_s(tokens as u32);
            reference.observe_step(pred, measured);
            reference.observe_dense_step(tokens as u32, measured - moe);
            let publishes = p.step.is_multiple_of(ERROR_PUBLISH_STEPS);
            let published = *hub.prediction_error.lock().expect("error");
            let kept = hub.trace.lock().expect("trace").steps.len();
            p.end_step(measured);
            // The telemetry and trace wait for `publish` (in the engine: the next dense
            // call's hook, while the GPU runs).
            assert_eq!(hub.trace.lock().expect("trace").steps.len(), kept);
            Placer::publish(&mut p);
            let last = p.last_step.as_ref().expect("telemetry");
            assert_eq!(last.layers, want_tel, "step {s}");
            assert_eq!(last.predicted_s, pred, "step {s}");
            let tr = hub.trace.lock().expect("trace");
            assert_eq!(tr.steps.last().map(|t| &t.layers), Some(&want_trace));
            drop(tr);
            assert_eq!(p.cost.profile(), reference.profile(), "step {s}");
            assert_eq!(p.cost.error_report(), reference.error_report());
            assert_eq!(p.cost.step_error_report(), reference.step_error_report());
            // The published error is refreshed every ERROR_PUBLISH_STEPS steps, and
            // left as it was in between.
            let now = *hub.prediction_error.lock().expect("error");
            if publishes {
                assert_eq!(now, p.prediction_error(), "step {s}");
            } else {
                assert_eq!(now, published, "step {s}");
            }
        }
        // The run exercised GPU fetches (copy samples) and split layers (join samples).
        assert!(fetched > 0 && split > 0, "fetched {fetched}, split {split}");
        assert_eq!(hub.trace.lock().expect("trace").steps.len(), 32);
    }
}
