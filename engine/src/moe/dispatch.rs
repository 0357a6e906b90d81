//! Where a placement decision turns into execution: the scheduler's plan splits a
//! layer's work items between the CPU and GPU executors.

mod device_routing;

use super::host_profile::{HostProfile, Phase};
use super::placer::PlacerOptions;
use super::stats::SchedSnapshot;
use super::{ExpertExecutor, LayerExperts, WorkItem};
use crate::backend::cuda::GpuExpertExecutor;
use crate::error::{EngineError, Result};
use hmoe_cuda::{DeviceAddend, DeviceInput, LayerTimings};
use hmoe_sched::Trace;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Layers of at least this many token rows issue their GPU share beside the CPU share
/// (prefill); fewer rows issue it first (decode). See `MoeDispatch::run_layer`.
pub const SUBMIT_BESIDE_MIN_ROWS: usize = super::host_profile::DECODE_MAX_ROWS + 1;

/// A diagnostic for the scheduler's real overhead (causal profiling): this many µs of
/// busy host time after every layer's plan, as if planning took that much longer. A
/// token slower by `layers × delay` means plans are on the critical path; unchanged,
/// that they hide behind GPU work. Not counted as scheduler time.
pub const PLACE_DELAY_ENV: &str = "HMOE_PLACE_DELAY_US";

/// The same diagnostic for the scheduler's work in the dense calls' hooks
/// ([`MoeDispatch::while_gpu_busy`]): this many µs of busy host time more there. A token
/// no slower means that work hides behind the GPU's.
pub const HOOK_DELAY_ENV: &str = "HMOE_HOOK_DELAY_US";

/// A delay variable's value (`name`'s) as a delay (None: unset, zero, or not a number of
/// µs, which is logged).
fn delay_from(name: &str, value: Option<&str>) -> Option<Duration> {
    let v = value?.trim();
    match v.parse::<f64>() {
        Ok(us) if us.is_finite() && us > 0.0 && us < 1e6 => Some(Duration::from_secs_f64(us / 1e6)),
        Ok(0.0) => None,
        _ => {
            tracing::warn!("{name}={v} is not a delay in µs below one second: ignored");
            None
        }
    }
}

/// Busy-waits until `d` after `start` (a diagnostic delay: the thread keeps its core).
fn spin_until(start: Instant, d: Duration) {
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Where each work item of a layer runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerPlacement {
    /// Indices (into the layer's items) that run on the CPU.
    pub cpu: Vec<usize>,
    /// Indices that run on the GPU.
    pub gpu: Vec<usize>,
    /// Background loads to issue once the layer's work is submitted: `(layer, expert,
    /// slot)`, for this layer (admissions) or the next one (prefetches).
    pub loads: Vec<(u16, u16, u32)>,
}

/// What one layer's MoE work measured, fed back to the placer.
#[derive(Debug, Clone, Copy)]
pub struct LayerMeasure<'a> {
    /// Items run on the CPU.
    pub cpu_items: &'a [WorkItem],
    /// Seconds the CPU share took.
    pub cpu_s: f64,
    /// Items run on the GPU.
    pub gpu_items: &'a [WorkItem],
    /// CUDA-event times of the GPU share, if the CUDA backend ran it.
    pub gpu: Option<LayerTimings>,
    /// Host seconds from issuing the layer to having both shares' outputs.
    pub wall_s: f64,
}

