//! The CUDA side of the engine: which device to use (with a CPU fallback that says why),
//! and the GPU expert executor over `hmoe-cuda`.
//!
//! Compiled in every build: without the `cuda` feature `hmoe-cuda` is a stub whose probe
//! answers "this build has no CUDA support", so the fallback logic is the same code and is
//! tested in CI.
//!
//! Wiring into `Engine::load_blocking` (service.rs) is [`setup_gpu`]: it replaces
//! `device_note(opts.device)?`, its executor goes to `MoeDispatch::new(cpu, gpu, ..)`, and
//! [`GpuSetup::placer_budget`] is the expert VRAM budget the `SchedPlacer` plans with, so
//! the scheduler's cache has exactly the arena's slots.

use crate::api::{DeviceChoice, RuntimeOptions};
use crate::error::{EngineError, Result};
use crate::moe::{ExpertExecutor, LayerExperts, WorkItem};
use hmoe_cuda::{
    CudaError, DeviceAddend, DeviceInfo, DeviceInput, ExpertLayout, GpuConfig, GpuExperts, GpuItem,
    HostSource, LayerTimings, PendingLayer,
};
use hmoe_gguf::GgufFile;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

mod gpu_dense;
mod routed;
pub use gpu_dense::{
    dense_requested, dense_shape, setup_dense, with_dense_weights, GpuDenseExecutor,
};
pub use routed::{device_routing_requested, DEVICE_ROUTING_ENV};

/// Environment variable choosing how expert weights reach the GPU: `registered` (page-
/// lock the mapped experts, DMA straight from the map), `staged` (CPU copy into pinned
/// buffers, then DMA) or `pageable` (baseline). Unset: see [`default_host_source`].
pub const HOST_SOURCE_ENV: &str = "HMOE_CUDA_HOST";
/// Environment variable: the dense path (attention with the KV cache, norms, router, head)
/// runs on the GPU whenever the CUDA expert backend starts and its weights fit; `0` keeps
/// it on the CPU (measured on an H200 at a 1k context: 15 ms a token on the GPU against
/// 45-50 ms on 16 CPU threads, docs/BENCHMARKS.md).
pub const DENSE_ENV: &str = "HMOE_CUDA_DENSE";
/// Tokens of KV cache (all sequences together) kept free for the GPU dense path when the
/// expert arena is sized: Qwen3-30B-A3B takes 192 KiB a token in f32, so 1.5 GiB.
pub const DEFAULT_KV_RESERVE_TOKENS: usize = 8192;
/// Share of the free VRAM the expert arena takes when no budget is given (the rest is for
/// scratch buffers, the dense path and other processes).
pub const DEFAULT_FREE_SHARE: f64 = 0.8;
/// Token rows per layer call the scratch buffers are sized for at start-up (the default
/// prefill chunk); larger calls grow them once.
pub const DEFAULT_MAX_TOKENS: usize = 512;

/// The device decision for `choice`, given how probing the GPU went: `Some(device)` to
/// use CUDA, `None` for the CPU. `Auto` falls back to the CPU with a logged reason;
/// `Cuda` turns the reason into an error.
pub fn decide_device(
    choice: DeviceChoice,
    probe: impl FnOnce() -> std::result::Result<DeviceInfo, CudaError>,
) -> Result<Option<DeviceInfo>> {
    match choice {
        DeviceChoice::Cpu => Ok(None),
        DeviceChoice::Auto => match probe() {
            Ok(info) => Ok(Some(info)),
            Err(e) => {
                tracing::warn!("running on the CPU: {e}");
                Ok(None)
            }
        },
        DeviceChoice::Cuda => probe().map(Some).map_err(|e| {
            EngineError::DeviceUnavailable(format!("CUDA was requested but is unusable: {e}"))
        }),
    }
}

/// [`decide_device`] with the real probe of device 0.
pub fn select_device(choice: DeviceChoice) -> Result<Option<DeviceInfo>> {
    decide_device(choice, || hmoe_cuda::probe(0))
}

