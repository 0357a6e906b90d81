//! The fused decode pass (src/fused.cu): a layer whose items each serve at most
//! [`FUSED_MAX_ROWS`] token rows (what decode batches give) runs `act_round(x)`, one
//! `gate_up_fused` per group of items (hits, then fetches), and one `down_combine` — 3
//! launches instead of 5 (act_round, gate_up, act_round, down, combine), the same output
//! bit for bit. Many-token items (prefill) keep the unfused pass.
//!
//! `gate_up_fused` rounds the SwiGLU products as `act_round` would: bf16 as it stores
//! them, Q8_0 / Q8_K blocks by the last gate_up block to finish one, counted on per-launch
//! arrival counters ([`FusedKernels::counters`]) that the rounding block sets back to
//! zero, so every launch (and a graph replay) finds them zero.

use super::{drv, DeviceBuf, GpuExperts};
use crate::batch::BatchLayout;
use crate::dtype::{ExpertLayout, KernelType};
use crate::error::{CudaError, Result};
use crate::WARPS_PER_BLOCK;
use cudarc::driver::result as cu;
use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use std::collections::HashMap;

mod q8;

/// Token rows per item up to which a layer takes the fused pass: `TT` in kernels.cu (one
/// weight pass of gate_up's token tile; down_combine reads a row once per token, so
/// items of more tokens read their down rows more often than the tiled `down`).
pub(crate) const FUSED_MAX_ROWS: usize = 8;
/// Items of at most this many token rows take the fused pass in the engine. Measured on an
/// H200 (kernel-only, 8 experts, `hmoe-cuda-check --quick`, 2026-11-27): at 1 token fused
/// vs unfused is 36.9/36.5 us (q4_k_m), 35.3/38.1 (q8_0), 40.3/42.0 (q6_k); at 4 tokens
/// the fused pass is 20-25% slower and at 8 tokens 50% slower (down_combine reads each
/// expert's rows once per token instead of once per 8 tokens).
pub(crate) const FUSED_USE_MAX_ROWS: usize = 1;

/// Environment variable: `0` turns the fused decode pass off (every layer unfused).
pub const FUSE_ENV: &str = "HMOE_CUDA_FUSE";

/// Suffix of `gate_up_fused_<type>_<format>` for `KernelType::act_format` codes 1 ..= 3.
const FORMAT_SUFFIX: [&str; 3] = ["bf16", "q8_0", "q8_k"];

/// Values per rounding block of the finest format (Q8_0): counters per item are at most
/// `ffn / COUNTER_BLOCK`.
const COUNTER_BLOCK: usize = 32;

/// Counters allocated at start-up: 64 items at FFN 768 (a decode batch of 8 tokens with
/// distinct experts each); grown on demand.
const INITIAL_COUNTERS: usize = 64 * 768 / COUNTER_BLOCK;

/// The fused kernels and their arrival counters.
pub(super) struct FusedKernels {
    /// `gate_up_fused_<type>_<format>` by (gate/up type, act_format code 1 ..= 3).
    gate_up: HashMap<(KernelType, u32), CudaFunction>,
    /// `down_combine_<type>`.
    down_combine: HashMap<KernelType, CudaFunction>,
    /// Arrival counters (u32, zero between launches).
    counters: DeviceBuf,
    /// `HMOE_CUDA_FUSE` is not `0`.
    enabled: bool,
    /// The int8 (dp4a) kernels that replace the two above where they cover a layout.
    q8: q8::Q8Kernels,
}

/// The kernels of one fused pass: gate_up (the fused one, or the plain one where the
/// products are not rounded) and down_combine, and gate_up's rows per warp.
pub(super) struct FusedFns<'a> {
    pub gate_up: &'a CudaFunction,
    pub down_combine: &'a CudaFunction,
    pub rows_per_warp: u32,
}

/// A zeroed device buffer of `n` counters.
fn zeroed_counters(n: usize) -> Result<DeviceBuf> {
    let b = DeviceBuf::new(n * 4, "fused-pass arrival counters")?;
    // SAFETY: the buffer holds n * 4 bytes; nothing else uses it yet.
    unsafe { cu::memset_d8_sync(b.ptr, 0, n * 4) }
        .map_err(drv("cuMemsetD8(fused-pass arrival counters)"))?;
    Ok(b)
}