/// Decides placement per layer. The hybrid scheduler implements this; with no GPU
/// the [`CpuOnly`] placer puts everything on the CPU.
pub trait Placer: Send {
    /// Plans one layer of one step into `out` (its lists are replaced; the dispatcher
    /// reuses one placement, so a placer need not allocate per layer). `next` predicts
    /// the next layer's experts (expert, probability of selection) for prefetching.
    fn place(
        &mut self,
        layer: usize,
        items: &[WorkItem],
        next: &[(u16, f32)],
        gpu_available: bool,
        out: &mut LayerPlacement,
    );
    /// [`Placer::place`] whose background loads may wait for
    /// [`Placer::place_background`] (`out.loads` then lacks them): the dispatcher asks for
    /// them while the GPU runs the next layer's dense part, off the host's path. The
    /// default plans everything at once.
    fn place_demand(
        &mut self,
        layer: usize,
        items: &[WorkItem],
        next: &[(u16, f32)],
        gpu_available: bool,
        out: &mut LayerPlacement,
    ) {
        self.place(layer, items, next, gpu_available, out);
    }
    /// Appends to `loads` the background loads of the layer [`Placer::place_demand`] left
    /// them for. Only before the placer's next call: a layer not asked for by then plans
    /// none.
    fn place_background(&mut self, _loads: &mut Vec<(u16, u16, u32)>) {}
    /// Feeds back what the layer's execution measured.
    fn observe(&mut self, _layer: usize, _measure: &LayerMeasure<'_>) {}
    /// A forward step over `n_tokens` tokens begins.
    fn begin_step(&mut self, _n_tokens: usize) {}
    /// The step ended after `measured_s` seconds. Its telemetry may wait for
    /// [`Placer::publish`] (or the next `end_step`).
    fn end_step(&mut self, _measured_s: f64) {}
    /// Publishes the ended step's telemetry, statistics and trace if they wait (the
    /// dispatcher calls it while the host waits for the GPU, and before anyone reads
    /// them: a snapshot, a generation's end).
    fn publish(&mut self) {}
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
    /// Whether its plans may run experts on the GPU (device routing runs the resident ones
    /// there before the plan: only for a placer that would).
    fn runs_gpu_experts(&self) -> bool {
        false
    }
    /// The VRAM slots its plans name, `0..n`: the GPU must use no others (None: it names
    /// none, the GPU manages the whole arena).
    fn gpu_slots(&self) -> Option<usize> {
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
        out: &mut LayerPlacement,
    ) {
        out.cpu.clear();
        out.cpu.extend(0..items.len());
        out.gpu.clear();
        out.loads.clear();
    }
}

/// How a layer's GPU share meets a dense path that runs on the same GPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceLink {
    /// Leave the GPU share's output on the device, returned as a `DeviceAddend` that the
    /// dense path's next call adds into its residual.
    pub defer: bool,
    /// The layer's input already on the device (the dense path's `hn`): a deferred GPU
    /// share reads it there instead of uploading the host's copy.
    pub input: Option<DeviceInput>,
    /// The next dense call's hook calls [`MoeDispatch::background_loads`]: the layer's
    /// background loads are planned and issued there, while the GPU runs that call.
    pub background_later: bool,
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
    /// Seconds of GPU expert execution (CUDA events, compute stream).
    pub gpu_seconds: f64,
    /// Seconds of MoE layers, issue to both outputs (host clock).
    pub moe_wall_seconds: f64,
    /// Background loads (prefetches, admissions) issued to the GPU.
    pub loads_issued: u64,
    /// Background loads that failed (logged; the layer that needs the expert copies it).
    pub loads_failed: u64,
    /// Seconds in the placer (planning and feedback), the scheduler's overhead.
    pub sched_seconds: f64,
    /// Of `sched_seconds`: in `Placer::place`, on the host's path from a layer's router to
    /// its experts (the feedback runs while the GPU computes).
    pub place_seconds: f64,
    /// Of `sched_seconds`: inside a dense call's hook, after the call's kernels were
    /// launched and before the host waits for them (a layer's feedback, the last step's
    /// telemetry): hidden while the GPU's work outlasts it.
    pub hooked_sched_seconds: f64,
    /// Layers routed on the device (their resident experts ran in a routed pass).
    pub routed_layers: u64,
}

/// Routing replayed from a recorded or synthetic trace instead of the model's router
/// (benchmarks: random-weight models route near-uniformly; a trace brings real locality).
/// Only one-token (decode) steps are replayed; step `i` uses trace step `i mod len`.
#[derive(Debug)]
struct Replay {
    trace: Trace,
    step: usize,
    active: bool,
}

