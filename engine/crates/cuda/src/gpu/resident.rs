//! [`GpuDense`]: the dense path of every layer with its weights and the KV caches in VRAM.
//!
//! One call per layer ([`GpuDense::attention_block`]): one upload (the residual rows and
//! a small table of positions and cache addresses), the kernels of dense.cu on one stream,
//! one download (residual, normed hidden state, router logits), one synchronisation.
//!
//! Device memory of a call (`io`, mirrored by one pinned host buffer of the same layout):
//! `[meta | x | hn | router | next_router]`, where meta is `pos: u32[n]`, then (8-aligned)
//! `kc: u64[n]`, `vc: u64[n]`, the addresses of each row's K and V cache of the layer.
//! The upload covers `meta | x`, the download `x | hn | router | next_router`.
//! `hn` first holds the attention-normed input, then the output projection, then the
//! pre-MoE normed state (each dead before the next is written).
//!
//! KV caches: per sequence one K and one V buffer `[layer][cap][kv_dim]` f32, allocated on
//! first use with [`grown_capacity`] and grown by doubling (a device copy per layer and a
//! synchronisation: O(log n) times per sequence); freed at the next call after the
//! engine drops the sequence's [`DenseSeq`]. Writes go by position, so the host may
//! truncate a sequence without telling the device.

