//! Device check and timing of the dense path's per-head kernels for `hmoe-cuda-check`:
//! the split-context attention kernels and the tiled prefill kernel on the same caches,
//! launched through the same functions as `GpuDense` (`attend.rs`), timed between two
//! CUDA events; and one launch each of the fused `qk_norm_rope_kv` and `add_rms_norm`
//! (dense.cu) on host data, for the check against the f64 references. Besides the default
//! build, `attend_tiled` can be timed as built with other `ATT_STAGES` (the kernel source
//! compiled again by NVRTC with `-DATT_STAGES=n`, once per process and stage count).

use super::attend::{launch_split, launch_tiled, AttendCall, SplitFns, TiledFn};
use super::{compile, context, drv, info, DeviceBuf};
use crate::attend_tiled::{tiled_supported, ATTEND_TILE_STAGES};
use crate::dense_model::{
    attention_plan, attention_split, grid_split_count, heads_per_warp, ATTEND_HEADS_PER_WARP,
    ATTEND_MIN_CHUNK,
};
use crate::error::{CudaError, Result};
use crate::{KERNEL_SOURCE, WARPS_PER_BLOCK};
use cudarc::driver::result as cu;
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaStream, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Upper bound on timed launches per kernel.
const MAX_REPS: usize = 1000;

/// One sequence of a timed call: `n` new rows at positions `start..start + n`, and its
/// whole K and V cache up to them (`(start + n) × n_kv × head_dim` f32 each, the new
/// rows' keys and values included, as after `qk_norm_rope_kv`).
#[derive(Debug, Clone, Copy)]
pub struct BenchSeq<'a> {
    /// Positions cached before the call.
    pub start: usize,
    /// New rows.
    pub n: usize,
    /// Keys, `[start + n][n_kv × head_dim]`.
    pub k: &'a [f32],
    /// Values, same shape.
    pub v: &'a [f32],
}

/// One build of `attend_tiled` on one call.
#[derive(Debug, Clone)]
pub struct TiledRun {
    /// Its `ATT_STAGES`.
    pub stages: usize,
    /// Output, `[rows][n_heads][head_dim]`.
    pub out: Vec<f32>,
    /// Milliseconds per call.
    pub ms: f32,
}

/// The split-context kernels at one heads-per-warp, with the plan made for it.
#[derive(Debug, Clone)]
pub struct SplitRun {
    /// Query heads per warp (`attend_split`'s `hpw`).
    pub hpw: usize,
    /// Output, `[rows][n_heads][head_dim]`.
    pub out: Vec<f32>,
    /// Milliseconds per call (both kernels).
    pub ms: f32,
}

/// Outputs and mean GPU milliseconds of the kernels on one call.
#[derive(Debug, Clone)]
pub struct AttendBench {
    /// `attend_split` + `attend_combine` output, `[rows][n_heads][head_dim]`.
    pub split: Vec<f32>,
    /// Milliseconds per split call (both kernels).
    pub split_ms: f32,
    /// The split kernels at every heads-per-warp the shape allows (the default, the one
    /// `split` and `split_ms` hold, first).
    pub split_runs: Vec<SplitRun>,
    /// The tiled builds, the default first; empty when `attend_tiled` cannot run here
    /// (head size, shared memory).
    pub tiled: Vec<TiledRun>,
}

/// The attention and fused per-head kernels of a module (as `GpuDense` loads them).
struct AttendFns {
    split: SplitFns,
    combine: CudaFunction,
    tiled: Option<TiledFn>,
    qk_rope_kv: CudaFunction,
    add_rms_norm: CudaFunction,
}

/// Caches (K, V) of the sequences after [`AttentionBench::qk_norm_rope_kv`].
type Caches = Vec<(Vec<f32>, Vec<f32>)>;

/// A context, the default module's attention kernels and the `attend_tiled` variants.
pub struct AttentionBench {
    fns: AttendFns,
    variants: Vec<TiledFn>,
    /// Keeps the variants' modules loaded.
    _modules: Vec<Arc<CudaModule>>,
    stream: Arc<CudaStream>,
    ctx: Arc<CudaContext>,
}

fn upload<T>(data: &[T], what: &str) -> Result<DeviceBuf> {
    let b = DeviceBuf::new(std::mem::size_of_val(data), what)?;
    // SAFETY: the buffer holds size_of_val(data) bytes.
    unsafe { cu::memcpy_htod_sync(b.ptr, data) }.map_err(drv(format!("cuMemcpyHtoD({what})")))?;
    Ok(b)
}