/// A layer whose GPU share's output was left on the device: its feedback to the placer
/// waits for the GPU's times, read before the next layer is planned.
#[derive(Debug)]
struct PendingObserve {
    layer: usize,
    cpu_items: Vec<WorkItem>,
    gpu_items: Vec<WorkItem>,
    /// The items that ran in the layer's routed pass, and its number.
    routed: Option<(Vec<WorkItem>, u32)>,
    cpu_s: f64,
    /// Host seconds from issuing the layer to the end of its CPU share.
    host_s: f64,
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
    replay: Option<Replay>,
    /// The placement buffers, reused from layer to layer.
    placement: LayerPlacement,
    /// The last deferred layer, not yet fed back.
    pending: Option<PendingObserve>,
    /// `HMOE_MOE_PROFILE=1`: host time of `run_layer` by phase.
    profile: HostProfile,
    /// Decode layers routed on the device (`device_routing.rs`).
    routing: device_routing::DeviceRouting,
    /// The current step's token rows and its `begin_step` seconds, for the profile.
    step_bookkeeping: (usize, f64),
    /// [`PLACE_DELAY_ENV`], [`HOOK_DELAY_ENV`]: busy time added after every plan and in
    /// every hook (diagnostics).
    place_delay: Option<Duration>,
    hook_delay: Option<Duration>,
    /// Item lists of fed-back layers, for the next layers' shares.
    item_lists: Vec<Vec<WorkItem>>,
    /// The layer whose background loads wait for the next dense call's hook.
    background_due: Option<usize>,
    /// A dense call's hook ran in this step (`while_gpu_busy`).
    hooked_step: bool,
}

