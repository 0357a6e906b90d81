//! Drives a [`SchedPlacer`] through decode steps as the dispatcher does on the GPU
//! machine, without a GPU: Qwen3-30B-A3B shape (48 layers, 128 experts, top-8), `value`
//! policy, a 16 GiB VRAM cache, routing and next-layer predictions from the calibrated
//! synthetic trace, and plausible measured CPU/GPU/copy times fed back.
//!
//! Shared by the `sched_overhead` example (timings) and the `sched_alloc` test (heap
//! allocations of the hot path); a [`Probe`] sees every placer call.

use hmoe_cuda::LayerTimings;
use hmoe_engine::backend::cuda::SlotHints;
use hmoe_engine::moe::dispatch::{LayerMeasure, LayerPlacement, Placer};
use hmoe_engine::moe::placer::{PlacerOptions, SchedPlacer};
use hmoe_engine::moe::WorkItem;
use hmoe_engine::sched::synth::{generate, SynthParams};
use hmoe_engine::sched::{ExpertCache, MachineProfile, ModelShape, Trace};
use std::sync::Arc;

/// Expert VRAM budget of the GPU-machine runs (16 GiB).
pub const BUDGET_BYTES: u64 = 16 << 30;
/// Trace steps generated (replayed cyclically).
pub const TRACE_STEPS: usize = 512;
/// Seed of the trace (the benchmark sweep's replay seed).
pub const TRACE_SEED: u64 = 42;

/// A placer call the probe is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `begin_step`.
    Begin,
    /// `place` of one layer.
    Place,
    /// `observe` of one layer.
    Observe,
    /// `end_step`.
    End,
}

/// Sees the start and end of every placer call (`layer`: the layer of `place` and
/// `observe`, 0 for the step calls).
pub trait Probe {
    /// Before the work that precedes the call in the engine (for `place`: before the
    /// layer's work items are written, as routing writes them right before it).
    fn prepare(&mut self, _phase: Phase, _layer: usize) {}
    /// Right before the call.
    fn enter(&mut self, phase: Phase, layer: usize);
    /// Right after it.
    fn exit(&mut self, phase: Phase, layer: usize);
}

/// What the driver counts of the plans (to check the benchmark exercises the GPU paths).
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanCounts {
    /// Items planned on the CPU.
    pub cpu: u64,
    /// Items planned on the GPU found in their slot.
    pub gpu_hits: u64,
    /// Items planned on the GPU that needed a copy.
    pub gpu_fetches: u64,
    /// Background loads.
    pub loads: u64,
}

/// The placer under test and the fake GPU's slot contents.
pub struct Driver {
    /// The placer.
    pub placer: SchedPlacer,
    hints: Arc<SlotHints>,
    trace: Trace,
    /// Work items of every trace step and layer (built once: the model's allocations
    /// are not the scheduler's).
    items: Vec<Vec<Vec<WorkItem>>>,
    /// (layer, expert) in each slot, as the executor's arena would hold it.
    owner: Vec<Option<(u16, u16)>>,
    expert_bytes: u64,
    step: usize,
    layer_items: Vec<WorkItem>,
    layer_next: Vec<(u16, f32)>,
    cpu_items: Vec<WorkItem>,
    gpu_items: Vec<WorkItem>,
    plan: LayerPlacement,
    /// Plan counts so far.
    pub counts: PlanCounts,
    /// FNV-1a digest of every placement so far (CPU and GPU items, planned slots,
    /// background loads): equal digests, equal decisions (compare builds with it).
    pub digest: u64,
}

