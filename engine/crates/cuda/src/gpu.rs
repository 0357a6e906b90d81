//! The CUDA expert backend: context, NVRTC module, VRAM arena, pinned buffers, the copy
//! and compute streams with per-slot events, and the batched launches of a layer.
//!
//! Ordering (nothing synchronous on the hot path except the final wait for the layer's
//! output, which the caller needs):
//! - a copy into slot `s` runs on the copy stream after the release event of the last
//!   layer whose kernels read the slot's previous expert, and records `ready[s]`;
//! - the compute stream uploads x and the index tables, runs the hits' kernels after
//!   waiting on their `ready` events only (none for a slot whose copy was already seen
//!   complete), then the fetched items' kernels after theirs,
//!   records one release event (from a ring of [`RELEASE_RING`]) after its expert
//!   kernels, noted for every slot it read, combines and downloads the output.

use crate::api::{DeviceInput, GpuConfig, GpuItem, HostSource, LayerTimings, OverlapReport};
use crate::arena::{allocate, ArenaRequest};
use crate::batch::{pack, BatchItem, BatchLayout, ITEM_WORDS};
use crate::device::{no_panic, DeviceInfo};
use crate::dtype::{ExpertLayout, KernelType};
use crate::error::{CudaError, Result};
use crate::slots::{stream_groups, SlotAction, SlotTable};
use crate::{COMBINE_THREADS, KERNEL_SOURCE, WARPS_PER_BLOCK};
use cudarc::driver::result::{self as cu, DriverError};
use cudarc::driver::sys::{self, CUdevice_attribute, CUevent_flags};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaStream, LaunchConfig, PushKernelArg,
};
use dense_graphs::{GraphCache, PassKey};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Output rows per warp of gate_up and down: the defaults of `RPW_GU` and `RPW_DN` in
/// kernels.cu (checked by a test in gpu/kernel_bench.rs).
const EXPERT_ROWS_PER_WARP: (u32, u32) = (1, 1);

mod attend;
mod attend_bench;
mod deferred;
mod dense;
mod dense_graphs;
mod dense_profile;
mod fused;
mod gemm;
mod host_copy;
mod kernel_bench;
mod resident;
mod routed;
mod submit_profile;

pub use attend_bench::{AttendBench, AttentionBench, BenchSeq, SplitRun, TiledRun};
pub use fused::FUSE_ENV;
pub use resident::GpuDense;

/// Release events in the ring (more than a model's layers, so that a slot's event is
/// normally still its own layer's when a copy waits on it).
const RELEASE_RING: usize = 256;

fn drv(op: impl Into<String>) -> impl FnOnce(DriverError) -> CudaError {
    let op = op.into();
    move |e| CudaError::Driver {
        op,
        detail: format!("{e:?}"),
    }
}

fn is_oom(e: &DriverError) -> bool {
    e.0 == sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY
}

/// Loads the driver and NVRTC libraries, or says which is missing.
fn libraries() -> Result<()> {
    // SAFETY: only probes dlopen; no CUDA call is made.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(CudaError::NoDriver);
    }
    Ok(())
}

fn context(ordinal: usize) -> Result<Arc<CudaContext>> {
    libraries()?;
    cu::init().map_err(|e| {
        if e.0 == sys::cudaError_enum::CUDA_ERROR_NO_DEVICE {
            CudaError::NoDevice
        } else {
            drv("cuInit")(e)
        }
    })?;
    let count = CudaContext::device_count().map_err(drv("cuDeviceGetCount"))? as usize;
    if count == 0 {
        return Err(CudaError::NoDevice);
    }
    if ordinal >= count {
        return Err(CudaError::BadOrdinal { ordinal, count });
    }
    let ctx =
        CudaContext::new(ordinal).map_err(drv(format!("create context on device {ordinal}")))?;
    // We order our raw buffers with our own events; cudarc's per-slice tracking is unused.
    // SAFETY: no CudaSlice is shared between streams in this crate.
    unsafe { ctx.disable_event_tracking() };
    Ok(ctx)
}

fn info(ctx: &Arc<CudaContext>) -> Result<DeviceInfo> {
    let mut driver_version = 0i32;
    // SAFETY: plain out-parameter call.
    unsafe { sys::cuDriverGetVersion(&mut driver_version) }
        .result()
        .map_err(drv("cuDriverGetVersion"))?;
    let (free_bytes, total_bytes) = ctx.mem_get_info().map_err(drv("cuMemGetInfo"))?;
    Ok(DeviceInfo {
        ordinal: ctx.ordinal(),
        name: ctx.name().map_err(drv("cuDeviceGetName"))?,
        compute_capability: ctx
            .compute_capability()
            .map_err(drv("compute capability"))?,
        total_bytes,
        free_bytes,
        sm_count: ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(drv("SM count"))?,
        driver_version,
    })
}

/// Probes device `ordinal` (see [`crate::probe`]).
pub(crate) fn probe(ordinal: usize) -> Result<DeviceInfo> {
    let ctx = context(ordinal)?;
    info(&ctx)
}

/// Page-locked host memory from `cuMemHostAlloc`.
struct Pinned {
    ptr: *mut u8,
    len: usize,
}

impl Pinned {
    fn new(len: usize, what: &str) -> Result<Self> {
        // SAFETY: allocation; freed in Drop.
        let ptr = unsafe { cu::malloc_host(len.max(1), 0) }
            .map_err(drv(format!("cuMemHostAlloc({what}, {len} bytes)")))?;
        Ok(Self {
            ptr: ptr as *mut u8,
            len,
        })
    }
    /// Page-locked memory that kernels can also write (`CU_MEMHOSTALLOC_DEVICEMAP`), and
    /// its device address.
    fn mapped(len: usize, what: &str) -> Result<(Self, u64)> {
        // SAFETY: allocation; freed in Drop.
        let ptr = unsafe { cu::malloc_host(len.max(1), sys::CU_MEMHOSTALLOC_DEVICEMAP) }
            .map_err(drv(format!("cuMemHostAlloc({what}, {len} bytes, mapped)")))?;
        let me = Self {
            ptr: ptr as *mut u8,
            len,
        };
        let mut dev: sys::CUdeviceptr = 0;
        // SAFETY: ptr was allocated mapped just above.
        unsafe { sys::cuMemHostGetDevicePointer_v2(&mut dev, me.ptr as *mut _, 0) }
            .result()
            .map_err(drv(format!("cuMemHostGetDevicePointer({what})")))?;
        Ok((me, dev))
    }
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: ptr is a live allocation of len bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
    fn floats(&mut self, n: usize) -> &mut [f32] {
        let n = n.min(self.len / 4);
        // SAFETY: cuMemHostAlloc memory is page aligned; n floats fit.
        unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut f32, n) }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: allocated by cuMemHostAlloc; every copy from it has completed (the owner
        // synchronises its streams before dropping).
        let _ = unsafe { cu::free_host(self.ptr as *mut _) };
    }
}

/// Device memory from `cuMemAlloc`.
struct DeviceBuf {
    ptr: u64,
    len: usize,
}

impl DeviceBuf {
    fn new(len: usize, what: &str) -> Result<Self> {
        // SAFETY: allocation; freed in Drop.
        let ptr = unsafe { cu::malloc_sync(len.max(1)) }
            .map_err(drv(format!("cuMemAlloc({what}, {len} bytes)")))?;
        Ok(Self { ptr, len })
    }
    /// Grows to at least `len` bytes (a synchronous free + alloc: only when a call is
    /// larger than any before; sized at start-up for `max_tokens`). Grows by half again
    /// at least: a prefill layer's GPU share varies in pairs from layer to layer, and
    /// growing to each new largest exactly stalled the device once per new record.
    fn ensure(&mut self, len: usize, what: &str) -> Result<()> {
        if len > self.len {
            let grown = len.max(self.len + self.len / 2);
            // The old buffer goes first (the device may have room for one, not both).
            *self = DeviceBuf { ptr: 0, len: 0 };
            *self = match DeviceBuf::new(grown, what) {
                Ok(b) => b,
                Err(_) if grown > len => DeviceBuf::new(len, what)?,
                Err(e) => return Err(e),
            };
        }
        Ok(())
    }
}

