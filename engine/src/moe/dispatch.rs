//! Where a placement decision turns into execution: the scheduler's plan splits a
//! layer's work items between the CPU and GPU executors.

use super::placer::PlacerOptions;
use super::stats::SchedSnapshot;
use super::{ExpertExecutor, LayerExperts, WorkItem};
use crate::backend::cuda::GpuExpertExecutor;
use crate::error::{EngineError, Result};
use std::sync::Arc;
use std::time::Instant;

/// Where each work item of a layer runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerPlacement {
    /// Indices (into the layer's items) that run on the CPU.
    pub cpu: Vec<usize>,
    /// Indices that run on the GPU.
    pub gpu: Vec<usize>,
}

/// Decides placement per layer. The hybrid scheduler implements this; with no GPU
/// the [`CpuOnly`] placer puts everything on the CPU.
pub trait Placer: Send {
    /// Plans one layer of one step. `next` predicts the next layer's experts
    /// (expert, probability of selection) for prefetching.
    fn place(
        &mut self,
        layer: usize,
        items: &[WorkItem],
        next: &[(u16, f32)],
        gpu_available: bool,
    ) -> LayerPlacement;
    /// Feeds back the measured CPU time of the layer's CPU share.
    fn observe_cpu(&mut self, _layer: usize, _items: &[WorkItem], _seconds: f64) {}
    /// A forward step over `n_tokens` tokens begins.
    fn begin_step(&mut self, _n_tokens: usize) {}
    /// The step ended after `measured_s` seconds.
    fn end_step(&mut self, _measured_s: f64) {}
    /// Changes policy, budget or prefetch (between steps).
    fn reconfigure(&mut self, _options: &PlacerOptions) -> Result<()> {
        Err(EngineError::InvalidRequest(
            "this placer has no scheduler settings".into(),
        ))
    }
    /// The cache map and per-expert statistics (`threads`: CPU pool size), if the
    /// placer keeps them.
    fn snapshot(&self, _threads: usize) -> Option<SchedSnapshot> {
        None
    }
}

/// Every expert on the CPU (KTransformers' default placement).
#[derive(Debug, Default)]
pub struct CpuOnly;

impl Placer for CpuOnly {
    fn place(
        &mut self,
        _layer: usize,
        items: &[WorkItem],
        _next: &[(u16, f32)],
        _gpu: bool,
    ) -> LayerPlacement {
        LayerPlacement {
            cpu: (0..items.len()).collect(),
            gpu: Vec::new(),
        }
    }
}

/// Running totals of placements, for telemetry and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlacementSummary {
    /// Expert-work items run on the CPU.
    pub cpu_items: u64,
    /// Items run on the GPU.
    pub gpu_items: u64,
    /// Seconds spent in CPU expert execution.
    pub cpu_seconds: f64,
}

/// Runs MoE layers according to a placer's plans.
pub struct MoeDispatch {
    cpu: Arc<dyn ExpertExecutor>,
    gpu: Option<Arc<dyn ExpertExecutor>>,
    /// The CUDA backend: its share runs while the CPU share computes.
    cuda: Option<Arc<GpuExpertExecutor>>,
    placer: Box<dyn Placer>,
    summary: PlacementSummary,
    step_started: Option<Instant>,
}

impl MoeDispatch {
    /// A dispatcher over a CPU executor, an optional GPU executor and a placer.
    pub fn new(
        cpu: Arc<dyn ExpertExecutor>,
        gpu: Option<Arc<dyn ExpertExecutor>>,
        placer: Box<dyn Placer>,
    ) -> Self {
        Self {
            cpu,
            gpu,
            cuda: None,
            placer,
            summary: PlacementSummary::default(),
            step_started: None,
        }
    }

    /// Uses the CUDA backend for the GPU share (overlapped with the CPU share).
    pub fn set_cuda(&mut self, cuda: Arc<GpuExpertExecutor>) {
        self.gpu = Some(cuda.clone());
        self.cuda = Some(cuda);
    }

    /// Replaces the placer (policy change between generations).
    pub fn set_placer(&mut self, placer: Box<dyn Placer>) {
        self.placer = placer;
    }

    /// Replaces the CPU executor (thread-count change between generations).
    pub fn set_cpu_executor(&mut self, cpu: Arc<dyn ExpertExecutor>) {
        self.cpu = cpu;
    }

    /// The placer.
    pub fn placer(&self) -> &dyn Placer {
        self.placer.as_ref()
    }

    /// The placer, mutable.
    pub fn placer_mut(&mut self) -> &mut dyn Placer {
        self.placer.as_mut()
    }

    /// Totals so far.
    pub fn summary(&self) -> &PlacementSummary {
        &self.summary
    }

    /// Marks the start of a forward step.
    pub fn begin_step(&mut self, n_tokens: usize) {
        self.step_started = Some(Instant::now());
        self.placer.begin_step(n_tokens);
    }

    /// Marks the end of a forward step.
    pub fn end_step(&mut self) {
        let s = self
            .step_started
            .take()
            .map_or(0.0, |t| t.elapsed().as_secs_f64());
        self.placer.end_step(s);
    }

    /// Executes one layer: `out += Σ experts`, placed by the plan.
    pub fn run_layer(
        &mut self,
        experts: &LayerExperts<'_>,
        x: &[f32],
        hidden: usize,
        items: &[WorkItem],
        next: &[(u16, f32)],
        out: &mut [f32],
    ) -> Result<()> {
        let plan = self
            .placer
            .place(experts.layer, items, next, self.gpu.is_some());
        debug_assert_eq!(plan.cpu.len() + plan.gpu.len(), items.len());
        let pick = |idx: &[usize]| idx.iter().map(|&i| items[i].clone()).collect::<Vec<_>>();
        let (cpu_items, gpu_items) = (pick(&plan.cpu), pick(&plan.gpu));
        // The CUDA share is issued first and completed after the CPU share: both run at
        // once, and the host waits only for the GPU's output.
        let ticket = match (&self.cuda, gpu_items.is_empty()) {
            (Some(cuda), false) => Some(cuda.submit(experts, x, hidden, &gpu_items)?),
            _ => None,
        };
        if let (None, Some(gpu), false) = (&self.cuda, &self.gpu, gpu_items.is_empty()) {
            gpu.execute(experts, x, hidden, &gpu_items, out)?;
        }
        let t0 = Instant::now();
        self.cpu.execute(experts, x, hidden, &cpu_items, out)?;
        let dt = t0.elapsed().as_secs_f64();
        if let (Some(cuda), Some(t)) = (&self.cuda, ticket) {
            cuda.complete(t, out)?;
        }
        self.placer.observe_cpu(experts.layer, &cpu_items, dt);
        self.summary.cpu_items += cpu_items.len() as u64;
        self.summary.gpu_items += gpu_items.len() as u64;
        self.summary.cpu_seconds += dt;
        Ok(())
    }
}