impl FusedKernels {
    pub(super) fn load(f: &dyn Fn(&str) -> Result<CudaFunction>) -> Result<Self> {
        let (mut gate_up, mut down_combine) = (HashMap::new(), HashMap::new());
        for t in KernelType::ALL {
            for (k, fmt) in FORMAT_SUFFIX.iter().enumerate() {
                let name = format!("gate_up_fused_{}_{fmt}", t.suffix());
                gate_up.insert((t, k as u32 + 1), f(&name)?);
            }
            down_combine.insert(t, f(&format!("down_combine_{}", t.suffix()))?);
        }
        Ok(Self {
            gate_up,
            down_combine,
            counters: zeroed_counters(INITIAL_COUNTERS)?,
            enabled: std::env::var(FUSE_ENV).map_or(true, |v| v.trim() != "0"),
            q8: q8::Q8Kernels::load(f),
        })
    }

    /// Whether a layer packed as `bl` takes the fused pass: only one-token items
    /// ([`FUSED_USE_MAX_ROWS`]), where it is no slower.
    pub(super) fn takes(&self, bl: &BatchLayout) -> bool {
        self.enabled && fits(bl) && bl.max_item_rows <= FUSED_USE_MAX_ROWS
    }

    /// Grows the counters (zeroed) to cover `n_items` items of `ffn` products, and the
    /// int8 pass's buffer of quantised products.
    pub(super) fn ensure_counters(&mut self, n_items: usize, ffn: usize) -> Result<()> {
        let n = n_items * ffn.div_ceil(COUNTER_BLOCK);
        if n * 4 > self.counters.len {
            self.counters = zeroed_counters(n)?;
        }
        self.q8.ensure(n_items, ffn)
    }

    /// Whether the fused pass of layout `l` runs the int8 kernels, which quantise x
    /// themselves: then `act_round(x)` before it is redundant (harmless: rounded x gives
    /// the same ints). Valid after [`FusedKernels::ensure_counters`] for the batch.
    pub(super) fn rounds_input_itself(&self, l: &ExpertLayout) -> bool {
        self.q8.covers(l)
    }

    /// Device addresses a captured pass holds: the arrival counters and the int8
    /// products' side buffer (0 while it has none).
    pub(super) fn buffer_ptrs(&self) -> [u64; 3] {
        let (q, d) = self.q8.ptrs().unwrap_or((0, 0));
        [self.counters.ptr, q, d]
    }
}

/// The gate_up kernel of the fused pass for `l`: `gate_up_fused_<type>_<format>`, or the
/// plain `gate_up_<type>` where the down weights take unrounded products (f32, f16).
pub(super) fn gate_up_name(l: &ExpertLayout) -> String {
    match l.down.act_format().0 {
        0 => format!("gate_up_{}", l.gate_up.suffix()),
        f => format!(
            "gate_up_fused_{}_{}",
            l.gate_up.suffix(),
            FORMAT_SUFFIX[f as usize - 1]
        ),
    }
}

/// Every item of the batch serves at most [`FUSED_MAX_ROWS`] token rows.
pub(crate) fn fits(bl: &BatchLayout) -> bool {
    bl.max_item_rows <= FUSED_MAX_ROWS
}