impl Drop for DeviceBuf {
    fn drop(&mut self) {
        if self.ptr == 0 {
            return; // emptied by `ensure` before a failed allocation
        }
        // SAFETY: allocated by cuMemAlloc; cuMemFree waits for work using it.
        let _ = unsafe { cu::free_sync(self.ptr) };
    }
}

/// Kernels of one weight type.
struct TypeKernels {
    gate_up: CudaFunction,
    down: CudaFunction,
}

/// A layer issued by [`GpuExperts::submit_layer`], to pass to [`GpuExperts::complete_layer`].
#[derive(Debug)]
#[must_use = "a submitted layer must be completed"]
pub struct PendingLayer {
    values: usize,
    timings: LayerTimings,
    started: Instant,
    /// Submitted with [`GpuExperts::submit_layer_on_device`]: no download enqueued.
    on_device: bool,
}

impl PendingLayer {
    /// Output values the layer will add (`n_tokens × hidden`; 0 for an empty batch).
    pub fn values(&self) -> usize {
        self.values
    }
}

/// Waits for a layer's end event in `set` and reads its compute-stream time (`gpu_ms`)
/// and, if it copied experts, its copy-stream time (`copy_ms`).
fn read_times(set: &[CudaEvent; 4], t: &mut LayerTimings) -> Result<()> {
    set[1]
        .synchronize()
        .map_err(drv("cuEventSynchronize(layer end)"))?;
    t.gpu_ms = set[0]
        .elapsed_ms(&set[1])
        .map_err(drv("cuEventElapsedTime"))?;
    if t.fetches > 0 {
        // The copy stream's end event follows the last `ready` the compute stream waited
        // for, but may not be marked complete yet: wait for it (≈ free).
        set[3]
            .synchronize()
            .map_err(drv("cuEventSynchronize(copy end)"))?;
        t.copy_ms = set[2]
            .elapsed_ms(&set[3])
            .map_err(drv("cuEventElapsedTime"))?;
    }
    Ok(())
}

/// A range of host memory registered with `cuMemHostRegister`.
struct Registered {
    start: usize,
    end: usize,
}

/// The GPU expert backend (see the module docs for the ordering rules).
pub struct GpuExperts {
    info: DeviceInfo,
    cfg: GpuConfig,
    kernels: HashMap<KernelType, TypeKernels>,
    combine: CudaFunction,
    act_round_from: CudaFunction,
    spin: CudaFunction,
    dense_fns: dense::DenseKernels,
    gemm: gemm::GemmKernels,
    fused: fused::FusedKernels,
    arena: DeviceBuf,
    n_slots: usize,
    table: SlotTable,
    ready: Vec<CudaEvent>,
    /// Per slot: its last copy is known to have landed (its `ready` event was seen
    /// complete), so the compute stream need not wait on it: a decode layer of hits
    /// otherwise issues one stream wait per expert, each a driver call on the hot path.
    landed: Vec<bool>,
    /// Release events, one recorded per layer after its expert kernels (a ring: one event
    /// per slot cost an event record per expert per layer).
    release_ring: Vec<CudaEvent>,
    release_next: usize,
    /// Per slot: the ring index of the release event of the last layer that read it.
    slot_release: Vec<Option<u16>>,
    /// Per launch group of a batch that reuses slots ([`stream_groups`]): recorded after
    /// the group's kernels, waited for by the copy into a slot it read.
    group_done: Vec<CudaEvent>,
    staging: Vec<(Pinned, CudaEvent)>,
    staging_next: usize,
    registered: Vec<Registered>,
    x_host: Pinned,
    meta_host: Pinned,
    out_host: Pinned,
    x_dev: DeviceBuf,
    meta_dev: DeviceBuf,
    act_dev: DeviceBuf,
    y_dev: DeviceBuf,
    out_dev: DeviceBuf,
    packed: Vec<u8>,
    in_flight: bool,
    /// Where the int8 decode pass (which rounds x itself) reads this pass's x: the dense
    /// path's hn (no copy into `x_dev`); None: `x_dev`.
    x_in: Option<u64>,
    /// Where a pass's down + combine writes instead of `out_dev` (the device-routed pass,
    /// `routed.rs`); None: `out_dev`.
    pass_out: Option<u64>,
    /// Device-side decode routing, once enabled ([`GpuExperts::enable_routing`]).
    routed: Option<routed::Routed>,
    /// `route_resident` and `add_to`, when the module has them.
    route_fns: Option<(CudaFunction, CudaFunction)>,
    /// Captured decode passes of resident experts ([`GpuExperts::run_pass_graph`]).
    pass_graphs: GraphCache<PassKey>,
    /// `HMOE_MOE_PROFILE=1`: host time of decode submissions by step.
    submit_profile: submit_profile::SubmitProfile,
    /// A layer whose output was left on the device ([`GpuExperts::defer_layer`]).
    deferred: Option<deferred::Deferred>,
    /// Its timings, read when the next layer was submitted (events are reused).
    harvested: Option<LayerTimings>,
    /// A layer's timing events: compute start, end (also a deferred layer's ready event),
    /// copy start, copy end.
    t: [CudaEvent; 4],
    /// The other set: each submission swaps them, so a deferred layer's events stay
    /// untouched while the next layer is issued and are read after its launch, off the
    /// path between the router and the GPU's work.
    t_alt: [CudaEvent; 4],
    warnings: Vec<String>,
    copy: Arc<CudaStream>,
    compute: Arc<CudaStream>,
    ctx: Arc<CudaContext>,
}

// SAFETY: the raw pointers are owned allocations used only through &mut self; the CUDA
// context is bound to the calling thread at the start of every method.
unsafe impl Send for GpuExperts {}
unsafe impl Sync for GpuExperts {}

/// Environment variable: extra `NAME=VALUE` defines (comma or space separated) for the
/// engine's NVRTC compile of the kernels, to time a compile-time setting (e.g.
/// `U_LIN=8`) end to end without a rebuild. Not applied to a prebuilt PTX file.
pub const DEFINES_ENV: &str = "HMOE_CUDA_DEFINES";

/// The defines of [`DEFINES_ENV`]; a malformed one (its name not letters, digits and
/// `_`) is an error that names it.
fn env_defines() -> Result<Vec<String>> {
    let Ok(v) = std::env::var(DEFINES_ENV) else {
        return Ok(Vec::new());
    };
    v.split([',', ' '])
        .filter(|d| !d.is_empty())
        .map(|d| {
            let name = d.split('=').next().unwrap_or("");
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(CudaError::Compile(format!(
                    "{DEFINES_ENV}: `{d}` is not NAME=VALUE"
                )));
            }
            Ok(d.to_string())
        })
        .collect()
}

/// Compiles the kernels with NVRTC for compute capability `cc` (needs only libnvrtc,
/// no GPU), with the defines of [`DEFINES_ENV`]. Returns the PTX text.
pub fn compile_kernels(cc: (i32, i32)) -> Result<String> {
    // SAFETY: only probes dlopen.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(CudaError::NoNvrtc);
    }
    // The expert backend and the dense path both load the module: compile once.
    static CACHE: std::sync::OnceLock<std::sync::Mutex<HashMap<(i32, i32), String>>> =
        std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(ptx) = cache.lock().ok().and_then(|c| c.get(&cc).cloned()) {
        return Ok(ptx);
    }
    let mut options = vec![format!("--gpu-architecture=compute_{}{}", cc.0, cc.1)];
    let defines = env_defines()?;
    // No int8 mma tiles below sm_80: the f32 tiled kernel's threshold (GemmShape::engine).
    if cc.0 * 10 + cc.1 < gemm::MMA_MIN_ARCH
        && !defines.iter().any(|d| d.starts_with("GEMM_MIN_TOKENS="))
    {
        options.push(format!("-DGEMM_MIN_TOKENS={}", gemm::F32_GEMM_MIN_TOKENS));
    }
    options.extend(defines.into_iter().map(|d| format!("-D{d}")));
    let opts = cudarc::nvrtc::CompileOptions {
        options,
        name: Some("hmoe_kernels.cu".into()),
        ..Default::default()
    };
    let ptx = no_panic("NVRTC", || {
        cudarc::nvrtc::compile_ptx_with_opts(KERNEL_SOURCE, opts)
            .map(|p| p.to_src())
            .map_err(|e| match e {
                cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                    CudaError::Compile(log.to_string_lossy().into_owned())
                }
                e => CudaError::Compile(format!("{e}")),
            })
    })?;
    if let Ok(mut c) = cache.lock() {
        c.insert(cc, ptx.clone());
    }
    Ok(ptx)
}

