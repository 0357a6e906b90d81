//! The int8 (dp4a) decode pass (fused_q8.cu, docs/notes/cuda-dp4a.md): its kernels,
//! the side buffer of the quantised SwiGLU products, which layers take it, its launches
//! and the kernel-only timing of `hmoe-cuda-check decode`.
//!
//! The engine's fused pass (gpu.rs `submit_inner`) launches through
//! [`GpuExperts::launch_gate_up_fused`] / [`GpuExperts::launch_down_combine`] with the
//! backend's own fused kernels ([`GpuExperts::fused_fns`]); where [`Q8Kernels::covers`]
//! the layout, those launchers run `gate_up_q8_*` / `down_combine_q8_*` instead. The
//! kernel-only timing (kernel_bench.rs) passes functions it owns (clones, variant
//! modules), so it keeps timing the f32 fused kernels it names.

use super::super::{drv, DeviceBuf, GpuExperts};
use super::{FusedFns, FUSED_MAX_ROWS};
use crate::api::GpuItem;
use crate::batch::{pack, BatchItem, BatchLayout};
use crate::dtype::{ExpertLayout, KernelType};
use crate::error::{CudaError, Result};
use crate::WARPS_PER_BLOCK;
use cudarc::driver::result as cu;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, LaunchConfig, PushKernelArg};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Environment variable: `0` keeps the f32 fused kernels for every decode layer.
pub const DP4A_ENV: &str = "HMOE_CUDA_DP4A";

/// Weight types with int8 kernels, as gate/up and as down.
pub(crate) const Q8_TYPES: [KernelType; 4] = [
    KernelType::Q8_0,
    KernelType::Q4K,
    KernelType::Q5K,
    KernelType::Q6K,
];

/// Largest hidden whose x a gate_up_q8 block quantises into shared memory
/// (`Q8_MAX_HIDDEN` in fused_q8.cu; tested).
const MAX_HIDDEN: usize = 8192;

/// Output rows per down_combine_q8 block (`Q8_DN_ROWS` in fused_q8.cu; tested). 4: on an
/// H100 (hmoe-cuda-check decode, 2026-11-27) 29.7 / 36.6 us a q4_k_m / q8_0 pass against
/// 30.4 / 38.6 at 1.
const DN_ROWS: u32 = 4;

/// Gate/up types the engine's decode pass runs through the int8 kernels: where they were
/// faster. On an H100 (hmoe-cuda-check decode, 2026-11-27, 8 experts x 1 token) the int8
/// pass took 30.4 us for q4_k_m against 34.3 for the f32 fused pass, but 38.6 us for q8_0
/// against 35.6: Q8_0 rows decode cheaply in f32 already. (Q5_K/Q6_K gate/up: unmeasured.)
const ENGINE_GATE_UP: [KernelType; 1] = [KernelType::Q4K];

/// The source of a variant module of the int8 kernels (what they need of the kernel
/// source, not the dense, attention and GEMM kernels: a quicker NVRTC compile).
const Q8_SOURCE: &str = concat!(
    include_str!("../../kernels.cu"),
    "\n",
    include_str!("../../fused.cu"),
    "\n",
    include_str!("../../fused_q8.cu")
);

/// Values per scale slot of the products' scale buffer (Q8_0's block; a Q8_K block uses
/// the first slot of its eight).
const SCALE_BLOCK: usize = 32;

/// Pairs the side buffer holds at first (64 one-token items: a decode batch of 8 tokens
/// with distinct experts); grown on demand.
const INITIAL_PAIRS: usize = 64;

/// Activation formats of the kernels: `KernelType::act_format` codes and name suffixes.
const FORMATS: [(u32, &str); 2] = [(2, "q8_0"), (3, "q8_k")];

