//! Kernel-only timings for `hmoe-cuda-check`: the expert kernels (unfused, and the fused
//! decode pass of gpu/fused.rs) and `linear_*` launched back to back between two CUDA
//! events on weights already in device memory. `run_layer`'s
//! `gpu_ms` also covers the uploads of x and the index tables and the download of the
//! output (a few microseconds each), which hide a 10 µs kernel; these numbers do not.

//!
//! A timing can also run a *variant*: the same source compiled by NVRTC with extra
//! defines (`U_ONE=8`, `MIN_BLOCKS=3`, ...; see kernels.cu), so one device run compares
//! tuning choices. Variant modules are compiled once per context and define set.

use super::fused::{fits, FusedFns};
use super::gemm::{launch_linear_on, GemmPass, GemmShape, LinearFns, LINEAR_MIN_ROWS};
use super::{drv, DeviceBuf, GpuExperts};
use crate::api::{GpuItem, KernelTiming};
use crate::batch::{pack, BatchItem};
use crate::dtype::{ExpertLayout, KernelType};
use crate::error::{CudaError, Result};
use crate::KERNEL_SOURCE;
use cudarc::driver::result as cu;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Variant modules by define set; each entry keeps its context alive, so a pointer match
/// is a context match.
type VariantCache = Mutex<HashMap<String, Vec<(Arc<CudaContext>, Arc<CudaModule>)>>>;
static VARIANTS: OnceLock<VariantCache> = OnceLock::new();

/// Upper bound on timed passes (the caller's count is clamped to 1 ..= this).
const MAX_REPS: usize = 10_000;
/// Weights cycled through by the timed passes: several times the L2 cache (50 MB on H100
/// and H200), so each pass reads its weights from HBM as a real layer does.
const L2_DEFEAT_BYTES: usize = 256 << 20;
/// At most this many copies of the timed weights.
const MAX_COPIES: usize = 64;

/// gate_up / down (the backend's or a variant module's), their output rows per warp
/// (RPW_GU, RPW_DN), the tiled kernels of the same module with their shape, and the
/// fused pass's gate_up (fused, or the plain one where the products are not rounded)
/// and down_combine.
struct VariantFns {
    gate_up: CudaFunction,
    down: CudaFunction,
    rows_per_warp: (u32, u32),
    tiled: (CudaFunction, CudaFunction),
    shape: GemmShape,
    fused_gate_up: CudaFunction,
    down_combine: CudaFunction,
}

/// What one timed pass launches.
#[derive(Clone, Copy, PartialEq)]
enum Pass {
    /// gate_up and down alone.
    Matmul,
    /// act_round, gate_up, act_round, down, combine.
    Full,
    /// act_round, gate_up_fused, down_combine.
    Fused,
}

/// The `.version` line of the PTX file named by `HMOE_CUDA_PTX_FALLBACK`, if any.
fn fallback_version_line() -> Option<String> {
    let path = std::env::var_os(super::PTX_FALLBACK_ENV)?;
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

/// The value of `-D<name>=<v>` among `defines`, 1 if absent (the kernels' default).
fn define(defines: &[&str], name: &str) -> u32 {
    defines
        .iter()
        .filter_map(|d| d.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .next()
        .unwrap_or(1)
}

/// One variant's PTX, or the error of its compile, set once by whichever thread compiles
/// it first (another asking meanwhile waits for it).
type PtxCell = Arc<OnceLock<std::result::Result<String, String>>>;

/// The kernel source compiled by NVRTC for `cc` with `-D<define>` for each of `defines`:
/// once per process and define set, since a compile of the whole source takes seconds and
/// each new context (`hmoe-cuda-check gemm` starts one per part) would otherwise compile the
/// same variant again; a compile already running on another thread is waited for. The
/// fallback of [`variant_cubin`] (used where its CUBIN does not load).
fn variant_ptx(cc: (i32, i32), defines: &[&str]) -> Result<String> {
    static PTX: OnceLock<Mutex<HashMap<String, PtxCell>>> = OnceLock::new();
    let key = format!("{}{} {}", cc.0, cc.1, defines.join(" "));
    let cell = PTX
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| CudaError::Compile("variant PTX cache poisoned".into()))?
        .entry(key)
        .or_default()
        .clone();
    cell.get_or_init(|| compile_variant(cc, defines).map_err(|e| e.to_string()))
        .clone()
        .map_err(CudaError::Compile)
}

fn compile_variant(cc: (i32, i32), defines: &[&str]) -> Result<String> {
    // SAFETY: only probes dlopen (cudarc panics on a missing libnvrtc otherwise).
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(CudaError::NoNvrtc);
    }
    let mut options = vec![format!("--gpu-architecture=compute_{}{}", cc.0, cc.1)];
    options.extend(defines.iter().map(|d| format!("-D{d}")));
    let opts = cudarc::nvrtc::CompileOptions {
        options,
        name: Some("hmoe_variant.cu".into()),
        ..Default::default()
    };
    Ok(cudarc::nvrtc::compile_ptx_with_opts(KERNEL_SOURCE, opts)
        .map_err(|e| CudaError::Compile(format!("variant {defines:?}: {e:?}")))?
        .to_src())
}

