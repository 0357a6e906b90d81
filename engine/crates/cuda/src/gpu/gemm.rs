//! Launches of the tiled GEMM kernels (`gemm.cu`): the items of an expert pass that serve
//! many tokens (prefill), and `linear` calls of many tokens. The row kernels
//! (`kernels.cu`, `dense.cu`) re-read a row's weights for every 8 tokens; a tile of
//! 128 weight rows × 64 tokens dequantises them once into shared memory for all 64.
//!
//! Which kernel runs: an item of at least [`GEMM_MIN_TOKENS`] tokens is taken by the tiled
//! kernels (gate_up/down skip it on the device); a linear call of at least
//! [`LINEAR_MIN_TOKENS`] tokens on a matrix of at least [`LINEAR_MIN_ROWS`] rows. Measured
//! on an H200 (`hmoe-cuda-check gemm`, 2026-11-27): the row kernels' cost grows by one
//! weight pass per 8 tokens while a tiled chunk costs the same for 1..64 tokens; 8 q4_k_m
//! experts take 148.5 / 279.7 µs (rows, at 16 / 32 tokens) against 274.7 / 276.5 tiled
//! (the crossover is ~32 tokens), a q4_k 4096 × 2048 linear 68.6 µs at 32 tokens against
//! 181.9 tiled (~85 tokens). A matrix of few rows gives the tiled grid few CTAs (128 rows
//! per tile): in the 512-token prefill layer the 512-row wk/wv took 186 µs tiled against
//! ~140 with the row kernel, the 128-row router 172 against ~40.
//!
//! Unless [`MMA_ENV`]`=0`, the tiled work on the weight types of [`MMA_TYPES`] runs on the
//! int8 tensor-core kernels of `gemm_mma.cu` instead (the same arguments, grid and block:
//! the functions are swapped, nothing else changes); the other types keep the f32 tiled
//! kernels. `GpuExperts::set_gemm_mma` switches at run time (the device check times both).

use super::{drv, GpuExperts};
use crate::dtype::{ExpertLayout, KernelType};
use crate::error::{CudaError, Result};
use crate::WARPS_PER_BLOCK;
use cudarc::driver::result as cu;
use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use std::collections::HashMap;

/// Environment variable: `0` keeps the tiled expert items and linear calls on weights of
/// [`MMA_TYPES`] on the f32 tiled kernels instead of the int8 tensor-core kernels
/// (`gemm_mma.cu`, sm_80 and later, the default there). An A/B knob: the item threshold
/// stays the mma one ([`GEMM_MIN_TOKENS`]), where the f32 tile is slower than the row
/// kernels for 16-31 tokens.
pub const MMA_ENV: &str = "HMOE_CUDA_MMA";
/// Weight types with int8 tensor-core kernels (`mma_gate_up_*`, `mma_down_*`,
/// `mma_linear_*`); the others always take the f32 tiled kernels.
pub const MMA_TYPES: [KernelType; 3] = [KernelType::Q8_0, KernelType::Q4K, KernelType::Q6K];
/// Oldest binary architecture (major × 10 + minor) with `mma.sync ... m16n8k32 ... s8`:
/// below it the kernels compile to a trap and are never selected.
pub(super) const MMA_MIN_ARCH: i32 = 80;

