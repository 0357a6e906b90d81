//! Launches of the dense path's attention kernels, shared by [`super::GpuDense`] and the
//! device timing (`attend_bench.rs`): the split-context pair (`attend_split` +
//! `attend_combine`, attend.cu) and the tiled prefill kernel (`attend_tiled`,
//! attend_tiled.cu; geometry in [`crate::attend_tiled`]).

use super::drv;
use crate::attend_tiled::{tiled_grid, tiled_smem_floats_for, ATTEND_TILE_THREADS};
use crate::error::{CudaError, Result};
use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaFunction, CudaStream, LaunchConfig, PushKernelArg};

/// Warps per block of `attend_split` (`ATT_WARPS` in attend.cu).
const ATT_WARPS: u32 = 4;
/// The largest head size `attend_tiled` is instantiated for (its shared memory is sized
/// for it at load).
const TILED_MAX_HEAD_DIM: usize = 128;

/// `attend_tiled` of a module built with `ATT_STAGES = stages`.
pub(super) struct TiledFn {
    f: CudaFunction,
    stages: usize,
}

impl TiledFn {
    /// Loads it and allows it the dynamic shared memory of its largest instance (above
    /// the default 48 KiB: an opt-in per function); `None` when the device refuses (the
    /// split kernels serve every call then).
    pub(super) fn load(
        f: &dyn Fn(&str) -> Result<CudaFunction>,
        stages: usize,
    ) -> Result<Option<Self>> {
        let tiled = f("attend_tiled")?;
        let bytes = (4 * tiled_smem_floats_for(TILED_MAX_HEAD_DIM, stages)) as i32;
        // A hint that the L1/shared split should favour shared memory, so that two CTAs
        // of ~110 KiB fit an SM; ignored where unsupported.
        let _ = tiled.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
            100,
        );
        Ok(tiled
            .set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes,
            )
            .ok()
            .map(|_| Self { f: tiled, stages }))
    }

    /// Its `ATT_STAGES`.
    pub(super) fn stages(&self) -> usize {
        self.stages
    }

    /// CTAs per SM the device runs at `head_dim` (registers and shared memory).
    pub(super) fn ctas_per_sm(&self, head_dim: usize) -> Result<u32> {
        let smem = 4 * tiled_smem_floats_for(head_dim, self.stages);
        self.f
            .occupancy_max_active_blocks_per_multiprocessor(ATTEND_TILE_THREADS, smem, None)
            .map_err(drv(
                "cuOccupancyMaxActiveBlocksPerMultiprocessor(attend_tiled)",
            ))
    }
}

/// One attention call: device addresses and shape. `kc`, `vc` (`u64[n]`) hold each row's
/// K and V cache of the layer, `pos` (`u32[n]`) its position; `q`, `out` are
/// `[n][n_heads][head_dim]` f32.
#[derive(Debug, Clone, Copy)]
pub(super) struct AttendCall {
    pub q: u64,
    pub kc: u64,
    pub vc: u64,
    pub pos: u64,
    pub out: u64,
    pub n: u32,
    pub n_heads: u32,
    pub n_kv: u32,
    pub head_dim: u32,
    /// Query heads per split warp ([`crate::dense_model::heads_per_warp`]); the split plan
    /// must have been made for `n_heads / hpw` warp heads.
    pub hpw: u32,
}

impl AttendCall {
    fn scale(&self) -> f32 {
        1.0f32 / (self.head_dim as f32).sqrt()
    }
}

/// Head sizes `attend_split` has an entry point for (`attend_split_<hd>`, and
/// `attend_split_<hd>_g` for grouped heads).
const SPLIT_HEAD_DIMS: [u32; 4] = [32, 64, 128, 256];

/// The split-attention entry points of a module: one head a warp, and grouped heads, per
/// head size (attend.cu says why they are apart).
pub(super) struct SplitFns {
    one: Vec<CudaFunction>,
    grouped: Vec<CudaFunction>,
}

impl SplitFns {
    pub(super) fn load(f: &dyn Fn(&str) -> Result<CudaFunction>) -> Result<Self> {
        let mut one = Vec::new();
        let mut grouped = Vec::new();
        for hd in SPLIT_HEAD_DIMS {
            one.push(f(&format!("attend_split_{hd}"))?);
            grouped.push(f(&format!("attend_split_{hd}_g"))?);
        }
        Ok(Self { one, grouped })
    }