/// A variant built for the device's own architecture: NVRTC runs ptxas, so loading the
/// CUBIN needs no JIT from the driver (the JIT of the whole source takes the driver tens
/// of seconds per variant on the GPU machine, during which it may hold up other calls).
type CubinCell = Arc<OnceLock<std::result::Result<Vec<u8>, String>>>;

/// [`compile_cubin`] once per process and define set; a build already running on another
/// thread ([`GpuExperts::prebuild_variants`]) is waited for.
fn variant_cubin(cc: (i32, i32), defines: &[&str]) -> Result<Vec<u8>> {
    static CUBIN: OnceLock<Mutex<HashMap<String, CubinCell>>> = OnceLock::new();
    let key = format!("{}{} {}", cc.0, cc.1, defines.join(" "));
    let cell = CUBIN
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| CudaError::Compile("variant CUBIN cache poisoned".into()))?
        .entry(key)
        .or_default()
        .clone();
    cell.get_or_init(|| compile_cubin(cc, defines).map_err(|e| e.to_string()))
        .clone()
        .map_err(CudaError::Compile)
}

/// The kernel source compiled by NVRTC to a CUBIN for `sm_<cc>` with `-D<define>` each.
fn compile_cubin(cc: (i32, i32), defines: &[&str]) -> Result<Vec<u8>> {
    use cudarc::nvrtc::{result as nv, sys as nvsys};
    // SAFETY: only probes dlopen (cudarc panics on a missing libnvrtc otherwise).
    if !unsafe { nvsys::is_culib_present() } {
        return Err(CudaError::NoNvrtc);
    }
    let bad = |what: &str, e: &dyn std::fmt::Debug| {
        CudaError::Compile(format!("variant {defines:?} (CUBIN): {what}: {e:?}"))
    };
    let src = std::ffi::CString::new(KERNEL_SOURCE).map_err(|e| bad("source", &e))?;
    let name = c"hmoe_variant_cubin.cu";
    let prog = nv::create_program(&src, Some(name)).map_err(|e| bad("create", &e))?;
    let mut options = vec![format!("--gpu-architecture=sm_{}{}", cc.0, cc.1)];
    options.extend(defines.iter().map(|d| format!("-D{d}")));
    // SAFETY: `prog` is a live program of this thread, destroyed below; the buffer holds
    // the size NVRTC reports for the CUBIN it copies.
    let built = unsafe {
        match nv::compile_program(prog, &options) {
            Err(e) => {
                let log = nv::get_program_log(prog)
                    .map(|l| {
                        std::ffi::CStr::from_ptr(l.as_ptr())
                            .to_string_lossy()
                            .into_owned()
                    })
                    .unwrap_or_default();
                Err(bad("compile", &format!("{e:?}: {log}")))
            }
            Ok(()) => {
                let mut size = 0usize;
                nvsys::nvrtcGetCUBINSize(prog, &mut size)
                    .result()
                    .map_err(|e| bad("CUBIN size", &e))
                    .and_then(|_| {
                        let mut buf = vec![0u8; size];
                        nvsys::nvrtcGetCUBIN(prog, buf.as_mut_ptr().cast())
                            .result()
                            .map(|_| buf)
                            .map_err(|e| bad("CUBIN", &e))
                    })
            }
        }
    };
    // SAFETY: created above, used by nothing else.
    let _ = unsafe { nv::destroy_program(prog) };
    built
}

