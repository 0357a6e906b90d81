//! Model shapes: expert keys, quantisation types and the byte sizes the cost model needs.

use serde::{Deserialize, Serialize};

use crate::error::{Result, SchedError};

/// One expert of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExpertKey {
    /// Layer index.
    pub layer: u16,
    /// Expert index inside the layer.
    pub expert: u16,
}

impl ExpertKey {
    /// A key.
    pub fn new(layer: u16, expert: u16) -> Self {
        Self { layer, expert }
    }
}

/// Weight storage types the cost model distinguishes (GGUF names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[allow(non_camel_case_types)]
pub enum QuantType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    BF16,
    /// 8-bit, blocks of 32 with an f16 scale: 34 bytes per 32 weights.
    Q8_0,
    /// 4-bit k-quant: 144 bytes per 256 weights.
    Q4_K,
    /// 5-bit k-quant: 176 bytes per 256 weights.
    Q5_K,
    /// 6-bit k-quant: 210 bytes per 256 weights.
    Q6_K,
}

impl QuantType {
    /// All types, in a fixed order (the cost model's parameter order).
    pub const ALL: [QuantType; 7] = [
        QuantType::F32,
        QuantType::F16,
        QuantType::BF16,
        QuantType::Q8_0,
        QuantType::Q4_K,
        QuantType::Q5_K,
        QuantType::Q6_K,
    ];

    /// (bytes per block, weights per block).
    pub fn block(self) -> (u64, u64) {
        match self {
            QuantType::F32 => (4, 1),
            QuantType::F16 | QuantType::BF16 => (2, 1),
            QuantType::Q8_0 => (34, 32),
            QuantType::Q4_K => (144, 256),
            QuantType::Q5_K => (176, 256),
            QuantType::Q6_K => (210, 256),
        }
    }

    /// Bytes to store `n_weights` weights (rounded up to whole blocks).
    pub fn bytes_for(self, n_weights: u64) -> u64 {
        let (b, w) = self.block();
        n_weights.div_ceil(w) * b
    }

    /// Position in [`QuantType::ALL`].
    pub fn index(self) -> usize {
        match self {
            QuantType::F32 => 0,
            QuantType::F16 => 1,
            QuantType::BF16 => 2,
            QuantType::Q8_0 => 3,
            QuantType::Q4_K => 4,
            QuantType::Q5_K => 5,
            QuantType::Q6_K => 6,
        }
    }
}

/// The work of one expert: bytes per storage type (gate, up and down may differ).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ExpertWork {
    /// (type, bytes) with each type at most once.
    pub parts: Vec<(QuantType, u64)>,
}

impl ExpertWork {
    /// Adds `bytes` of type `q`, merging with an existing entry of that type.
    pub fn add(&mut self, q: QuantType, bytes: u64) {
        match self.parts.iter_mut().find(|(t, _)| *t == q) {
            Some((_, b)) => *b += bytes,
            None => self.parts.push((q, bytes)),
        }
    }

    /// Total bytes.
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|(_, b)| b).sum()
    }
}

/// Storage types of the three matrices of an expert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpertQuant {
    /// ffn_gate_exps.
    pub gate: QuantType,
    /// ffn_up_exps.
    pub up: QuantType,
    /// ffn_down_exps.
    pub down: QuantType,
}

/// What the scheduler needs to know about a MoE model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelShape {
    /// Name, e.g. `qwen3-30b-a3b:q4_k_m`.
    pub name: String,
    /// MoE layers.
    pub n_layers: u16,
    /// Experts per layer.
    pub n_experts: u16,
    /// Experts selected per token.
    pub top_k: u16,
    /// Model width.
    pub hidden: u32,
    /// Expert FFN width.
    pub expert_ffn: u32,
    /// Matrix storage types of every expert.
    pub expert_quant: ExpertQuant,
    /// Bytes of everything that is not a routed expert (attention, embeddings, routers, norms).
    pub dense_bytes: u64,
}

/// Non-expert parameter counts of Qwen3-30B-A3B, by role (used for `dense_bytes`).
mod qwen3_30b {
    /// Token embedding 151936 × 2048.
    pub const EMBED: u64 = 151_936 * 2048;
    /// Output head (untied) 151936 × 2048.
    pub const OUTPUT: u64 = 151_936 * 2048;
    /// Attention per layer: q 2048×4096, k and v 2048×512, o 4096×2048.
    pub const ATTN_PER_LAYER: u64 = 2048 * 4096 * 2 + 2048 * 512 * 2;
    /// Router per layer: 128 × 2048, stored F32 in llama.cpp quantisations.
    pub const ROUTER_PER_LAYER: u64 = 128 * 2048;
    /// Layers.
    pub const LAYERS: u64 = 48;
}

