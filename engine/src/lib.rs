//! Hybrid MoE engine: loads Qwen3-MoE GGUF models and runs them with experts placed
//! per token and per layer on the CPU or the GPU.
//!
//! Data flows `gguf` → [`model`] (forward pass) → [`moe`] (expert execution) ↔
//! `sched` (cost model, placement, cache policy) → backends → telemetry.
#![deny(missing_docs)]

pub mod api;
pub mod backend;
pub mod bench;
pub mod bench_sweep;
pub mod calibrate;
pub mod error;
pub mod generate;
pub mod info;
pub mod model;
pub mod moe;
pub mod service;
pub mod synth;

pub use api::*;
pub use error::{EngineError, Result};
pub use info::{inspect_model, ModelInfo};
pub use service::{CancelHandle, Engine, Generation, ProgressFn};

pub use hmoe_gguf as gguf;
pub use hmoe_quant as quant;
pub use hmoe_sched as sched;
pub use hmoe_tokenizer as tokenizer;