/// The int8 kernels and the buffer of the quantised products.
pub(in crate::gpu) struct Q8Kernels {
    /// `gate_up_q8_<type>_<fmt>` by (gate/up type, act_format code of the down weights).
    gate_up: HashMap<(KernelType, u32), CudaFunction>,
    /// `down_combine_q8_<type>`.
    down_combine: HashMap<KernelType, CudaFunction>,
    /// Products as int8 (`[pair][ffn]`) then their scales (`[pair][ffn / 32]` f32) at
    /// `scale_offset`; allocated by `ensure` for `pairs` pairs of `ffn` products.
    buf: Option<DeviceBuf>,
    pairs: usize,
    ffn: usize,
    /// `HMOE_CUDA_DP4A` is not `0`.
    enabled: bool,
}

type GateUpFns = HashMap<(KernelType, u32), CudaFunction>;

/// Every int8 kernel by name from a module.
fn load_fns(
    f: &dyn Fn(&str) -> Result<CudaFunction>,
) -> Result<(GateUpFns, HashMap<KernelType, CudaFunction>)> {
    let (mut gate_up, mut down_combine) = (HashMap::new(), HashMap::new());
    for t in Q8_TYPES {
        for (code, fmt) in FORMATS {
            gate_up.insert((t, code), f(&format!("gate_up_q8_{}_{fmt}", t.suffix()))?);
        }
        down_combine.insert(t, f(&format!("down_combine_q8_{}", t.suffix()))?);
    }
    Ok((gate_up, down_combine))
}

/// Byte offset of the scales in a buffer for `pairs` pairs of `ffn` products.
fn scale_offset(pairs: usize, ffn: usize) -> usize {
    (pairs * ffn).div_ceil(256) * 256
}

impl Q8Kernels {
    /// The kernels from the backend's module; a module without them (a PTX file from
    /// an older source, `HMOE_CUDA_PTX`) leaves the int8 pass off rather than failing.
    pub(in crate::gpu) fn load(f: &dyn Fn(&str) -> Result<CudaFunction>) -> Self {
        let fns = load_fns(f);
        let enabled = fns.is_ok() && std::env::var(DP4A_ENV).map_or(true, |v| v.trim() != "0");
        let (gate_up, down_combine) = fns.unwrap_or_default();
        Self {
            gate_up,
            down_combine,
            buf: None,
            pairs: 0,
            ffn: 0,
            enabled,
        }
    }

    /// Whether the int8 kernels can run a fused pass of layout `l`: enabled, both types
    /// have them, x fits the shared buffer, the products are whole blocks of the down
    /// weights' format, and [`Q8Kernels::ensure`] sized the buffer for this FFN.
    pub(in crate::gpu) fn supports(&self, l: &ExpertLayout) -> bool {
        let (fmt, block) = l.down.act_format();
        self.enabled
            && Q8_TYPES.contains(&l.gate_up)
            && Q8_TYPES.contains(&l.down)
            && FORMATS.iter().any(|&(c, _)| c == fmt)
            && l.hidden <= MAX_HIDDEN
            && l.ffn.is_multiple_of(block)
            && self.buf.is_some()
            && self.ffn == l.ffn
    }

    /// Whether the engine's decode pass of `l` runs the int8 kernels: they support it and
    /// its gate/up type is one of [`ENGINE_GATE_UP`].
    pub(in crate::gpu) fn covers(&self, l: &ExpertLayout) -> bool {
        self.supports(l) && ENGINE_GATE_UP.contains(&l.gate_up)
    }

    /// Sizes the products' buffer for `n_items` items of up to [`FUSED_MAX_ROWS`] tokens
    /// of `ffn` products (nothing when disabled).
    pub(in crate::gpu) fn ensure(&mut self, n_items: usize, ffn: usize) -> Result<()> {
        let pairs = n_items * FUSED_MAX_ROWS;
        if !self.enabled || (self.buf.is_some() && self.ffn == ffn && pairs <= self.pairs) {
            return Ok(());
        }
        let pairs = pairs.max(INITIAL_PAIRS);
        let bytes = scale_offset(pairs, ffn) + pairs * ffn.div_ceil(SCALE_BLOCK) * 4;
        self.buf = Some(DeviceBuf::new(bytes, "int8 SwiGLU products")?);
        (self.pairs, self.ffn) = (pairs, ffn);
        Ok(())
    }