/// Tokens from which an expert item takes the tiled kernels: the default of
/// `GEMM_MIN_TOKENS` in kernels.cu (tested below). With the int8 mma tile (session 11's
/// loaders) 8 q4_k_m experts × 64 tokens take 154 µs on an H200, about what the row kernels
/// take for 16 tokens (148.5 µs; they read the weights once per 8 tokens): 16 instead of
/// 32 prefilled 3-9% faster at 8 and 16 GiB (docs/notes/cuda-mma.md "Session 11").
pub const GEMM_MIN_TOKENS: usize = 16;
/// The threshold of a device without the mma kernels (below sm_80), where the f32 tiled
/// kernel takes the items: its crossover with the row kernels (module docs). `compile_kernels`
/// compiles it in for such a device.
pub const F32_GEMM_MIN_TOKENS: usize = 32;
/// Tokens from which a linear call may take the tiled kernel (see the module docs).
pub const LINEAR_MIN_TOKENS: u32 = 96;
/// Weight rows from which a linear call may take the f32 tiled kernel (see the module docs).
pub const LINEAR_MIN_ROWS: u32 = 1024;
/// Weight rows from which the GPU dense path's linear calls take the int8 mma kernel
/// (unless [`DENSE_MMA_ENV`] is 0): a grid of fewer row tiles than the f32 kernel needs still
/// beats the row kernel, which reads the weights once per 8 tokens. `hmoe-cuda-check mma`
/// on an H200, 2048 columns × 1024 tokens, row kernel against mma: 512 rows (the prefill
/// layer's wk / wv) 269 / 87 µs, 256 rows 138 / 88, 128 rows (the router) 72 / 87.
pub const MMA_LINEAR_MIN_ROWS: u32 = 256;
/// Environment variable: `0` keeps the GPU dense path's prefill projections (`GpuDense`)
/// on the f32 tiled kernels instead of the int8 mma kernels (`mma_linear_*`, which
/// quantise their f32 inputs to 8 bits per block as the CPU's dense products do: 32
/// values for Q8_0, 256 for k-quants). On by default (with [`MMA_ENV`]): the prefill
/// layer's dense time fell ~18% on an H200 (docs/notes/cuda-mma.md "Session 11").
pub const DENSE_MMA_ENV: &str = "HMOE_CUDA_DENSE_MMA";
/// Weight rows per tile (`GEMM_BM` in gemm.cu); a gate_up tile covers half as many outputs
/// (gate and up rows of each).
const TILE_ROWS: u32 = 128;
/// Default tokens per thread (`GEMM_TN`): a tile holds 16 × that many tokens.
const TOKENS_PER_THREAD: u32 = 4;
/// Threads per block of the tiled kernels (16 × 16).
const GEMM_THREADS: u32 = 256;
/// Token rows per weight pass of the row kernel `linear_*` (`TT` in kernels.cu).
const ROW_KERNEL_TOKENS: u32 = 8;

/// The threshold and tile width a module was compiled with (the defaults, or a variant's
/// `-DGEMM_MIN_TOKENS=` / `-DGEMM_TN=`): the launches must follow them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GemmShape {
    /// Items of at least this many tokens go to the tiled kernels.
    pub(crate) min_tokens: usize,
    /// Linear calls of at least this many tokens (on a matrix of [`LINEAR_MIN_ROWS`] rows
    /// or more) go to the tiled kernel; a variant's `GEMM_MIN_TOKENS` sets both.
    pub(crate) linear_min_tokens: usize,
    /// Tokens per tile.
    pub(crate) tile_tokens: u32,
}

impl GemmShape {
    /// The production module's shape.
    pub(crate) const DEFAULT: Self = Self {
        min_tokens: GEMM_MIN_TOKENS,
        linear_min_tokens: LINEAR_MIN_TOKENS as usize,
        tile_tokens: 16 * TOKENS_PER_THREAD,
    };

    /// The expert shape of the engine's module: the default, or the item threshold and
    /// tile width of the defines of [`super::DEFINES_ENV`] (which the module was compiled
    /// with, so the launches follow them; an A/B knob). Linear calls keep the default
    /// threshold.
    /// `mma`: the module has the mma kernels (else it was compiled with
    /// [`F32_GEMM_MIN_TOKENS`], see `compile_kernels`).
    pub(crate) fn engine(mma: bool) -> Self {
        let defines = super::env_defines().unwrap_or_default();
        let mut d: Vec<&str> = defines.iter().map(String::as_str).collect();
        let f32_min = format!("GEMM_MIN_TOKENS={F32_GEMM_MIN_TOKENS}");
        if !mma {
            d.push(&f32_min); // after the environment's: `of` takes the first
        }
        Self {
            linear_min_tokens: Self::DEFAULT.linear_min_tokens,
            ..Self::of(&d)
        }
    }

