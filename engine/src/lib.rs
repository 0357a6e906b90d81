//! Hybrid MoE engine: loads Qwen3-MoE GGUF models and runs them with experts placed
//! per token and per layer on the CPU or the GPU.
//!
//! Data flows `gguf` → [`model`] (forward pass) → [`moe`] (expert execution) ↔
//! `sched` (cost model, placement, cache policy) → `backend` → telemetry.
#![deny(missing_docs)]

pub mod api;

pub use hmoe_gguf as gguf;
pub use hmoe_quant as quant;
pub use hmoe_sched as sched;
pub use hmoe_tokenizer as tokenizer;
