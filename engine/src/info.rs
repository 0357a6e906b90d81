//! What a model file is, read from its metadata alone (no weights loaded): for
//! `hmoe info`, the app's model library and "fits / won't fit" verdicts.

use crate::error::Result;
use crate::model::Qwen3MoeConfig;
use hmoe_gguf::GgufFile;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// A model's identity, shape and sizes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelInfo {
    /// `general.name`, or the file name.
    pub name: String,
    /// `general.architecture`.
    pub architecture: String,
    /// Total bytes of all parts of the file.
    pub file_bytes: u64,
    /// The dominant weight type of the experts (`q4_K`, `q8_0`, …).
    pub quant: String,
    /// Bytes per tensor type.
    pub bytes_by_type: BTreeMap<String, u64>,
    /// Hyper-parameters.
    pub config: Qwen3MoeConfig,
    /// Bytes of all routed experts.
    pub expert_bytes_total: u64,
    /// Bytes of one expert (gate + up + down) of layer 0.
    pub expert_bytes: u64,
    /// Bytes of everything that is not a routed expert.
    pub dense_bytes: u64,
    /// KV-cache bytes per token of context (f32 keys and values).
    pub kv_bytes_per_token: u64,
}

impl ModelInfo {
    /// Reads the info of an opened file.
    pub fn from_file(file: &GgufFile, fallback_name: &str) -> Result<Self> {
        let config = Qwen3MoeConfig::from_gguf(file)?;
        let mut bytes_by_type = BTreeMap::new();
        let mut expert_by_type: BTreeMap<String, u64> = BTreeMap::new();
        let (mut expert_total, mut dense) = (0u64, 0u64);
        for t in file.tensors() {
            *bytes_by_type.entry(t.dtype.to_string()).or_insert(0) += t.n_bytes;
            if t.name.contains("_exps.") {
                expert_total += t.n_bytes;
                *expert_by_type.entry(t.dtype.to_string()).or_insert(0) += t.n_bytes;
            } else {
                dense += t.n_bytes;
            }
        }
        let quant = expert_by_type
            .iter()
            .max_by_key(|(_, b)| **b)
            .map(|(t, _)| t.clone())
            .unwrap_or_else(|| "none".into());
        let expert_bytes = ["gate", "up", "down"]
            .iter()
            .filter_map(|m| file.tensor(&format!("blk.0.ffn_{m}_exps.weight")))
            .map(|t| t.n_bytes / config.n_experts as u64)
            .sum();
        let name = file
            .get("general.name")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| fallback_name.to_string());
        let kv_bytes_per_token =
            (2 * config.n_layers * config.n_kv_heads * config.head_dim * 4) as u64;
        Ok(Self {
            name,
            architecture: file.get_str("general.architecture")?.to_string(),
            file_bytes: file.file_size_total(),
            quant,
            bytes_by_type,
            config,
            expert_bytes_total: expert_total,
            expert_bytes,
            dense_bytes: dense,
            kv_bytes_per_token,
        })
    }
}

/// Reads a model's info from its file(s) without loading weights.
pub fn inspect_model(path: &Path) -> Result<ModelInfo> {
    let file = GgufFile::open(path)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    ModelInfo::from_file(&file, &stem)
}