    /// The shape of a module compiled with `-D<define>` for each of `defines`.
    pub(crate) fn of(defines: &[&str]) -> Self {
        let get = |name: &str| {
            defines
                .iter()
                .filter_map(|d| {
                    d.strip_prefix(name)?
                        .strip_prefix('=')?
                        .parse::<usize>()
                        .ok()
                })
                .next()
        };
        let min = get("GEMM_MIN_TOKENS");
        Self {
            min_tokens: min.unwrap_or(GEMM_MIN_TOKENS),
            linear_min_tokens: min.unwrap_or(LINEAR_MIN_TOKENS as usize),
            tile_tokens: 16 * get("GEMM_TN").map_or(TOKENS_PER_THREAD, |v| v as u32),
        }
    }
}

/// gate_up, down and linear of one weight type.
type Trio = [CudaFunction; 3];

/// The module's tiled kernels by weight type: the ones launched (`gate_up`, `down`,
/// `linear`: f32 tiled, or int8 mma for the types of [`MMA_TYPES`] when switched on), and
/// both kinds of the mma types to switch between.
pub(super) struct GemmKernels {
    pub(super) gate_up: HashMap<KernelType, CudaFunction>,
    pub(super) down: HashMap<KernelType, CudaFunction>,
    pub(super) linear: HashMap<KernelType, CudaFunction>,
    /// The f32 tiled kernels of the [`MMA_TYPES`].
    f32_tiled: HashMap<KernelType, Trio>,
    /// The mma kernels of the [`MMA_TYPES`]; empty on a device below sm_80 or a module
    /// without them.
    mma: HashMap<KernelType, Trio>,
    /// The expert passes' shape ([`GemmShape::engine`]).
    pub(super) shape: GemmShape,
}

/// Whether [`MMA_ENV`] leaves the int8 mma kernels on (the default).
pub(super) fn mma_wanted() -> bool {
    !std::env::var(MMA_ENV).is_ok_and(|v| v.trim() == "0")
}

/// Whether [`DENSE_MMA_ENV`] (and [`MMA_ENV`]) leave the mma kernels on for the GPU dense
/// path.
pub(super) fn dense_mma_wanted() -> bool {
    mma_wanted() && !std::env::var(DENSE_MMA_ENV).is_ok_and(|v| v.trim() == "0")
}

/// Whether `f` was compiled for an architecture with the s8 `mma.sync` shape.
pub(super) fn mma_capable(f: &CudaFunction) -> bool {
    // SAFETY: `f` is a loaded function of a live module.
    let v = unsafe {
        cu::function::get_function_attribute(
            f.cu_function(),
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_BINARY_VERSION,
        )
    };
    v.is_ok_and(|v| v >= MMA_MIN_ARCH)
}

