//! ggml block formats (Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16, F32): reference
//! dequantisation and quantisation, and the dot-product kernels the CPU backend uses.
#![deny(missing_docs)]

pub use hmoe_gguf::GgmlDType;