/// Environment variable (bytes) overriding the free device memory the arena is sized
/// from (and the dense path checks its weights against): a test knob that makes the
/// first allocations fail for real.
pub const ASSUME_FREE_ENV: &str = "HMOE_CUDA_ASSUME_FREE_BYTES";

/// Environment variable naming a PTX file of `kernels.cu` to load instead of compiling
/// with NVRTC (for machines without libnvrtc; `hmoe-cuda-check ptx FILE` writes one).
pub const PTX_ENV: &str = "HMOE_CUDA_PTX";
/// Environment variable naming a PTX file to load when NVRTC is missing or its PTX does
/// not load (e.g. an NVRTC newer than the driver: `CUDA_ERROR_UNSUPPORTED_PTX_VERSION`).
pub const PTX_FALLBACK_ENV: &str = "HMOE_CUDA_PTX_FALLBACK";

fn load_ptx_file(
    ctx: &Arc<CudaContext>,
    var: &str,
    path: &std::ffi::OsStr,
) -> Result<Arc<cudarc::driver::CudaModule>> {
    let src = std::fs::read_to_string(path)
        .map_err(|e| CudaError::Compile(format!("{var}={}: {e}", path.to_string_lossy())))?;
    ctx.load_module(cudarc::nvrtc::Ptx::from_src(src))
        .map_err(drv(format!("cuModuleLoadData({})", path.to_string_lossy())))
}

/// The kernel module: `HMOE_CUDA_PTX` if set, else NVRTC, else `HMOE_CUDA_PTX_FALLBACK`
/// (with a warning saying why).
fn compile(
    ctx: &Arc<CudaContext>,
    cc: (i32, i32),
    warnings: &mut Vec<String>,
) -> Result<Arc<cudarc::driver::CudaModule>> {
    if let Some(path) = std::env::var_os(PTX_ENV) {
        return load_ptx_file(ctx, PTX_ENV, &path);
    }
    let nvrtc = compile_kernels(cc).and_then(|src| {
        ctx.load_module(cudarc::nvrtc::Ptx::from_src(src))
            .map_err(drv("cuModuleLoadData(NVRTC expert kernels)"))
    });
    match (nvrtc, std::env::var_os(PTX_FALLBACK_ENV)) {
        (Ok(m), _) => Ok(m),
        (Err(e), Some(path)) => {
            warnings.push(format!(
                "NVRTC kernels unusable ({e}); loaded {}",
                path.to_string_lossy()
            ));
            load_ptx_file(ctx, PTX_FALLBACK_ENV, &path)
        }
        (Err(e), None) => Err(e),
    }
}

impl GpuExperts {
    /// Starts the backend: context, kernels (NVRTC), streams, the arena (shrunk on OOM
    /// with warnings, refused below `min_slots`), pinned buffers. Never panics.
    pub fn new(cfg: &GpuConfig) -> Result<Self> {
        no_panic("GPU expert backend start-up", || Self::start(cfg))
    }