impl GemmKernels {
    pub(super) fn load(f: &dyn Fn(&str) -> Result<CudaFunction>) -> Result<Self> {
        let (mut gate_up, mut down, mut linear) = (HashMap::new(), HashMap::new(), HashMap::new());
        for t in KernelType::ALL {
            let s = t.suffix();
            gate_up.insert(t, f(&format!("gemm_gate_up_{s}"))?);
            down.insert(t, f(&format!("gemm_down_{s}"))?);
            linear.insert(t, f(&format!("gemm_linear_{s}"))?);
        }
        let (mut f32_tiled, mut mma) = (HashMap::new(), HashMap::new());
        for t in MMA_TYPES {
            let s = t.suffix();
            // Optional: a module from an older PTX file (HMOE_CUDA_PTX*) lacks them, and
            // then only the f32 tiled kernels run.
            let trio = (|| -> Result<Trio> {
                Ok([
                    f(&format!("mma_gate_up_{s}"))?,
                    f(&format!("mma_down_{s}"))?,
                    f(&format!("mma_linear_{s}"))?,
                ])
            })();
            if let Some(trio) = trio.ok().filter(|tr| mma_capable(&tr[0])) {
                mma.insert(t, trio);
            }
            let get = |m: &HashMap<KernelType, CudaFunction>| {
                m.get(&t)
                    .cloned()
                    .ok_or(CudaError::UnsupportedType(t.ggml()))
            };
            f32_tiled.insert(t, [get(&gate_up)?, get(&down)?, get(&linear)?]);
        }
        let has_mma = !mma.is_empty();
        let mut k = Self {
            gate_up,
            down,
            linear,
            f32_tiled,
            mma,
            shape: GemmShape::engine(has_mma),
        };
        // On unless switched off: on an H100 (hmoe-cuda-check gemm, 2026-11-27) the mma
        // kernels took 8 q4_k_m experts x 256 tokens from 716 to 445 us and a q4_k linear
        // 4096x2048 x 512 from 282 to 143 us, within 1e-3 of the f32 tiled kernels (the
        // SwiGLU products' 8-bit rounding can land one step away; 1e-6 for linear).
        k.set_mma(mma_wanted());
        Ok(k)
    }

    /// Launches the mma kernels for the [`MMA_TYPES`] (`on`) or the f32 tiled ones;
    /// returns whether the mma kernels are now launched (never below sm_80 or on a module
    /// without them).
    fn set_mma(&mut self, on: bool) -> bool {
        let on = on && !self.mma.is_empty();
        let src = if on { &self.mma } else { &self.f32_tiled };
        for (t, [g, d, l]) in src {
            self.gate_up.insert(*t, g.clone());
            self.down.insert(*t, d.clone());
            self.linear.insert(*t, l.clone());
        }
        on
    }

    /// The tiled half of a pass of layout `l` whose largest item serves `max_tokens`
    /// tokens (`None` when no item reaches the threshold: a decode pass launches nothing
    /// more).
    pub(super) fn pass(&self, l: &ExpertLayout, max_tokens: usize) -> Result<Option<GemmPass<'_>>> {
        let gate_up = self
            .gate_up
            .get(&l.gate_up)
            .ok_or(CudaError::UnsupportedType(l.gate_up.ggml()))?;
        let down = self
            .down
            .get(&l.down)
            .ok_or(CudaError::UnsupportedType(l.down.ggml()))?;
        Ok(GemmPass::new((gate_up, down), self.shape, max_tokens))
    }

    /// The module's linear functions for weights of type `t`.
    pub(super) fn linear<'a>(
        &'a self,
        rows: &'a CudaFunction,
        t: KernelType,
    ) -> Result<LinearFns<'a>> {
        Ok(LinearFns {
            rows,
            tiled: self
                .linear
                .get(&t)
                .ok_or(CudaError::UnsupportedType(t.ggml()))?,
            shape: GemmShape::DEFAULT,
            min_rows: LINEAR_MIN_ROWS,
        })
    }
}

/// The tiled kernels of one expert pass (the module's or a variant's), the shape they were
/// compiled with, and the pass's largest item.
pub(super) struct GemmPass<'a> {
    gate_up: &'a CudaFunction,
    down: &'a CudaFunction,
    shape: GemmShape,
    max_tokens: usize,
}

impl<'a> GemmPass<'a> {
    /// `None` when no item of the pass has `shape.min_tokens` tokens.
    pub(super) fn new(
        (gate_up, down): (&'a CudaFunction, &'a CudaFunction),
        shape: GemmShape,
        max_tokens: usize,
    ) -> Option<Self> {
        (max_tokens >= shape.min_tokens).then_some(Self {
            gate_up,
            down,
            shape,
            max_tokens,
        })
    }