impl GpuExperts {
    /// The backend's fused kernels for `l`.
    pub(super) fn fused_fns(&self, l: &ExpertLayout) -> Result<FusedFns<'_>> {
        let (fmt, _) = l.down.act_format();
        let gate_up = if fmt == 0 {
            self.kernels.get(&l.gate_up).map(|k| &k.gate_up)
        } else {
            self.fused.gate_up.get(&(l.gate_up, fmt))
        };
        Ok(FusedFns {
            gate_up: gate_up.ok_or(CudaError::UnsupportedType(l.gate_up.ggml()))?,
            down_combine: self
                .fused
                .down_combine
                .get(&l.down)
                .ok_or(CudaError::UnsupportedType(l.down.ggml()))?,
            rows_per_warp: super::EXPERT_ROWS_PER_WARP.0,
        })
    }

    /// `gate_up_fused` of `n` items at `items` (their act rows: the pairs the items name);
    /// the counters must cover `n` items ([`FusedKernels::ensure_counters`]). With the
    /// backend's own kernels (`fused_fns`) for a layout the int8 pass covers, `gate_up_q8`
    /// (q8.rs).
    pub(super) fn launch_gate_up_fused(
        &self,
        l: &ExpertLayout,
        fns: &FusedFns<'_>,
        (items, rows, n): (u64, u64, u32),
    ) -> Result<()> {
        if self.try_gate_up_q8(l, fns, (items, rows, n))? {
            return Ok(());
        }
        let (fmt, block) = l.down.act_format();
        if !l.ffn.is_multiple_of(block) {
            return Err(CudaError::InvalidBatch(format!(
                "products {} wide are not whole {block}-value blocks for {}",
                l.ffn,
                l.down.suffix()
            )));
        }
        let (hidden, ffn) = (l.hidden as u32, l.ffn as u32);
        let (x, act, cnt) = (self.x_dev.ptr, self.act_dev.ptr, self.fused.counters.ptr);
        let cfg = LaunchConfig {
            grid_dim: (ffn.div_ceil(WARPS_PER_BLOCK * fns.rows_per_warp), n, 1),
            block_dim: (32 * WARPS_PER_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.compute.launch_builder(fns.gate_up);
        b.arg(&items)
            .arg(&rows)
            .arg(&x)
            .arg(&act)
            .arg(&hidden)
            .arg(&ffn);
        if fmt != 0 {
            b.arg(&cnt);
        }
        // SAFETY: argument lists match gate_up_fused_* (with the counters) and gate_up_*
        // (without) in the kernel source; the index tables, buffers and counters were
        // sized for this batch.
        unsafe { b.launch(cfg) }
            .map(|_| ())
            .map_err(|e| drv(format!("launch gate_up_fused ({})", l.gate_up.suffix()))(e))
    }

    /// `down_combine` of the whole batch packed as `bl` at `meta` into `out_dev` (or
    /// `pass_out` when set: the device-routed pass's own output)
    /// (`down_combine_q8` where `gate_up_q8` ran, see `launch_gate_up_fused`).
    pub(super) fn launch_down_combine(
        &self,
        l: &ExpertLayout,
        fns: &FusedFns<'_>,
        meta: u64,
        bl: &BatchLayout,
    ) -> Result<()> {
        if self.try_down_combine_q8(l, fns, meta, bl)? {
            return Ok(());
        }
        let (hidden, ffn) = (l.hidden as u32, l.ffn as u32);
        let (td, ts, tp, wts) = (
            meta + bl.tok_down as u64,
            meta + bl.tok_start as u64,
            meta + bl.tok_pairs as u64,
            meta + bl.weights as u64,
        );
        let (act, out) = (self.act_dev.ptr, self.pass_out.unwrap_or(self.out_dev.ptr));
        let cfg = LaunchConfig {
            grid_dim: (hidden, bl.n_tokens as u32, 1),
            block_dim: (32 * WARPS_PER_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: argument types match down_combine_* in fused.cu; the index tables at
        // `meta` and the buffers were sized for this batch.
        unsafe {
            self.compute
                .launch_builder(fns.down_combine)
                .arg(&td)
                .arg(&ts)
                .arg(&tp)
                .arg(&wts)
                .arg(&act)
                .arg(&out)
                .arg(&hidden)
                .arg(&ffn)
                .launch(cfg)
        }
        .map(|_| ())
        .map_err(|e| drv(format!("launch down_combine ({})", l.down.suffix()))(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{pack, BatchItem};
    use crate::KERNEL_SOURCE;

    #[test]
    fn the_row_limit_is_the_kernels_token_tile() {
        let tt = KERNEL_SOURCE.lines().find_map(|l| {
            l.strip_prefix("#define TT ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        });
        assert_eq!(tt, Some(FUSED_MAX_ROWS));
    }

    #[test]
    fn decode_batches_fit_and_prefill_batches_do_not() {
        let rows: Vec<u32> = (0..9).collect();
        let w = [1.0f32; 9];
        let item = |n: usize| BatchItem {
            gate: 0,
            up: 0,
            down: 0,
            rows: &rows[..n],
            weights: &w[..n],
            rank: 0,
        };
        let mut buf = Vec::new();
        assert!(fits(&pack(&[item(1), item(8)], 9, &mut buf).unwrap()));
        assert!(!fits(&pack(&[item(1), item(9)], 9, &mut buf).unwrap()));
    }

    /// NVRTC (sm_90) compiles every fused kernel the backend loads (needs libnvrtc on
    /// LD_LIBRARY_PATH, as `gpu::tests::kernels_compile_with_nvrtc`).
    #[test]
    fn fused_kernels_compile_with_nvrtc() {
        let ptx = match super::super::compile_kernels((9, 0)) {
            Ok(p) => p,
            Err(CudaError::NoNvrtc) => {
                panic!("libnvrtc not found: set LD_LIBRARY_PATH to the CUDA 13 libraries")
            }
            Err(e) => panic!("{e}"),
        };
        for t in KernelType::ALL {
            for f in FORMAT_SUFFIX {
                let name = format!(".entry gate_up_fused_{}_{f}(", t.suffix());
                assert!(ptx.contains(&name), "{name}");
            }
            let name = format!(".entry down_combine_{}(", t.suffix());
            assert!(ptx.contains(&name), "{name}");
        }
    }
}