    /// The entry for `head_dim` and `hpw` query heads a warp.
    fn pick(&self, head_dim: u32, hpw: u32) -> Result<&CudaFunction> {
        let i = SPLIT_HEAD_DIMS
            .iter()
            .position(|&h| h == head_dim)
            .ok_or_else(|| {
                CudaError::InvalidBatch(format!(
                    "split attention: no kernel for head size {head_dim}"
                ))
            })?;
        Ok(if hpw > 1 {
            &self.grouped[i]
        } else {
            &self.one[i]
        })
    }
}

/// Split-context attention of every row (`split`: `attend_split`), then one merge of each
/// row's partials (`combine`: `attend_combine`); `plan` points at `(chunk, n_splits)` in device memory
/// (`dense_model::attention_split`), the grid has room for `grid_splits`, and `part`
/// holds `n × n_heads × grid_splits × (head_dim + 2)` floats.
pub(super) fn launch_split(
    stream: &CudaStream,
    (split, combine): (&SplitFns, &CudaFunction),
    c: &AttendCall,
    part: u64,
    plan: u64,
    grid_splits: u32,
) -> Result<()> {
    let scale = c.scale();
    let split = split.pick(c.head_dim, c.hpw)?;
    let cfg = LaunchConfig {
        grid_dim: (
            (c.n_heads / c.hpw.max(1)) * grid_splits.div_ceil(ATT_WARPS),
            c.n,
            1,
        ),
        block_dim: (32 * ATT_WARPS, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: matches attend_split_<hd>[_g](const float*, const u64*, const u64*, const u32*,
    // float*, u32, u32, u32, float, const u32*, u32, u32); `part` holds n * nh *
    // grid_splits * (hd + 2) floats, the plan's n_splits ≤ grid_splits and chunk * n_splits
    // covers every row's context; hpw divides nh / n_kv (the kernel does nothing for an hpw
    // it has no instance of).
    unsafe {
        stream
            .launch_builder(split)
            .arg(&c.q)
            .arg(&c.kc)
            .arg(&c.vc)
            .arg(&c.pos)
            .arg(&part)
            .arg(&c.n_heads)
            .arg(&c.n_kv)
            .arg(&c.head_dim)
            .arg(&scale)
            .arg(&plan)
            .arg(&grid_splits)
            .arg(&c.hpw)
            .launch(cfg)
    }
    .map_err(drv("launch attend_split"))?;
    let cfg = LaunchConfig {
        grid_dim: (c.n_heads, c.n, 1),
        block_dim: (32, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: matches attend_combine(const float*, const u32*, float*, u32, u32,
    // const u32*); reads only the partials attend_split wrote.
    unsafe {
        stream
            .launch_builder(combine)
            .arg(&part)
            .arg(&c.pos)
            .arg(&c.out)
            .arg(&c.n_heads)
            .arg(&c.head_dim)
            .arg(&plan)
            .launch(cfg)
    }
    .map(|_| ())
    .map_err(drv("launch attend_combine"))
}

/// The tiled kernel over all rows (`tiled`: a module's [`TiledFn`], for a head
/// size that [`crate::attend_tiled::tiled_supported`]). Rows of one sequence must be
/// contiguous (a call's spans are).
pub(super) fn launch_tiled(stream: &CudaStream, tiled: &TiledFn, c: &AttendCall) -> Result<()> {
    let scale = c.scale();
    let smem_floats = tiled_smem_floats_for(c.head_dim as usize, tiled.stages) as u32;
    let (gx, gy) = tiled_grid(c.n as usize, c.n_heads as usize, c.n_kv as usize);
    let cfg = LaunchConfig {
        grid_dim: (gx, gy, 1),
        block_dim: (ATTEND_TILE_THREADS, 1, 1),
        shared_mem_bytes: 4 * smem_floats,
    };
    // SAFETY: matches attend_tiled(const float*, const u64*, const u64*, const u32*, float*,
    // u32, u32, u32, u32, float, u32); the dynamic shared memory is the smem_floats the
    // kernel is told (within the limit set at load), and it reads each row's cache only at
    // positions ≤ pos, which qk_norm_rope_kv has filled.
    unsafe {
        stream
            .launch_builder(&tiled.f)
            .arg(&c.q)
            .arg(&c.kc)
            .arg(&c.vc)
            .arg(&c.pos)
            .arg(&c.out)
            .arg(&c.n)
            .arg(&c.n_heads)
            .arg(&c.n_kv)
            .arg(&c.head_dim)
            .arg(&scale)
            .arg(&smem_floats)
            .launch(cfg)
    }
    .map(|_| ())
    .map_err(drv("launch attend_tiled"))
}