    /// Grid over `n_items` items: row tiles of `tile_out` outputs, token chunks of the
    /// largest item (blocks of smaller items past their end leave at once).
    fn cfg(&self, outputs: usize, tile_out: u32, n_items: u32) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (
                (outputs as u32).div_ceil(tile_out),
                n_items,
                (self.max_tokens as u32).div_ceil(self.shape.tile_tokens),
            ),
            block_dim: (GEMM_THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}

impl GpuExperts {
    /// Runs the tiled expert items and linear calls on weights of [`MMA_TYPES`] through
    /// the int8 tensor-core kernels (`on`) or the f32 tiled kernels; returns whether the
    /// mma kernels now run (false on a device below sm_80). The start-up choice is
    /// [`MMA_ENV`]; the device check times both.
    pub fn set_gemm_mma(&mut self, on: bool) -> bool {
        self.gemm.set_mma(on)
    }

    /// `gemm_gate_up_*` over the `n` items at `items` (the pass's x and act buffers).
    pub(super) fn launch_gemm_gate_up(
        &self,
        p: &GemmPass<'_>,
        l: &ExpertLayout,
        (items, rows, n): (u64, u64, u32),
    ) -> Result<()> {
        let (x, act, hidden, ffn) = (
            self.x_dev.ptr,
            self.act_dev.ptr,
            l.hidden as u32,
            l.ffn as u32,
        );
        // SAFETY: matches gemm_gate_up_*(const u64*, const u32*, const float*, float*, u32,
        // u32), the argument list of gate_up_*; buffers sized for this batch by the caller.
        unsafe {
            self.compute
                .launch_builder(p.gate_up)
                .arg(&items)
                .arg(&rows)
                .arg(&x)
                .arg(&act)
                .arg(&hidden)
                .arg(&ffn)
                .launch(p.cfg(l.ffn, TILE_ROWS / 2, n))
        }
        .map(|_| ())
        .map_err(|e| drv(format!("launch gemm_gate_up ({})", l.gate_up.suffix()))(e))
    }

    /// `gemm_down_*` over the `n` items at `items` (the pass's act and y buffers).
    pub(super) fn launch_gemm_down(
        &self,
        p: &GemmPass<'_>,
        l: &ExpertLayout,
        (items, wts, n): (u64, u64, u32),
    ) -> Result<()> {
        let (act, y, hidden, ffn) = (
            self.act_dev.ptr,
            self.y_dev.ptr,
            l.hidden as u32,
            l.ffn as u32,
        );
        // SAFETY: matches gemm_down_*(const u64*, const float*, const float*, float*, u32,
        // u32), the argument list of down_*; buffers sized for this batch by the caller.
        unsafe {
            self.compute
                .launch_builder(p.down)
                .arg(&items)
                .arg(&wts)
                .arg(&act)
                .arg(&y)
                .arg(&hidden)
                .arg(&ffn)
                .launch(p.cfg(l.hidden, TILE_ROWS, n))
        }
        .map(|_| ())
        .map_err(|e| drv(format!("launch gemm_down ({})", l.down.suffix()))(e))
    }
}

/// A linear call's two kernels (row walk, tiled), the tiled one's shape and the weight
/// rows from which it is taken ([`LINEAR_MIN_ROWS`], or [`MMA_LINEAR_MIN_ROWS`] for the
/// GPU dense path's mma kernels).
pub(super) struct LinearFns<'a> {
    pub(super) rows: &'a CudaFunction,
    pub(super) tiled: &'a CudaFunction,
    pub(super) shape: GemmShape,
    pub(super) min_rows: u32,
}

