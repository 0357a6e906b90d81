//! Qwen3-MoE hyper-parameters read from GGUF metadata (`qwen3moe.*` keys).

use crate::error::{EngineError, Result};
use hmoe_gguf::GgufFile;
use serde::{Deserialize, Serialize};

/// The architecture name this engine runs.
pub const ARCH: &str = "qwen3moe";

/// Upper bounds that keep a crafted file from asking for absurd allocations.
const MAX_LAYERS: u64 = 1024;
const MAX_DIM: u64 = 1 << 20;
const MAX_EXPERTS: u64 = 4096;

/// Model hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qwen3MoeConfig {
    /// Transformer blocks.
    pub n_layers: usize,
    /// Residual stream width.
    pub hidden: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (GQA).
    pub n_kv_heads: usize,
    /// Per-head query/key width.
    pub head_dim: usize,
    /// Per-head value width.
    pub value_dim: usize,
    /// Routed experts per layer.
    pub n_experts: usize,
    /// Experts selected per token.
    pub top_k: usize,
    /// Expert FFN width.
    pub expert_ffn: usize,
    /// Trained context length.
    pub context_length: usize,
    /// RoPE base.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Renormalise the top-k router weights to sum to one.
    pub norm_topk_prob: bool,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
}

fn key(name: &str) -> String {
    format!("{ARCH}.{name}")
}

fn bounded(file: &GgufFile, name: &str, max: u64) -> Result<usize> {
    let k = key(name);
    let v = file.get_u64(&k)?;
    if v == 0 || v > max {
        return Err(EngineError::InvalidMetadata(format!(
            "`{k}` = {v} is outside 1..={max}"
        )));
    }
    Ok(v as usize)
}

impl Qwen3MoeConfig {
    /// Reads and validates the hyper-parameters of a `qwen3moe` GGUF file.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch = file.get_str("general.architecture")?;
        if arch != ARCH {
            return Err(EngineError::UnsupportedArchitecture(arch.to_string()));
        }
        let n_layers = bounded(file, "block_count", MAX_LAYERS)?;
        let hidden = bounded(file, "embedding_length", MAX_DIM)?;
        let n_heads = bounded(file, "attention.head_count", MAX_DIM)?;
        let n_kv_heads = bounded(file, "attention.head_count_kv", MAX_DIM)?;
        let head_dim = match file.get(&key("attention.key_length")) {
            Some(_) => bounded(file, "attention.key_length", MAX_DIM)?,
            None => hidden / n_heads,
        };
        let value_dim = match file.get(&key("attention.value_length")) {
            Some(_) => bounded(file, "attention.value_length", MAX_DIM)?,
            None => head_dim,
        };
        let n_experts = bounded(file, "expert_count", MAX_EXPERTS)?;
        let top_k = bounded(file, "expert_used_count", MAX_EXPERTS)?;
        let expert_ffn = bounded(file, "expert_feed_forward_length", MAX_DIM)?;
        let context_length = bounded(file, "context_length", 1 << 24)?;
        let rope_theta = match file.get(&key("rope.freq_base")) {
            Some(_) => file.get_f32(&key("rope.freq_base"))?,
            None => 10_000.0,
        };
        let rms_eps = file.get_f32(&key("attention.layer_norm_rms_epsilon"))?;
        // llama.cpp always renormalises for qwen3moe; honour the flag when a file sets it.
        let norm_topk_prob = match file.get(&key("expert_weights_norm")) {
            Some(_) => file.get_bool(&key("expert_weights_norm"))?,
            None => true,
        };
        let embd = file.require_tensor("token_embd.weight")?;
        if embd.dims.len() != 2 || embd.dims[0] != hidden as u64 {
            return Err(EngineError::ShapeMismatch {
                name: "token_embd.weight".into(),
                found: embd.dims.clone(),
                expected: vec![hidden as u64, 0],
            });
        }
        let vocab_size = embd.dims[1] as usize;
        if n_heads % n_kv_heads != 0 {
            return Err(EngineError::InvalidMetadata(format!(
                "head_count {n_heads} is not a multiple of head_count_kv {n_kv_heads}"
            )));
        }
        if value_dim != head_dim {
            return Err(EngineError::InvalidMetadata(format!(
                "value_length {value_dim} differs from key_length {head_dim}; not supported"
            )));
        }
        if head_dim % 2 != 0 {
            return Err(EngineError::InvalidMetadata(format!(
                "key_length {head_dim} is odd; rotary embedding needs an even head size"
            )));
        }
        if top_k > n_experts {
            return Err(EngineError::InvalidMetadata(format!(
                "expert_used_count {top_k} exceeds expert_count {n_experts}"
            )));
        }
        if !(rms_eps.is_finite() && rms_eps > 0.0 && rope_theta.is_finite() && rope_theta > 0.0) {
            return Err(EngineError::InvalidMetadata(format!(
                "rms epsilon {rms_eps} and rope base {rope_theta} must be positive and finite"
            )));
        }
        Ok(Self {
            n_layers,
            hidden,
            n_heads,
            n_kv_heads,
            head_dim,
            value_dim,
            n_experts,
            top_k,
            expert_ffn,
            context_length,
            rope_theta,
            rms_eps,
            norm_topk_prob,
            vocab_size,
        })
    }
}
