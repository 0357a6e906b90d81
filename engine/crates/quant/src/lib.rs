//! ggml block formats (Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16, F32): reference
//! dequantisation and quantisation, and the dot-product kernels the CPU backend uses.
//!
//! The reference functions here reproduce ggml's byte layouts exactly (checked
//! against gguf-py's numpy dequantisers in `tests/gguf_py_crosscheck.rs`); the
//! quantisers follow ggml's reference search (`make_qkx2_quants`, `make_qx_quants`).
#![deny(missing_docs)]

mod act;
#[cfg(target_arch = "x86_64")]
mod act_simd;
mod dot;
mod error;
mod float;
mod kquant_search;
mod q4k;
mod q5k;
mod q6k;
mod q8_0;
mod reference;
#[cfg(test)]
mod testutil;

pub use act::{ActBuf, ActFormat, ActRow, ActWriter};
pub use dot::{DotKernel, GemmPath, Isa, GEMM_TILE_ROWS, GEMM_TILE_TOKENS, MAX_ROWS_PER_CALL};
pub use error::QuantError;
pub use hmoe_gguf::GgmlDType;
pub use reference::{dequantize, is_supported, quantize, row_bytes};

/// AMX detection and switches of the AMX-INT8 prefill kernel (`docs/notes/amx.md`).
pub mod amx {
    pub use crate::dot::{
        amx_cpuid, amx_env_enabled, amx_int8_usable, amx_min_tokens, amx_status, set_amx_enabled,
        AmxStatus, GemmPath, AMX_MIN_TOKENS,
    };
}

/// Elements in one k-quant super-block.
pub const QK_K: usize = 256;
/// Elements in one Q8_0 block.
pub const QK8_0: usize = 32;