/// Bytes of the largest expert in the model (gate + up + down of one expert: Q4_K_M
/// files mix types per layer, so this is the slot size) and the expert shape.
pub fn largest_expert(file: &GgufFile) -> Result<(usize, usize, usize)> {
    let mut per_layer: HashMap<usize, usize> = HashMap::new();
    let (mut hidden, mut ffn) = (0usize, 0usize);
    for t in file.tensors() {
        let Some(rest) = t.name.strip_prefix("blk.") else {
            continue;
        };
        let Some((layer, kind)) = rest.split_once('.') else {
            continue;
        };
        if !matches!(
            kind,
            "ffn_gate_exps.weight" | "ffn_up_exps.weight" | "ffn_down_exps.weight"
        ) {
            continue;
        }
        let Ok(layer) = layer.parse::<usize>() else {
            continue;
        };
        let n_experts = t.dims.get(2).copied().unwrap_or(0) as usize;
        if n_experts == 0 {
            return Err(EngineError::InvalidMetadata(format!(
                "`{}` has no expert dimension",
                t.name
            )));
        }
        *per_layer.entry(layer).or_default() += t.n_bytes as usize / n_experts;
        if kind == "ffn_gate_exps.weight" {
            hidden = t.dims[0] as usize;
            ffn = t.dims[1] as usize;
        }
    }
    let slot = per_layer.values().copied().max().unwrap_or(0);
    if slot == 0 {
        return Err(EngineError::MissingTensor("blk.*.ffn_*_exps.weight".into()));
    }
    Ok((slot, hidden, ffn))
}

/// The scheduler's slot for each (layer, expert) it planned onto the GPU. The placer
/// publishes its plan here; the executor follows it, so the scheduler's `ExpertCache`
/// and the arena agree on residency.
#[derive(Debug, Default)]
pub struct SlotHints {
    /// Per layer, the latest plan's `(expert, slot)` pairs (a handful: top-k). A list per
    /// layer, replaced in place: the map this was scanned every layer's entries on each
    /// publish (2-4 us of the scheduler's time per layer on the GPU machine).
    layers: Mutex<Vec<Vec<(u16, u32)>>>,
}

impl SlotHints {
    /// Records the plan of `layer`: `(expert, slot)` for every GPU hit and fetch.
    pub fn publish(&self, layer: u16, slots: impl IntoIterator<Item = (u16, u32)>) {
        if let Ok(mut m) = self.layers.lock() {
            let l = layer as usize;
            if m.len() <= l {
                m.resize_with(l + 1, Vec::new);
            }
            let list = &mut m[l];
            list.clear();
            list.extend(slots);
        }
    }

    /// The slot planned for `(layer, expert)` (the last one published for it).
    pub fn get(&self, layer: u16, expert: u16) -> Option<u32> {
        let m = self.layers.lock().ok()?;
        let list = m.get(layer as usize)?;
        list.iter().rev().find(|p| p.0 == expert).map(|p| p.1)
    }
}

/// A GPU layer in flight (see [`GpuExpertExecutor::submit`]).
#[derive(Debug)]
pub struct GpuTicket(PendingLayer);

/// Expert executor on the GPU: raw GGUF blocks copied into VRAM slots, batched kernels.
pub struct GpuExpertExecutor {
    gpu: Mutex<GpuExperts>,
    hints: Arc<SlotHints>,
    last: Mutex<Option<LayerTimings>>,
    n_slots: usize,
    slot_bytes: usize,
}

impl std::fmt::Debug for GpuExpertExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuExpertExecutor")
            .field("n_slots", &self.n_slots)
            .field("slot_bytes", &self.slot_bytes)
            .finish()
    }
}

fn cuda_err(layer: usize) -> impl Fn(CudaError) -> EngineError {
    move |e| EngineError::Compute(format!("CUDA experts (layer {layer}): {e}"))
}

impl GpuExpertExecutor {
    /// Starts the backend with `cfg` (arena shrunk on OOM with warnings, which are logged).
    pub fn new(cfg: &GpuConfig) -> std::result::Result<Self, CudaError> {
        let gpu = GpuExperts::new(cfg)?;
        for w in gpu.warnings() {
            tracing::warn!("{w}");
        }
        Ok(Self {
            n_slots: gpu.n_slots(),
            slot_bytes: gpu.slot_bytes(),
            gpu: Mutex::new(gpu),
            hints: Arc::new(SlotHints::default()),
            last: Mutex::new(None),
        })
    }

    /// Slots in the arena.
    pub fn n_slots(&self) -> usize {
        self.n_slots
    }

    /// Bytes per slot.
    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    /// The hints the placer publishes its slots into.
    pub fn hints(&self) -> Arc<SlotHints> {
        self.hints.clone()
    }

    /// Times of the last GPU layer (CUDA events), for the cost model.
    pub fn last_timings(&self) -> Option<LayerTimings> {
        self.last.lock().ok().and_then(|l| *l)
    }