/// The kernel source built by NVRTC with `-DATT_STAGES=<stages>` (no GPU needed);
/// compiled once per process and stage count (a compile of the whole source takes
/// seconds).
fn variant_ptx(cc: (i32, i32), stages: usize) -> Result<Ptx> {
    type Cache = Mutex<HashMap<((i32, i32), usize), String>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(src) = cache
        .lock()
        .ok()
        .and_then(|c| c.get(&(cc, stages)).cloned())
    {
        return Ok(Ptx::from_src(src));
    }
    let src = compile_variant(cc, stages)?.to_src();
    if let Ok(mut c) = cache.lock() {
        c.insert((cc, stages), src.clone());
    }
    Ok(Ptx::from_src(src))
}

fn compile_variant(cc: (i32, i32), stages: usize) -> Result<Ptx> {
    // SAFETY: only probes dlopen (cudarc panics on a missing libnvrtc otherwise).
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(CudaError::NoNvrtc);
    }
    let opts = cudarc::nvrtc::CompileOptions {
        options: vec![
            format!("--gpu-architecture=compute_{}{}", cc.0, cc.1),
            format!("-DATT_STAGES={stages}"),
        ],
        name: Some("hmoe_attend_variant.cu".into()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(KERNEL_SOURCE, opts)
        .map_err(|e| CudaError::Compile(format!("ATT_STAGES={stages}: {e:?}")))
}

/// [`variant_ptx`] loaded into `ctx`.
fn variant_module(
    ctx: &Arc<CudaContext>,
    cc: (i32, i32),
    stages: usize,
) -> Result<Arc<CudaModule>> {
    ctx.load_module(variant_ptx(cc, stages)?)
        .map_err(drv(format!("cuModuleLoadData(ATT_STAGES={stages})")))
}

fn loader(m: &Arc<CudaModule>) -> impl Fn(&str) -> Result<CudaFunction> + '_ {
    move |name: &str| {
        m.load_function(name)
            .map_err(drv(format!("kernel `{name}`")))
    }
}

impl AttentionBench {
    /// Starts on device `ordinal`: the default module (as `GpuDense` loads it) and one
    /// `attend_tiled` build per entry of `stages` other than the default
    /// ([`ATTEND_TILE_STAGES`]). A variant that does not build or load is left out and
    /// named in the returned warnings.
    pub fn new(ordinal: usize, stages: &[usize]) -> Result<(Self, Vec<String>)> {
        let ctx = context(ordinal)?;
        let dev = info(&ctx)?;
        let mut warnings = Vec::new();
        let module = compile(&ctx, dev.compute_capability, &mut warnings)?;
        let fns = {
            let f = loader(&module);
            AttendFns {
                split: SplitFns::load(&f)?,
                combine: f("attend_combine")?,
                tiled: TiledFn::load(&f, ATTEND_TILE_STAGES)?,
                qk_rope_kv: f("qk_norm_rope_kv")?,
                add_rms_norm: f("add_rms_norm")?,
            }
        };
        let (mut variants, mut modules) = (Vec::new(), vec![module]);
        for &s in stages.iter().filter(|&&s| s != ATTEND_TILE_STAGES) {
            let built = variant_module(&ctx, dev.compute_capability, s).and_then(|m| {
                let t = TiledFn::load(&loader(&m), s)?;
                Ok((t, m))
            });
            match built {
                Ok((Some(t), m)) => {
                    variants.push(t);
                    modules.push(m);
                }
                Ok((None, _)) => warnings.push(format!(
                    "ATT_STAGES={s}: the device refuses its shared memory"
                )),
                Err(e) => warnings.push(format!("ATT_STAGES={s}: {e}")),
            }
        }
        let stream = ctx.new_stream().map_err(drv("create bench stream"))?;
        Ok((
            Self {
                fns,
                variants,
                _modules: modules,
                stream,
                ctx,
            },
            warnings,
        ))
    }

    /// `(ATT_STAGES, CTAs per SM)` of every tiled build at `head_dim`.
    pub fn tiled_occupancy(&self, head_dim: usize) -> Result<Vec<(usize, u32)>> {
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        let builds = self.fns.tiled.iter().chain(&self.variants);
        builds
            .map(|t| Ok((t.stages(), t.ctas_per_sm(head_dim)?)))
            .collect()
    }