impl ModelShape {
    /// Known presets: `qwen3-30b-a3b:q4_k_m`, `qwen3-30b-a3b:q8_0`, `qwen3-30b-a3b:bf16`.
    pub fn preset(name: &str) -> Result<Self> {
        use qwen3_30b as q;
        use QuantType::*;
        let lower = name.to_ascii_lowercase();
        // Q4_K_M: llama.cpp keeps gate/up (and most attention) in Q4_K and bumps
        // ffn_down and attn_v to Q6_K; the output head is Q6_K.
        let (quant, dense) = match lower.as_str() {
            "qwen3-30b-a3b:q4_k_m" => (
                ExpertQuant {
                    gate: Q4_K,
                    up: Q4_K,
                    down: Q6_K,
                },
                Q4_K.bytes_for(q::EMBED)
                    + Q6_K.bytes_for(q::OUTPUT)
                    + q::LAYERS
                        * (Q4_K.bytes_for(q::ATTN_PER_LAYER - 2048 * 512)
                            + Q6_K.bytes_for(2048 * 512)
                            + F32.bytes_for(q::ROUTER_PER_LAYER)),
            ),
            "qwen3-30b-a3b:q8_0" => (
                ExpertQuant {
                    gate: Q8_0,
                    up: Q8_0,
                    down: Q8_0,
                },
                Q8_0.bytes_for(q::EMBED + q::OUTPUT + q::LAYERS * q::ATTN_PER_LAYER)
                    + q::LAYERS * F32.bytes_for(q::ROUTER_PER_LAYER),
            ),
            "qwen3-30b-a3b:bf16" => (
                ExpertQuant {
                    gate: BF16,
                    up: BF16,
                    down: BF16,
                },
                BF16.bytes_for(q::EMBED + q::OUTPUT + q::LAYERS * q::ATTN_PER_LAYER)
                    + q::LAYERS * F32.bytes_for(q::ROUTER_PER_LAYER),
            ),
            _ => return Err(SchedError::UnknownPreset(name.to_string())),
        };
        Ok(Self {
            name: lower,
            n_layers: 48,
            n_experts: 128,
            top_k: 8,
            hidden: 2048,
            expert_ffn: 768,
            expert_quant: quant,
            dense_bytes: dense,
        })
    }

    /// Weights of one expert matrix (hidden × expert_ffn).
    pub fn matrix_weights(&self) -> u64 {
        self.hidden as u64 * self.expert_ffn as u64
    }

    /// Bytes per type of one expert.
    pub fn expert_work(&self) -> ExpertWork {
        let w = self.matrix_weights();
        let mut work = ExpertWork::default();
        for q in [
            self.expert_quant.gate,
            self.expert_quant.up,
            self.expert_quant.down,
        ] {
            work.add(q, q.bytes_for(w));
        }
        work
    }

    /// Bytes of one expert (all three matrices); also the cache slot size.
    pub fn expert_bytes(&self) -> u64 {
        self.expert_work().bytes()
    }

    /// Experts in the whole model.
    pub fn total_experts(&self) -> usize {
        self.n_layers as usize * self.n_experts as usize
    }

    /// Dense index of a key: `layer * n_experts + expert`.
    pub fn flat(&self, key: ExpertKey) -> usize {
        key.layer as usize * self.n_experts as usize + key.expert as usize
    }

    /// Inverse of [`ModelShape::flat`].
    pub fn key_of(&self, flat: usize) -> ExpertKey {
        let n = self.n_experts as usize;
        ExpertKey::new((flat / n) as u16, (flat % n) as u16)
    }

    /// A small shape for tests: `n_layers` layers of `n_experts` Q8_0 experts of 64×32.
    pub fn tiny(n_layers: u16, n_experts: u16, top_k: u16) -> Self {
        Self {
            name: format!("tiny-{n_layers}x{n_experts}k{top_k}"),
            n_layers,
            n_experts,
            top_k,
            hidden: 64,
            expert_ffn: 32,
            expert_quant: ExpertQuant {
                gate: QuantType::Q8_0,
                up: QuantType::Q8_0,
                down: QuantType::Q8_0,
            },
            dense_bytes: 0,
        }
    }
}

/// Parses `8GiB`, `512MiB`, `1.5GB`, `123456` (bytes).
pub fn parse_bytes(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| SchedError::BadSize(s.to_string()))?;
    let mul = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kib" | "k" => 1024.0,
        "mib" | "m" => 1024.0 * 1024.0,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        _ => return Err(SchedError::BadSize(s.to_string())),
    };
    if !(v.is_finite() && v >= 0.0) {
        return Err(SchedError::BadSize(s.to_string()));
    }
    Ok((v * mul).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen3_expert_sizes_match_block_arithmetic() {
        // 2048 × 768 = 1 572 864 weights per matrix.
        let q8 = ModelShape::preset("qwen3-30b-a3b:q8_0").unwrap();
        assert_eq!(q8.expert_bytes(), 3 * 1_572_864 / 32 * 34);
        let q4 = ModelShape::preset("qwen3-30b-a3b:q4_k_m").unwrap();
        assert_eq!(
            q4.expert_bytes(),
            2 * 1_572_864 / 256 * 144 + 1_572_864 / 256 * 210
        );
        assert_eq!(q4.expert_work().parts.len(), 2);
        let bf = ModelShape::preset("qwen3-30b-a3b:bf16").unwrap();
        assert_eq!(bf.expert_bytes(), 3 * 1_572_864 * 2);
        assert_eq!(q8.total_experts(), 6144);
        // Dense parts: ~1.5 B parameters.
        assert!(q8.dense_bytes > 1_400_000_000 && q8.dense_bytes < 1_800_000_000);
    }

    #[test]
    fn flat_round_trips_and_sizes_parse() {
        let s = ModelShape::tiny(3, 5, 2);
        for f in 0..s.total_experts() {
            assert_eq!(s.flat(s.key_of(f)), f);
        }
        assert_eq!(parse_bytes("8GiB").unwrap(), 8 << 30);
        assert_eq!(parse_bytes("1.5 MB").unwrap(), 1_500_000);
        assert!(parse_bytes("eight").is_err());
        assert!(ModelShape::preset("llama").is_err());
    }
}