use super::attend::{launch_split, launch_tiled, AttendCall, SplitFns, TiledFn};
use super::dense_graphs::{GraphCache, GraphKey};
use super::dense_profile::DenseProfile;
use super::gemm::{
    dense_mma_wanted, launch_linear_on, mma_capable, GemmShape, LinearFns, LINEAR_MIN_ROWS,
    MMA_LINEAR_MIN_ROWS, MMA_TYPES,
};
use super::host_copy::{floats_from, par_copy};
use super::{compile, context, drv, info, is_oom, DeviceBuf, Pinned, ASSUME_FREE_ENV};
use crate::api::{DenseOnDevice, DeviceAddend, DeviceInput};
use crate::attend_tiled::{use_tiled, ATTEND_TILE_STAGES};
use crate::dense_model::{
    attention_plan, grid_split_count, grown_capacity, positions, validate_spans, DenseMatrix,
    DenseSeq, DenseShape, DenseWeights, SeqRegistry, SeqSpan, ATTEND_HEADS_PER_WARP,
    ATTEND_HPW_ENV, ATTEND_MAX_CHUNK, ATTEND_MIN_CHUNK, ATTEND_MIN_CHUNK_ENV,
};
use crate::dense_ref::Int8Linear;
use crate::device::{no_panic, DeviceInfo};
use crate::dtype::KernelType;
use crate::error::{CudaError, Result};
use crate::WARPS_PER_BLOCK;
use cudarc::driver::result as cu;
use cudarc::driver::sys;
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaStream, LaunchConfig, PushKernelArg,
};
use hmoe_cpu::CpuPool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Matrices one `linear_multi` launch takes (its kernel's pointer arguments).
const MULTI_MATRICES: usize = 3;
/// Token rows per block row of the row kernels (`TT` in kernels.cu).
const ROW_TOKENS: u32 = 8;

/// Threads per block of `add_to`.
const ADD_THREADS: u32 = 256;
/// Threads per block (one block a row) of `rms_norm` and `add_rms_norm` (`NORM_THREADS`
/// in dense.cu).
const NORM_THREADS: u32 = 256;
/// Token rows the buffers are sized for at start-up (grown once for larger calls).
const START_TOKENS: usize = 64;

fn align(v: usize, a: usize) -> usize {
    v.div_ceil(a) * a
}

/// Byte offsets of one call's `io` buffer for `n` rows.
#[derive(Debug, Clone, Copy)]
struct Io {
    /// `u32[2]`: the attention's (chunk, n_splits), after `pos: u32[n]`.
    plan: usize,
    kc: usize,
    vc: usize,
    x: usize,
    hn: usize,
    router: usize,
    next: usize,
    end: usize,
}

impl Io {
    fn new(n: usize, s: &DenseShape) -> Self {
        let plan = 4 * n;
        let kc = align(plan + 8, 8);
        let vc = kc + 8 * n;
        let x = align(vc + 8 * n, 256);
        let hn = x + 4 * n * s.hidden;
        let router = hn + 4 * n * s.hidden;
        let next = router + 4 * n * s.n_experts;
        let end = next + 4 * n * s.n_experts;
        Self {
            plan,
            kc,
            vc,
            x,
            hn,
            router,
            next,
            end,
        }
    }
}

struct Mat {
    buf: DeviceBuf,
    t: KernelType,
    rows: u32,
    cols: u32,
}

struct Layer {
    attn_norm: DeviceBuf,
    q_norm: DeviceBuf,
    k_norm: DeviceBuf,
    ffn_norm: DeviceBuf,
    wq: Mat,
    wk: Mat,
    wv: Mat,
    wo: Mat,
    router: Mat,
}

/// One sequence's caches: `[layer][cap][kv_dim]` f32 each.
struct Kv {
    k: DeviceBuf,
    v: DeviceBuf,
    cap: usize,
}

struct Fns {
    linear: HashMap<KernelType, CudaFunction>,
    /// `linear_multi_*`: up to three same-type matrices on one input in one launch.
    linear_multi: HashMap<KernelType, CudaFunction>,
    /// `linear_mix_<a>_<b>`: two matrices of type a and a third of type b in one launch
    /// (the pairs dense.cu instantiates).
    linear_mix: HashMap<(KernelType, KernelType), CudaFunction>,
    /// The tiled kernel for calls of many tokens and the weight rows from which it is
    /// taken: `mma_linear_*` (gemm_mma.cu, int8 tensor cores) for the mma types where the
    /// device has them (unless `HMOE_CUDA_DENSE_MMA=0`), else the f32 `gemm_linear_*`
    /// (gemm.cu).
    tiled_linear: HashMap<KernelType, (CudaFunction, u32)>,
    /// Set when `tiled_linear` holds mma kernels.
    int8: Option<Int8Linear>,
    rms_norm: CudaFunction,
    add_rms_norm: CudaFunction,
    qk_rope_kv: CudaFunction,
    attend_split: SplitFns,
    attend_combine: CudaFunction,
    add_to: CudaFunction,
    copy_out: CudaFunction,
    /// `None` when the device refuses its shared memory (the split kernels serve all).
    attend_tiled: Option<TiledFn>,
}

/// The dense path on the GPU (see the module docs).
pub struct GpuDense {
    info: DeviceInfo,
    shape: DenseShape,
    fns: Fns,
    layers: Vec<Layer>,
    output_norm: DeviceBuf,
    output: Mat,
    inv_freq: DeviceBuf,
    weight_bytes: usize,
    seqs: SeqRegistry,
    kv: HashMap<u64, Kv>,
    io: DeviceBuf,
    work: DeviceBuf,
    /// Partial softmax states of the split attention (grown on demand).
    part: DeviceBuf,
    logits: DeviceBuf,
    io_host: Pinned,
    /// `io_host`'s device address (mapped): graphed decode calls write their outputs there.
    io_host_dev: u64,
    logits_host: Pinned,
    warnings: Vec<String>,
    /// Per-kernel stream times (`HMOE_DENSE_PROFILE=1`).
    profile: Option<DenseProfile>,
    /// Threads for the large staging copies of prefill calls (the engine's CPU pool).
    host_pool: Option<Arc<CpuPool>>,
    /// Captured decode calls.
    graphs: GraphCache,
    /// Fewest positions per attention split ([`ATTEND_MIN_CHUNK_ENV`]).
    attend_min_chunk: usize,
    /// Most query heads per split-attention warp ([`ATTEND_HPW_ENV`]; `attention_plan`
    /// picks each call's from it and the head grouping).
    attend_hpw: usize,
    /// The last call's normed hidden state on the device (None after a failed call).
    last_hn: Option<DeviceInput>,
    /// Rows of the call whose `hn` was lent ([`GpuDense::hn_on_device`]) since.
    lent_rows: Option<usize>,
    /// Recorded behind a hooked call's kernels ([`GpuDense::attention_block_hooked`]).
    launched: CudaEvent,
    stream: Arc<CudaStream>,
    ctx: Arc<CudaContext>,
}

// SAFETY: the raw pointers are owned allocations used only through &mut self; the CUDA
// context is bound to the calling thread at the start of every method.
unsafe impl Send for GpuDense {}
unsafe impl Sync for GpuDense {}

/// `cuMemAlloc` with out-of-memory reported as [`CudaError::DenseOutOfMemory`].
fn alloc(ctx: &CudaContext, bytes: usize, what: &str) -> Result<DeviceBuf> {
    // SAFETY: allocation; owned (and freed) by the DeviceBuf.
    match unsafe { cu::malloc_sync(bytes.max(1)) } {
        Ok(ptr) => Ok(DeviceBuf { ptr, len: bytes }),
        Err(e) if is_oom(&e) => {
            let (free_bytes, total_bytes) = ctx.mem_get_info().unwrap_or((0, 0));
            Err(CudaError::DenseOutOfMemory {
                what: what.to_string(),
                bytes,
                free_bytes,
                total_bytes,
            })
        }
        Err(e) => Err(drv(format!("cuMemAlloc({what}, {bytes} bytes)"))(e)),
    }
}

fn upload<T>(ctx: &CudaContext, data: &[T], what: &str) -> Result<DeviceBuf> {
    let b = alloc(ctx, std::mem::size_of_val(data), what)?;
    // SAFETY: the buffer holds size_of_val(data) bytes.
    unsafe { cu::memcpy_htod_sync(b.ptr, data) }.map_err(drv(format!("cuMemcpyHtoD({what})")))?;
    Ok(b)
}

fn upload_mat(ctx: &CudaContext, m: &DenseMatrix<'_>, what: &str) -> Result<Mat> {
    Ok(Mat {
        buf: upload(ctx, m.data, what)?,
        t: m.t,
        rows: m.rows as u32,
        cols: m.cols as u32,
    })
}

impl GpuDense {
    /// Uploads every dense weight to device `ordinal` and compiles (or loads) the kernels.
    /// Fails with [`CudaError::DenseOutOfMemory`] when the weights do not fit; never panics.
    pub fn new(ordinal: usize, shape: &DenseShape, weights: &DenseWeights<'_>) -> Result<Self> {
        weights.validate(shape)?;
        no_panic("GPU dense path start-up", || {
            Self::start(ordinal, shape, weights)
        })
    }

    fn start(ordinal: usize, shape: &DenseShape, w: &DenseWeights<'_>) -> Result<Self> {
        let ctx = context(ordinal)?;
        let info = info(&ctx)?;
        let weight_bytes = w.device_bytes(shape);
        let io0 = Io::new(START_TOKENS, shape);
        let work0 = START_TOKENS * 4 * (2 * shape.q_dim() + 2 * shape.kv_dim());
        let need = weight_bytes + io0.end + work0 + 4 * shape.vocab;
        // Test knob shared with the arena (hmoe-cuda-check sets it to check the refusal).
        let free = std::env::var(ASSUME_FREE_ENV)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(info.free_bytes);
        // Refuse up front rather than fill the card and fail half-way.
        if need > free {
            return Err(CudaError::DenseOutOfMemory {
                what: "weights and buffers".into(),
                bytes: need,
                free_bytes: free,
                total_bytes: info.total_bytes,
            });
        }
        let mut warnings = Vec::new();
        let module = compile(&ctx, info.compute_capability, &mut warnings)?;
        let (io_host, io_host_dev) = Pinned::mapped(io0.end, "dense layer buffer")?;
        let f = |name: &str| {
            module
                .load_function(name)
                .map_err(drv(format!("kernel `{name}`")))
        };
        let (mut linear, mut tiled_linear) = (HashMap::new(), HashMap::new());
        let mut linear_multi = HashMap::new();
        let mut linear_mix = HashMap::new();
        let dense_mma = dense_mma_wanted();
        let mut int8 = None;
        for t in KernelType::ALL {
            linear.insert(t, f(&format!("linear_{}", t.suffix()))?);
            linear_multi.insert(t, f(&format!("linear_multi_{}", t.suffix()))?);
            // The mma kernel quantises its f32 inputs to 8 bits per block (32 values for
            // Q8_0, 256 for k-quants), as the CPU's dense products do (ActBuf).
            let mma = (dense_mma && MMA_TYPES.contains(&t))
                .then(|| {
                    module
                        .load_function(&format!("mma_linear_{}", t.suffix()))
                        .ok()
                })
                .flatten()
                .filter(mma_capable);
            let tiled = match mma {
                Some(m) => {
                    int8 = Some(Int8Linear {
                        min_tokens: GemmShape::DEFAULT.linear_min_tokens,
                        min_rows: MMA_LINEAR_MIN_ROWS as usize,
                    });
                    (m, MMA_LINEAR_MIN_ROWS)
                }
                None => (f(&format!("gemm_linear_{}", t.suffix()))?, LINEAR_MIN_ROWS),
            };
            tiled_linear.insert(t, tiled);
            for b in KernelType::ALL {
                // Only the instantiated pairs exist; the others take two launches.
                let name = format!("linear_mix_{}_{}", t.suffix(), b.suffix());
                if let Ok(func) = module.load_function(&name) {
                    linear_mix.insert((t, b), func);
                }
            }
        }
        let fns = Fns {
            linear,
            linear_multi,
            linear_mix,
            tiled_linear,
            int8,
            rms_norm: f("rms_norm")?,
            add_rms_norm: f("add_rms_norm")?,
            qk_rope_kv: f("qk_norm_rope_kv")?,
            attend_split: SplitFns::load(&f)?,
            attend_combine: f("attend_combine")?,
            add_to: f("add_to")?,
            copy_out: f("copy_out")?,
            attend_tiled: TiledFn::load(&f, ATTEND_TILE_STAGES)?,
        };
        let mut layers = Vec::with_capacity(w.layers.len());
        for (i, l) in w.layers.iter().enumerate() {
            let n = |s: &str| format!("blk.{i}.{s}");
            layers.push(Layer {
                attn_norm: upload(&ctx, l.attn_norm, &n("attn_norm"))?,
                q_norm: upload(&ctx, l.q_norm, &n("attn_q_norm"))?,
                k_norm: upload(&ctx, l.k_norm, &n("attn_k_norm"))?,
                ffn_norm: upload(&ctx, l.ffn_norm, &n("ffn_norm"))?,
                wq: upload_mat(&ctx, &l.wq, &n("attn_q"))?,
                wk: upload_mat(&ctx, &l.wk, &n("attn_k"))?,
                wv: upload_mat(&ctx, &l.wv, &n("attn_v"))?,
                wo: upload_mat(&ctx, &l.wo, &n("attn_output"))?,
                router: upload_mat(&ctx, &l.router, &n("ffn_gate_inp"))?,
            });
        }
        let output_norm = upload(&ctx, w.output_norm, "output_norm")?;
        let output = upload_mat(&ctx, &w.output, "output")?;
        let inv_freq = upload(&ctx, &shape.inv_freq(), "RoPE frequencies")?;
        let stream = ctx.new_stream().map_err(drv("create dense stream"))?;
        Ok(Self {
            info,
            shape: shape.clone(),
            fns,
            layers,
            output_norm,
            output,
            inv_freq,
            weight_bytes,
            seqs: SeqRegistry::default(),
            kv: HashMap::new(),
            io: alloc(&ctx, io0.end, "dense layer buffer")?,
            work: alloc(&ctx, work0, "dense work buffer")?,
            part: alloc(&ctx, 4, "attention partials")?,
            logits: alloc(&ctx, 4 * shape.vocab, "logits")?,
            io_host,
            io_host_dev,
            logits_host: Pinned::new(4 * shape.vocab, "logits")?,
            warnings,
            profile: DenseProfile::from_env(&ctx),
            host_pool: None,
            graphs: GraphCache::from_env(),
            last_hn: None,
            lent_rows: None,
            launched: ctx
                .new_event(None)
                .map_err(drv("cuEventCreate(dense call)"))?,
            attend_min_chunk: std::env::var(ATTEND_MIN_CHUNK_ENV)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|&c| (1..=ATTEND_MAX_CHUNK).contains(&c))
                .unwrap_or(ATTEND_MIN_CHUNK),
            attend_hpw: std::env::var(ATTEND_HPW_ENV)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(ATTEND_HEADS_PER_WARP),
            stream,
            ctx,
        })
    }

    /// The device.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The shape it was built for.
    pub fn shape(&self) -> &DenseShape {
        &self.shape
    }

    /// Device bytes of the weights.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// How this instance multiplies prefill projections on the int8 mma kernels (`None`:
    /// the f32 kernels throughout), for [`crate::verify_dense::RefDense`].
    pub fn int8_linear(&self) -> Option<Int8Linear> {
        self.fns.int8
    }

    /// Device bytes of the KV caches allocated now.
    pub fn kv_bytes(&self) -> usize {
        self.kv.values().map(|k| k.k.len + k.v.len).sum()
    }

    /// Decode calls captured as CUDA graphs and graph launches so far.
    pub fn graph_stats(&self) -> (u64, u64) {
        self.graphs.stats()
    }

    /// The profile table when `HMOE_DENSE_PROFILE=1` (see `DENSE_PROFILE_ENV`).
    pub fn profile_report(&self) -> Option<String> {
        self.profile.as_ref().map(DenseProfile::report)
    }

    /// Warnings from start-up (e.g. the PTX fallback).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// A new sequence of at most `capacity` tokens; its cache is allocated on first use
    /// and freed after the handle is dropped.
    pub fn new_seq(&self, capacity: usize) -> DenseSeq {
        self.seqs.new_seq(capacity)
    }

    fn release_dropped(&mut self) {
        for id in self.seqs.take_released() {
            self.kv.remove(&id);
        }
    }

    /// Grows the device and pinned buffers for calls of `n` rows and head calls of `n`.
    fn ensure(&mut self, n: usize) -> Result<Io> {
        let io = Io::new(n, &self.shape);
        let work = n * 4 * (2 * self.shape.q_dim() + 2 * self.shape.kv_dim());
        if self.io.len < io.end {
            self.graphs.invalidate();
            self.io = alloc(&self.ctx, io.end, "dense layer buffer")?;
        }
        if self.work.len < work {
            self.graphs.invalidate();
            self.work = alloc(&self.ctx, work, "dense work buffer")?;
        }
        if self.io_host.len < io.end {
            self.graphs.invalidate();
            (self.io_host, self.io_host_dev) = Pinned::mapped(io.end, "dense layer buffer")?;
        }
        Ok(io)
    }

    /// The layer-0 K and V addresses and the capacity of a span's sequence, growing its
    /// cache to hold `start + n` positions.
    fn cache_for(&mut self, s: &SeqSpan) -> Result<(u64, u64, usize)> {
        let need = s.start + s.n;
        let have = self.kv.get(&s.seq).map_or(0, |k| k.cap);
        if have < need {
            let cap = grown_capacity(have, need, s.capacity);
            let row = self.shape.kv_dim() * 4;
            let bytes = self.shape.n_layers * cap * row;
            let what = format!("KV cache of sequence {} ({cap} tokens)", s.seq);
            let (k, v) = (
                alloc(&self.ctx, bytes, &what)?,
                alloc(&self.ctx, bytes, &what)?,
            );
            if let Some(old) = self.kv.get(&s.seq) {
                let cs = self.stream.cu_stream();
                for l in 0..self.shape.n_layers {
                    let (src, dst) = ((l * old.cap * row) as u64, (l * cap * row) as u64);
                    // SAFETY: both ranges lie inside their buffers (old.cap ≤ cap rows).
                    unsafe {
                        cu::memcpy_dtod_async(k.ptr + dst, old.k.ptr + src, old.cap * row, cs)
                            .map_err(drv("cuMemcpyDtoDAsync(KV grow)"))?;
                        cu::memcpy_dtod_async(v.ptr + dst, old.v.ptr + src, old.cap * row, cs)
                            .map_err(drv("cuMemcpyDtoDAsync(KV grow)"))?;
                    }
                }
                // The old buffers are freed below: the copies must have read them.
                self.stream
                    .synchronize()
                    .map_err(drv("cuStreamSynchronize(KV grow)"))?;
            }
            self.kv.insert(s.seq, Kv { k, v, cap });
        }
        let kv = self
            .kv
            .get(&s.seq)
            .ok_or_else(|| CudaError::InvalidBatch(format!("sequence {} has no cache", s.seq)))?;
        Ok((kv.k.ptr, kv.v.ptr, kv.cap))
    }

    /// Runs the dense part of `layer` for the rows of `seqs` (in order): `x` (`[n, hidden]`,
    /// the residual) gains the attention output; `hn_out` gets the pre-MoE normed state,
    /// `router_out` (`[n, n_experts]`) the router logits, and `next_router_out` (empty,
    /// or `[n, n_experts]` when `layer` is not the last) the next layer's router logits on
    /// `hn_out` (the scheduler's prediction). New keys and values go to each sequence's
    /// cache at positions `start..start + n`.
    pub fn attention_block(
        &mut self,
        layer: usize,
        seqs: &[SeqSpan],
        x: &mut [f32],
        hn_out: &mut [f32],
        router_out: &mut [f32],
        next_router_out: &mut [f32],
    ) -> Result<()> {
        self.attention_block_with(layer, seqs, None, x, hn_out, router_out, next_router_out)
    }

    /// [`GpuDense::attention_block`] whose residual also gains `addend` (the previous
    /// layer's GPU expert output, left on the device): after the upload of `x`, the stream
    /// waits for the addend's event and adds it, so `x` comes back with it included.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_block_with(
        &mut self,
        layer: usize,
        seqs: &[SeqSpan],
        addend: Option<DeviceAddend>,
        x: &mut [f32],
        hn_out: &mut [f32],
        router_out: &mut [f32],
        next_router_out: &mut [f32],
    ) -> Result<()> {
        let outs = (x, hn_out, router_out, next_router_out);
        self.attention_block_hooked(layer, seqs, addend, outs, None)
    }

    /// [`GpuDense::attention_block_with`] that calls `hook` once the call's kernels are
    /// enqueued, before the host waits for them, with where the router logits and the
    /// normed state will be on the device and an event behind them: the engine launches
    /// the layer's routed expert pass there, on its own stream (`GpuExperts::launch_routed`).
    /// hn stays lent to that reader until the next call (which waits for the experts'
    /// addend first). A hook error is returned after the call completes.
    pub fn attention_block_hooked(
        &mut self,
        layer: usize,
        seqs: &[SeqSpan],
        addend: Option<DeviceAddend>,
        (x, hn_out, router_out, next_router_out): (&mut [f32], &mut [f32], &mut [f32], &mut [f32]),
        hook: Option<&mut dyn FnMut(DenseOnDevice) -> Result<()>>,
    ) -> Result<()> {
        let (h, e) = (self.shape.hidden, self.shape.n_experts);
        let n = x.len() / h;
        let next = !next_router_out.is_empty();
        if layer >= self.layers.len()
            || x.len() != n * h
            || hn_out.len() != n * h
            || router_out.len() != n * e
            || (next && (next_router_out.len() != n * e || layer + 1 >= self.layers.len()))
        {
            return Err(CudaError::InvalidBatch(format!(
                "attention block of layer {layer}: x {} hn {} router {} next {} values for {n} rows",
                x.len(),
                hn_out.len(),
                router_out.len(),
                next_router_out.len()
            )));
        }
        validate_spans(seqs, n)?;
        if let Some(a) = addend.filter(|a| a.values != n * h) {
            return Err(CudaError::InvalidBatch(format!(
                "attention block of layer {layer}: the experts' output has {} values for {n} rows of {h}",
                a.values
            )));
        }
        let t0 = Instant::now();
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        self.last_hn = None;
        // A lent hn of another row count sits where this call's inputs go (or in a buffer
        // ensure() may free): let its reader finish first. Calls of one forward pass share
        // their row count, so this is the first call of a step after an unusual one.
        if self.lent_rows.take().is_some_and(|r| r != n) {
            self.ctx
                .synchronize()
                .map_err(drv("cuCtxSynchronize(lent hidden state)"))?;
        }
        self.release_dropped();
        let io = self.ensure(n)?;
        let row = (self.shape.kv_dim() * 4) as u64;
        let mut kc = Vec::with_capacity(n);
        let mut vc = Vec::with_capacity(n);
        for s in seqs {
            let (k0, v0, cap) = self.cache_for(s)?;
            let off = (layer * cap) as u64 * row;
            kc.extend(std::iter::repeat_n(k0 + off, s.n));
            vc.extend(std::iter::repeat_n(v0 + off, s.n));
        }
        let pos = positions(seqs);
        let max_visible = pos.iter().max().map_or(1, |&p| p as usize + 1);
        let (chunk, n_splits, hpw) = attention_plan(
            n,
            (self.shape.n_heads, self.shape.n_kv_heads),
            max_visible,
            (self.attend_min_chunk, self.attend_hpw),
        );
        let grid_splits = grid_split_count(n_splits);
        // The split kernel's partial softmax states (a tiled call needs none: ~68 MB at
        // 1024 rows that it would not use).
        let tiled = self.fns.attend_tiled.is_some() && use_tiled(n, self.shape.head_dim);
        let part = if tiled {
            0
        } else {
            4 * n * self.shape.n_heads * grid_splits * (self.shape.head_dim + 2)
        };
        if self.part.len < part {
            self.graphs.invalidate();
            self.part = alloc(&self.ctx, part, "attention partials")?;
        }
        // The previous call synchronised, so the pinned buffer is free.
        let host = self.io_host.bytes();
        host[..4 * n].copy_from_slice(bytes_of(&pos));
        host[io.plan..io.plan + 8].copy_from_slice(bytes_of(&[chunk as u32, n_splits as u32]));
        host[io.kc..io.vc].copy_from_slice(bytes_of(&kc));
        host[io.vc..io.vc + 8 * n].copy_from_slice(bytes_of(&vc));
        let t_in = Instant::now();
        par_copy(
            self.host_pool.as_deref(),
            &mut host[io.x..io.hn],
            bytes_of(x),
        );
        let t1 = Instant::now();
        let mut prof = self.profile.take();
        let graphed = self.graphs.wants(n);
        let key = GraphKey {
            layer,
            rows: n,
            grid_splits,
            hpw,
            next,
            // A graphed call adds the experts' output in its first kernel.
            addend: addend.filter(|_| graphed).map(|a| a.ptr),
        };
        // Profiling with graphs on times the upload and the whole graph (events outside
        // it); with HMOE_CUDA_GRAPHS=0 every kernel apart.
        let launched = if graphed {
            self.run_graphed(&mut prof, &io, key, addend)
        } else {
            self.run_direct(&mut prof, &io, key, addend)
        };
        self.profile = prof;
        launched?;
        if !graphed {
            // A graph's last kernel wrote the outputs into io_host already.
            let cs = self.stream.cu_stream();
            let end = if next { io.end } else { io.next };
            // SAFETY: pinned destination inside io_host (io.end bytes); read after the sync.
            unsafe {
                cu::memcpy_dtoh_async(
                    &mut self.io_host.bytes()[io.x..end],
                    self.io.ptr + io.x as u64,
                    cs,
                )
            }
            .map_err(drv("cuMemcpyDtoHAsync(dense output)"))?;
            self.mark("download")?;
        }
        let hooked = match hook {
            Some(f) => {
                self.launched
                    .record(&self.stream)
                    .map_err(drv("cuEventRecord(dense call)"))?;
                self.lent_rows = Some(n);
                f(DenseOnDevice {
                    logits: self.io.ptr + io.router as u64,
                    hn: DeviceInput {
                        ptr: self.io.ptr + io.hn as u64,
                        values: n * h,
                    },
                    event: self.launched.cu_event() as u64,
                })
            }
            None => Ok(()),
        };
        let t2 = Instant::now();
        self.stream
            .synchronize()
            .map_err(drv("cuStreamSynchronize(dense layer)"))?;
        hooked?;
        if let Some(p) = self.profile.as_mut() {
            p.end(t1 - t0, t2 - t1, t2.elapsed())?;
        }
        let t_out = Instant::now();
        let pool = self.host_pool.as_deref();
        let host = self.io_host.bytes();
        floats_from(pool, &host[io.x..io.hn], x);
        floats_from(pool, &host[io.hn..io.router], hn_out);
        floats_from(pool, &host[io.router..io.next], router_out);
        if next {
            floats_from(pool, &host[io.next..io.end], next_router_out);
        }
        if let Some(p) = self.profile.as_mut() {
            p.staging(t1 - t_in, t_out.elapsed());
        }
        self.last_hn = Some(DeviceInput {
            ptr: self.io.ptr + io.hn as u64,
            values: n * h,
        });
        Ok(())
    }

    /// Lends the engine's CPU pool for the large host copies of prefill calls (idle while
    /// a dense call runs); None copies on the calling thread and scoped threads.
    pub fn set_host_pool(&mut self, pool: Option<Arc<CpuPool>>) {
        self.host_pool = pool;
    }

    /// The last call's normed hidden state (`hn_out`) on the device, for a reader on
    /// another stream (the expert pass) instead of an upload of the host's copy. Valid
    /// until the next call, whose kernels overwrite it only after waiting for the addend
    /// the caller passes (the experts' end event); None after a failed call.
    pub fn hn_on_device(&mut self) -> Option<DeviceInput> {
        let d = self.last_hn?;
        self.lent_rows = Some(d.values / self.shape.hidden);
        Some(d)
    }

    /// Uploads the call's inputs (`meta | x`, from the pinned buffer) on the stream, then
    /// makes the stream wait for the experts' `addend` and (with `add`; a graph adds it
    /// itself) adds it into `x`.
    fn upload_inputs(&mut self, io: &Io, addend: Option<DeviceAddend>, add: bool) -> Result<()> {
        let cs = self.stream.cu_stream();
        // SAFETY: pinned source of io.hn bytes; the device buffer holds io.end ≥ io.hn.
        unsafe { cu::memcpy_htod_async(self.io.ptr, &self.io_host.bytes()[..io.hn], cs) }
            .map_err(drv("cuMemcpyHtoDAsync(dense input)"))?;
        let Some(a) = addend else {
            return Ok(());
        };
        // SAFETY: the event is a live CUevent of the expert backend (DeviceAddend's
        // contract); waiting on it orders the add after the experts' combine.
        unsafe {
            cu::stream::wait_event(
                cs,
                a.event as sys::CUevent,
                sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
            )
        }
        .map_err(drv("cuStreamWaitEvent(experts' output)"))?;
        if !add {
            return Ok(());
        }
        self.add_to(self.io.ptr + io.x as u64, a.ptr, a.values as u64)
    }

    /// Runs the call's kernels from the graph of `key`, captured first if new (the stream
    /// is idle: the previous call synchronised), after the upload in stream order.
    fn run_graphed(
        &mut self,
        prof: &mut Option<DenseProfile>,
        io: &Io,
        key: GraphKey,
        addend: Option<DeviceAddend>,
    ) -> Result<()> {
        let mut graphs = std::mem::take(&mut self.graphs);
        let r = self.run_graph_of(&mut graphs, prof, io, key, addend);
        self.graphs = graphs;
        r
    }

    fn run_graph_of(
        &mut self,
        graphs: &mut GraphCache,
        prof: &mut Option<DenseProfile>,
        io: &Io,
        key: GraphKey,
        addend: Option<DeviceAddend>,
    ) -> Result<()> {
        graphs.ensure(&self.stream, key, || {
            self.launch_block(&mut None, io, key, true)
        })?;
        if let Some(p) = prof.as_mut() {
            p.begin(&self.stream, key.rows)?;
        }
        self.upload_inputs(io, addend, key.addend.is_none())?;
        if let Some(p) = prof.as_mut() {
            p.mark(&self.stream, "upload")?;
        }
        graphs.launch(key)?;
        if let Some(p) = prof.as_mut() {
            p.mark(&self.stream, "layer graph")?;
        }
        Ok(())
    }

    /// Uploads the inputs and launches the call's kernels one by one (profiled if on).
    fn run_direct(
        &mut self,
        prof: &mut Option<DenseProfile>,
        io: &Io,
        key: GraphKey,
        addend: Option<DeviceAddend>,
    ) -> Result<()> {
        if let Some(p) = prof.as_mut() {
            p.begin(&self.stream, key.rows)?;
        }
        self.upload_inputs(io, addend, true)?;
        self.launch_block(prof, io, key, false)
    }

    /// Marks the end of step `name` in the profile, if on.
    fn mark(&mut self, name: &'static str) -> Result<()> {
        match self.profile.as_mut() {
            Some(p) => p.mark(&self.stream, name),
            None => Ok(()),
        }
    }

    /// Enqueues the kernels of one call (nothing else: this is what a graph captures):
    /// with `graphed`, first the add of `key.addend` (the experts' output) and last the
    /// copy of the outputs into the mapped host buffer (no download after the graph).
    fn launch_block(
        &self,
        prof: &mut Option<DenseProfile>,
        io: &Io,
        key: GraphKey,
        graphed: bool,
    ) -> Result<()> {
        let GraphKey {
            layer,
            rows: n,
            grid_splits,
            hpw,
            next,
            addend,
        } = key;
        let s = &self.shape;
        let l = &self.layers[layer];
        let base = self.io.ptr;
        let (pos, kc, vc) = (base, base + io.kc as u64, base + io.vc as u64);
        let (x, hn) = (base + io.x as u64, base + io.hn as u64);
        let (qd, kvd) = (s.q_dim() as u64, s.kv_dim() as u64);
        let nn = n as u64;
        let q = self.work.ptr;
        let k = q + 4 * nn * qd;
        let v = k + 4 * nn * kvd;
        let attn = v + 4 * nn * kvd;
        let (n32, h32) = (n as u32, s.hidden as u32);
        // Profiled calls launch every matrix apart (the profile times each).
        let apart = prof.is_some();
        let mut m = |name: &'static str| match prof.as_mut() {
            Some(p) => p.mark(&self.stream, name),
            None => Ok(()),
        };
        m("upload")?;
        match addend.filter(|_| graphed) {
            // A graph adds the experts' output in front of the norm (one kernel, not two).
            Some(a) => self.add_rms_norm(x, a, l.attn_norm.ptr, hn, n32, h32)?,
            None => self.rms_norm(x, l.attn_norm.ptr, hn, n32, h32)?,
        }
        m("attn_norm")?;
        if apart {
            self.linear(&l.wq, hn, q, n32)?;
            m("wq")?;
            self.linear(&l.wk, hn, k, n32)?;
            m("wk")?;
            self.linear(&l.wv, hn, v, n32)?;
            m("wv")?;
        } else {
            self.linears(&[(&l.wq, q), (&l.wk, k), (&l.wv, v)], hn, n32)?;
        }
        self.qk_rope_kv(l, (q, k, v), (kc, vc, pos), n32)?;
        m("qk_norm+rope+kv_write")?;
        let plan = base + io.plan as u64;
        let split = (plan, grid_splits as u32, hpw as u32);
        self.attend(q, kc, vc, pos, attn, n32, split)?;
        m("attention")?;
        self.linear(&l.wo, attn, hn, n32)?;
        m("wo")?;
        self.add_rms_norm(x, hn, l.ffn_norm.ptr, hn, n32, h32)?;
        m("residual+norm")?;
        let router = (&l.router, base + io.router as u64);
        if next && !apart {
            let next_router = (&self.layers[layer + 1].router, base + io.next as u64);
            self.linears(&[router, next_router], hn, n32)?;
        } else {
            self.linear(router.0, hn, router.1, n32)?;
            m("router")?;
            if next {
                self.linear(
                    &self.layers[layer + 1].router,
                    hn,
                    base + io.next as u64,
                    n32,
                )?;
                m("next router")?;
            }
        }
        if graphed {
            let end = if next { io.end } else { io.next };
            self.copy_out(x, self.io_host_dev + io.x as u64, (end - io.x) / 4)?;
        }
        Ok(())
    }

    /// `copy_out` of `words` 32-bit words from device `src` to `dst` (mapped host memory).
    fn copy_out(&self, src: u64, dst: u64, words: usize) -> Result<()> {
        let w = words as u32;
        let cfg = LaunchConfig {
            grid_dim: (w.div_ceil(ADD_THREADS), 1, 1),
            block_dim: (ADD_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches copy_out(const u32*, u32*, u32); both ranges hold `words` words
        // (the call's outputs in io and their place in the mapped io_host).
        unsafe {
            self.stream
                .launch_builder(&self.fns.copy_out)
                .arg(&src)
                .arg(&dst)
                .arg(&w)
                .launch(cfg)
        }
        .map(|_| ())
        .map_err(drv("launch copy_out"))
    }

    /// Final norm and output head of the rows `x` (`[r, hidden]`): logits `[r, vocab]`.
    pub fn head(&mut self, x: &[f32]) -> Result<Vec<f32>> {
        let h = self.shape.hidden;
        let r = x.len() / h;
        if r == 0 || x.len() != r * h {
            return Err(CudaError::InvalidBatch(format!(
                "head: {} values for rows of {h}",
                x.len()
            )));
        }
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        self.release_dropped();
        let io = self.ensure(r)?;
        let lb = 4 * r * self.shape.vocab;
        if self.logits.len < lb {
            self.logits = alloc(&self.ctx, lb, "logits")?;
        }
        if self.logits_host.len < lb {
            self.logits_host = Pinned::new(lb, "logits")?;
        }
        self.io_host.bytes()[io.x..io.hn].copy_from_slice(bytes_of(x));
        let t1 = Instant::now();
        if let Some(p) = self.profile.as_mut() {
            p.begin(&self.stream, r)?;
        }
        let cs = self.stream.cu_stream();
        let (xd, hn) = (self.io.ptr + io.x as u64, self.io.ptr + io.hn as u64);
        // SAFETY: pinned source inside io_host; device range inside io.
        unsafe { cu::memcpy_htod_async(xd, &self.io_host.bytes()[io.x..io.hn], cs) }
            .map_err(drv("cuMemcpyHtoDAsync(head input)"))?;
        self.mark("head upload")?;
        self.rms_norm(xd, self.output_norm.ptr, hn, r as u32, h as u32)?;
        self.linear(&self.output, hn, self.logits.ptr, r as u32)?;
        self.mark("head")?;
        // SAFETY: pinned destination of lb bytes; read after the sync.
        unsafe { cu::memcpy_dtoh_async(&mut self.logits_host.bytes()[..lb], self.logits.ptr, cs) }
            .map_err(drv("cuMemcpyDtoHAsync(logits)"))?;
        self.mark("head download")?;
        let t2 = Instant::now();
        self.stream
            .synchronize()
            .map_err(drv("cuStreamSynchronize(head)"))?;
        if let Some(p) = self.profile.as_mut() {
            p.end(Duration::ZERO, t2 - t1, t2.elapsed())?;
        }
        Ok(self.logits_host.floats(r * self.shape.vocab).to_vec())
    }

    fn linear(&self, m: &Mat, x: u64, y: u64, n: u32) -> Result<()> {
        let missing = || CudaError::UnsupportedType(m.t.ggml());
        let (tiled, min_rows) = self.fns.tiled_linear.get(&m.t).ok_or_else(missing)?;
        let fns = LinearFns {
            rows: self.fns.linear.get(&m.t).ok_or_else(missing)?,
            tiled,
            shape: GemmShape::DEFAULT,
            min_rows: *min_rows,
        };
        // x holds n × cols floats, y n × rows (the layer's buffers).
        launch_linear_on(&self.stream, &fns, m.buf.ptr, x, y, m.rows, m.cols, n)
    }

    /// `y = W · x` for matrices that share the input `x` (and their column count). When
    /// the calls take the row kernels (few tokens: decode), runs of consecutive same-type
    /// matrices go in one `linear_multi` launch, and a run of one or two followed by a
    /// matrix of another type in one `linear_mix` launch where dense.cu has the pair (a
    /// layer's wq, wk in Q4_K and wv in Q6_K); the rest one `linear` each.
    fn linears(&self, mats: &[(&Mat, u64)], x: u64, n: u32) -> Result<()> {
        let rows_path = (n as usize) < GemmShape::DEFAULT.linear_min_tokens;
        let mut i = 0;
        while i < mats.len() {
            let (m0, y0) = mats[i];
            let run = mats[i..]
                .iter()
                .take(MULTI_MATRICES)
                .take_while(|(m, _)| m.t == m0.t && m.cols == m0.cols)
                .count();
            let mix = mats
                .get(i + run)
                .filter(|(m, _)| run < MULTI_MATRICES && m.cols == m0.cols)
                .and_then(|&(m, y)| Some((self.fns.linear_mix.get(&(m0.t, m.t))?, m, y)));
            if !rows_path || (run == 1 && mix.is_none()) {
                self.linear(m0, x, y0, n)?;
                i += 1;
                continue;
            }
            let none = (0u64, 0u64, 0u32);
            let pick = |k: usize| {
                mats[i..i + run]
                    .get(k)
                    .map_or(none, |(m, y)| (m.buf.ptr, *y, m.rows))
            };
            let (f, slots, taken) = match mix {
                // The third slot takes the other type's matrix.
                Some((f, m, y)) => (f, [pick(0), pick(1), (m.buf.ptr, y, m.rows)], run + 1),
                None => {
                    let f = self
                        .fns
                        .linear_multi
                        .get(&m0.t)
                        .ok_or(CudaError::UnsupportedType(m0.t.ggml()))?;
                    (f, [pick(0), pick(1), pick(2)], run)
                }
            };
            let blocks: u32 = slots.iter().map(|s| s.2.div_ceil(WARPS_PER_BLOCK)).sum();
            let cfg = LaunchConfig {
                grid_dim: (blocks, n.div_ceil(ROW_TOKENS), 1),
                block_dim: (32 * WARPS_PER_BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            let [(w0, y0, r0), (w1, y1, r1), (w2, y2, r2)] = slots;
            let cols = m0.cols;
            // SAFETY: matches linear_multi_* and linear_mix_* in dense.cu (w0, w1, w2, y0,
            // y1, y2, r0, r1, r2, x, cols, n); each matrix holds rows × cols weights of its
            // slot's type, x n × cols floats and each y n × rows (the layer's buffers);
            // unused slots have 0 rows and no blocks.
            unsafe {
                self.stream
                    .launch_builder(f)
                    .arg(&w0)
                    .arg(&w1)
                    .arg(&w2)
                    .arg(&y0)
                    .arg(&y1)
                    .arg(&y2)
                    .arg(&r0)
                    .arg(&r1)
                    .arg(&r2)
                    .arg(&x)
                    .arg(&cols)
                    .arg(&n)
                    .launch(cfg)
            }
            .map_err(drv(format!("launch linear_multi ({taken} matrices)")))?;
            i += taken;
        }
        Ok(())
    }

    fn rms_norm(&self, x: u64, w: u64, y: u64, rows: u32, cols: u32) -> Result<()> {
        // rms_norm reads 16-byte chunks: rows of whole chunks, 16-byte aligned (every
        // buffer here starts aligned and holds rows of `cols` floats).
        if !cols.is_multiple_of(4) || !(x | w | y).is_multiple_of(16) {
            return Err(CudaError::InvalidBatch(format!(
                "RMSNorm of rows of {cols} values at {x:#x}/{y:#x}: needs 16-byte rows"
            )));
        }
        let cfg = norm_config(rows);
        let eps = self.shape.rms_eps;
        // SAFETY: matches rms_norm(const float*, const float*, float*, u32, u32, float);
        // in place (x == y) is safe: each thread rewrites only elements it read.
        unsafe {
            self.stream
                .launch_builder(&self.fns.rms_norm)
                .arg(&x)
                .arg(&w)
                .arg(&y)
                .arg(&rows)
                .arg(&cols)
                .arg(&eps)
                .launch(cfg)
        }
        .map(|_| ())
        .map_err(drv("launch rms_norm"))
    }

    /// `x += y`, then `out = RMSNorm(x) · w` (`add_rms_norm`: the residual add fused in
    /// front of the pre-MoE norm).
    fn add_rms_norm(&self, x: u64, y: u64, w: u64, out: u64, rows: u32, cols: u32) -> Result<()> {
        if !cols.is_multiple_of(4) || !(x | y | w | out).is_multiple_of(16) {
            return Err(CudaError::InvalidBatch(format!(
                "residual add and RMSNorm of rows of {cols} values: needs 16-byte rows"
            )));
        }
        let cfg = norm_config(rows);
        let eps = self.shape.rms_eps;
        // SAFETY: matches add_rms_norm(float*, const float*, const float*, float*, u32, u32,
        // float); x, y and out hold rows × cols floats.
        unsafe {
            self.stream
                .launch_builder(&self.fns.add_rms_norm)
                .arg(&x)
                .arg(&y)
                .arg(&w)
                .arg(&out)
                .arg(&rows)
                .arg(&cols)
                .arg(&eps)
                .launch(cfg)
        }
        .map(|_| ())
        .map_err(drv("launch add_rms_norm"))
    }

    /// QK-norm and RoPE of every query and key head in place, and the new keys and values
    /// into their caches (`qk_norm_rope_kv`: one launch for what took five).
    #[allow(clippy::too_many_arguments)]
    fn qk_rope_kv(
        &self,
        l: &Layer,
        (q, k, v): (u64, u64, u64),
        (kc, vc, pos): (u64, u64, u64),
        n: u32,
    ) -> Result<()> {
        let s = &self.shape;
        let (nh, nkv, hd) = (s.n_heads as u32, s.n_kv_heads as u32, s.head_dim as u32);
        let warps = n * (nh + 2 * nkv);
        let cfg = LaunchConfig {
            grid_dim: (warps.div_ceil(WARPS_PER_BLOCK), 1, 1),
            block_dim: (32 * WARPS_PER_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let eps = s.rms_eps;
        // SAFETY: matches qk_norm_rope_kv(float*, float*, float*, const float*, const float*,
        // const u32*, const float*, const u64*, const u64*, u32, u32, u32, u32, float); q, k,
        // v hold n rows of heads; every kc/vc row address + pos < cap lies inside its cache;
        // head_dim is a power of two in 32..=256 (DenseShape::validate).
        unsafe {
            self.stream
                .launch_builder(&self.fns.qk_rope_kv)
                .arg(&q)
                .arg(&k)
                .arg(&v)
                .arg(&l.q_norm.ptr)
                .arg(&l.k_norm.ptr)
                .arg(&pos)
                .arg(&self.inv_freq.ptr)
                .arg(&kc)
                .arg(&vc)
                .arg(&n)
                .arg(&nh)
                .arg(&nkv)
                .arg(&hd)
                .arg(&eps)
                .launch(cfg)
        }
        .map(|_| ())
        .map_err(drv("launch qk_norm_rope_kv"))
    }

    /// The attention of every row: the tiled kernel for calls of at least
    /// `TILED_MIN_ROWS` rows (prefill; `attend_tiled.rs`), else the split-context kernels,
    /// whose `plan` points at [`attention_plan`]'s `(chunk, n_splits)` in device memory,
    /// on a grid with room for `grid_splits` (a graph-stable shape for decode) and `hpw`
    /// query heads a warp.
    #[allow(clippy::too_many_arguments)]
    fn attend(
        &self,
        q: u64,
        kc: u64,
        vc: u64,
        pos: u64,
        out: u64,
        n: u32,
        (plan, grid_splits, hpw): (u64, u32, u32),
    ) -> Result<()> {
        let s = &self.shape;
        let call = AttendCall {
            q,
            kc,
            vc,
            pos,
            out,
            n,
            n_heads: s.n_heads as u32,
            n_kv: s.n_kv_heads as u32,
            head_dim: s.head_dim as u32,
            hpw,
        };
        match &self.fns.attend_tiled {
            Some(t) if use_tiled(n as usize, s.head_dim) => launch_tiled(&self.stream, t, &call),
            _ => launch_split(
                &self.stream,
                (&self.fns.attend_split, &self.fns.attend_combine),
                &call,
                self.part.ptr,
                plan,
                grid_splits,
            ),
        }
    }

    fn add_to(&self, x: u64, y: u64, len: u64) -> Result<()> {
        launch_add_to(&self.stream, &self.fns.add_to, x, y, len)
    }
}

/// One block of [`NORM_THREADS`] per row (`rms_norm`, `add_rms_norm`).
pub(super) fn norm_config(rows: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows, 1, 1),
        block_dim: (NORM_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `add_to` (dense.cu) on `stream`: `x[i] += y[i]` for `len` floats at device addresses
/// `x` and `y` (the caller's buffers hold them). Also the routed expert pass's (routed.rs).
pub(super) fn launch_add_to(
    stream: &CudaStream,
    f: &CudaFunction,
    x: u64,
    y: u64,
    len: u64,
) -> Result<()> {
    let cfg = LaunchConfig {
        grid_dim: (len.div_ceil(ADD_THREADS as u64) as u32, 1, 1),
        block_dim: (ADD_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: matches add_to(float*, const float*, u64); the caller's buffers hold `len`
    // floats each.
    unsafe {
        stream
            .launch_builder(f)
            .arg(&x)
            .arg(&y)
            .arg(&len)
            .launch(cfg)
    }
    .map(|_| ())
    .map_err(drv("launch add_to"))
}

impl Drop for GpuDense {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            let _ = self.stream.synchronize();
        }
    }
}

/// The bytes of a slice of plain numbers.
fn bytes_of<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: u32/u64/f32 have no padding and any alignment ≥ u8's.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_constants_follow_the_kernel_source() {
        assert_eq!(crate::kernel_define("TT"), Some(ROW_TOKENS as usize));
        assert_eq!(
            crate::kernel_define("NORM_THREADS"),
            Some(NORM_THREADS as usize)
        );
        // linear_multi takes w0, w1, w2.
        assert!(crate::KERNEL_SOURCE.contains("const u8* w0, const u8* w1, const u8* w2"));
    }
}
