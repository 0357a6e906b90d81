//! CPU backend of the engine: a persistent thread pool sized to the physical cores
//! and the fused, quantised MoE expert executor ([`run_experts`]) with its plain
//! reference ([`reference_experts`]) and a calibration of its cost
//! ([`calibrate_cpu`]) for the scheduler's cost model.
#![deny(missing_docs)]

pub mod amx;
mod calib;
mod error;
mod experts;
mod experts_gemm;
mod pool;
mod reference;
mod shared;
#[cfg(test)]
mod tests;
pub mod topology;

pub use calib::{calibrate_cpu, random_expert, CpuTiming, RandomExpert};
pub use error::CpuError;
pub use experts::{
    gemm_min_tokens, run_experts, run_experts_beside, ExpertScratch, ExpertTask, MatView,
    GEMM_MIN_TOKENS,
};
pub use hmoe_quant::Isa;
pub use pool::{CpuPool, PoolConfig};
pub use reference::{reference_experts, RefActivations};

/// Revision of the CPU kernels' performance: bumped whenever their speed changes
/// enough to invalidate cached calibrations (2: tiled GEMM path for ≥ 4 tokens; 3: GFNI
/// Q4_K/Q6_K kernels and the AMX-INT8 Q8_0 prefill GEMM).
/// Calibration caches should include it in their key.
pub const KERNEL_REVISION: u32 = 3;