    /// Runs and times every kernel for the rows of `seqs` (in order) with queries `q`
    /// (`[rows][n_heads][head_dim]`): `reps` timed launches each after one warm-up.
    pub fn run(
        &self,
        (n_heads, n_kv, head_dim): (usize, usize, usize),
        seqs: &[BenchSeq<'_>],
        q: &[f32],
        reps: usize,
    ) -> Result<AttendBench> {
        let kvw = n_kv * head_dim;
        let n: usize = seqs.iter().map(|s| s.n).sum();
        let bad = |m: String| Err(CudaError::InvalidBatch(format!("attention bench: {m}")));
        if n == 0 || n_kv == 0 || !n_heads.is_multiple_of(n_kv) || q.len() != n * n_heads * head_dim
        {
            return bad(format!(
                "{} query values for {n} rows of {n_heads} x {head_dim} over {n_kv} KV heads",
                q.len()
            ));
        }
        if let Some(s) = seqs
            .iter()
            .find(|s| s.k.len() != (s.start + s.n) * kvw || s.v.len() != s.k.len())
        {
            return bad(format!(
                "a cache of {} / {} values for {} positions of {kvw}",
                s.k.len(),
                s.v.len(),
                s.start + s.n
            ));
        }
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        let mut caches = Vec::new();
        let (mut kc, mut vc, mut pos) = (Vec::new(), Vec::new(), Vec::new());
        for s in seqs {
            let (k, v) = (upload(s.k, "bench K cache")?, upload(s.v, "bench V cache")?);
            kc.extend(std::iter::repeat_n(k.ptr, s.n));
            vc.extend(std::iter::repeat_n(v.ptr, s.n));
            pos.extend((s.start..s.start + s.n).map(|p| p as u32));
            caches.push((k, v));
        }
        let max_visible = pos.iter().max().map_or(1, |&p| p as usize + 1);
        let (kc, vc, pos) = (
            upload(&kc, "bench kc")?,
            upload(&vc, "bench vc")?,
            upload(&pos, "bench positions")?,
        );
        let qd = upload(q, "bench q")?;
        let out = DeviceBuf::new(4 * q.len(), "bench output")?;
        let mut call = AttendCall {
            q: qd.ptr,
            kc: kc.ptr,
            vc: vc.ptr,
            pos: pos.ptr,
            out: out.ptr,
            n: n as u32,
            n_heads: n_heads as u32,
            n_kv: n_kv as u32,
            head_dim: head_dim as u32,
            hpw: 1,
        };
        let reps = reps.clamp(1, MAX_REPS);
        // The split kernels at every heads-per-warp the shape allows, each with the split
        // plan made for its warp count; first the one GpuDense picks for this call.
        let knobs = (ATTEND_MIN_CHUNK, ATTEND_HEADS_PER_WARP);
        let default_hpw = attention_plan(n, (n_heads, n_kv), max_visible, knobs).2;
        let mut hpws = vec![default_hpw];
        hpws.extend(
            [1, 2, 4, 8]
                .into_iter()
                .filter(|&h| h != default_hpw && heads_per_warp(n_heads, n_kv, h) == h),
        );
        let mut split_runs = Vec::new();
        for hpw in hpws {
            let (chunk, n_splits) = attention_split(n, n_heads / hpw, max_visible);
            let grid_splits = grid_split_count(n_splits);
            let plan = upload(&[chunk as u32, n_splits as u32], "bench plan")?;
            let part = DeviceBuf::new(
                4 * n * n_heads * grid_splits * (head_dim + 2),
                "bench partials",
            )?;
            call.hpw = hpw as u32;
            // SAFETY: `out` holds 4 * q.len() bytes (poisoned: a run that writes nothing
            // cannot pass as another's).
            unsafe { cu::memset_d8_sync(out.ptr, 0xff, 4 * q.len()) }
                .map_err(drv("cuMemsetD8(bench output)"))?;
            let ms = self.time(reps, &|st| {
                let fns = (&self.fns.split, &self.fns.combine);
                launch_split(st, fns, &call, part.ptr, plan.ptr, grid_splits as u32)
            })?;
            split_runs.push(SplitRun {
                hpw,
                out: self.download(&out, q.len())?,
                ms,
            });
        }
        let (split, split_ms) = (split_runs[0].out.clone(), split_runs[0].ms);
        let mut tiled = Vec::new();
        if tiled_supported(head_dim) {
            for t in self.fns.tiled.iter().chain(&self.variants) {
                // Poisoned first: a build that writes nothing cannot pass as another's.
                // SAFETY: `out` holds 4 * q.len() bytes.
                unsafe { cu::memset_d8_sync(out.ptr, 0xff, 4 * q.len()) }
                    .map_err(drv("cuMemsetD8(bench output)"))?;
                let ms = self.time(reps, &|st| launch_tiled(st, t, &call))?;
                tiled.push(TiledRun {
                    stages: t.stages(),
                    out: self.download(&out, q.len())?,
                    ms,
                });
            }
        }
        drop(caches);
        Ok(AttendBench {
            split,
            split_ms,
            split_runs,
            tiled,
        })
    }

    /// One launch of `qk_norm_rope_kv` as `GpuDense` makes it: `q` (`[n][n_heads][head_dim]`)
    /// and `k`, `v` (`[n][n_kv][head_dim]`) of `n = pos.len()` tokens; token `t` belongs to
    /// sequence `seq_of[t]`, whose caches hold `caps[s]` positions, at position `pos[t]`.
    /// The caches start poisoned (every byte 0xff: a NaN), so a row written that should not
    /// be, or one missed, shows. Returns q and k after the kernel and each sequence's
    /// (K, V) cache.
    pub fn qk_norm_rope_kv(
        &self,
        (n_heads, n_kv, head_dim): (usize, usize, usize),
        (q, k, v): (&[f32], &[f32], &[f32]),
        (q_norm, k_norm, eps): (&[f32], &[f32], f32),
        (pos, inv_freq): (&[u32], &[f32]),
        (seq_of, caps): (&[usize], &[usize]),
    ) -> Result<(Vec<f32>, Vec<f32>, Caches)> {
        let n = pos.len();
        let kvw = n_kv * head_dim;
        let fits = seq_of.len() == n
            && seq_of
                .iter()
                .zip(pos)
                .all(|(&s, &p)| caps.get(s).is_some_and(|&c| (p as usize) < c));
        if n == 0
            || !head_dim.is_power_of_two()
            || !(32..=256).contains(&head_dim)
            || q.len() != n * n_heads * head_dim
            || k.len() != n * kvw
            || v.len() != n * kvw
            || q_norm.len() != head_dim
            || k_norm.len() != head_dim
            || inv_freq.len() != head_dim / 2
            || !fits
        {
            return Err(CudaError::InvalidBatch(format!(
                "qk_norm_rope_kv bench: {n} tokens of {n_heads}/{n_kv} heads of {head_dim}, \
                 q {} k {} v {}, norms {}/{}, inv_freq {}, positions outside their caches: {}",
                q.len(),
                k.len(),
                v.len(),
                q_norm.len(),
                k_norm.len(),
                inv_freq.len(),
                !fits
            )));
        }
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        let mut caches = Vec::new();
        for &cap in caps {
            let bytes = 4 * cap.max(1) * kvw;
            let (kc, vc) = (
                DeviceBuf::new(bytes, "bench K cache")?,
                DeviceBuf::new(bytes, "bench V cache")?,
            );
            for b in [&kc, &vc] {
                // SAFETY: the buffer holds `bytes` bytes.
                unsafe { cu::memset_d8_sync(b.ptr, 0xff, bytes) }
                    .map_err(drv("cuMemsetD8(bench cache)"))?;
            }
            caches.push((kc, vc));
        }
        let kc: Vec<u64> = seq_of.iter().map(|&s| caches[s].0.ptr).collect();
        let vc: Vec<u64> = seq_of.iter().map(|&s| caches[s].1.ptr).collect();
        let (qd, kd, vd) = (
            upload(q, "bench q")?,
            upload(k, "bench k")?,
            upload(v, "bench v")?,
        );
        let (qn, kn) = (
            upload(q_norm, "bench q norm")?,
            upload(k_norm, "bench k norm")?,
        );
        let (pd, fd) = (
            upload(pos, "bench positions")?,
            upload(inv_freq, "bench inv_freq")?,
        );
        let (kcd, vcd) = (upload(&kc, "bench kc")?, upload(&vc, "bench vc")?);
        let (n32, nh, nk, hd) = (n as u32, n_heads as u32, n_kv as u32, head_dim as u32);
        let warps = n32 * (nh + 2 * nk);
        let cfg = LaunchConfig {
            grid_dim: (warps.div_ceil(WARPS_PER_BLOCK), 1, 1),
            block_dim: (32 * WARPS_PER_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches qk_norm_rope_kv(float*, float*, float*, const float*, const float*,
        // const u32*, const float*, const u64*, const u64*, u32, u32, u32, u32, float); q, k,
        // v hold n rows of heads; every token's position lies inside its caches (checked);
        // head_dim is a power of two in 32..=256 (checked).
        unsafe {
            self.stream
                .launch_builder(&self.fns.qk_rope_kv)
                .arg(&qd.ptr)
                .arg(&kd.ptr)
                .arg(&vd.ptr)
                .arg(&qn.ptr)
                .arg(&kn.ptr)
                .arg(&pd.ptr)
                .arg(&fd.ptr)
                .arg(&kcd.ptr)
                .arg(&vcd.ptr)
                .arg(&n32)
                .arg(&nh)
                .arg(&nk)
                .arg(&hd)
                .arg(&eps)
                .launch(cfg)
        }
        .map_err(drv("launch qk_norm_rope_kv"))?;
        self.stream
            .synchronize()
            .map_err(drv("cuStreamSynchronize(qk_norm_rope_kv bench)"))?;
        let mut out_caches = Vec::new();
        for (&cap, (kc, vc)) in caps.iter().zip(&caches) {
            out_caches.push((self.download(kc, cap * kvw)?, self.download(vc, cap * kvw)?));
        }
        Ok((
            self.download(&qd, q.len())?,
            self.download(&kd, k.len())?,
            out_caches,
        ))
    }

    /// One launch of `add_rms_norm` on rows of `w.len()` values: returns `x + y` (the
    /// residual, as the kernel writes it back) and `RMSNorm(x + y) · w`.
    pub fn add_rms_norm(
        &self,
        x: &[f32],
        y: &[f32],
        w: &[f32],
        eps: f32,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let cols = w.len();
        if cols == 0
            || !cols.is_multiple_of(4)
            || x.len() != y.len()
            || !x.len().is_multiple_of(cols)
        {
            return Err(CudaError::InvalidBatch(format!(
                "add_rms_norm bench: {} and {} values for rows of {cols} (whole 4-value chunks)",
                x.len(),
                y.len()
            )));
        }
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        let (xd, yd, wd) = (
            upload(x, "bench residual")?,
            upload(y, "bench addend")?,
            upload(w, "bench norm weight")?,
        );
        let od = DeviceBuf::new(4 * x.len(), "bench normed")?;
        let (rows, c) = ((x.len() / cols) as u32, cols as u32);
        // The engine's launch shape (one block a row).
        let cfg = super::resident::norm_config(rows);
        // SAFETY: matches add_rms_norm(float*, const float*, const float*, float*, u32, u32,
        // float); x, y and out hold rows × cols floats, w cols.
        unsafe {
            self.stream
                .launch_builder(&self.fns.add_rms_norm)
                .arg(&xd.ptr)
                .arg(&yd.ptr)
                .arg(&wd.ptr)
                .arg(&od.ptr)
                .arg(&rows)
                .arg(&c)
                .arg(&eps)
                .launch(cfg)
        }
        .map_err(drv("launch add_rms_norm"))?;
        self.stream
            .synchronize()
            .map_err(drv("cuStreamSynchronize(add_rms_norm bench)"))?;
        Ok((self.download(&xd, x.len())?, self.download(&od, x.len())?))
    }

    /// Mean milliseconds of `reps` launches after one warm-up.
    fn time(&self, reps: usize, launch: &dyn Fn(&CudaStream) -> Result<()>) -> Result<f32> {
        let ev = || {
            self.ctx
                .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(drv("cuEventCreate(bench)"))
        };
        let (t0, t1) = (ev()?, ev()?);
        launch(&self.stream)?;
        t0.record(&self.stream).map_err(drv("cuEventRecord"))?;
        for _ in 0..reps {
            launch(&self.stream)?;
        }
        t1.record(&self.stream).map_err(drv("cuEventRecord"))?;
        t1.synchronize()
            .map_err(drv("cuEventSynchronize(attention bench)"))?;
        Ok(t0.elapsed_ms(&t1).map_err(drv("cuEventElapsedTime"))? / reps as f32)
    }

    fn download(&self, b: &DeviceBuf, len: usize) -> Result<Vec<f32>> {
        let mut host = vec![0f32; len];
        // SAFETY: `b` holds `len` floats; the stream was synchronised by `time`.
        unsafe { cu::memcpy_dtoh_sync(&mut host, b.ptr) }
            .map_err(drv("cuMemcpyDtoH(attention bench)"))?;
        Ok(host)
    }
}

#[cfg(test)]
mod tests {
    /// The one-stage build the device timing compiles (libnvrtc on LD_LIBRARY_PATH, as
    /// for `kernels_compile_with_nvrtc`).
    #[test]
    fn one_stage_variant_compiles_with_nvrtc() {
        let ptx = super::variant_ptx((9, 0), 1).map(|p| p.to_src());
        match ptx {
            Ok(src) => assert!(src.contains("attend_tiled")),
            Err(e) => panic!("{e}"),
        }
    }
}
