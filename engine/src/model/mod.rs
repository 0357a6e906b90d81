//! The model: configuration, weights and the forward pass. Model code computes; it
//! never chooses a device — expert placement is the [`crate::moe`] dispatcher's job.

pub mod attention;
pub mod config;
pub mod dense_exec;
pub mod kv_cache;
pub mod ops;
pub mod qwen3moe;
pub mod weights;

pub use config::Qwen3MoeConfig;
pub use dense_exec::{DenseDevice, DenseExec};
pub use kv_cache::KvCache;
pub use qwen3moe::{LogitsFor, Qwen3Moe, SeqStep};