/// Folds `v` into an FNV-1a digest.
fn fold(h: &mut u64, v: u64) {
    for b in v.to_le_bytes() {
        *h = (*h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
}

impl Driver {
    /// A placer for the GPU-machine setting (`prefetch`: next-layer prefetch on).
    #[allow(dead_code)] // the sched_alloc test's (the example passes a preset)
    pub fn new(prefetch: bool) -> Self {
        Self::with("qwen3-30b-a3b:q4_k_m", BUDGET_BYTES, prefetch)
    }

    /// A placer for the model `preset` (a `ModelShape` preset) with `budget` bytes of
    /// expert VRAM.
    pub fn with(preset: &str, budget: u64, prefetch: bool) -> Self {
        let shape = ModelShape::preset(preset).expect("preset shape");
        let trace = generate(
            &shape,
            &SynthParams::qwen3_calibrated(),
            TRACE_STEPS,
            TRACE_SEED,
        );
        let hub = SchedPlacer::hub(&shape);
        let mut placer = SchedPlacer::new(
            shape.clone(),
            "value",
            0,
            prefetch,
            MachineProfile::h100_box(),
            hub,
        )
        .expect("placer");
        placer
            .reconfigure(PlacerOptions {
                policy: "value".into(),
                vram_budget_bytes: Some(budget),
                prefetch,
            })
            .expect("reconfigure");
        let hints = Arc::new(SlotHints::default());
        placer
            .set_gpu("simulated GPU".into(), budget, hints.clone())
            .expect("set_gpu");
        let items = trace
            .steps
            .iter()
            .map(|s| {
                s.layers
                    .iter()
                    .map(|l| {
                        l.routed()
                            .map(|r| WorkItem {
                                expert: r.expert,
                                rows: vec![0],
                                weights: vec![r.weight],
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let slots = ExpertCache::slots_for_budget(&shape, budget);
        Self {
            placer,
            hints,
            trace,
            items,
            owner: vec![None; slots],
            expert_bytes: shape.expert_bytes(),
            step: 0,
            layer_items: Vec::new(),
            layer_next: Vec::new(),
            cpu_items: Vec::new(),
            gpu_items: Vec::new(),
            plan: LayerPlacement::default(),
            counts: PlanCounts::default(),
            digest: 0xcbf2_9ce4_8422_2325,
        }
    }

    /// Runs one decode step through every layer.
    pub fn step(&mut self, probe: &mut dyn Probe) {
        let s = self.step % self.trace.steps.len();
        self.step += 1;
        let n_layers = self.trace.steps[s].layers.len();
        probe.prepare(Phase::Begin, 0);
        probe.enter(Phase::Begin, 0);
        self.placer.begin_step(1);
        probe.exit(Phase::Begin, 0);
        let mut moe_s = 0.0;
        for layer in 0..n_layers {
            probe.prepare(Phase::Place, layer);
            // The engine's routing writes the layer's items and the next layer's
            // prediction right before `place`: copied here (buffers reused) so they are as
            // hot as there, not ~20 MB away.
            self.layer_items.clone_from(&self.items[s][layer]);
            let items = &self.layer_items;
            self.layer_next.clear();
            self.layer_next
                .extend_from_slice(&self.trace.steps[s].layers[layer].pred);
            let next = &self.layer_next;
            probe.enter(Phase::Place, layer);
            let plan = &mut self.plan;
            self.placer.place(layer, items, next, true, plan);
            probe.exit(Phase::Place, layer);
            self.cpu_items.clear();
            self.cpu_items
                .extend(plan.cpu.iter().map(|&i| items[i].clone()));
            self.gpu_items.clear();
            self.gpu_items
                .extend(plan.gpu.iter().map(|&i| items[i].clone()));
            let h = &mut self.digest;
            fold(h, layer as u64);
            for &i in &plan.cpu {
                fold(h, items[i].expert as u64);
            }
            for &i in &plan.gpu {
                let slot = self.hints.get(layer as u16, items[i].expert);
                fold(h, (1 << 32) | items[i].expert as u64);
                fold(h, slot.map_or(u64::MAX, u64::from));
            }
            for &(l, e, slot) in &plan.loads {
                fold(h, (2 << 32) | (l as u64) << 16 | e as u64);
                fold(h, slot as u64);
            }
            // The executor's arena: a GPU item whose slot holds another expert is copied.
            let mut fetches = 0u32;
            for it in &self.gpu_items {
                let slot = self.hints.get(layer as u16, it.expert);
                let want = Some((layer as u16, it.expert));
                match slot.and_then(|s| self.owner.get_mut(s as usize)) {
                    Some(o) if *o == want => self.counts.gpu_hits += 1,
                    Some(o) => {
                        *o = want;
                        fetches += 1;
                    }
                    None => fetches += 1,
                }
            }
            self.counts.gpu_fetches += fetches as u64;
            self.counts.cpu += self.cpu_items.len() as u64;
            for &(l, e, slot) in &plan.loads {
                if let Some(o) = self.owner.get_mut(slot as usize) {
                    *o = Some((l, e));
                }
                self.counts.loads += 1;
            }
            // Plausible H200-machine times with a little deterministic jitter so the
            // online fits see varied samples: 60 us per CPU expert, 12 us per resident
            // GPU expert, 70 us per copy, 20 us join.
            let jitter = 1.0 + 0.05 * (((s * 31 + layer * 7) % 11) as f64 / 10.0 - 0.5);
            let cpu_s = 60e-6 * self.cpu_items.len() as f64 * jitter;
            let copy_ms = 0.070 * fetches as f32 * jitter as f32;
            let gpu = (!self.gpu_items.is_empty()).then(|| {
                let gpu_ms = 0.012 * self.gpu_items.len() as f32 * jitter as f32 + copy_ms;
                LayerTimings {
                    hits: self.gpu_items.len() as u32 - fetches,
                    fetches,
                    copied_bytes: fetches as u64 * self.expert_bytes,
                    copy_ms,
                    gpu_ms,
                    wall_ms: gpu_ms + 0.01,
                }
            });
            let wall_s = cpu_s.max(gpu.map_or(0.0, |t| t.gpu_ms as f64 / 1e3)) + 20e-6;
            moe_s += wall_s;
            let m = LayerMeasure {
                cpu_items: &self.cpu_items,
                cpu_s,
                gpu_items: &self.gpu_items,
                gpu,
                wall_s,
            };
            probe.prepare(Phase::Observe, layer);
            probe.enter(Phase::Observe, layer);
            self.placer.observe(layer, &m);
            probe.exit(Phase::Observe, layer);
        }
        // Dense part: ~6 ms a token on the GPU dense path.
        let measured = moe_s + 6e-3;
        probe.prepare(Phase::End, 0);
        probe.enter(Phase::End, 0);
        self.placer.end_step(measured);
        probe.exit(Phase::End, 0);
    }

    /// Layers per step.
    pub fn n_layers(&self) -> usize {
        self.trace.steps.first().map_or(0, |s| s.layers.len())
    }
}

/// A probe that does nothing.
pub struct NoProbe;

impl Probe for NoProbe {
    fn enter(&mut self, _: Phase, _: usize) {}
    fn exit(&mut self, _: Phase, _: usize) {}
}
