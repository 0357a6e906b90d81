//! Errors of the CUDA backend. Each variant names the step that failed and why, so the
//! engine can say in one line why it runs on the CPU.

use hmoe_gguf::GgmlDType;
use thiserror::Error;

/// Why the CUDA backend could not start or an operation failed.
#[derive(Debug, Error)]
pub enum CudaError {
    /// This binary was built without the `cuda` feature.
    #[error("this build has no CUDA support (rebuild with `--features cuda`)")]
    NotBuilt,
    /// The driver library (`libcuda.so.1`) could not be loaded.
    #[error("the NVIDIA driver library (libcuda) was not found: no driver installed, or it is not on the library path")]
    NoDriver,
    /// NVRTC (`libnvrtc.so.13`) could not be loaded, so the kernels cannot be compiled.
    #[error("the NVRTC library (libnvrtc) was not found: add the CUDA libraries (e.g. /usr/local/cuda/lib64) to LD_LIBRARY_PATH, or point HMOE_CUDA_PTX at a prebuilt PTX file")]
    NoNvrtc,
    /// The driver loaded but reports no device.
    #[error("the NVIDIA driver reports no CUDA device")]
    NoDevice,
    /// The requested device ordinal does not exist.
    #[error("CUDA device {ordinal} does not exist ({count} device(s) present)")]
    BadOrdinal {
        /// Requested ordinal.
        ordinal: usize,
        /// Devices present.
        count: usize,
    },
    /// A driver call failed.
    #[error("CUDA driver call `{op}` failed: {detail}")]
    Driver {
        /// The operation (e.g. `cuMemAlloc(arena 16 GiB)`).
        op: String,
        /// The driver's error name/string.
        detail: String,
    },
    /// The kernels failed to compile with NVRTC.
    #[error("NVRTC could not compile the expert kernels: {0}")]
    Compile(String),
    /// Not even the smallest acceptable arena could be allocated.
    #[error("out of GPU memory: could not allocate an expert arena of at least {min_slots} slot(s) of {slot_bytes} bytes (tried down to {tried_bytes} bytes; {free_bytes} bytes free of {total_bytes})")]
    OutOfMemory {
        /// Smallest slot count that was acceptable.
        min_slots: usize,
        /// Bytes per slot.
        slot_bytes: usize,
        /// The last size tried.
        tried_bytes: usize,
        /// Free device memory reported by the driver.
        free_bytes: usize,
        /// Total device memory.
        total_bytes: usize,
    },
    /// The dense path's weights, scratch or a sequence's KV cache do not fit in VRAM.
    #[error("out of GPU memory for the dense path: {what} needs {bytes} bytes ({free_bytes} bytes free of {total_bytes})")]
    DenseOutOfMemory {
        /// What was being allocated (e.g. `weights`, `KV cache of sequence 3`).
        what: String,
        /// Bytes asked for.
        bytes: usize,
        /// Free device memory reported by the driver.
        free_bytes: usize,
        /// Total device memory.
        total_bytes: usize,
    },
    /// A weight type the GPU kernels do not implement.
    #[error("the GPU expert kernels do not support weight type {0} (supported: f32, f16, bf16, q8_0, q4_K, q5_K, q6_K)")]
    UnsupportedType(GgmlDType),
    /// Gate and up projections of one expert have different types (the fused kernel reads both).
    #[error("gate ({gate}) and up ({up}) projections have different weight types; the fused GPU kernel needs them equal")]
    MixedGateUp {
        /// Gate type.
        gate: GgmlDType,
        /// Up type.
        up: GgmlDType,
    },
    /// A shape or buffer size that does not fit the kernels' layout.
    #[error("invalid expert batch: {0}")]
    InvalidBatch(String),
    /// A slot index beyond the arena.
    #[error("slot {slot} is outside the arena ({n_slots} slots)")]
    BadSlot {
        /// The slot.
        slot: u32,
        /// Slots in the arena.
        n_slots: usize,
    },
    /// An expert is larger than a slot.
    #[error("expert of {bytes} bytes does not fit a slot of {slot_bytes} bytes")]
    ExpertTooLarge {
        /// Expert bytes.
        bytes: usize,
        /// Slot bytes.
        slot_bytes: usize,
    },
    /// A panic inside the CUDA bindings (e.g. a missing driver symbol) was caught.
    #[error("CUDA initialisation panicked: {0}")]
    Panicked(String),
}

/// Result alias of this crate.
pub type Result<T, E = CudaError> = std::result::Result<T, E>;