/// `y[t] = W · x[t]` (`rows × cols` weights at `w`, `n` tokens) on `stream`: the tiled
/// kernel for many tokens on a matrix of many rows (module docs), else the row kernel (one warp per row, 8 tokens
/// per block row). The one launcher of both the GPU dense path and the checks.
#[allow(clippy::too_many_arguments)]
pub(super) fn launch_linear_on(
    stream: &CudaStream,
    f: &LinearFns<'_>,
    w: u64,
    x: u64,
    y: u64,
    rows: u32,
    cols: u32,
    n: u32,
) -> Result<()> {
    let tiled = n as usize >= f.shape.linear_min_tokens && rows >= f.min_rows;
    let (func, cfg) = if tiled {
        let grid = (rows.div_ceil(TILE_ROWS), n.div_ceil(f.shape.tile_tokens), 1);
        (f.tiled, (grid, GEMM_THREADS))
    } else {
        let grid = (
            rows.div_ceil(WARPS_PER_BLOCK),
            n.div_ceil(ROW_KERNEL_TOKENS),
            1,
        );
        (f.rows, (grid, 32 * WARPS_PER_BLOCK))
    };
    let cfg = LaunchConfig {
        grid_dim: cfg.0,
        block_dim: (cfg.1, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: linear_* and gemm_linear_* both take (const u8* w, const float* x, float* y,
    // u32 rows, u32 cols, u32 n); the caller's buffers hold rows × cols weights, n × cols
    // inputs and n × rows outputs.
    unsafe {
        stream
            .launch_builder(func)
            .arg(&w)
            .arg(&x)
            .arg(&y)
            .arg(&rows)
            .arg(&cols)
            .arg(&n)
            .launch(cfg)
    }
    .map(|_| ())
    .map_err(|e| drv(format!("launch linear ({rows}x{cols}, {n} tokens)"))(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expert threshold follows the module: the mma one where the mma kernels exist,
    /// the f32 tile's below sm_80 (what `compile_kernels` compiles in there).
    #[test]
    fn the_expert_threshold_follows_the_kernels_the_module_has() {
        if std::env::var_os(super::super::DEFINES_ENV).is_some() {
            return; // an A/B run's defines decide
        }
        assert_eq!(GemmShape::engine(true).min_tokens, GEMM_MIN_TOKENS);
        assert_eq!(GemmShape::engine(false).min_tokens, F32_GEMM_MIN_TOKENS);
        for mma in [true, false] {
            let s = GemmShape::engine(mma);
            assert_eq!(s.linear_min_tokens, LINEAR_MIN_TOKENS as usize);
            assert_eq!(s.tile_tokens, GemmShape::DEFAULT.tile_tokens);
        }
    }

    #[test]
    fn launch_constants_follow_the_kernel_source() {
        assert_eq!(
            crate::kernel_define("GEMM_MIN_TOKENS"),
            Some(GEMM_MIN_TOKENS)
        );
        assert_eq!(
            crate::kernel_define("GEMM_TN"),
            Some(TOKENS_PER_THREAD as usize)
        );
        assert_eq!(crate::kernel_define("GEMM_BM"), Some(TILE_ROWS as usize));
        assert_eq!(crate::kernel_define("TT"), Some(ROW_KERNEL_TOKENS as usize));
    }

    /// NVRTC (no GPU needed; LD_LIBRARY_PATH as for gpu.rs's compile test) emits the mma
    /// kernels of every [`MMA_TYPES`] entry for sm_90, with the tensor-core instruction.
    #[test]
    fn mma_kernels_compile_for_sm90() {
        match crate::compile_kernels((9, 0)) {
            Ok(ptx) => {
                for t in MMA_TYPES {
                    for k in ["mma_gate_up", "mma_down", "mma_linear"] {
                        let entry = format!(".entry {k}_{}(", t.suffix());
                        assert!(ptx.contains(&entry), "{entry}");
                    }
                }
                assert!(ptx.contains("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32"));
            }
            Err(CudaError::NoNvrtc) => {
                panic!("libnvrtc not found: set LD_LIBRARY_PATH to the CUDA 13 libraries")
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn variant_defines_set_the_shape() {
        assert_eq!(GemmShape::of(&[]), GemmShape::DEFAULT);
        let s = GemmShape::of(&["GEMM_TN=2", "GEMM_MIN_TOKENS=1000000", "U_ONE=2"]);
        assert_eq!((s.min_tokens, s.tile_tokens), (1_000_000, 32));
        assert_eq!(GemmShape::of(&["GEMM_MIN_TOKENSX=3"]), GemmShape::DEFAULT);
    }
}