    /// Page-locks every expert tensor of `file` (`HostSource::Registered`). The file must
    /// stay open as long as this executor.
    pub fn register_experts(&self, file: &GgufFile) -> Result<usize> {
        let parts: Vec<&[u8]> = file
            .tensors()
            .filter(|t| t.name.contains("_exps."))
            .map(|t| file.tensor_data(t))
            .collect();
        let mut g = self.lock()?;
        g.register_host(&parts)
            .map_err(|e| EngineError::DeviceUnavailable(format!("registering the model: {e}")))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, GpuExperts>> {
        self.gpu
            .lock()
            .map_err(|_| EngineError::Compute("CUDA backend poisoned by an earlier panic".into()))
    }

    /// Copies `expert` of `experts.layer` into VRAM ahead of use (a prefetch or background
    /// admission of the scheduler's plan, into `slot` if it names one); asynchronous, on
    /// the copy stream. Returns the slot.
    pub fn prefetch(
        &self,
        experts: &LayerExperts<'_>,
        expert: u16,
        slot: Option<u32>,
    ) -> Result<u32> {
        if expert as usize >= experts.n_experts() {
            return Err(EngineError::InvalidRequest(format!(
                "prefetch of expert {expert} in layer {} (it has {})",
                experts.layer,
                experts.n_experts()
            )));
        }
        let v = experts.expert(expert as usize);
        self.lock()?
            .prefetch(
                (experts.layer as u16, expert),
                slot,
                [v.gate.data, v.up.data, v.down.data],
            )
            .map_err(cuda_err(experts.layer))
    }

    /// Issues the GPU share of a layer and returns while it runs; finish with
    /// [`GpuExpertExecutor::complete`] after running the CPU share.
    pub fn submit(
        &self,
        experts: &LayerExperts<'_>,
        x: &[f32],
        hidden: usize,
        items: &[WorkItem],
    ) -> Result<GpuTicket> {
        self.submit_to(experts, (x, None), hidden, items, false)
    }

    /// [`GpuExpertExecutor::submit`] with the output left on the device: finish with
    /// [`GpuExpertExecutor::defer`] (the dense path adds it in its next call) or
    /// [`GpuExpertExecutor::complete`].
    /// `x_dev`: the same input on the device (read there instead of uploaded).
    pub fn submit_on_device(
        &self,
        experts: &LayerExperts<'_>,
        x: &[f32],
        x_dev: Option<DeviceInput>,
        hidden: usize,
        items: &[WorkItem],
    ) -> Result<GpuTicket> {
        self.submit_to(experts, (x, x_dev), hidden, items, true)
    }

    fn submit_to(
        &self,
        experts: &LayerExperts<'_>,
        (x, x_dev): (&[f32], Option<DeviceInput>),
        hidden: usize,
        items: &[WorkItem],
        on_device: bool,
    ) -> Result<GpuTicket> {
        let layer = experts.layer;
        let n_tokens = x.len() / hidden.max(1);
        let submit = |g: &mut GpuExperts, l: &ExpertLayout, items: &[GpuItem<'_>]| {
            if on_device {
                g.submit_layer_on_device(l, layer as u16, x, x_dev, n_tokens, items)
            } else {
                g.submit_layer(l, layer as u16, x, n_tokens, items)
            }
        };
        let Some(first) = items.first() else {
            return submit(&mut *self.lock()?, &empty_layout(hidden), &[])
                .map(GpuTicket)
                .map_err(cuda_err(layer));
        };
        let layout = expert_layout(experts, first.expert).map_err(cuda_err(layer))?;
        let gpu_items: Vec<GpuItem<'_>> = items
            .iter()
            .map(|it| {
                let v = experts.expert(it.expert as usize);
                GpuItem {
                    expert: it.expert,
                    slot_hint: self.hints.get(layer as u16, it.expert),
                    gate: v.gate.data,
                    up: v.up.data,
                    down: v.down.data,
                    rows: &it.rows,
                    weights: &it.weights,
                }
            })
            .collect();
        submit(&mut *self.lock()?, &layout, &gpu_items)
            .map(GpuTicket)
            .map_err(cuda_err(layer))
    }

    /// Leaves a layer submitted with [`GpuExpertExecutor::submit_on_device`] on the device
    /// and returns where its output is (None for an empty layer); its times come later
    /// from [`GpuExpertExecutor::take_deferred_timings`]. The output must be consumed (by
    /// the dense path's next call) before the next layer is submitted.
    pub fn defer(&self, ticket: GpuTicket) -> Result<Option<DeviceAddend>> {
        self.lock()?
            .defer_layer(ticket.0)
            .map_err(|e| EngineError::Compute(format!("CUDA experts: {e}")))
    }

    /// The backend's host profile of decode submissions (`HMOE_MOE_PROFILE=1`), if on.
    pub fn submit_profile(&self) -> Option<String> {
        self.lock().ok()?.submit_profile()
    }

    /// The CUDA-event times of the last deferred layer, once (None if none is pending).
    pub fn take_deferred_timings(&self) -> Result<Option<LayerTimings>> {
        let t = self
            .lock()?
            .take_deferred_timings()
            .map_err(|e| EngineError::Compute(format!("CUDA experts: {e}")))?;
        if let (Some(t), Ok(mut l)) = (t, self.last.lock()) {
            *l = Some(t);
        }
        Ok(t)
    }

    /// Waits for a submitted layer and adds its output to `out`.
    pub fn complete(&self, ticket: GpuTicket, out: &mut [f32]) -> Result<LayerTimings> {
        let t = self
            .lock()?
            .complete_layer(ticket.0, out)
            .map_err(|e| EngineError::Compute(format!("CUDA experts: {e}")))?;
        if let Ok(mut l) = self.last.lock() {
            *l = Some(t);
        }
        Ok(t)
    }
}

/// The kernels' view of expert `e`'s matrices (types and shape; one layer's experts share it).
fn expert_layout(
    experts: &LayerExperts<'_>,
    e: u16,
) -> std::result::Result<ExpertLayout, CudaError> {
    let v = experts.expert(e as usize);
    ExpertLayout::new(
        v.gate.dtype,
        v.up.dtype,
        v.down.dtype,
        v.gate.cols,
        v.gate.rows,
    )
}

fn empty_layout(hidden: usize) -> ExpertLayout {
    ExpertLayout {
        gate_up: hmoe_cuda::KernelType::F32,
        down: hmoe_cuda::KernelType::F32,
        hidden,
        ffn: 0,
    }
}

impl ExpertExecutor for GpuExpertExecutor {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn execute(
        &self,
        experts: &LayerExperts<'_>,
        x: &[f32],
        hidden: usize,
        items: &[WorkItem],
        out: &mut [f32],
    ) -> Result<()> {
        // The arena cannot hold more experts than it has slots at once: larger shares
        // (only if the plan and the arena disagree) run in slot-sized chunks.
        for chunk in items.chunks(self.n_slots.max(1)) {
            let ticket = self.submit(experts, x, hidden, chunk)?;
            self.complete(ticket, out)?;
        }
        Ok(())
    }
}

/// What [`setup_gpu`] decided.
pub struct GpuSetup {
    /// The GPU expert executor, or None to run every expert on the CPU.
    pub executor: Option<Arc<GpuExpertExecutor>>,
    /// The device in use.
    pub device: Option<DeviceInfo>,
    /// One line for logs and the UI: where experts run and why.
    pub note: String,
}

impl GpuSetup {
    /// The expert VRAM budget for the scheduler: exactly the arena's slots, counted in
    /// the scheduler's expert size (`ModelShape::expert_bytes`).
    pub fn placer_budget(&self, shape_expert_bytes: u64) -> u64 {
        self.executor
            .as_ref()
            .map_or(0, |g| g.n_slots() as u64 * shape_expert_bytes)
    }
}

/// Share of the machine's memory the page-locked experts may take by default.
pub const REGISTER_MAX_RAM_SHARE: f64 = 0.5;

/// How expert weights reach the GPU when [`HOST_SOURCE_ENV`] is unset: page-locking the
/// mapped experts is 7x faster (H100 machine: 48-55 GB/s against 7 GB/s through the
/// staging copy, which first touches the map page by page), but it pins them in RAM,
/// so only when they take at most [`REGISTER_MAX_RAM_SHARE`] of it.
pub fn default_host_source(expert_bytes: u64, mem_total_bytes: Option<u64>) -> HostSource {
    match mem_total_bytes {
        Some(total) if (expert_bytes as f64) <= total as f64 * REGISTER_MAX_RAM_SHARE => {
            HostSource::Registered
        }
        _ => HostSource::Staged,
    }
}

/// Total RAM from /proc/meminfo (None where it cannot be read).
fn mem_total_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// How expert weights reach the GPU: [`HOST_SOURCE_ENV`], else [`default_host_source`]
/// for `expert_bytes` of experts on this machine.
pub fn host_source_for(expert_bytes: u64) -> Result<HostSource> {
    match std::env::var(HOST_SOURCE_ENV) {
        Ok(v) => v
            .parse()
            .map_err(|e: String| EngineError::InvalidRequest(format!("{HOST_SOURCE_ENV}: {e}"))),
        Err(_) => Ok(default_host_source(expert_bytes, mem_total_bytes())),
    }
}

/// Chooses the device and starts the GPU expert backend for `file`. With `Auto`, any
/// failure (no feature, driver, device, NVRTC, or memory) leaves the engine on the CPU
/// with a warning; with `Cuda`, it is an error naming the reason.
pub fn setup_gpu(
    choice: DeviceChoice,
    runtime: &RuntimeOptions,
    file: &GgufFile,
    top_k: usize,
) -> Result<GpuSetup> {
    setup_gpu_with(choice, runtime, file, top_k, None)
}

/// [`setup_gpu`] after the GPU dense path started (`dense`): the arena gets what the
/// dense weights and a KV reserve leave (see [`arena_budget`]).
pub fn setup_gpu_with(
    choice: DeviceChoice,
    runtime: &RuntimeOptions,
    file: &GgufFile,
    top_k: usize,
    dense: Option<&GpuDenseExecutor>,
) -> Result<GpuSetup> {
    let cpu = |note: String| GpuSetup {
        executor: None,
        device: None,
        note,
    };
    let mut reason = String::from("requested");
    let probe = || hmoe_cuda::probe(0).inspect_err(|e| reason = e.to_string());
    let Some(info) = decide_device(choice, probe)? else {
        return Ok(cpu(format!("CPU: {reason}")));
    };
    let (slot_bytes, hidden, ffn) = largest_expert(file)?;
    let budget = arena_budget(
        runtime.vram_budget_bytes,
        info.free_bytes,
        dense.map(|d| (d.weight_bytes(), d.kv_reserve_bytes())),
    );
    let cfg = GpuConfig {
        ordinal: info.ordinal,
        budget_bytes: budget,
        slot_bytes,
        min_slots: top_k.max(1),
        hidden,
        ffn,
        max_tokens: DEFAULT_MAX_TOKENS,
        top_k,
        host: host_source_for(
            file.tensors()
                .filter(|t| t.name.contains("_exps."))
                .map(|t| t.n_bytes)
                .sum(),
        )?,
        staging_buffers: 4,
    };
    let started = GpuExpertExecutor::new(&cfg).map(Arc::new);
    match started {
        Ok(g) => {
            if cfg.host == HostSource::Registered {
                // A failed registration is slower copies, not a failed start.
                match g.register_experts(file) {
                    Ok(locked) => {
                        tracing::info!("page-locked {} MiB of expert weights", locked >> 20)
                    }
                    Err(e) => tracing::warn!("expert weights stay pageable (slower copies): {e}"),
                }
            }
            let note = format!(
                "CUDA on {}: {} expert slots of {} MiB ({} MiB), weights via {:?}",
                info.name,
                g.n_slots(),
                g.slot_bytes() >> 20,
                (g.n_slots() * g.slot_bytes()) >> 20,
                cfg.host
            );
            tracing::info!("{note}");
            Ok(GpuSetup {
                executor: Some(g),
                device: Some(info),
                note,
            })
        }
        Err(e) if choice == DeviceChoice::Auto => {
            tracing::warn!("running every expert on the CPU: {e}");
            Ok(cpu(format!("CPU: {e}")))
        }
        Err(e) => Err(EngineError::DeviceUnavailable(format!(
            "CUDA was requested but the expert backend failed to start: {e}"
        ))),
    }
}

/// The expert arena's budget: the user's (`--vram-budget` is the expert cache, as the
/// scheduler and the policies count it, whether or not the dense path is on the GPU) or
/// [`DEFAULT_FREE_SHARE`] of the free memory (measured after the dense path started, so
/// its weights are already out); with the dense path, never more than what leaves its
/// KV reserve free (the arena then clamps to the card as always).
pub fn arena_budget(user: Option<u64>, free: usize, dense: Option<(usize, usize)>) -> u64 {
    let share = (free as f64 * DEFAULT_FREE_SHARE) as u64;
    let b = user.unwrap_or(share);
    match dense {
        None => b,
        Some((_weights, kv_reserve)) => b.min(free.saturating_sub(kv_reserve) as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_the_expert_cache_and_the_kv_reserve_stays_free() {
        let gib = 1usize << 30;
        let free = 70 * gib;
        assert_eq!(arena_budget(Some(16 << 30), free, None), 16 << 30);
        assert_eq!(arena_budget(None, free, None), (free as f64 * 0.8) as u64);
        // A user budget is the expert cache; the dense weights do not come out of it
        // (regression: small budgets fell below top-k slots with the dense path on).
        assert_eq!(
            arena_budget(Some(16 << 30), free, Some((2 * gib, gib))),
            16 << 30
        );
        // ... but the KV reserve stays free.
        assert_eq!(
            arena_budget(Some(80 << 30), free, Some((2 * gib, gib))),
            (69 * gib) as u64
        );
        // The default share is of what the dense path left free.
        assert_eq!(
            arena_budget(None, free, Some((2 * gib, gib))),
            (free as f64 * 0.8) as u64
        );
        // Never into the KV reserve.
        assert_eq!(
            arena_budget(Some(100 << 30), free, Some((2 * gib, 3 * gib))),
            67 << 30
        );
        assert_eq!(
            arena_budget(Some(1 << 30), free, Some((2 * gib, gib))),
            1 << 30
        );
    }

    fn h100() -> DeviceInfo {
        DeviceInfo {
            ordinal: 0,
            name: "NVIDIA H100 80GB HBM3".into(),
            compute_capability: (9, 0),
            total_bytes: 80 << 30,
            free_bytes: 79 << 30,
            sm_count: 132,
            driver_version: 13000,
        }
    }

    #[test]
    fn auto_falls_back_to_the_cpu_and_cuda_fails_with_the_reason() {
        assert_eq!(
            decide_device(DeviceChoice::Auto, || Err(CudaError::NoDriver)).unwrap(),
            None
        );
        let err = decide_device(DeviceChoice::Cuda, || Err(CudaError::NoDriver)).unwrap_err();
        assert!(
            matches!(&err, EngineError::DeviceUnavailable(m) if m.contains("libcuda")),
            "{err}"
        );
        let not_built = decide_device(DeviceChoice::Cuda, || Err(CudaError::NotBuilt)).unwrap_err();
        assert!(
            not_built.to_string().contains("--features cuda"),
            "{not_built}"
        );
        assert_eq!(
            decide_device(DeviceChoice::Cpu, || Ok(h100())).unwrap(),
            None
        );
        assert_eq!(
            decide_device(DeviceChoice::Auto, || Ok(h100())).unwrap(),
            Some(h100())
        );
        assert_eq!(
            decide_device(DeviceChoice::Cuda, || Ok(h100())).unwrap(),
            Some(h100())
        );
    }

    #[test]
    fn cpu_is_never_probed() {
        let r = decide_device(DeviceChoice::Cpu, || panic!("probed"));
        assert_eq!(r.unwrap(), None);
    }

    #[test]
    fn hints_follow_the_latest_plan_of_each_layer() {
        let h = SlotHints::default();
        h.publish(3, [(7, 10), (8, 11)]);
        h.publish(4, [(7, 20)]);
        h.publish(3, [(9, 12)]);
        assert_eq!(h.get(3, 7), None);
        assert_eq!(h.get(3, 9), Some(12));
        assert_eq!(h.get(4, 7), Some(20));
        assert_eq!(h.get(40, 7), None);
        // A plan naming an expert twice: the later slot wins, as it did with a map.
        h.publish(5, [(1, 30), (1, 31)]);
        assert_eq!(h.get(5, 1), Some(31));
    }

    #[test]
    fn registered_by_default_only_when_the_experts_fit_half_the_ram() {
        let gib = 1u64 << 30;
        assert_eq!(
            default_host_source(17 * gib, Some(128 * gib)),
            HostSource::Registered
        );
        assert_eq!(
            default_host_source(17 * gib, Some(32 * gib)),
            HostSource::Staged
        );
        assert_eq!(default_host_source(17 * gib, None), HostSource::Staged);
    }

    #[test]
    fn host_source_parses() {
        assert_eq!(
            "registered".parse::<HostSource>(),
            Ok(HostSource::Registered)
        );
        assert!("pinned".parse::<HostSource>().is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_the_feature_auto_is_cpu_and_cuda_is_an_error() {
        assert_eq!(select_device(DeviceChoice::Auto).unwrap(), None);
        assert!(select_device(DeviceChoice::Cuda).is_err());
    }
}

/// Tests that need the GPU: run on the GPU machine with `HMOE_CUDA_DEVICE_TESTS=1`
/// (scripts/device/cuda-check.sh does); elsewhere they return early and say so.
#[cfg(all(test, feature = "cuda"))]
mod device_tests {
    use super::*;
    use crate::backend::cpu::CpuExecutor;
    use crate::model::dense_exec::DenseDevice;
    use crate::model::qwen3moe::Qwen3Moe;
    use crate::synth::{preset, write_synthetic, Recipe, SynthOptions};
    use hmoe_cuda::verify::compare;

    /// GPU vs CPU experts, both rounding activations to 8 bits the same way: float-level
    /// agreement (~1e-7) except where the two sides' f32 sums fall on either side of a
    /// rounding boundary of the 8-bit activations (summation orders differ), and one
    /// value moves by one step (1/127 of its block's largest). One such step in a layer
    /// of 5 tokens moves the output by ~2-6e-4 (rel. L2) and its worst element by ~1e-3
    /// (seen on an H200: 7.1e-4 / 1.3e-3). A real error (wrong slot, expert or row) is
    /// O(1).
    const PLACEMENT_REL_L2_TOL: f64 = 2e-3;
    /// See [`PLACEMENT_REL_L2_TOL`].
    const PLACEMENT_MAX_REL_TOL: f64 = 5e-3;

    fn enabled() -> bool {
        let on = std::env::var_os("HMOE_CUDA_DEVICE_TESTS").is_some();
        if !on {
            eprintln!("skipped: set HMOE_CUDA_DEVICE_TESTS=1 on a machine with a GPU");
        }
        on
    }

    /// Deterministic routing: token t picks experts (t·5 + j·3) mod E, j < top_k.
    fn items(n_tokens: usize, n_experts: usize, top_k: usize) -> Vec<WorkItem> {
        let mut items: Vec<WorkItem> = Vec::new();
        for t in 0..n_tokens {
            for j in 0..top_k {
                let e = ((t * 5 + j * 3) % n_experts) as u16;
                let w = 0.1 + 0.05 * j as f32;
                match items.iter_mut().find(|it| it.expert == e) {
                    Some(it) => {
                        it.rows.push(t as u32);
                        it.weights.push(w);
                    }
                    None => items.push(WorkItem {
                        expert: e,
                        rows: vec![t as u32],
                        weights: vec![w],
                    }),
                }
            }
        }
        items
    }

    /// The GPU dense path (`HMOE_CUDA_DENSE=1`'s `GpuDense`) against the CPU dense path:
    /// whole-model logits of two sequences batched through prefill and decode on tiny
    /// synthetic models, same f32 reference experts on both sides (tolerance and why:
    /// `LOGITS_REL_L2_TOL` in model::dense_exec::testing), and the greedy tokens agree.
    #[test]
    fn gpu_dense_path_gives_the_cpu_logits() {
        use crate::model::dense_exec::testing::{logits, tiny_model, LOGITS_REL_L2_TOL};
        use crate::model::DenseExec;
        if !enabled() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        for recipe in ["q8_0", "q4_k_m", "q6_k", "bf16"] {
            let mut model = tiny_model(dir.path(), recipe);
            let want = logits(&model);
            let gpu = with_dense_weights(model.file(), &model.cfg, |s, w| {
                hmoe_cuda::GpuDense::new(0, s, w)
            })
            .expect("dense weights")
            .expect("GPU dense path");
            let exec = Arc::new(GpuDenseExecutor::new(gpu));
            model.set_dense(DenseExec::Device(exec.clone()));
            let got = logits(&model);
            let c = compare(&got, &want);
            let vocab = model.cfg.vocab_size;
            let argmax = |v: &[f32]| -> Vec<usize> {
                v.chunks(vocab)
                    .map(|r| {
                        (0..r.len())
                            .max_by(|&a, &b| r[a].total_cmp(&r[b]))
                            .unwrap_or(0)
                    })
                    .collect()
            };
            println!(
                "{recipe}: rel_l2 {:.2e} max_rel {:.2e}; {}",
                c.rel_l2,
                c.max_rel,
                exec.describe()
            );
            assert!(
                got.len() == want.len() && c.rel_l2 <= LOGITS_REL_L2_TOL,
                "{recipe}: {c:?}"
            );
            assert_eq!(argmax(&got), argmax(&want), "{recipe}: greedy tokens");
        }
    }

    /// The tiny synthetic model of `recipe` with `layers` layers, written into `dir`: a
    /// one-thread CPU executor, the loaded model and its largest expert (slot bytes,
    /// hidden, ffn).
    fn tiny_synthetic(
        dir: &std::path::Path,
        recipe: &str,
        layers: usize,
    ) -> (CpuExecutor, Qwen3Moe, (usize, usize, usize)) {
        let path = dir.join(format!("tiny-{recipe}.gguf"));
        let opts = SynthOptions {
            preset: preset("tiny").expect("preset"),
            recipe: Recipe::parse(recipe).expect("recipe"),
            seed: 7,
            layers: Some(layers),
        };
        write_synthetic(&opts, &path, |_, _| {}).expect("synth");
        let file = Arc::new(GgufFile::open(&path).expect("open"));
        let pool = CpuExecutor::pool(1).expect("pool");
        let cpu = CpuExecutor::new(pool.clone());
        let model = Qwen3Moe::load(file.clone(), false, pool, |_, _| {}).expect("load");
        let largest = largest_expert(&file).expect("experts");
        (cpu, model, largest)
    }

    /// A GPU backend of `slots` slots of `slot` bytes, fed through pinned staging.
    fn staged_config(
        slots: usize,
        slot: usize,
        hidden: usize,
        ffn: usize,
        max_tokens: usize,
    ) -> GpuConfig {
        GpuConfig {
            ordinal: 0,
            budget_bytes: (slots * slot.div_ceil(256) * 256) as u64,
            slot_bytes: slot,
            min_slots: 1,
            hidden,
            ffn,
            max_tokens,
            top_k: 4,
            host: HostSource::Staged,
            staging_buffers: 2,
        }
    }

    /// A prefill layer streamed through a few staging slots, as the scheduler plans one
    /// whose cache slots are all pinned: the misses name the same slots round-robin, so
    /// each refill must wait for the launch group that read the slot before it. Wrong
    /// ordering computes with another expert's weights: an O(1) error.
    #[test]
    fn a_layer_streamed_through_reused_staging_slots_matches_the_cpu() {
        if !enabled() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let (cpu, model, (slot, hidden, ffn)) = tiny_synthetic(dir.path(), "q4_k_m", 1);
        let cfg = staged_config(64, slot, hidden, ffn, 16);
        let gpu = GpuExpertExecutor::new(&cfg).expect("GPU backend");
        let experts = model.layer_experts(0);
        // One token (the fused decode pass, which must not take a batch that reuses
        // slots) and 16 (the prefill pass).
        for n_tokens in [1usize, 16] {
            let x: Vec<f32> = (0..n_tokens * hidden)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
                .collect();
            let it = items(n_tokens, experts.n_experts(), 4);
            let mut want = vec![0f32; x.len()];
            cpu.execute(&experts, &x, hidden, &it, &mut want)
                .expect("CPU experts");
            // Staging rings of 1 to 4 slots at the top of a 10-slot cache, then a pass
            // that finds the last ring's final experts resident.
            for (ring, reset) in [(1u32, true), (2, true), (3, true), (4, true), (4, false)] {
                if reset {
                    gpu.forget_experts(Some(10)).expect("limit");
                }
                gpu.hints().publish(
                    0,
                    it.iter()
                        .enumerate()
                        .map(|(k, w)| (w.expert, 10 - ring + k as u32 % ring)),
                );
                let mut got = vec![0f32; x.len()];
                gpu.execute(&experts, &x, hidden, &it, &mut got)
                    .expect("gpu");
                let c = compare(&got, &want);
                println!(
                    "tokens {n_tokens}, ring {ring} (reset {reset}), {} items: rel_l2 {:.2e} max_rel {:.2e}",
                    it.len(),
                    c.rel_l2,
                    c.max_rel
                );
                assert!(
                    c.rel_l2 <= PLACEMENT_REL_L2_TOL
                        && c.max_rel <= PLACEMENT_MAX_REL_TOL
                        && got.iter().all(|v| v.is_finite()),
                    "tokens {n_tokens}, ring {ring}: {c:?}"
                );
            }
        }
    }

    #[test]
    fn gpu_executor_matches_the_reference_on_synthetic_models() {
        if !enabled() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        for recipe in ["q8_0", "q4_k_m", "q6_k"] {
            let (cpu, model, (slot, hidden, ffn)) = tiny_synthetic(dir.path(), recipe, 2);
            // Fewer slots than a layer's items: exercises eviction and chunking.
            for slots in [64usize, 6] {
                let cfg = staged_config(slots, slot, hidden, ffn, 8);
                let gpu = GpuExpertExecutor::new(&cfg).expect("GPU backend");
                for layer in 0..2 {
                    let experts = model.layer_experts(layer);
                    for n_tokens in [1usize, 5, 12] {
                        let x: Vec<f32> = (0..n_tokens * hidden)
                            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
                            .collect();
                        let it = items(n_tokens, experts.n_experts(), 4);
                        // Against the CPU's own kernels: the GPU rounds activations
                        // as they do, so placement changes results by float rounding
                        // (and rare one-step rounding flips: PLACEMENT_REL_L2_TOL).
                        let mut want = vec![0f32; x.len()];
                        cpu.execute(&experts, &x, hidden, &it, &mut want)
                            .expect("CPU experts");
                        // Twice: first copies, then (with 64 slots) all resident.
                        for pass in 0..2 {
                            let mut got = vec![0f32; x.len()];
                            gpu.execute(&experts, &x, hidden, &it, &mut got)
                                .expect("gpu");
                            let c = compare(&got, &want);
                            println!(
                                "{recipe} slots {slots} layer {layer} tokens {n_tokens} pass {pass}: rel_l2 {:.2e} max_rel {:.2e}",
                                c.rel_l2, c.max_rel
                            );
                            assert!(
                                c.rel_l2 <= PLACEMENT_REL_L2_TOL
                                    && c.max_rel <= PLACEMENT_MAX_REL_TOL
                                    && got.iter().all(|v| v.is_finite()),
                                "{recipe} slots {slots} layer {layer} tokens {n_tokens}: {c:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}