    fn start(cfg: &GpuConfig) -> Result<Self> {
        let ctx = context(cfg.ordinal)?;
        let info = info(&ctx)?;
        let mut warnings = Vec::new();
        let module = compile(&ctx, info.compute_capability, &mut warnings)?;
        let f = |name: &str| {
            module
                .load_function(name)
                .map_err(drv(format!("kernel `{name}`")))
        };
        let mut kernels = HashMap::new();
        for t in KernelType::ALL {
            kernels.insert(
                t,
                TypeKernels {
                    gate_up: f(&format!("gate_up_{}", t.suffix()))?,
                    down: f(&format!("down_{}", t.suffix()))?,
                },
            );
        }
        let (combine, spin) = (f("combine")?, f("spin")?);
        let act_round_from = f("act_round_from")?;
        // Device routing's kernels (route.cu; add_to of dense.cu): optional, so that a PTX
        // file built before them still loads (routing then stays off).
        let route_fns = f("route_resident").ok().zip(f("add_to").ok());
        let dense_fns = dense::DenseKernels::load(&f)?;
        let gemm = gemm::GemmKernels::load(&f)?;
        let fused = fused::FusedKernels::load(&f)?;
        let copy = ctx.new_stream().map_err(drv("create copy stream"))?;
        let compute = ctx.new_stream().map_err(drv("create compute stream"))?;
        let slot_bytes = cfg.slot_bytes.div_ceil(256) * 256;
        // Scratch first: the arena takes what is left.
        let pairs = cfg.max_tokens.max(1) * cfg.top_k.max(1);
        let x_len = cfg.max_tokens.max(1) * cfg.hidden * 4;
        let meta_len = 64 * 1024 + pairs * 24;
        let x_dev = DeviceBuf::new(x_len, "layer input")?;
        let out_dev = DeviceBuf::new(x_len, "layer output")?;
        let meta_dev = DeviceBuf::new(meta_len, "index tables")?;
        let act_dev = DeviceBuf::new(pairs * cfg.ffn * 4, "SwiGLU activations")?;
        let y_dev = DeviceBuf::new(pairs * cfg.hidden * 4, "per-pair outputs")?;
        let (mut free_bytes, total_bytes) = ctx.mem_get_info().map_err(drv("cuMemGetInfo"))?;
        // Test knob: pretend more memory is free, so the first allocations really fail
        // and the out-of-memory shrink path runs against the driver (hmoe-cuda-check).
        if let Some(v) = std::env::var(ASSUME_FREE_ENV)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            free_bytes = v;
        }
        let req = ArenaRequest {
            slot_bytes,
            want_slots: (cfg.budget_bytes / slot_bytes as u64) as usize,
            min_slots: cfg.min_slots.max(1),
        };
        let out = allocate(&req, free_bytes, total_bytes, |bytes| {
            // SAFETY: allocation; owned by DeviceBuf below.
            match unsafe { cu::malloc_sync(bytes) } {
                Ok(ptr) => Ok(Some(DeviceBuf { ptr, len: bytes })),
                Err(e) if is_oom(&e) => Ok(None),
                Err(e) => Err(drv(format!("cuMemAlloc(expert arena, {bytes} bytes)"))(e)),
            }
        })?;
        let n_slots = out.slots;
        let mut ready = Vec::with_capacity(n_slots);
        for _ in 0..n_slots {
            ready.push(ctx.new_event(None).map_err(drv("cuEventCreate(slot)"))?);
        }
        let mut release_ring = Vec::with_capacity(RELEASE_RING);
        for _ in 0..RELEASE_RING {
            release_ring.push(ctx.new_event(None).map_err(drv("cuEventCreate(release)"))?);
        }
        let mut staging = Vec::new();
        if cfg.host != HostSource::Pageable {
            for _ in 0..cfg.staging_buffers.max(2) {
                staging.push((
                    Pinned::new(slot_bytes, "staging buffer")?,
                    ctx.new_event(None).map_err(drv("cuEventCreate(staging)"))?,
                ));
            }
        }
        let timing = || {
            ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(drv("cuEventCreate(timing)"))
        };
        let t = [timing()?, timing()?, timing()?, timing()?];
        let t_alt = [timing()?, timing()?, timing()?, timing()?];
        Ok(Self {
            info,
            cfg: GpuConfig {
                slot_bytes,
                ..cfg.clone()
            },
            kernels,
            combine,
            act_round_from,
            spin,
            dense_fns,
            gemm,
            fused,
            arena: out.alloc,
            n_slots,
            table: SlotTable::new(n_slots),
            landed: vec![false; n_slots],
            ready,
            release_ring,
            release_next: 0,
            slot_release: vec![None; n_slots],
            group_done: Vec::new(),
            staging,
            staging_next: 0,
            registered: Vec::new(),
            x_host: Pinned::new(x_len, "layer input")?,
            meta_host: Pinned::new(meta_len, "index tables")?,
            out_host: Pinned::new(x_len, "layer output")?,
            x_dev,
            meta_dev,
            act_dev,
            y_dev,
            out_dev,
            packed: Vec::new(),
            in_flight: false,
            x_in: None,
            pass_out: None,
            routed: None,
            route_fns,
            pass_graphs: GraphCache::from_env(),
            submit_profile: submit_profile::SubmitProfile::from_env(),
            deferred: None,
            harvested: None,
            t,
            t_alt,
            warnings: {
                warnings.extend(out.warnings);
                warnings
            },
            copy,
            compute,
            ctx,
        })
    }

    /// The device.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Slots in the arena.
    pub fn n_slots(&self) -> usize {
        self.n_slots
    }

    /// Bytes per slot (the largest expert, rounded up to 256).
    pub fn slot_bytes(&self) -> usize {
        self.cfg.slot_bytes
    }

    /// Warnings from start-up (arena shrinks).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The slot table.
    pub fn table(&self) -> &SlotTable {
        &self.table
    }

    /// Page-locks host memory (the mapped model's expert tensors) so copies from it are
    /// DMA at full link speed (`HostSource::Registered`). Ranges are widened to pages and
    /// merged; read-only registration (the map is never written). Returns bytes locked.
    /// The caller keeps the memory mapped for the life of this backend.
    pub fn register_host(&mut self, parts: &[&[u8]]) -> Result<usize> {
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        let ranges: Vec<(usize, usize)> = parts
            .iter()
            .map(|p| (p.as_ptr() as usize, p.len()))
            .collect();
        let flags = sys::CU_MEMHOSTREGISTER_READ_ONLY | sys::CU_MEMHOSTREGISTER_PORTABLE;
        let mut locked = 0;
        for (start, end) in crate::pages::merge_pages(&ranges) {
            if self
                .registered
                .iter()
                .any(|r| r.start < end && start < r.end)
            {
                continue; // already (partly) registered by an earlier call
            }
            // SAFETY: registers pages of live mappings (widened to whole pages, which
            // belong to the same mapping); unregistered in Drop.
            unsafe { sys::cuMemHostRegister_v2(start as *mut _, end - start, flags) }
                .result()
                .map_err(drv(format!(
                    "cuMemHostRegister({} MiB)",
                    (end - start) >> 20
                )))?;
            self.registered.push(Registered { start, end });
            locked += end - start;
        }
        Ok(locked)
    }

    fn is_registered(&self, b: &[u8]) -> bool {
        let (s, e) = (b.as_ptr() as usize, b.as_ptr() as usize + b.len());
        self.registered.iter().any(|r| r.start <= s && e <= r.end)
    }

    fn slot_ptr(&self, slot: u32) -> u64 {
        self.arena.ptr + slot as u64 * self.cfg.slot_bytes as u64
    }

    /// Issues the copy of an expert's three parts into `slot` on the copy stream.
    fn copy_into(&mut self, slot: u32, parts: [&[u8]; 3]) -> Result<u64> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > self.cfg.slot_bytes {
            return Err(CudaError::ExpertTooLarge {
                bytes: total,
                slot_bytes: self.cfg.slot_bytes,
            });
        }
        let s = slot as usize;
        // The device router must stop naming the slot before its weights change, and every
        // routed pass already launched must count as a reader of it (settle_routed).
        self.settle_routed()?;
        self.unpublish_slot(s);
        let dst = self.slot_ptr(slot);
        // After the last kernels that read the slot. If the ring has since wrapped, the
        // event stands for a later layer: a longer wait than needed, never a shorter one
        // (and none at all in practice: that layer's output was already waited for).
        if let Some(k) = self.slot_release.get(s).copied().flatten() {
            self.copy
                .wait(&self.release_ring[k as usize])
                .map_err(drv("cuStreamWaitEvent(slot released)"))?;
        }
        let cs = self.copy.cu_stream();
        let direct = match self.cfg.host {
            HostSource::Pageable => true,
            HostSource::Registered => parts.iter().all(|p| self.is_registered(p)),
            HostSource::Staged => false,
        };
        if direct {
            let mut off = 0u64;
            for p in parts {
                // SAFETY: dst + off .. + len lies inside the slot; p outlives the copy
                // (the mapped model, or pageable memory the driver stages synchronously).
                unsafe { cu::memcpy_htod_async(dst + off, p, cs) }
                    .map_err(drv("cuMemcpyHtoDAsync(expert)"))?;
                off += p.len() as u64;
            }
        } else {
            let k = self.staging_next % self.staging.len().max(1);
            self.staging_next += 1;
            let (buf, done) = self
                .staging
                .get_mut(k)
                .ok_or_else(|| CudaError::InvalidBatch("no staging buffers".into()))?;
            // The buffer's previous copy must have left it (usually long done).
            done.synchronize()
                .map_err(drv("cuEventSynchronize(staging)"))?;
            let host = buf.bytes();
            let mut off = 0;
            for p in parts {
                host[off..off + p.len()].copy_from_slice(p);
                off += p.len();
            }
            // SAFETY: pinned source stays untouched until `done` fires (checked above on reuse).
            unsafe { cu::memcpy_htod_async(dst, &host[..total], cs) }
                .map_err(drv("cuMemcpyHtoDAsync(staged expert)"))?;
            done.record(&self.copy)
                .map_err(drv("cuEventRecord(staging)"))?;
        }
        self.ready[s]
            .record(&self.copy)
            .map_err(drv("cuEventRecord(slot ready)"))?;
        self.landed[s] = false;
        Ok(total as u64)
    }

    /// Copies an expert into a slot ahead of use (a prefetch or background admission of
    /// the scheduler's plan); returns the slot. Asynchronous.
    pub fn prefetch(
        &mut self,
        key: (u16, u16),
        slot: Option<u32>,
        parts: [&[u8]; 3],
    ) -> Result<u32> {
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        if let Some(s) = self.table.slot_of(key) {
            return Ok(s);
        }
        let action = self.table.plan_batch(&[(key, slot)])?;
        let s = action[0].slot;
        if let Err(e) = self.copy_into(s, parts) {
            self.forget_all_slots();
            return Err(e);
        }
        Ok(s)
    }

    /// Runs a layer's GPU items on the `n_tokens × hidden` input `x` and adds their
    /// weighted outputs to `out` (same layout): [`GpuExperts::submit_layer`] then
    /// [`GpuExperts::complete_layer`].
    pub fn run_layer(
        &mut self,
        layout: &ExpertLayout,
        layer: u16,
        x: &[f32],
        n_tokens: usize,
        items: &[GpuItem<'_>],
        out: &mut [f32],
    ) -> Result<LayerTimings> {
        let p = self.submit_layer(layout, layer, x, n_tokens, items)?;
        self.complete_layer(p, out)
    }

    /// Issues a layer's GPU work and returns at once: copies what is not resident, then
    /// computes hits without waiting for those copies. The caller runs the CPU share
    /// meanwhile, then calls [`GpuExperts::complete_layer`] (one layer in flight at a time).
    pub fn submit_layer(
        &mut self,
        layout: &ExpertLayout,
        layer: u16,
        x: &[f32],
        n_tokens: usize,
        items: &[GpuItem<'_>],
    ) -> Result<PendingLayer> {
        self.submit(layout, layer, (x, None), n_tokens, items, false)
    }

    /// [`GpuExperts::submit_layer`] without the output's download: finish with
    /// [`GpuExperts::defer_layer`] (the output stays on the device for the next dense
    /// call) or, as a fallback, [`GpuExperts::complete_layer`].
    ///
    /// `x_dev`: the same input already on the device (the dense path's normed hidden
    /// state, see [`DeviceInput`]): the pass reads it there instead of uploading `x`.
    pub fn submit_layer_on_device(
        &mut self,
        layout: &ExpertLayout,
        layer: u16,
        x: &[f32],
        x_dev: Option<DeviceInput>,
        n_tokens: usize,
        items: &[GpuItem<'_>],
    ) -> Result<PendingLayer> {
        self.submit(layout, layer, (x, x_dev), n_tokens, items, true)
    }

    fn submit(
        &mut self,
        layout: &ExpertLayout,
        layer: u16,
        x: (&[f32], Option<DeviceInput>),
        n_tokens: usize,
        items: &[GpuItem<'_>],
        on_device: bool,
    ) -> Result<PendingLayer> {
        self.submit_profile.begin(n_tokens);
        // Swap the timing events: a deferred layer's stay readable in the other set. Only
        // when that set was swapped out once already (a second submission before the layer
        // was read) is it read now, before its events are reused.
        if self.deferred.as_ref().is_some_and(|d| d.swapped) {
            self.harvest_deferred()?;
        }
        std::mem::swap(&mut self.t, &mut self.t_alt);
        if let Some(d) = self.deferred.as_mut() {
            d.swapped = true;
        }
        if self.in_flight {
            return Err(CudaError::InvalidBatch(
                "a layer was submitted before the previous one completed".into(),
            ));
        }
        let r = self.submit_inner(layout, layer, x, n_tokens, items, on_device);
        match &r {
            Ok(p) => self.in_flight = p.values > 0,
            // Slot contents are unknown after a failed call: refetch everything.
            Err(_) => self.forget_all_slots(),
        }
        r
    }

    /// Waits for a submitted layer's output and adds it to `out` (`n_tokens × hidden`).
    pub fn complete_layer(&mut self, p: PendingLayer, out: &mut [f32]) -> Result<LayerTimings> {
        let mut t = p.timings;
        if p.values == 0 {
            return Ok(t);
        }
        self.in_flight = false;
        if out.len() != p.values {
            return Err(CudaError::InvalidBatch(format!(
                "output has {} values, the layer produced {}",
                out.len(),
                p.values
            )));
        }
        let r = (|| {
            self.ctx.bind_to_thread().map_err(drv("bind context"))?;
            if p.on_device {
                self.enqueue_download(p.values)?;
            }
            self.read_layer_times(&mut t)?;
            for (o, g) in out.iter_mut().zip(self.out_host.floats(p.values).iter()) {
                *o += g;
            }
            t.wall_ms = p.started.elapsed().as_secs_f32() * 1e3;
            Ok(t)
        })();
        if r.is_err() {
            self.forget_all_slots();
        }
        r
    }

    /// Waits for the layer's end event and reads its compute-stream time (`gpu_ms`) and,
    /// if it copied experts, its copy-stream time (`copy_ms`) from the events `t`.
    fn read_layer_times(&self, t: &mut LayerTimings) -> Result<()> {
        read_times(&self.t, t)
    }

    fn submit_inner(
        &mut self,
        layout: &ExpertLayout,
        layer: u16,
        (x, x_dev): (&[f32], Option<DeviceInput>),
        n_tokens: usize,
        items: &[GpuItem<'_>],
        on_device: bool,
    ) -> Result<PendingLayer> {
        let started = Instant::now();
        let (hidden, ffn) = (layout.hidden, layout.ffn);
        if x.len() != n_tokens * hidden {
            return Err(CudaError::InvalidBatch(format!(
                "x has {} values, expected {n_tokens} × {hidden}",
                x.len()
            )));
        }
        if let Some(d) = x_dev.filter(|d| d.values != x.len() || d.ptr == 0) {
            return Err(CudaError::InvalidBatch(format!(
                "the device input has {} values at {:#x}, expected {n_tokens} × {hidden}",
                d.values, d.ptr
            )));
        }
        for it in items {
            if it.gate.len() != layout.gate_bytes()
                || it.up.len() != layout.gate_bytes()
                || it.down.len() != layout.down_bytes()
            {
                return Err(CudaError::InvalidBatch(format!(
                    "expert {} of layer {layer}: matrix sizes {}/{}/{} do not match the layout",
                    it.expert,
                    it.gate.len(),
                    it.up.len(),
                    it.down.len()
                )));
            }
        }
        let mut timings = LayerTimings::default();
        if items.is_empty() {
            return Ok(PendingLayer {
                values: 0,
                timings,
                started,
                on_device,
            });
        }
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        self.submit_profile.lap(0);
        let keys: Vec<((u16, u16), Option<u32>)> = items
            .iter()
            .map(|it| ((layer, it.expert), it.slot_hint))
            .collect();
        let actions = self.table.plan_batch(&keys)?;
        // Hits first (they compute while the fetches copy), then fetches in plan order.
        let mut order: Vec<usize> = (0..items.len()).filter(|&i| !actions[i].copy).collect();
        let n_hits = order.len();
        order.extend((0..items.len()).filter(|&i| actions[i].copy));
        timings.hits = n_hits as u32;
        timings.fetches = (items.len() - n_hits) as u32;
        let slots: Vec<u32> = order.iter().map(|&i| actions[i].slot).collect();
        let stream = stream_groups(&slots, n_hits);
        if n_hits < items.len() {
            self.t[2].record(&self.copy).map_err(drv("cuEventRecord"))?;
            // Copies into slots no earlier group of the batch reads go first; the others
            // are issued in the launch loop, after the group they wait for.
            for p in n_hits..order.len() {
                if stream.wait[p].is_none() {
                    let it = &items[order[p]];
                    timings.copied_bytes += self.copy_into(slots[p], [it.gate, it.up, it.down])?;
                }
            }
        }
        self.submit_profile.lap(1);
        let g = layout.gate_bytes() as u64;
        let batch: Vec<BatchItem<'_>> = order
            .iter()
            .map(|&i| {
                let base = self.slot_ptr(actions[i].slot);
                BatchItem {
                    gate: base,
                    up: base + g,
                    down: base + 2 * g,
                    rows: items[i].rows,
                    weights: items[i].weights,
                    rank: i as u32,
                }
            })
            .collect();
        let bl = pack(&batch, n_tokens, &mut self.packed)?;
        // Decode batches take the fused pass (gpu/fused.rs); prefill the unfused one. The
        // fused pass reads every item's weights in its last kernel: not with reused slots.
        let fused = self.fused.takes(&bl) && !stream.reuses_slots();
        if fused {
            self.fused.ensure_counters(bl.n_items, ffn)?;
        }
        // Buffers sized at start-up for max_tokens; grow (rarely) for larger calls.
        let xb = n_tokens * hidden * 4;
        self.x_dev.ensure(xb, "layer input")?;
        self.out_dev.ensure(xb, "layer output")?;
        self.meta_dev.ensure(bl.bytes, "index tables")?;
        self.act_dev
            .ensure(bl.n_pairs * ffn * 4, "SwiGLU activations")?;
        self.y_dev
            .ensure(bl.n_pairs * hidden * 4, "per-pair outputs")?;
        if self.x_host.len < xb {
            self.x_host = Pinned::new(xb, "layer input")?;
            self.out_host = Pinned::new(xb, "layer output")?;
        }
        if self.meta_host.len < bl.bytes {
            self.meta_host = Pinned::new(bl.bytes, "index tables")?;
        }
        // A decode pass of resident experts whose copies have all landed, reading its input
        // on the device: one graph launch instead of an upload and three kernel launches
        // (the host issues them while the GPU waits for this layer's routing).
        // The int8 decode pass quantises x itself: no rounding pass in front of it, and
        // with the input on the device, no copy into x_dev either.
        let rounds_itself = fused && self.fused.rounds_input_itself(layout);
        self.x_in = None;
        let graphed = match x_dev {
            Some(d) if fused && n_hits == items.len() && self.pass_graphs.enabled() => self
                .all_landed(order.iter().map(|&i| actions[i].slot))?
                .then_some(d.ptr),
            _ => None,
        };
        self.submit_profile.lap(2);
        // The previous call waited for its output, so the pinned buffers are free.
        self.meta_host.bytes()[..bl.bytes].copy_from_slice(&self.packed);
        let cs = self.compute.cu_stream();
        self.t[0]
            .record(&self.compute)
            .map_err(drv("cuEventRecord"))?;
        self.submit_profile.lap(3);
        if let Some(src) = graphed {
            self.run_pass_graph(layout, src, &bl, n_tokens, rounds_itself)?;
            self.submit_profile.lap(4);
            return self.finish_submit(&actions, timings, started, on_device, n_tokens * hidden);
        }
        // SAFETY: pinned source of the right size; device buffer ensured above.
        unsafe {
            cu::memcpy_htod_async(self.meta_dev.ptr, &self.meta_host.bytes()[..bl.bytes], cs)
                .map_err(drv("cuMemcpyHtoDAsync(index tables)"))?;
        }
        // x as the CPU kernels see it (rounded to the gate/up activation format): from the
        // device copy when there is one (no upload), else uploaded and rounded in place.
        match x_dev {
            Some(d) if rounds_itself => self.x_in = Some(d.ptr),
            Some(d) => self.round_acts_from(layout.gate_up, d.ptr, n_tokens, hidden)?,
            None => {
                self.x_host.floats(n_tokens * hidden).copy_from_slice(x);
                // SAFETY: pinned source of n_tokens × hidden floats; x_dev holds as many.
                unsafe {
                    cu::memcpy_htod_async(self.x_dev.ptr, self.x_host.floats(n_tokens * hidden), cs)
                }
                .map_err(drv("cuMemcpyHtoDAsync(x)"))?;
                if !rounds_itself {
                    self.round_acts(layout.gate_up, self.x_dev.ptr, n_tokens, hidden)?;
                }
            }
        }
        let m = self.meta_dev.ptr;
        let (items_p, rows_p, wts_p) = (
            m + bl.items as u64,
            m + bl.rows as u64,
            m + bl.weights as u64,
        );
        if stream.reuses_slots() {
            while self.group_done.len() < stream.groups.len() {
                let e = self
                    .ctx
                    .new_event(None)
                    .map_err(drv("cuEventCreate(group)"))?;
                self.group_done.push(e);
            }
        }
        for (g, &(lo, hi)) in stream.groups.iter().enumerate() {
            for p in lo..hi {
                let Some(w) = stream.wait[p] else { continue };
                // After the kernels of group w, which read this slot's previous weights.
                self.copy
                    .wait(&self.group_done[w])
                    .map_err(drv("cuStreamWaitEvent(group done)"))?;
                let it = &items[order[p]];
                timings.copied_bytes += self.copy_into(slots[p], [it.gate, it.up, it.down])?;
            }
            for p in lo..hi {
                let (i, s) = (order[p], slots[p] as usize);
                // A slot that a later item of the batch refills holds this item's weights
                // only for now: wait for its copy, never publish it.
                let owns = self.table.owner(slots[p]) == Some((layer, items[i].expert));
                if owns && self.landed[s] {
                    continue;
                }
                // A copy seen complete needs no wait, now or in later layers.
                if owns
                    && self.ready[s]
                        .try_is_complete()
                        .map_err(drv("cuEventQuery(slot ready)"))?
                {
                    self.landed[s] = true;
                    self.publish_slot(s);
                    continue;
                }
                self.compute
                    .wait(&self.ready[s])
                    .map_err(drv("cuStreamWaitEvent(slot ready)"))?;
            }
            let group_items = items_p + (lo * ITEM_WORDS * 8) as u64;
            if fused {
                let fns = self.fused_fns(layout)?;
                self.launch_gate_up_fused(layout, &fns, (group_items, rows_p, (hi - lo) as u32))?;
            } else {
                let first_pair: usize = order[..lo].iter().map(|&i| items[i].rows.len()).sum();
                let n_pairs: usize = order[lo..hi].iter().map(|&i| items[i].rows.len()).sum();
                let max_tokens = order[lo..hi].iter().map(|&i| items[i].rows.len()).max();
                self.launch_experts(
                    layout,
                    group_items,
                    rows_p,
                    wts_p,
                    ((hi - lo) as u32, max_tokens.unwrap_or(0)),
                    (first_pair, n_pairs),
                )?;
            }
            if stream.wait.contains(&Some(g)) {
                self.group_done[g]
                    .record(&self.compute)
                    .map_err(drv("cuEventRecord(group done)"))?;
            }
        }
        if n_hits < items.len() {
            self.t[3].record(&self.copy).map_err(drv("cuEventRecord"))?;
        }
        if fused {
            // down and combine of every item at once: it reads the slots, so before the
            // release event.
            let fns = self.fused_fns(layout)?;
            self.launch_down_combine(layout, &fns, m, &bl)?;
        }
        if !fused {
            let (ts, tp) = (m + bl.tok_start as u64, m + bl.tok_pairs as u64);
            self.launch_combine(ts, tp, n_tokens, hidden)?;
        }
        self.submit_profile.lap(4);
        self.finish_submit(&actions, timings, started, on_device, n_tokens * hidden)
    }

    /// The host profile of decode submissions (`HMOE_MOE_PROFILE=1`), if on.
    pub fn submit_profile(&self) -> Option<String> {
        self.submit_profile.report()
    }

    /// Whether every slot's last copy has landed (so no compute needs to wait for one),
    /// marking those seen complete now.
    fn all_landed(&mut self, slots: impl Iterator<Item = u32>) -> Result<bool> {
        for s in slots {
            let s = s as usize;
            if self.landed[s] {
                continue;
            }
            if !self.ready[s]
                .try_is_complete()
                .map_err(drv("cuEventQuery(slot ready)"))?
            {
                return Ok(false);
            }
            self.landed[s] = true;
            self.publish_slot(s);
        }
        Ok(true)
    }

    /// The fused decode pass of a batch whose experts are all resident and landed, from
    /// the graph of its key (captured on first use): index-table upload, input rounding
    /// from `src`, gate_up_fused over every item, down + combine.
    fn run_pass_graph(
        &mut self,
        layout: &ExpertLayout,
        src: u64,
        bl: &BatchLayout,
        n_tokens: usize,
        rounds_itself: bool,
    ) -> Result<()> {
        let [counters, q8, q8_scales] = self.fused.buffer_ptrs();
        let key = PassKey {
            kernels: (layout.gate_up, layout.down, layout.hidden, layout.ffn),
            batch: (bl.n_items, n_tokens, bl.bytes, rounds_itself),
            buffers: [
                src,
                self.x_dev.ptr,
                self.meta_dev.ptr,
                self.meta_host.ptr as u64,
                self.act_dev.ptr,
                self.y_dev.ptr,
                self.out_dev.ptr,
                counters,
                q8,
                q8_scales,
            ],
        };
        if rounds_itself {
            self.x_in = Some(src);
        }
        let mut graphs = std::mem::take(&mut self.pass_graphs);
        let r = graphs
            .ensure(&self.compute, key, || {
                self.enqueue_fused_pass(layout, src, bl, n_tokens, rounds_itself)
            })
            .and_then(|()| graphs.launch(key));
        self.pass_graphs = graphs;
        r
    }

    /// Enqueues what [`GpuExperts::run_pass_graph`] captures.
    fn enqueue_fused_pass(
        &self,
        layout: &ExpertLayout,
        src: u64,
        bl: &BatchLayout,
        n_tokens: usize,
        rounds_itself: bool,
    ) -> Result<()> {
        let cs = self.compute.cu_stream();
        // SAFETY: pinned source of bl.bytes (meta_host holds the packed tables); the device
        // buffer was ensured for this batch.
        unsafe {
            let host = std::slice::from_raw_parts(self.meta_host.ptr as *const u8, bl.bytes);
            cu::memcpy_htod_async(self.meta_dev.ptr, host, cs)
        }
        .map_err(drv("cuMemcpyHtoDAsync(index tables)"))?;
        if !rounds_itself {
            self.round_acts_from(layout.gate_up, src, n_tokens, layout.hidden)?;
        }
        let m = self.meta_dev.ptr;
        let fns = self.fused_fns(layout)?;
        let (items_p, rows_p) = (m + bl.items as u64, m + bl.rows as u64);
        self.launch_gate_up_fused(layout, &fns, (items_p, rows_p, bl.n_items as u32))?;
        self.launch_down_combine(layout, &fns, m, bl)
    }

    /// Records the layer's release event (its slots may be refilled after it) and its end
    /// (after enqueueing the output's download unless it stays on the device).
    fn finish_submit(
        &mut self,
        actions: &[SlotAction],
        timings: LayerTimings,
        started: Instant,
        on_device: bool,
        n: usize,
    ) -> Result<PendingLayer> {
        let k = self.release_next;
        self.release_next = (k + 1) % RELEASE_RING;
        self.release_ring[k]
            .record(&self.compute)
            .map_err(drv("cuEventRecord(layer release)"))?;
        for a in actions {
            if let Some(r) = self.slot_release.get_mut(a.slot as usize) {
                *r = Some(k as u16);
            }
        }
        if on_device {
            self.t[1]
                .record(&self.compute)
                .map_err(drv("cuEventRecord(layer end)"))?;
        } else {
            self.enqueue_download(n)?;
        }
        self.submit_profile.lap(5);
        Ok(PendingLayer {
            values: n,
            timings,
            started,
            on_device,
        })
    }

    /// Enqueues the layer output's download into the pinned buffer and records the
    /// layer's end event after it.
    fn enqueue_download(&mut self, n: usize) -> Result<()> {
        let cs = self.compute.cu_stream();
        let out_host = self.out_host.floats(n);
        // SAFETY: pinned destination of n floats (out_dev holds as many); read only after
        // the event below.
        unsafe { cu::memcpy_dtoh_async(out_host, self.out_dev.ptr, cs) }
            .map_err(drv("cuMemcpyDtoHAsync(out)"))?;
        self.t[1]
            .record(&self.compute)
            .map_err(drv("cuEventRecord(layer end)"))
    }

    /// Rounds `rows × width` activations at `ptr` in place to what the CPU kernels
    /// multiply with weights of type `t`.
    fn round_acts(&self, t: KernelType, ptr: u64, rows: usize, width: usize) -> Result<()> {
        if t.act_format().0 == 0 {
            return Ok(());
        }
        self.launch_round(t, ptr, ptr, rows, width)
    }

    /// The layer input `rows × width` at device address `src` (another part's buffer),
    /// rounded as [`GpuExperts::round_acts`] would into `x_dev` (copied when the format
    /// takes no rounding).
    fn round_acts_from(&self, t: KernelType, src: u64, rows: usize, width: usize) -> Result<()> {
        self.launch_round(t, src, self.x_dev.ptr, rows, width)
    }

    /// `act_round_from` in kernels.cu: `rows × width` activations at `src` rounded for
    /// weights of type `t` into `dst` (which may be `src`: in place), copied when the type
    /// takes unrounded activations.
    fn launch_round(
        &self,
        t: KernelType,
        src: u64,
        dst: u64,
        rows: usize,
        width: usize,
    ) -> Result<()> {
        let (fmt, block) = match t.act_format() {
            (0, _) => (0, 32),
            f => f,
        };
        if !width.is_multiple_of(block) {
            return Err(CudaError::InvalidBatch(format!(
                "activations {width} wide are not whole {block}-value blocks for {}",
                t.suffix()
            )));
        }
        if rows == 0 {
            return Ok(());
        }
        let cfg = LaunchConfig {
            grid_dim: ((width / block) as u32, rows as u32, 1),
            block_dim: (32, 1, 1),
            shared_mem_bytes: 0,
        };
        let w = width as u32;
        // SAFETY: argument types match `act_round_from` in kernels.cu; `src` and `dst` hold
        // rows × width floats (buffers ensured for this batch, or DeviceInput's contract).
        unsafe {
            self.compute
                .launch_builder(&self.act_round_from)
                .arg(&src)
                .arg(&dst)
                .arg(&w)
                .arg(&fmt)
                .launch(cfg)
        }
        .map(|_| ())
        .map_err(drv("launch act_round_from"))
    }

    /// `combine` of the packed batch at `tok_start` / `tok_pairs` into `out_dev`.
    fn launch_combine(&self, ts: u64, tp: u64, n_tokens: usize, hidden: usize) -> Result<()> {
        let cfg = LaunchConfig {
            grid_dim: (
                (hidden as u32).div_ceil(COMBINE_THREADS),
                n_tokens as u32,
                1,
            ),
            block_dim: (COMBINE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let (y, o, h) = (self.y_dev.ptr, self.out_dev.ptr, hidden as u32);
        // SAFETY: argument types match `combine` in kernels.cu; the caller sized the buffers
        // and packed the index tables at `ts` / `tp`.
        unsafe {
            self.compute
                .launch_builder(&self.combine)
                .arg(&ts)
                .arg(&tp)
                .arg(&y)
                .arg(&o)
                .arg(&h)
                .launch(cfg)
        }
        .map(|_| ())
        .map_err(drv("launch combine"))
    }

    fn launch_experts(
        &self,
        l: &ExpertLayout,
        items: u64,
        rows: u64,
        wts: u64,
        (n, max_tokens): (u32, usize),
        pairs: (usize, usize),
    ) -> Result<()> {
        let (gu, dn) = (
            self.kernels
                .get(&l.gate_up)
                .ok_or(CudaError::UnsupportedType(l.gate_up.ggml()))?,
            self.kernels
                .get(&l.down)
                .ok_or(CudaError::UnsupportedType(l.down.ggml()))?,
        );
        let tiled = self.gemm.pass(l, max_tokens)?;
        self.launch_pass(
            l,
            (&gu.gate_up, &dn.down),
            EXPERT_ROWS_PER_WARP,
            (items, rows, wts, n),
            Some(pairs),
            tiled.as_ref(),
        )
    }

    /// One expert pass with the given gate/up and down functions: gate_up, then (with
    /// `round = Some((first pair, pairs))`) the SwiGLU products of those pairs rounded as
    /// the CPU's down product sees them, then down. `per_warp`: output rows per warp of
    /// each kernel (the grids follow it); `batch`: the packed items, rows and weights and
    /// the item count. `tiled`: the pass has items of many tokens (prefill), which the
    /// tiled kernels of gemm.cu take (gate_up/down skip them).
    fn launch_pass(
        &self,
        l: &ExpertLayout,
        (gate_up, down): (&CudaFunction, &CudaFunction),
        (rg, rd): (u32, u32),
        (items, rows, wts, n): (u64, u64, u64, u32),
        round: Option<(usize, usize)>,
        tiled: Option<&gemm::GemmPass<'_>>,
    ) -> Result<()> {
        if let Some(t) = tiled {
            self.launch_gemm_gate_up(t, l, (items, rows, n))?;
        }
        let (hidden, ffn) = (l.hidden as u32, l.ffn as u32);
        let (x, act, y) = (self.x_dev.ptr, self.act_dev.ptr, self.y_dev.ptr);
        let cfg = |r: u32, per_warp: u32| LaunchConfig {
            grid_dim: (r.div_ceil(WARPS_PER_BLOCK * per_warp), n, 1),
            block_dim: (32 * WARPS_PER_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: argument lists match gate_up_* / down_* in kernels.cu; the index tables
        // and buffers were sized for this batch.
        unsafe {
            self.compute
                .launch_builder(gate_up)
                .arg(&items)
                .arg(&rows)
                .arg(&x)
                .arg(&act)
                .arg(&hidden)
                .arg(&ffn)
                .launch(cfg(ffn, rg))
                .map_err(|e| drv(format!("launch gate_up ({})", l.gate_up.suffix()))(e))?;
        }
        if let Some((first, count)) = round {
            let act_rows = act + (first * l.ffn * 4) as u64;
            self.round_acts(l.down, act_rows, count, l.ffn)?;
        }
        if let Some(t) = tiled {
            self.launch_gemm_down(t, l, (items, wts, n))?;
        }
        // SAFETY: as above.
        unsafe {
            self.compute
                .launch_builder(down)
                .arg(&items)
                .arg(&wts)
                .arg(&act)
                .arg(&y)
                .arg(&hidden)
                .arg(&ffn)
                .launch(cfg(hidden, rd))
                .map_err(|e| drv(format!("launch down ({})", l.down.suffix()))(e))?;
        }
        Ok(())
    }

    /// Changes how expert weights reach the GPU (e.g. after [`GpuExperts::register_host`]).
    pub fn set_host_source(&mut self, host: HostSource) -> Result<()> {
        if host != HostSource::Pageable && self.staging.is_empty() {
            for _ in 0..self.cfg.staging_buffers.max(2) {
                self.staging.push((
                    Pinned::new(self.cfg.slot_bytes, "staging buffer")?,
                    self.ctx
                        .new_event(None)
                        .map_err(drv("cuEventCreate(staging)"))?,
                ));
            }
        }
        self.cfg.host = host;
        Ok(())
    }

    /// Waits until every copy and kernel issued so far has finished (not for the hot path).
    pub fn synchronize(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        self.copy
            .synchronize()
            .map_err(drv("cuStreamSynchronize(copy)"))?;
        self.compute
            .synchronize()
            .map_err(drv("cuStreamSynchronize(compute)"))
    }

    /// Host-to-device bandwidth (GB/s) copying `src` (any host memory: a registered map,
    /// pinned or pageable) into the arena `reps` times, timed with events.
    pub fn h2d_from(&mut self, src: &[u8], reps: usize) -> Result<f64> {
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        let src = &src[..src.len().min(self.arena.len)];
        let cs = self.copy.cu_stream();
        // SAFETY: the arena holds src.len() bytes; src outlives the synchronisation below.
        unsafe { cu::memcpy_htod_async(self.arena.ptr, src, cs) }
            .map_err(drv("cuMemcpyHtoDAsync(probe)"))?;
        self.t[2].record(&self.copy).map_err(drv("cuEventRecord"))?;
        for _ in 0..reps.max(1) {
            // SAFETY: as above.
            unsafe { cu::memcpy_htod_async(self.arena.ptr, src, cs) }
                .map_err(drv("cuMemcpyHtoDAsync(probe)"))?;
        }
        self.t[3].record(&self.copy).map_err(drv("cuEventRecord"))?;
        self.t[3].synchronize().map_err(drv("cuEventSynchronize"))?;
        let ms = self.t[2]
            .elapsed_ms(&self.t[3])
            .map_err(drv("cuEventElapsedTime"))? as f64;
        self.forget_all_slots();
        Ok((src.len() * reps.max(1)) as f64 / (ms * 1e-3) / 1e9)
    }

    /// Host-to-device bandwidth (GB/s) copying `bytes` into the arena `reps` times from
    /// pinned (`Staged`/`Registered`) or pageable memory, timed with events.
    pub fn h2d_bandwidth(&mut self, bytes: usize, source: HostSource, reps: usize) -> Result<f64> {
        let bytes = bytes.min(self.arena.len);
        if source == HostSource::Pageable {
            let pageable = vec![1u8; bytes];
            return self.h2d_from(&pageable, reps);
        }
        let mut pinned = Pinned::new(bytes, "bandwidth probe")?;
        pinned.bytes().fill(1);
        let p = pinned.bytes().as_ptr();
        // SAFETY: `pinned` lives until h2d_from has synchronised.
        self.h2d_from(unsafe { std::slice::from_raw_parts(p, bytes) }, reps)
    }

    /// Measures whether the copy stream really runs while kernels run: a pinned copy of
    /// `bytes` alone, a spin kernel of `spin_cycles` alone, then both issued together.
    pub fn overlap_probe(&mut self, bytes: usize, spin_cycles: u64) -> Result<OverlapReport> {
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        let bytes = bytes.min(self.arena.len);
        let mut pinned = Pinned::new(bytes, "overlap probe")?;
        pinned.bytes().fill(3);
        let src_ptr = pinned.bytes().as_ptr();
        // SAFETY: `pinned` lives until the end of this function, after every copy synced.
        let src: &[u8] = unsafe { std::slice::from_raw_parts(src_ptr, bytes) };
        let sink = self.out_dev.ptr;
        let spin_cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (32, 1, 1),
            shared_mem_bytes: 0,
        };
        let copy = |me: &Self| -> Result<()> {
            // SAFETY: arena holds `bytes`; pinned source outlives the synchronisations below.
            unsafe { cu::memcpy_htod_async(me.arena.ptr, src, me.copy.cu_stream()) }
                .map_err(drv("cuMemcpyHtoDAsync(overlap)"))
        };
        let spin = |me: &Self| -> Result<()> {
            // SAFETY: matches `spin(u64, u32*)`; sink is a device buffer.
            unsafe {
                me.compute
                    .launch_builder(&me.spin)
                    .arg(&spin_cycles)
                    .arg(&sink)
                    .launch(spin_cfg)
            }
            .map(|_| ())
            .map_err(drv("launch spin"))
        };
        let sync = |me: &Self| -> Result<()> {
            me.copy.synchronize().map_err(drv("sync copy"))?;
            me.compute.synchronize().map_err(drv("sync compute"))
        };
        let time = |_: &Self, a: &CudaEvent, b: &CudaEvent| {
            a.elapsed_ms(b).map_err(drv("cuEventElapsedTime"))
        };
        // Copy alone.
        copy(self)?; // warm-up
        sync(self)?;
        self.t[0].record(&self.copy).map_err(drv("rec"))?;
        copy(self)?;
        self.t[1].record(&self.copy).map_err(drv("rec"))?;
        sync(self)?;
        let copy_ms = time(self, &self.t[0], &self.t[1])?;
        // Compute alone.
        spin(self)?; // warm-up
        sync(self)?;
        self.t[0].record(&self.compute).map_err(drv("rec"))?;
        spin(self)?;
        self.t[1].record(&self.compute).map_err(drv("rec"))?;
        sync(self)?;
        let compute_ms = time(self, &self.t[0], &self.t[1])?;
        // Both: the copy stream starts after the compute stream's start event.
        self.t[0].record(&self.compute).map_err(drv("rec"))?;
        self.copy.wait(&self.t[0]).map_err(drv("wait"))?;
        spin(self)?;
        copy(self)?;
        self.t[1].record(&self.compute).map_err(drv("rec"))?;
        self.t[2].record(&self.copy).map_err(drv("rec"))?;
        self.compute.wait(&self.t[2]).map_err(drv("wait"))?;
        self.t[3].record(&self.compute).map_err(drv("rec"))?;
        sync(self)?;
        let both_ms = time(self, &self.t[0], &self.t[3])?;
        self.forget_all_slots();
        let overlap = (copy_ms + compute_ms - both_ms) / copy_ms.min(compute_ms).max(1e-6);
        Ok(OverlapReport {
            copy_ms,
            compute_ms,
            both_ms,
            overlap,
        })
    }
}

impl Drop for GpuExperts {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_err() {
            return;
        }
        let _ = self.copy.synchronize();
        let _ = self.compute.synchronize();
        for r in self.registered.drain(..) {
            // SAFETY: registered by register_host; no copy from it is in flight.
            let _ = unsafe { sys::cuMemHostUnregister(r.start as *mut _) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NVRTC runs without a GPU: the kernel source must compile for the H100 (sm_90)
    /// wherever libnvrtc is on the library path (the CUDA 13 wheels of
    /// tools/cuda13-toolchain.sh on the build machine; LD_LIBRARY_PATH set by the caller).
    #[test]
    fn kernels_compile_with_nvrtc() {
        match compile_kernels((9, 0)) {
            Ok(src) => {
                for t in KernelType::ALL {
                    assert!(src.contains(&format!("gate_up_{}", t.suffix())));
                    assert!(src.contains(&format!("down_{}", t.suffix())));
                }
                assert!(src.contains("combine"));
                for t in KernelType::ALL {
                    assert!(src.contains(&format!("linear_{}", t.suffix())));
                    for k in ["gemm_gate_up", "gemm_down", "gemm_linear"] {
                        assert!(src.contains(&format!(".entry {k}_{}(", t.suffix())), "{k}");
                    }
                }
                for k in [
                    "rms_norm",
                    "add_rms_norm",
                    "qk_norm_rope_kv",
                    "attend_split_128",
                    "attend_split_128_g",
                    "attend_combine",
                    "add_to",
                ] {
                    assert!(src.contains(k), "{k}");
                }
            }
            Err(CudaError::NoNvrtc) => {
                panic!("libnvrtc not found: set LD_LIBRARY_PATH to the CUDA 13 libraries")
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn without_a_device_start_up_is_an_error_not_a_panic() {
        // On the build machine (no driver) this is NoDriver; on the GPU machine it starts.
        let cfg = GpuConfig {
            ordinal: 0,
            budget_bytes: 64 << 20,
            slot_bytes: 3 << 20,
            min_slots: 1,
            hidden: 2048,
            ffn: 768,
            max_tokens: 16,
            top_k: 8,
            host: HostSource::Staged,
            staging_buffers: 2,
        };
        match GpuExperts::new(&cfg) {
            Ok(g) => assert!(g.n_slots() >= 1),
            Err(e) => assert!(
                matches!(
                    e,
                    CudaError::NoDriver | CudaError::NoDevice | CudaError::Driver { .. }
                ),
                "{e}"
            ),
        }
    }
}
