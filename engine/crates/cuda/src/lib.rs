//! CUDA expert backend of the hybrid MoE engine.
//!
//! - [`device`]: start-up that never panics: no feature, no driver, no device, no NVRTC
//!   or a failed init each give a [`CudaError`] naming the reason, so the engine runs on
//!   the CPU and says why.
//! - [`slots`]: the arena's slot table, kept in step with the scheduler's `ExpertCache`
//!   (pure logic, tested without a GPU).
//! - [`batch`]: a layer's GPU work packed into the kernels' index tables.
//! - `kernels.cu`: gate/up, down and combine kernels that read raw GGUF blocks
//!   (Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16, F32) straight from slot memory; compiled by NVRTC
//!   at start-up, and by g++ in the emulator test (`tests/emu.rs`).
//! - `dense.cu`: dense-path kernels (quantised linear, RMSNorm, NeoX RoPE, causal GQA
//!   attention, batched KV write and attention, residual add); emulator-tested
//!   (`tests/emu_dense.rs`) and checked on the device.
//! - `gemm.cu`: tiled (shared-memory) GEMM kernels for prefill: the expert pass for items
//!   of many tokens and `linear` for many tokens; emulator-tested (`tests/emu_gemm.rs`).
//! - `attend.cu`, `attend_tiled.cu`: the dense path's attention, split-context for decode
//!   and short calls, tiled (shared-memory K/V blocks per query tile, [`attend_tiled`])
//!   for prefill.
//! - [`dense_model`]: the dense path's shape, borrowed weights, sequence handles and
//!   spans; [`GpuDense`] (feature `cuda`) keeps every dense weight and the KV caches in
//!   VRAM and runs a layer's attention block in one upload, one stream, one download.
//! - [`GpuExperts`] (feature `cuda`): the VRAM arena, pinned staging, the copy stream
//!   with per-slot events, and the batched launches. Without the feature it is a stub
//!   whose constructor returns [`CudaError::NotBuilt`].
//! - [`verify`]: random batches and the CPU reference they are checked against.
#![deny(missing_docs)]

pub mod api;
pub mod arena;
pub mod attend_tiled;
pub mod batch;
pub mod dense_model;
pub mod dense_ref;
pub mod device;
pub mod dtype;
pub mod error;
pub mod pages;
pub mod slots;
pub mod verify;
pub mod verify_dense;

#[cfg(feature = "cuda")]
mod gpu;
#[cfg(not(feature = "cuda"))]
mod stub;
#[cfg(not(feature = "cuda"))]
mod stub_dense;

#[cfg(feature = "cuda")]
pub use gpu::{
    compile_kernels, GpuDense, GpuExperts, PendingLayer, ASSUME_FREE_ENV, FUSE_ENV, PTX_ENV,
    PTX_FALLBACK_ENV,
};
/// Device check and timing of the attention kernels (`hmoe-cuda-check attention`).
#[cfg(feature = "cuda")]
pub use gpu::{AttendBench, AttentionBench, BenchSeq, SplitRun, TiledRun};
#[cfg(not(feature = "cuda"))]
pub use stub::{GpuExperts, PendingLayer};
#[cfg(not(feature = "cuda"))]
pub use stub_dense::GpuDense;

pub use api::{
    DenseOnDevice, DeviceAddend, DeviceInput, GpuConfig, GpuItem, HostSource, LayerTimings,
    OverlapReport, RoutedChoice,
};
pub use dense_model::{DenseLayer, DenseMatrix, DenseSeq, DenseShape, DenseWeights, SeqSpan};
pub use device::{probe, DeviceInfo};
pub use dtype::{ExpertLayout, KernelType};
pub use error::{CudaError, Result};

/// Environment variable: `1` profiles the GPU dense path (a CUDA event after every launch;
/// `GpuDense::profile_report` gives the table).
pub const DENSE_PROFILE_ENV: &str = "HMOE_DENSE_PROFILE";

/// Environment variable: `0` launches the GPU dense path's decode calls kernel by kernel
/// instead of replaying captured CUDA graphs.
pub const GRAPHS_ENV: &str = "HMOE_CUDA_GRAPHS";

/// The kernel source (expert kernels, the dense-path kernels, the split and the tiled
/// attention, the tiled GEMM kernels), compiled by NVRTC at start-up.
pub const KERNEL_SOURCE: &str = concat!(
    include_str!("kernels.cu"),
    "\n",
    include_str!("fused.cu"),
    "\n",
    include_str!("fused_q8.cu"),
    "\n",
    include_str!("dense.cu"),
    "\n",
    include_str!("attend.cu"),
    "\n",
    include_str!("gemm.cu"),
    "\n",
    include_str!("gemm_mma.cu"),
    "\n",
    include_str!("attend_tiled.cu"),
    "\n",
    include_str!("route.cu")
);
/// The value of `#define <name> <v>` in [`KERNEL_SOURCE`] (the first one: the default of a
/// knob inside `#ifndef <name>`), for the tests that keep Rust launch constants in step
/// with the kernels.
#[cfg(test)]
pub(crate) fn kernel_define<T: std::str::FromStr>(name: &str) -> Option<T> {
    let key = format!("#define {name} ");
    KERNEL_SOURCE.lines().find_map(|l| {
        l.strip_prefix(&key)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Warps per block of the gate/up and down kernels (`WARPS` in kernels.cu).
pub const WARPS_PER_BLOCK: u32 = 8;
/// Threads per block of the combine kernel.
pub const COMBINE_THREADS: u32 = 128;