impl Drop for MoeDispatch {
    fn drop(&mut self) {
        if let Some(r) = self.profile.report() {
            tracing::info!("{r}");
        }
        if let Some(r) = self.cuda.as_ref().and_then(|c| c.submit_profile()) {
            tracing::info!("{r}");
        }
    }
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
            replay: None,
            placement: LayerPlacement::default(),
            pending: None,
            profile: HostProfile::from_env(),
            routing: Default::default(),
            step_bookkeeping: (0, 0.0),
            place_delay: delay_from(
                PLACE_DELAY_ENV,
                std::env::var(PLACE_DELAY_ENV).ok().as_deref(),
            ),
            hook_delay: delay_from(
                HOOK_DELAY_ENV,
                std::env::var(HOOK_DELAY_ENV).ok().as_deref(),
            ),
            item_lists: Vec::new(),
            background_due: None,
            hooked_step: false,
        }
    }

    /// Uses the CUDA backend for the GPU share (overlapped with the CPU share).
    pub fn set_cuda(&mut self, cuda: Arc<GpuExpertExecutor>) {
        self.gpu = Some(cuda.clone());
        self.cuda = Some(cuda);
        self.reset_gpu_slots();
    }

    /// Replaces the placer (policy change between generations).
    pub fn set_placer(&mut self, placer: Box<dyn Placer>) {
        self.placer = placer;
        self.reset_gpu_slots();
    }

    /// Empties the GPU's slot table and confines it to the placer's slots: a budget below
    /// the arena must not compute from slots outside it (the routed pass runs whatever the
    /// table holds; a plan's fetch found resident would skip its copy).
    fn reset_gpu_slots(&self) {
        let limit = self.placer.gpu_slots();
        if let Some(Err(e)) = self.cuda.as_ref().map(|c| c.forget_experts(limit)) {
            tracing::warn!("the GPU's expert slots could not be reset: {e}");
        }
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

    /// Changes the placer's policy, budget or prefetch (between generations). Its expert
    /// cache starts over empty, and so does the GPU's slot table, confined to the new
    /// budget's slots.
    pub fn reconfigure(&mut self, options: &PlacerOptions) -> Result<()> {
        self.placer.reconfigure(options)?;
        self.reset_gpu_slots();
        Ok(())
    }

    /// Totals so far.
    pub fn summary(&self) -> &PlacementSummary {
        &self.summary
    }

    /// Replays `trace`'s routing in one-token steps from now on (None: the router's).
    pub fn set_routing_replay(&mut self, trace: Option<Trace>) {
        self.replay = trace.filter(|t| !t.steps.is_empty()).map(|trace| Replay {
            trace,
            step: 0,
            active: false,
        });
    }

    /// Whether this step's routing comes from a replayed trace (the model then need not
    /// predict the next layer's experts: the trace says which).
    pub fn replaying(&self) -> bool {
        self.replay.as_ref().is_some_and(|r| r.active)
    }

    /// Under replay, in a one-token step: rewrites the token's choice at `layer` to the
    /// trace's experts (keeping the router's weights, best first) and returns the trace's
    /// prediction of the next layer's experts. `None` when not replaying.
    pub fn replay_routing(
        &self,
        layer: usize,
        routing: &mut super::routing::Routing,
    ) -> Option<Vec<(u16, f32)>> {
        let r = self.replay.as_ref().filter(|r| r.active)?;
        let step = &r.trace.steps[r.step % r.trace.steps.len()];
        let l = step.layers.get(layer)?;
        let k = routing.top_k.min(routing.ids.len());
        if l.e.len() < k || routing.n_rows() != 1 {
            return None;
        }
        routing.ids[..k].copy_from_slice(&l.e[..k]);
        Some(l.pred.clone())
    }

    /// Marks the start of a forward step.
    pub fn begin_step(&mut self, n_tokens: usize) {
        self.background_due = None;
        self.hooked_step = false;
        // A step that failed between a routed pass's launch and its layer leaves its
        // choice behind: it must not be taken for this step's first layer.
        self.discard_routed();
        self.step_started = Some(Instant::now());
        if let Some(r) = &mut self.replay {
            r.active = n_tokens == 1;
        }
        let t = Instant::now();
        // A step whose dense calls have no hooks (prefill, host routing) publishes a waiting
        // step now: its plans must see the cost model that step refreshed.
        if n_tokens != 1 || !self.device_routing() {
            self.placer.publish();
        }
        self.placer.begin_step(n_tokens);
        let begin_s = t.elapsed().as_secs_f64();
        self.summary.sched_seconds += begin_s;
        self.step_bookkeeping = (n_tokens, begin_s);
    }

    /// Plans and issues the background loads (prefetches, admissions) of the layer
    /// `prev` run with [`DeviceLink::background_later`]: called from the next dense call's
    /// hook (layer `next`), before its routed pass is launched, so the copies and the
    /// routed pass keep the order they had when the loads were issued by `run_layer`. Its
    /// time counts as `hooked_sched_seconds`.
    pub fn background_loads(&mut self, prev: &LayerExperts<'_>, next: &LayerExperts<'_>) {
        if self.background_due != Some(prev.layer) {
            return;
        }
        self.background_due = None;
        let t = Instant::now();
        let mut loads = std::mem::take(&mut self.placement.loads);
        loads.clear();
        self.placer.place_background(&mut loads);
        let s = t.elapsed().as_secs_f64();
        self.summary.sched_seconds += s;
        self.summary.hooked_sched_seconds += s;
        let (issued, failed) = issue_loads(self.cuda.as_deref(), &loads, prev, Some(next));
        self.summary.loads_issued += issued;
        self.summary.loads_failed += failed;
        self.placement.loads = loads;
    }

    /// Publishes the ended step's telemetry, statistics and trace if they still wait
    /// (see [`Placer::publish`]): before reading the hub or a snapshot, and at the end of
    /// a generation.
    pub fn publish_telemetry(&mut self) {
        let t = Instant::now();
        self.placer.publish();
        self.summary.sched_seconds += t.elapsed().as_secs_f64();
    }

    /// Marks the end of a forward step.
    pub fn end_step(&mut self) {
        // A step that failed after deferring a layer: feed it back now.
        if let Err(e) = self.flush_pending() {
            tracing::warn!("the deferred GPU layer's times could not be read: {e}");
        }
        let s = self
            .step_started
            .take()
            .map_or(0.0, |t| t.elapsed().as_secs_f64());
        if let Some(r) = self.replay.as_mut().filter(|r| r.active) {
            r.step += 1;
            r.active = false;
        }
        let t = Instant::now();
        self.placer.end_step(s);
        // Only a step that ran hooks leaves its publication for the next step's first one
        // (the next step is then decode too, or its `begin_step` publishes); any other
        // publishes at once, as the cost model's refresh must not lag a step behind.
        if !std::mem::take(&mut self.hooked_step) {
            self.placer.publish();
        }
        let end_s = t.elapsed().as_secs_f64();
        self.summary.sched_seconds += end_s;
        let (rows, begin_s) = std::mem::take(&mut self.step_bookkeeping);
        self.profile.step(rows, begin_s, end_s);
    }

    /// Executes one layer: `out += Σ experts`, placed by the plan. `next_layer`: the
    /// next layer's experts, for the plan's prefetches (None for the last layer).
    ///
    /// With `link.defer` (the caller's next step can add a device buffer into its
    /// residual: the GPU dense path), the CUDA share's output is not waited for or added
    /// to `out`: it is returned, left on the device, and `out` gets the CPU share only.
    /// The caller must consume it before the next layer runs. Such a share reads its
    /// input from `link.input` when given (the same values as `x`, on the device).
    #[allow(clippy::too_many_arguments)]
    pub fn run_layer(
        &mut self,
        experts: &LayerExperts<'_>,
        next_layer: Option<&LayerExperts<'_>>,
        x: &[f32],
        hidden: usize,
        items: &[WorkItem],
        next: &[(u16, f32)],
        link: DeviceLink,
        out: &mut [f32],
    ) -> Result<Option<DeviceAddend>> {
        let rows = x.len() / hidden.max(1);
        self.profile.begin(rows);
        // A hook that did not come (a failed call): the placer planned no background loads.
        self.background_due = None;
        let mut plan = std::mem::take(&mut self.placement);
        let t_plan = Instant::now();
        let gpu_available = self.gpu.is_some();
        if link.background_later {
            self.placer
                .place_demand(experts.layer, items, next, gpu_available, &mut plan);
            self.background_due = Some(experts.layer);
        } else {
            self.placer
                .place(experts.layer, items, next, gpu_available, &mut plan);
        }
        let plan_s = t_plan.elapsed().as_secs_f64();
        self.summary.sched_seconds += plan_s;
        self.summary.place_seconds += plan_s;
        if let Some(d) = self.place_delay {
            spin_until(t_plan, Duration::from_secs_f64(plan_s) + d);
        }
        debug_assert_eq!(plan.cpu.len() + plan.gpu.len(), items.len());
        self.profile.lap(Phase::Place);
        // Items whose experts ran in the layer's routed pass (device routing) are done,
        // wherever the plan put them; the plan saw them all (the cache counts every access).
        let (ran_ids, launch) = self.routing.ran.take().unzip();
        let ran = |i: usize| {
            ran_ids
                .as_ref()
                .is_some_and(|e| e.contains(&items[i].expert))
        };
        // The shares' lists reuse the buffers of layers already fed back (a decode layer
        // allocated ~25 vectors here: ~2 us a layer on the GPU machine, on the path).
        let mut cpu_items = self.item_lists.pop().unwrap_or_default();
        let mut gpu_items = self.item_lists.pop().unwrap_or_default();
        copy_items(
            &mut cpu_items,
            items,
            plan.cpu.iter().copied().filter(|&i| !ran(i)),
        );
        copy_items(
            &mut gpu_items,
            items,
            plan.gpu.iter().copied().filter(|&i| !ran(i)),
        );
        self.summary.routed_layers += launch.is_some() as u64;
        let routed = launch.map(|launch| {
            let mut done = self.item_lists.pop().unwrap_or_default();
            copy_items(&mut done, items, (0..items.len()).filter(|&i| ran(i)));
            (done, launch)
        });
        self.profile.lap(Phase::Split);
        let start = Instant::now();
        // The CUDA share is issued before the CPU share, or beside it: both run at once,
        // and the host waits only for the GPU's output.
        let defer = link.defer && self.cuda.is_some() && !gpu_items.is_empty();
        // A prefill layer's submission (packing, uploads, launches: ~1.3 ms at 1024 rows on
        // the GPU machine) and its background loads run on this thread while the pool
        // starts the CPU share. A decode layer's (a few µs) would outlast its small CPU
        // share's first phase and count in the CPU time the cost model fits: it goes first.
        let beside = rows >= SUBMIT_BESIDE_MIN_ROWS && !cpu_items.is_empty();
        // A clone of the handle: the closure lives while `flush_pending` borrows `self`.
        let cuda = self.cuda.clone();
        let (mut ticket, mut submit_s, mut loads) = (None, 0.0, (0, 0));
        let mut submit = || {
            let t = Instant::now();
            let share = cuda.as_deref().filter(|_| !gpu_items.is_empty());
            ticket = share.map(|cuda| match defer {
                true => cuda.submit_on_device(experts, x, link.input, hidden, &gpu_items),
                false => cuda.submit(experts, x, hidden, &gpu_items),
            });
            if beside {
                loads = issue_loads(cuda.as_deref(), &plan.loads, experts, next_layer);
            }
            submit_s = t.elapsed().as_secs_f64();
        };
        if !beside {
            submit();
        }
        self.profile.lap(Phase::Submit);
        if !beside {
            // The previous deferred layer's feedback, off the critical path: its events
            // are read after this layer was issued (the backend alternates two sets of
            // timing events), and this layer's plan used the cost model one layer staler.
            self.flush_pending()?;
        }
        self.profile.lap(Phase::Feedback);
        if let (None, Some(gpu), false) = (&self.cuda, &self.gpu, gpu_items.is_empty()) {
            gpu.execute(experts, x, hidden, &gpu_items, out)?;
        }
        let t0 = Instant::now();
        if beside {
            self.cpu
                .execute_beside(experts, x, hidden, &cpu_items, out, &mut submit)?;
        } else if !cpu_items.is_empty() {
            // An empty share skips the executor (its task list and scratch lock cost ~3 us
            // a decode layer on the GPU machine, HMOE_MOE_PROFILE=1).
            self.cpu.execute(experts, x, hidden, &cpu_items, out)?;
        }
        let cpu_s = t0.elapsed().as_secs_f64();
        self.profile.lap(Phase::Cpu);
        if beside {
            self.profile.beside(Phase::Submit, submit_s);
            self.flush_pending()?;
            self.profile.lap(Phase::Feedback);
        }
        let ticket = ticket.transpose()?;
        let (mut gpu, mut addend) = (None, None);
        if let (Some(cuda), Some(t)) = (&self.cuda, ticket) {
            if defer {
                addend = cuda.defer(t)?;
            } else {
                gpu = Some(cuda.complete(t, out)?);
            }
        }
        // A routed layer's output is the routed pass's, with the rest's GPU output added.
        if let (Some(cuda), Some(_)) = (&self.cuda, &routed) {
            addend = Some(cuda.finish_routed(addend)?);
        }
        let wall_s = start.elapsed().as_secs_f64();
        self.profile.lap(Phase::Finish);
        // Background loads go on the copy stream after this layer's demand copies and
        // overlap the next layer's dense work; the next layer's kernels wait for them.
        if !beside {
            loads = issue_loads(self.cuda.as_deref(), &plan.loads, experts, next_layer);
        }
        self.summary.loads_issued += loads.0;
        self.summary.loads_failed += loads.1;
        self.profile.lap(Phase::Loads);
        self.placement = plan;
        let done = PendingObserve {
            layer: experts.layer,
            cpu_items,
            gpu_items,
            routed,
            cpu_s,
            host_s: wall_s,
        };
        if addend.is_some() {
            self.pending = Some(done);
        } else {
            self.feed_back(done, gpu);
        }
        self.profile.lap(Phase::Record);
        Ok(addend)
    }

    /// Feeds the deferred layer back to the placer, with its GPU times (read from its
    /// events, which have fired once the dense call that consumed its output returned).
    fn flush_pending(&mut self) -> Result<()> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let gpu = match &self.cuda {
            Some(cuda) => cuda.take_deferred_timings()?,
            None => None,
        };
        self.feed_back(p, gpu);
        Ok(())
    }

    /// The placer's feedback and the totals of one executed layer. A deferred layer's
    /// wall time is the longer of its host share and its GPU share (neither waited).
    fn feed_back(&mut self, mut p: PendingObserve, gpu: Option<LayerTimings>) {
        // A routed layer: its routed pass counts as GPU work of the layer too.
        let mut emptied = None;
        let gpu = match p.routed.take() {
            Some((mut done, launch)) => {
                let t = self.routed_timings(launch, done.len(), gpu);
                // Moved, not copied: the (usually empty) rest's list takes the routed ones.
                if p.gpu_items.is_empty() {
                    std::mem::swap(&mut p.gpu_items, &mut done);
                } else {
                    p.gpu_items.append(&mut done);
                }
                emptied = Some(done);
                t
            }
            None => gpu,
        };
        let wall_s = gpu.map_or(p.host_s, |t| p.host_s.max(t.wall_ms as f64 / 1e3));
        let t_obs = Instant::now();
        self.placer.observe(
            p.layer,
            &LayerMeasure {
                cpu_items: &p.cpu_items,
                cpu_s: p.cpu_s,
                gpu_items: &p.gpu_items,
                gpu,
                wall_s,
            },
        );
        self.summary.sched_seconds += t_obs.elapsed().as_secs_f64();
        self.summary.cpu_items += p.cpu_items.len() as u64;
        self.summary.gpu_items += p.gpu_items.len() as u64;
        self.summary.cpu_seconds += p.cpu_s;
        self.summary.gpu_seconds += gpu.map_or(0.0, |t| t.gpu_ms as f64 / 1e3);
        self.summary.moe_wall_seconds += wall_s;
        // Back to the pool, items and all: the next layers' lists reuse them.
        for list in [Some(p.cpu_items), Some(p.gpu_items), emptied]
            .into_iter()
            .flatten()
        {
            if self.item_lists.len() < ITEM_LISTS_KEPT {
                self.item_lists.push(list);
            }
        }
    }
}