    /// Device addresses of the int8 products and of their scales.
    pub(in crate::gpu) fn ptrs(&self) -> Result<(u64, u64)> {
        let b = self
            .buf
            .as_ref()
            .ok_or_else(|| CudaError::InvalidBatch("int8 products not allocated".into()))?;
        Ok((b.ptr, b.ptr + scale_offset(self.pairs, self.ffn) as u64))
    }
}

/// The int8 kernels of one layout.
struct Q8Fns<'a> {
    gate_up: &'a CudaFunction,
    down_combine: &'a CudaFunction,
}

impl GpuExperts {
    /// The int8 kernels that replace `fns` for layout `l`: when the int8 pass covers `l`
    /// and `fns` are the backend's own fused kernels for it (see the module docs).
    fn q8_for(&self, l: &ExpertLayout, fns: &FusedFns<'_>) -> Option<Q8Fns<'_>> {
        let q8 = &self.fused.q8;
        if !q8.covers(l) {
            return None;
        }
        let (fmt, _) = l.down.act_format();
        let own_gate_up = self.fused.gate_up.get(&(l.gate_up, fmt))?;
        let own_down = self.fused.down_combine.get(&l.down)?;
        if !std::ptr::eq(fns.gate_up, own_gate_up) || !std::ptr::eq(fns.down_combine, own_down) {
            return None;
        }
        Some(Q8Fns {
            gate_up: q8.gate_up.get(&(l.gate_up, fmt))?,
            down_combine: q8.down_combine.get(&l.down)?,
        })
    }

    /// `gate_up_q8` instead of the fused gate_up, if it covers `l` (see `q8_for`): true
    /// when launched.
    pub(in crate::gpu) fn try_gate_up_q8(
        &self,
        l: &ExpertLayout,
        fns: &FusedFns<'_>,
        args: (u64, u64, u32),
    ) -> Result<bool> {
        match self.q8_for(l, fns) {
            Some(q) => self.launch_gate_up_q8(l, q.gate_up, args).map(|_| true),
            None => Ok(false),
        }
    }

    /// `down_combine_q8` instead of the fused down_combine, if it covers `l`: true when
    /// launched.
    pub(in crate::gpu) fn try_down_combine_q8(
        &self,
        l: &ExpertLayout,
        fns: &FusedFns<'_>,
        meta: u64,
        bl: &BatchLayout,
    ) -> Result<bool> {
        match self.q8_for(l, fns) {
            Some(q) => self
                .launch_down_combine_q8(l, q.down_combine, DN_ROWS, meta, bl)
                .map(|_| true),
            None => Ok(false),
        }
    }

    /// `gate_up_q8` of `n` items at `items`: x (as given or rounded) to products rounded
    /// for the down weights, as int8 in the side buffer (and rounded floats in act).
    fn launch_gate_up_q8(
        &self,
        l: &ExpertLayout,
        f: &CudaFunction,
        (items, rows, n): (u64, u64, u32),
    ) -> Result<()> {
        let (hidden, ffn) = (l.hidden as u32, l.ffn as u32);
        let (q, d) = self.fused.q8.ptrs()?;
        // x: the pass's input where it lies (the dense path's hn when not copied into x_dev).
        let x = self.x_in.unwrap_or(self.x_dev.ptr);
        let (act, cnt) = (self.act_dev.ptr, self.fused.counters.ptr);
        let cfg = LaunchConfig {
            grid_dim: (ffn.div_ceil(WARPS_PER_BLOCK), n, 1),
            block_dim: (32 * WARPS_PER_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: argument types match gate_up_q8_* in fused_q8.cu; the index tables, x,
        // act, the counters (ensure_counters) and the side buffer (Q8Kernels::ensure,
        // FUSED_MAX_ROWS pairs per item) were sized for this batch.
        unsafe {
            self.compute
                .launch_builder(f)
                .arg(&items)
                .arg(&rows)
                .arg(&x)
                .arg(&act)
                .arg(&q)
                .arg(&d)
                .arg(&hidden)
                .arg(&ffn)
                .arg(&cnt)
                .launch(cfg)
        }
        .map(|_| ())
        .map_err(|e| drv(format!("launch gate_up_q8 ({})", l.gate_up.suffix()))(e))
    }

    /// `down_combine_q8` (of `rows` output rows per block) of the batch packed as `bl` at
    /// `meta` into `out_dev`.
    fn launch_down_combine_q8(
        &self,
        l: &ExpertLayout,
        f: &CudaFunction,
        rows: u32,
        meta: u64,
        bl: &BatchLayout,
    ) -> Result<()> {
        if bl.n_pairs > self.fused.q8.pairs {
            return Err(CudaError::InvalidBatch(format!(
                "{} pairs, the int8 products hold {}",
                bl.n_pairs, self.fused.q8.pairs
            )));
        }
        let (hidden, ffn) = (l.hidden as u32, l.ffn as u32);
        let (q, d) = self.fused.q8.ptrs()?;
        let (td, ts, tp, wts) = (
            meta + bl.tok_down as u64,
            meta + bl.tok_start as u64,
            meta + bl.tok_pairs as u64,
            meta + bl.weights as u64,
        );
        let out = self.pass_out.unwrap_or(self.out_dev.ptr);
        let cfg = LaunchConfig {
            grid_dim: (hidden.div_ceil(rows), bl.n_tokens as u32, 1),
            block_dim: (32 * WARPS_PER_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: argument types match down_combine_q8_* in fused_q8.cu; the index tables
        // at `meta`, the side buffer (checked above) and out were sized for this batch.
        unsafe {
            self.compute
                .launch_builder(f)
                .arg(&td)
                .arg(&ts)
                .arg(&tp)
                .arg(&wts)
                .arg(&q)
                .arg(&d)
                .arg(&out)
                .arg(&hidden)
                .arg(&ffn)
                .launch(cfg)
        }
        .map(|_| ())
        .map_err(|e| drv(format!("launch down_combine_q8 ({})", l.down.suffix()))(e))
    }
}

/// Weights cycled through by the timed passes: several times the L2 cache (50 MB on H100
/// and H200), as kernel_bench.rs does, so each pass reads its weights from HBM.
const L2_DEFEAT_BYTES: usize = 256 << 20;
/// At most this many copies of the timed weights.
const MAX_COPIES: usize = 64;
/// Upper bound on timed passes.
const MAX_REPS: usize = 10_000;

/// Kernel-only timing of the int8 decode pass ([`GpuExperts::time_int8_decode_pass`]).
#[derive(Debug, Clone)]
pub struct Int8PassTiming {
    /// `[n_tokens][hidden]` output of one pass on x as given.
    pub out: Vec<f32>,
    /// Mean GPU milliseconds of `gate_up_q8` + `down_combine_q8` (2 launches).
    pub ms: f32,
    /// The same with `act_round` of x in front (3 launches; the engine skips that launch
    /// for int8 layers).
    pub with_act_round_ms: f32,
}

impl GpuExperts {
    /// Runs the int8 decode pass of one batch (items of at most 8 tokens) on weights
    /// uploaded once to a scratch buffer (copies used in turn, so no pass finds its
    /// weights in L2), `reps` times; returns one pass's output and the mean times. An
    /// error if the int8 kernels do not cover `layout` (types, shape, `HMOE_CUDA_DP4A=0`).
    /// `variant`: NVRTC defines of a variant module of the int8 kernels (`Q8_U_GU=4`,
    /// `Q8_DN_ROWS=2`, `MIN_BLOCKS=3`, ...; empty: the backend's own kernels).
    pub fn time_int8_decode_pass(
        &mut self,
        variant: &[&str],
        layout: &ExpertLayout,
        items: &[GpuItem<'_>],
        x: &[f32],
        n_tokens: usize,
        reps: usize,
    ) -> Result<Int8PassTiming> {
        let (hidden, g) = (layout.hidden, layout.gate_bytes());
        if x.len() != n_tokens * hidden || items.is_empty() {
            return Err(CudaError::InvalidBatch(format!(
                "int8 timing: {} inputs for {n_tokens} × {hidden}, {} items",
                x.len(),
                items.len()
            )));
        }
        if items.iter().any(|it| {
            it.gate.len() != g || it.up.len() != g || it.down.len() != layout.down_bytes()
        }) {
            return Err(CudaError::InvalidBatch(
                "int8 timing: matrix sizes do not match the layout".into(),
            ));
        }
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        let eb = layout.expert_bytes().div_ceil(256) * 256;
        let set = eb * items.len();
        let copies = L2_DEFEAT_BYTES.div_ceil(set).clamp(1, MAX_COPIES);
        let w = DeviceBuf::new(set * copies, "int8 timing weights")?;
        let (mut tables, mut stride, mut bl) = (Vec::new(), 0, None);
        for c in 0..copies {
            let base = |i: usize| w.ptr + (c * set + i * eb) as u64;
            for (i, it) in items.iter().enumerate() {
                for (off, m) in [(0, it.gate), (g, it.up), (2 * g, it.down)] {
                    // SAFETY: the destination range lies inside `w` (eb ≥ expert_bytes).
                    unsafe { cu::memcpy_htod_sync(base(i) + off as u64, m) }
                        .map_err(drv("cuMemcpyHtoD(int8 timing weights)"))?;
                }
            }
            let batch: Vec<BatchItem<'_>> = items
                .iter()
                .enumerate()
                .map(|(i, it)| BatchItem {
                    gate: base(i),
                    up: base(i) + g as u64,
                    down: base(i) + 2 * g as u64,
                    rows: it.rows,
                    weights: it.weights,
                    rank: i as u32,
                })
                .collect();
            let l = pack(&batch, n_tokens, &mut self.packed)?;
            stride = l.bytes.div_ceil(256) * 256;
            tables.resize(c * stride, 0u8);
            tables.extend_from_slice(&self.packed[..l.bytes]);
            bl = Some(l);
        }
        let bl = bl.ok_or_else(|| CudaError::InvalidBatch("int8 timing: no batch".into()))?;
        if bl.max_item_rows > FUSED_MAX_ROWS {
            return Err(CudaError::InvalidBatch(format!(
                "int8 timing: items of {} tokens (at most {FUSED_MAX_ROWS})",
                bl.max_item_rows
            )));
        }
        let xb = n_tokens * hidden * 4;
        self.x_dev.ensure(xb, "layer input")?;
        self.out_dev.ensure(xb, "layer output")?;
        self.meta_dev.ensure(tables.len(), "index tables")?;
        self.act_dev
            .ensure(bl.n_pairs * layout.ffn * 4, "SwiGLU activations")?;
        self.fused.ensure_counters(bl.n_items, layout.ffn)?;
        let q8 = &self.fused.q8;
        let fmt = layout.down.act_format().0;
        let (gate_up, down_combine) = match (
            q8.supports(layout),
            q8.gate_up.get(&(layout.gate_up, fmt)),
            q8.down_combine.get(&layout.down),
        ) {
            (true, Some(gu), Some(dc)) => (gu.clone(), dc.clone()),
            _ => return Err(CudaError::UnsupportedType(layout.gate_up.ggml())),
        };
        let (gate_up, down_combine, dn_rows) = match variant {
            [] => (gate_up, down_combine, DN_ROWS),
            v => {
                let m = self.q8_variant_module(v)?;
                let f = |name: String| m.load_function(&name).map_err(drv(name));
                let fmt_name = FORMATS
                    .iter()
                    .find(|&&(c, _)| c == fmt)
                    .map_or("q8_k", |&(_, n)| n);
                (
                    f(format!("gate_up_q8_{}_{fmt_name}", layout.gate_up.suffix()))?,
                    f(format!("down_combine_q8_{}", layout.down.suffix()))?,
                    define(v, "Q8_DN_ROWS"),
                )
            }
        };
        // SAFETY: device buffers ensured above for these sizes.
        unsafe {
            cu::memcpy_htod_sync(self.x_dev.ptr, x).map_err(drv("cuMemcpyHtoD(x)"))?;
            cu::memcpy_htod_sync(self.meta_dev.ptr, &tables[..])
                .map_err(drv("cuMemcpyHtoD(index tables)"))?;
        }
        let pass = |me: &Self, k: usize, round: bool| -> Result<()> {
            let m = me.meta_dev.ptr + (k % copies * stride) as u64;
            if round {
                // Idempotent up to an ulp of a scale; the ints are the same (timing only).
                me.round_acts(layout.gate_up, me.x_dev.ptr, n_tokens, hidden)?;
            }
            let args = (m + bl.items as u64, m + bl.rows as u64, bl.n_items as u32);
            me.launch_gate_up_q8(layout, &gate_up, args)?;
            me.launch_down_combine_q8(layout, &down_combine, dn_rows, m, &bl)
        };
        pass(self, 0, false)?;
        self.compute
            .synchronize()
            .map_err(drv("cuStreamSynchronize(int8 timing)"))?;
        let mut out = vec![0f32; n_tokens * hidden];
        // SAFETY: out_dev holds n_tokens × hidden floats, written by the pass above.
        unsafe { cu::memcpy_dtoh_sync(&mut out, self.out_dev.ptr) }
            .map_err(drv("cuMemcpyDtoH(int8 timing output)"))?;
        let reps = reps.clamp(1, MAX_REPS);
        let mut ms = [0f32; 2];
        for (i, round) in [false, true].into_iter().enumerate() {
            pass(self, 0, round)?; // warm-up
            self.t[0]
                .record(&self.compute)
                .map_err(drv("cuEventRecord"))?;
            for k in 1..=reps {
                pass(self, k, round)?;
            }
            self.t[1]
                .record(&self.compute)
                .map_err(drv("cuEventRecord"))?;
            self.t[1]
                .synchronize()
                .map_err(drv("cuEventSynchronize(int8 timing)"))?;
            ms[i] = self.t[0]
                .elapsed_ms(&self.t[1])
                .map_err(drv("cuEventElapsedTime"))?
                / reps as f32;
        }
        drop(w);
        Ok(Int8PassTiming {
            out,
            ms: ms[0],
            with_act_round_ms: ms[1],
        })
    }
}

/// Variant modules by define set, each with the context it was loaded into.
type VariantCache = Mutex<HashMap<String, Vec<(Arc<CudaContext>, Arc<CudaModule>)>>>;
static VARIANTS: OnceLock<VariantCache> = OnceLock::new();

/// The value of `-D<name>=<v>` among `defines`, 1 if absent (the kernels' default).
fn define(defines: &[&str], name: &str) -> u32 {
    defines
        .iter()
        .filter_map(|d| d.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .next()
        .unwrap_or(1)
}

impl GpuExperts {
    /// [`Q8_SOURCE`] compiled by NVRTC with `-D<define>` for each of `defines`, loaded
    /// into this context (cached). An NVRTC newer than the driver writes a PTX version
    /// the driver rejects: then the `.version` line of `HMOE_CUDA_PTX_FALLBACK`'s file
    /// is tried (as kernel_bench.rs does).
    fn q8_variant_module(&self, defines: &[&str]) -> Result<Arc<CudaModule>> {
        let key = defines.join(" ");
        let cache = VARIANTS.get_or_init(Default::default);
        let mut map = cache
            .lock()
            .map_err(|_| CudaError::Compile("int8 variant cache poisoned".into()))?;
        let entries = map.entry(key).or_default();
        if let Some((_, m)) = entries.iter().find(|(c, _)| Arc::ptr_eq(c, &self.ctx)) {
            return Ok(m.clone());
        }
        // SAFETY: only probes dlopen (cudarc panics on a missing libnvrtc otherwise).
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(CudaError::NoNvrtc);
        }
        let cc = self.info.compute_capability;
        let mut options = vec![format!("--gpu-architecture=compute_{}{}", cc.0, cc.1)];
        options.extend(defines.iter().map(|d| format!("-D{d}")));
        let opts = cudarc::nvrtc::CompileOptions {
            options,
            name: Some("hmoe_q8_variant.cu".into()),
            ..Default::default()
        };
        let ptx = cudarc::nvrtc::compile_ptx_with_opts(Q8_SOURCE, opts)
            .map_err(|e| CudaError::Compile(format!("int8 variant {defines:?}: {e:?}")))?
            .to_src();
        let load = |src: String| {
            self.ctx
                .load_module(cudarc::nvrtc::Ptx::from_src(src))
                .map_err(drv(format!("cuModuleLoadData(int8 variant {defines:?})")))
        };
        let m = match load(ptx.clone()) {
            Ok(m) => m,
            Err(e) => match fallback_version_line() {
                Some(v) => load(with_version_line(&ptx, &v)).map_err(|_| e)?,
                None => return Err(e),
            },
        };
        entries.push((self.ctx.clone(), m.clone()));
        Ok(m)
    }
}

/// The `.version` line of the PTX file named by `HMOE_CUDA_PTX_FALLBACK`, if any.
fn fallback_version_line() -> Option<String> {
    let path = std::env::var_os(super::super::PTX_FALLBACK_ENV)?;
    let text = std::fs::read_to_string(path).ok()?;
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(".version"))?;
    Some(line.trim().to_string())
}

/// `ptx` with its `.version` line replaced by `line`.
fn with_version_line(ptx: &str, line: &str) -> String {
    ptx.lines()
        .map(|l| {
            if l.trim_start().starts_with(".version") {
                line
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KERNEL_SOURCE;

    #[test]
    fn launch_constants_follow_the_kernels() {
        assert_eq!(crate::kernel_define("Q8_MAX_HIDDEN"), Some(MAX_HIDDEN));
        assert_eq!(crate::kernel_define("Q8_DN_ROWS"), Some(DN_ROWS));
    }

    #[test]
    fn variant_defines_parse_with_default_one() {
        assert_eq!(define(&["Q8_DN_ROWS=4", "Q8_U_GU=2"], "Q8_DN_ROWS"), 4);
        assert_eq!(define(&["MIN_BLOCKS=3"], "Q8_DN_ROWS"), 1);
    }

    #[test]
    fn scale_slots_follow_the_products() {
        // 3 pairs of 768 products: 2304 bytes of ints, scales from the next 256 boundary.
        assert_eq!(scale_offset(3, 768), 2304);
        assert_eq!(scale_offset(1, 100), 256);
        assert!(KERNEL_SOURCE.contains("actd + (u64)p * (ffn / 32)"));
    }

    /// NVRTC (sm_90) compiles every int8 kernel the backend loads (needs libnvrtc on
    /// LD_LIBRARY_PATH, as `gpu::tests::kernels_compile_with_nvrtc`).
    #[test]
    fn int8_kernels_compile_with_nvrtc() {
        let ptx = match super::super::super::compile_kernels((9, 0)) {
            Ok(p) => p,
            Err(CudaError::NoNvrtc) => {
                panic!("libnvrtc not found: set LD_LIBRARY_PATH to the CUDA 13 libraries")
            }
            Err(e) => panic!("{e}"),
        };
        for t in Q8_TYPES {
            for (_, f) in FORMATS {
                let name = format!(".entry gate_up_q8_{}_{f}(", t.suffix());
                assert!(ptx.contains(&name), "{name}");
            }
            let name = format!(".entry down_combine_q8_{}(", t.suffix());
            assert!(ptx.contains(&name), "{name}");
            // dp4a reached the PTX (not a scalar fallback).
            assert!(
                ptx.contains("dp4a.s32.s32"),
                "no dp4a instruction in the PTX"
            );
        }
    }
}