impl GpuExperts {
    /// Starts building the variant modules `sets` (each a list of defines, as
    /// [`GpuExperts::time_expert_kernels`] takes them) for a device of compute capability
    /// `cc` on background threads, one each, and returns at once: NVRTC to a CUBIN into
    /// this process's cache (no driver call: nothing the caller times is held up). A later
    /// timing that needs the variant finds it built and loads it without a JIT. Best
    /// effort: a variant that fails here fails again, with its error, where it is used.
    pub fn prebuild_variants(cc: (i32, i32), sets: &[&[&str]]) {
        for set in sets {
            let defines: Vec<String> = set.iter().map(|d| d.to_string()).collect();
            std::thread::spawn(move || {
                let refs: Vec<&str> = defines.iter().map(String::as_str).collect();
                let _ = variant_cubin(cc, &refs);
            });
        }
    }
}

impl GpuExperts {
    /// Runs the expert kernels of one batch on weights uploaded once to a scratch buffer
    /// (the slot arena is untouched): gate_up and down alone, the full unfused pass
    /// (`act_round` of x, `gate_up`, `act_round` of the SwiGLU products, `down`,
    /// `combine`) and, for a decode batch (items of at most 8 tokens), the fused pass
    /// (`act_round` of x, `gate_up_fused`, `down_combine`), `reps` times each. Returns the
    /// `[n_tokens][hidden]` outputs of one unfused and one fused pass on the uploaded x
    /// (to check them) and the mean GPU milliseconds of each kind of pass.
    /// `variant`: NVRTC defines of a variant module for the expert kernels (empty: the
    /// backend's own kernels).
    pub fn time_expert_kernels(
        &mut self,
        variant: &[&str],
        layout: &ExpertLayout,
        items: &[GpuItem<'_>],
        x: &[f32],
        n_tokens: usize,
        reps: usize,
    ) -> Result<KernelTiming> {
        let (hidden, g) = (layout.hidden, layout.gate_bytes());
        if x.len() != n_tokens * hidden || items.is_empty() {
            return Err(CudaError::InvalidBatch(format!(
                "kernel timing: {} inputs for {n_tokens} × {hidden}, {} items",
                x.len(),
                items.len()
            )));
        }
        if items.iter().any(|it| {
            it.gate.len() != g || it.up.len() != g || it.down.len() != layout.down_bytes()
        }) {
            return Err(CudaError::InvalidBatch(
                "kernel timing: matrix sizes do not match the layout".into(),
            ));
        }
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        let fns = match variant {
            [] => {
                let k = |t: KernelType| {
                    self.kernels
                        .get(&t)
                        .ok_or(CudaError::UnsupportedType(t.ggml()))
                };
                let g = |m: &HashMap<KernelType, CudaFunction>, t: KernelType| {
                    m.get(&t)
                        .cloned()
                        .ok_or(CudaError::UnsupportedType(t.ggml()))
                };
                let f = self.fused_fns(layout)?;
                VariantFns {
                    gate_up: k(layout.gate_up)?.gate_up.clone(),
                    down: k(layout.down)?.down.clone(),
                    rows_per_warp: (1, 1),
                    tiled: (
                        g(&self.gemm.gate_up, layout.gate_up)?,
                        g(&self.gemm.down, layout.down)?,
                    ),
                    shape: self.gemm.shape,
                    fused_gate_up: f.gate_up.clone(),
                    down_combine: f.down_combine.clone(),
                }
            }
            v => {
                let m = self.variant_module(v)?;
                let f = |name: String| m.load_function(&name).map_err(drv(name));
                VariantFns {
                    gate_up: f(format!("gate_up_{}", layout.gate_up.suffix()))?,
                    down: f(format!("down_{}", layout.down.suffix()))?,
                    rows_per_warp: (define(v, "RPW_GU"), define(v, "RPW_DN")),
                    tiled: (
                        f(format!("gemm_gate_up_{}", layout.gate_up.suffix()))?,
                        f(format!("gemm_down_{}", layout.down.suffix()))?,
                    ),
                    shape: GemmShape::of(v),
                    fused_gate_up: f(super::fused::gate_up_name(layout))?,
                    down_combine: f(format!("down_combine_{}", layout.down.suffix()))?,
                }
            }
        };
        let ffns = FusedFns {
            gate_up: &fns.fused_gate_up,
            down_combine: &fns.down_combine,
            rows_per_warp: fns.rows_per_warp.0,
        };
        // Experts 256-byte aligned, gate/up/down back to back, as in the arena's slots;
        // `copies` copies of the batch, used in turn, so that no pass finds its weights
        // in L2 from the previous one.
        let eb = layout.expert_bytes().div_ceil(256) * 256;
        let set = eb * items.len();
        let copies = L2_DEFEAT_BYTES.div_ceil(set).clamp(1, MAX_COPIES);
        let w = DeviceBuf::new(set * copies, "kernel timing weights")?;
        let mut tables = Vec::new();
        let mut stride = 0;
        let mut bl = None;
        for c in 0..copies {
            let base = |i: usize| w.ptr + (c * set + i * eb) as u64;
            for (i, it) in items.iter().enumerate() {
                for (off, m) in [(0, it.gate), (g, it.up), (2 * g, it.down)] {
                    // SAFETY: the destination range lies inside `w` (eb ≥ expert_bytes).
                    unsafe { cu::memcpy_htod_sync(base(i) + off as u64, m) }
                        .map_err(drv("cuMemcpyHtoD(kernel timing weights)"))?;
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
        let bl = bl.ok_or_else(|| CudaError::InvalidBatch("kernel timing: no batch".into()))?;
        let max_tokens = items.iter().map(|it| it.rows.len()).max().unwrap_or(0);
        let tiled = GemmPass::new((&fns.tiled.0, &fns.tiled.1), fns.shape, max_tokens);
        let xb = n_tokens * hidden * 4;
        self.x_dev.ensure(xb, "layer input")?;
        self.out_dev.ensure(xb, "layer output")?;
        self.meta_dev.ensure(tables.len(), "index tables")?;
        self.act_dev
            .ensure(bl.n_pairs * layout.ffn * 4, "SwiGLU activations")?;
        self.y_dev
            .ensure(bl.n_pairs * hidden * 4, "per-pair outputs")?;
        // SAFETY: device buffers ensured above for these sizes.
        unsafe {
            cu::memcpy_htod_sync(self.x_dev.ptr, x).map_err(drv("cuMemcpyHtoD(x)"))?;
            cu::memcpy_htod_sync(self.meta_dev.ptr, &tables[..])
                .map_err(drv("cuMemcpyHtoD(index tables)"))?;
        }
        let fused = fits(&bl);
        if fused {
            self.fused.ensure_counters(bl.n_items, layout.ffn)?;
        }
        // A full pass, gate_up and down alone (the difference is the cost of the small
        // kernels, act_round twice and combine, and their launches), or the fused pass.
        let pass = |me: &Self, k: usize, kind: Pass| -> Result<()> {
            let m = me.meta_dev.ptr + (k % copies * stride) as u64;
            if kind != Pass::Matmul {
                // Rounding x again each pass is idempotent up to an ulp of d: timing only
                // (the outputs compared come from passes on freshly uploaded x).
                me.round_acts(layout.gate_up, me.x_dev.ptr, n_tokens, hidden)?;
            }
            let (it, rw, wt) = (
                m + bl.items as u64,
                m + bl.rows as u64,
                m + bl.weights as u64,
            );
            let n_items = bl.n_items as u32;
            if kind == Pass::Fused {
                me.launch_gate_up_fused(layout, &ffns, (it, rw, n_items))?;
                return me.launch_down_combine(layout, &ffns, m, &bl);
            }
            me.launch_pass(
                layout,
                (&fns.gate_up, &fns.down),
                fns.rows_per_warp,
                (it, rw, wt, n_items),
                (kind == Pass::Full).then_some((0, bl.n_pairs)),
                tiled.as_ref(),
            )?;
            if kind == Pass::Full {
                me.launch_combine(
                    m + bl.tok_start as u64,
                    m + bl.tok_pairs as u64,
                    n_tokens,
                    hidden,
                )?;
            }
            Ok(())
        };
        // The outputs to check: one pass of each kind on x as uploaded.
        let once = |me: &Self, kind: Pass| -> Result<Vec<f32>> {
            // SAFETY: x_dev holds n_tokens × hidden floats (ensured above).
            unsafe { cu::memcpy_htod_sync(me.x_dev.ptr, x) }.map_err(drv("cuMemcpyHtoD(x)"))?;
            pass(me, 0, kind)?;
            let mut out = vec![0f32; n_tokens * hidden];
            // SAFETY: out_dev holds n_tokens × hidden floats; the sync copy waits for
            // the pass (the null stream synchronises with the compute stream).
            me.compute
                .synchronize()
                .map_err(drv("cuStreamSynchronize(kernel timing)"))?;
            unsafe { cu::memcpy_dtoh_sync(&mut out, me.out_dev.ptr) }
                .map_err(drv("cuMemcpyDtoH(kernel timing output)"))?;
            Ok(out)
        };
        let out = once(self, Pass::Full)?;
        let fused_out = if fused {
            once(self, Pass::Fused)?
        } else {
            Vec::new()
        };
        let reps = reps.clamp(1, MAX_REPS);
        let mut ms = [0f32; 3];
        let kinds: &[Pass] = if fused {
            &[Pass::Matmul, Pass::Full, Pass::Fused]
        } else {
            &[Pass::Matmul, Pass::Full]
        };
        for (i, &kind) in kinds.iter().enumerate() {
            pass(self, 0, kind)?; // warm-up (and instruction cache)
            self.t[0]
                .record(&self.compute)
                .map_err(drv("cuEventRecord"))?;
            for k in 1..=reps {
                pass(self, k, kind)?;
            }
            self.t[1]
                .record(&self.compute)
                .map_err(drv("cuEventRecord"))?;
            self.t[1]
                .synchronize()
                .map_err(drv("cuEventSynchronize(kernel timing)"))?;
            ms[i] = self.t[0]
                .elapsed_ms(&self.t[1])
                .map_err(drv("cuEventElapsedTime"))?
                / reps as f32;
        }
        drop(w);
        Ok(KernelTiming {
            out,
            pass_ms: ms[1],
            matmul_ms: ms[0],
            fused_out,
            fused_ms: ms[2],
        })
    }

    /// `linear_<t>` on `rows × cols` weights and `x` (`n × cols`) uploaded once, launched
    /// `reps` times. Returns `y` (`n × rows`) and the mean GPU milliseconds per launch.
    /// `variant` as for [`GpuExperts::time_expert_kernels`].
    #[allow(clippy::too_many_arguments)]
    pub fn time_dense_linear(
        &mut self,
        variant: &[&str],
        t: KernelType,
        w: &[u8],
        rows: usize,
        cols: usize,
        x: &[f32],
        reps: usize,
    ) -> Result<(Vec<f32>, f32)> {
        self.time_dense_linear_from(variant, t, (w, rows, cols), x, reps, None)
    }

    /// [`GpuExperts::time_dense_linear`] with the tiled kernel taken from `min_rows` weight
    /// rows (`None`: the engine's threshold), so the device check can time both kernels of
    /// a shape the engine gives to one.
    pub fn time_dense_linear_from(
        &mut self,
        variant: &[&str],
        t: KernelType,
        (w, rows, cols): (&[u8], usize, usize),
        x: &[f32],
        reps: usize,
        min_rows: Option<u32>,
    ) -> Result<(Vec<f32>, f32)> {
        let (wd, xd, yd, n) = self.linear_buffers(t, w, rows, cols, x)?;
        let (f, tiled, shape) = match variant {
            [] => (
                self.dense_fns
                    .linear
                    .get(&t)
                    .ok_or(CudaError::UnsupportedType(t.ggml()))?
                    .clone(),
                self.gemm
                    .linear
                    .get(&t)
                    .ok_or(CudaError::UnsupportedType(t.ggml()))?
                    .clone(),
                GemmShape::DEFAULT,
            ),
            v => {
                let m = self.variant_module(v)?;
                let load = |name: String| m.load_function(&name).map_err(drv(name));
                (
                    load(format!("linear_{}", t.suffix()))?,
                    load(format!("gemm_linear_{}", t.suffix()))?,
                    GemmShape::of(v),
                )
            }
        };
        let fns = LinearFns {
            rows: &f,
            tiled: &tiled,
            shape,
            min_rows: min_rows.unwrap_or(LINEAR_MIN_ROWS),
        };
        let (r32, c32, n32) = (rows as u32, cols as u32, n as u32);
        // Copies of the matrix used in turn (see L2_DEFEAT_BYTES); the first is `wd`.
        let copies = L2_DEFEAT_BYTES.div_ceil(w.len()).clamp(1, MAX_COPIES);
        let mut extra = Vec::new();
        for _ in 1..copies {
            let b = DeviceBuf::new(w.len(), "linear timing weights")?;
            // SAFETY: both buffers hold w.len() bytes.
            unsafe { cu::memcpy_dtod_sync(b.ptr, wd.ptr, w.len()) }
                .map_err(drv("cuMemcpyDtoD(linear timing weights)"))?;
            extra.push(b);
        }
        let wk = |k: usize| match k % copies {
            0 => wd.ptr,
            c => extra[c - 1].ptr,
        };
        let reps = reps.clamp(1, MAX_REPS);
        launch_linear_on(&self.compute, &fns, wd.ptr, xd.ptr, yd.ptr, r32, c32, n32)?;
        self.t[0]
            .record(&self.compute)
            .map_err(drv("cuEventRecord"))?;
        for k in 1..=reps {
            launch_linear_on(&self.compute, &fns, wk(k), xd.ptr, yd.ptr, r32, c32, n32)?;
        }
        self.t[1]
            .record(&self.compute)
            .map_err(drv("cuEventRecord"))?;
        self.t[1]
            .synchronize()
            .map_err(drv("cuEventSynchronize(linear timing)"))?;
        let ms = self.t[0]
            .elapsed_ms(&self.t[1])
            .map_err(drv("cuEventElapsedTime"))?;
        let mut y = vec![0f32; n * rows];
        // SAFETY: yd holds n × rows floats written by the last launch.
        unsafe { cu::memcpy_dtoh_sync(&mut y, yd.ptr) }.map_err(drv("cuMemcpyDtoH(linear)"))?;
        Ok((y, ms / reps as f32))
    }

    /// The kernel source compiled by NVRTC with `-D<define>` for each of `defines` and
    /// loaded into this context (cached per context; the PTX once per process, see
    /// [`variant_ptx`]).
    fn variant_module(&self, defines: &[&str]) -> Result<Arc<CudaModule>> {
        let key = defines.join(" ");
        let cache = VARIANTS.get_or_init(Default::default);
        let mut map = cache
            .lock()
            .map_err(|_| CudaError::Compile("variant cache poisoned".into()))?;
        let entries = map.entry(key).or_default();
        if let Some((_, m)) = entries.iter().find(|(c, _)| Arc::ptr_eq(c, &self.ctx)) {
            return Ok(m.clone());
        }
        let cc = self.info.compute_capability;
        // The CUBIN first (no JIT); the PTX path below if it cannot be built or loaded.
        let cubin = variant_cubin(cc, defines).and_then(|c| {
            self.ctx
                .load_module(cudarc::nvrtc::Ptx::from_binary(c))
                .map_err(drv(format!("cuModuleLoadData(variant CUBIN {defines:?})")))
        });
        if let Ok(m) = cubin {
            entries.push((self.ctx.clone(), m.clone()));
            return Ok(m);
        }
        let ptx = variant_ptx(cc, defines)?;
        let load = |src: String| {
            self.ctx
                .load_module(cudarc::nvrtc::Ptx::from_src(src))
                .map_err(drv(format!("cuModuleLoadData(variant {defines:?})")))
        };
        // An NVRTC newer than the driver writes a PTX ISA version the driver rejects; the
        // fallback PTX (built by the driver's NVRTC version) names one it accepts, and the
        // kernels use nothing newer: retry with that version line.
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

#[cfg(test)]
mod tests {
    use super::{define, with_version_line};

    #[test]
    fn launch_grids_follow_the_kernels_rows_per_warp() {
        let (gu, dn) = super::super::EXPERT_ROWS_PER_WARP;
        assert_eq!(crate::kernel_define("RPW_GU"), Some(gu));
        assert_eq!(crate::kernel_define("RPW_DN"), Some(dn));
    }

    #[test]
    fn version_line_is_replaced_and_nothing_else() {
        let ptx = "//\n// x\n.version 9.1\n.target sm_90\n.address_size 64\n";
        let out = with_version_line(ptx, ".version 9.0");
        assert_eq!(
            out,
            "//\n// x\n.version 9.0\n.target sm_90\n.address_size 64"
        );
    }

    /// NVRTC builds a variant straight to an sm_90 CUBIN (an ELF image the driver loads
    /// without a JIT); needs libnvrtc on LD_LIBRARY_PATH, as the other NVRTC tests.
    #[test]
    fn variants_build_to_cubin_with_nvrtc() {
        let cubin = super::variant_cubin((9, 0), &["GEMM_MIN_TOKENS=1000000"]).unwrap();
        assert_eq!(&cubin[..4], b"\x7fELF");
        // Cached: the second ask returns the same image without compiling.
        let again = super::variant_cubin((9, 0), &["GEMM_MIN_TOKENS=1000000"]).unwrap();
        assert_eq!(cubin, again);
        // A define that breaks the source is an error, not a panic.
        assert!(super::variant_cubin((9, 0), &["U_ONE=banana"]).is_err());
    }

    #[test]
    fn defines_parse_with_default_one() {
        assert_eq!(define(&["RPW_DN=4", "U_ONE=2"], "RPW_DN"), 4);
        assert_eq!(define(&["RPW_DN=4"], "RPW_GU"), 1);
        assert_eq!(define(&["RPW_DNX=3"], "RPW_DN"), 1);
    }
}