/// Item lists kept for reuse: a layer takes up to three, and one layer's wait to be fed
/// back while the next one runs.
const ITEM_LISTS_KEPT: usize = 8;

/// Makes `dst` the items of `items` at `idx`, reusing `dst`'s items and their buffers.
fn copy_items(dst: &mut Vec<WorkItem>, items: &[WorkItem], idx: impl Iterator<Item = usize>) {
    let mut n = 0;
    for i in idx {
        let src = &items[i];
        match dst.get_mut(n) {
            Some(d) => {
                d.expert = src.expert;
                d.rows.clone_from(&src.rows);
                d.weights.clone_from(&src.weights);
            }
            None => dst.push(src.clone()),
        }
        n += 1;
    }
    dst.truncate(n);
}

/// Issues a plan's background loads (`(layer, expert, slot)`, of this layer or the next)
/// on the copy stream; returns `(issued, failed)`. A failed load is logged: the layer
/// that needs the expert copies it then.
fn issue_loads(
    cuda: Option<&GpuExpertExecutor>,
    loads: &[(u16, u16, u32)],
    experts: &LayerExperts<'_>,
    next_layer: Option<&LayerExperts<'_>>,
) -> (u64, u64) {
    let Some(cuda) = cuda else { return (0, 0) };
    let (mut issued, mut failed) = (0, 0);
    for &(layer, expert, slot) in loads {
        let src = if layer as usize == experts.layer {
            Some(experts)
        } else {
            next_layer.filter(|n| n.layer == layer as usize)
        };
        let Some(src) = src else { continue };
        issued += 1;
        if let Err(e) = cuda.prefetch(src, expert, Some(slot)) {
            failed += 1;
            tracing::debug!("background load of expert {expert} (layer {layer}): {e}");
        }
    }
    (issued, failed)
}

#[cfg(test)]
mod tests;
