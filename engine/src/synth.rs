//! Synthetic models: random weights with the real shapes, metadata and tokenizer of a
//! preset, written as GGUF. They load and chat like the real model (the text is
//! noise), so tests, benchmarks and the app's demo need no download.
//!
//! Large tensors are filled from a pool of pre-quantised random blocks: each block
//! is a genuine quantisation of Gaussian noise, and a 17 GB file is written at disk
//! speed instead of quantising 30 B values.

use crate::error::{EngineError, Result};
use hmoe_gguf::{GgmlDType, GgufWriter, MetaValue, TensorDesc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use std::path::Path;

/// Shape of a synthetic model.
#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    /// Preset name.
    pub name: &'static str,
    /// Blocks.
    pub n_layers: usize,
    /// Residual width.
    pub hidden: usize,
    /// Query heads.
    pub n_heads: usize,
    /// KV heads.
    pub n_kv_heads: usize,
    /// Head width.
    pub head_dim: usize,
    /// Experts per layer.
    pub n_experts: usize,
    /// Experts per token.
    pub top_k: usize,
    /// Expert FFN width.
    pub expert_ffn: usize,
    /// Context length.
    pub context_length: usize,
}

/// The presets `hmoe synth` knows.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "tiny",
        n_layers: 4,
        hidden: 256,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 64,
        n_experts: 16,
        top_k: 4,
        expert_ffn: 256,
        context_length: 4096,
    },
    Preset {
        name: "qwen3-30b-a3b",
        n_layers: 48,
        hidden: 2048,
        n_heads: 32,
        n_kv_heads: 4,
        head_dim: 128,
        n_experts: 128,
        top_k: 8,
        expert_ffn: 768,
        context_length: 40960,
    },
];

/// Looks a preset up by name.
pub fn preset(name: &str) -> Result<Preset> {
    PRESETS
        .iter()
        .find(|p| p.name == name)
        .cloned()
        .ok_or_else(|| {
            let known: Vec<_> = PRESETS.iter().map(|p| p.name).collect();
            EngineError::InvalidRequest(format!(
                "unknown preset `{name}` (known: {})",
                known.join(", ")
            ))
        })
}

/// Weight-type recipes, named like llama.cpp's file types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipe {
    /// Everything f32.
    F32,
    /// Matrices bf16.
    Bf16,
    /// Matrices q8_0.
    Q8_0,
    /// llama.cpp's Q4_K_M mix: q4_K, with q6_K for `attn_v`, `ffn_down_exps` and the output head.
    Q4KM,
    /// Every matrix q4_K.
    Q4K,
    /// Every matrix q6_K.
    Q6K,
}

impl Recipe {
    /// Parses `f32`, `bf16`, `q8_0`, `q4_k_m`, `q4_k`, `q6_k`.
    pub fn parse(s: &str) -> Result<Recipe> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => Recipe::F32,
            "bf16" => Recipe::Bf16,
            "q8_0" => Recipe::Q8_0,
            "q4_k_m" => Recipe::Q4KM,
            "q4_k" => Recipe::Q4K,
            "q6_k" => Recipe::Q6K,
            other => {
                return Err(EngineError::InvalidRequest(format!(
                    "unknown weight type `{other}` (use f32, bf16, q8_0, q4_k_m, q4_k or q6_k)"
                )))
            }
        })
    }

    /// The type a matrix gets; `kind` is the llama.cpp tensor name without `blk.N.`.
    pub fn matrix_type(self, kind: &str) -> GgmlDType {
        match self {
            Recipe::F32 => GgmlDType::F32,
            Recipe::Bf16 => GgmlDType::BF16,
            Recipe::Q8_0 => GgmlDType::Q8_0,
            Recipe::Q4K => GgmlDType::Q4K,
            Recipe::Q6K => GgmlDType::Q6K,
            Recipe::Q4KM => match kind {
                "attn_v.weight" | "ffn_down_exps.weight" | "output.weight" => GgmlDType::Q6K,
                _ => GgmlDType::Q4K,
            },
        }
    }
}

/// What to write.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    /// Shape.
    pub preset: Preset,
    /// Weight types.
    pub recipe: Recipe,
    /// Random seed (same seed, same file).
    pub seed: u64,
    /// Keep only the first N layers.
    pub layers: Option<usize>,
}

/// How a tensor's values are drawn.
#[derive(Clone, Copy)]
enum Fill {
    /// Around 1 with small noise (norm weights).
    Norm,
    /// Gaussian with this standard deviation.
    Gauss(f32),
}

struct Planned {
    desc: TensorDesc,
    fill: Fill,
}

fn plan(p: &Preset, r: Recipe, n_layers: usize) -> Vec<Planned> {
    let (h, hd, ffn, e) = (
        p.hidden as u64,
        p.head_dim as u64,
        p.expert_ffn as u64,
        p.n_experts as u64,
    );
    let vocab = QWEN3_VOCAB as u64;
    let (q, kv) = (p.n_heads as u64 * hd, p.n_kv_heads as u64 * hd);
    let f32t = GgmlDType::F32;
    let mut v = Vec::new();
    let mut add = |name: String, dims: Vec<u64>, dtype, fill| {
        v.push(Planned {
            desc: TensorDesc::new(name, &dims, dtype),
            fill,
        })
    };
    let g = |fan_in: u64| Fill::Gauss(1.0 / (fan_in as f32).sqrt());
    add(
        "token_embd.weight".into(),
        vec![h, vocab],
        r.matrix_type("token_embd.weight"),
        Fill::Gauss(1.0),
    );
    for i in 0..n_layers {
        let n = |k: &str| format!("blk.{i}.{k}");
        add(n("attn_norm.weight"), vec![h], f32t, Fill::Norm);
        add(
            n("attn_q.weight"),
            vec![h, q],
            r.matrix_type("attn_q.weight"),
            g(h),
        );
        add(
            n("attn_k.weight"),
            vec![h, kv],
            r.matrix_type("attn_k.weight"),
            g(h),
        );
        add(
            n("attn_v.weight"),
            vec![h, kv],
            r.matrix_type("attn_v.weight"),
            g(h),
        );
        add(
            n("attn_output.weight"),
            vec![q, h],
            r.matrix_type("attn_output.weight"),
            g(q),
        );
        add(n("attn_q_norm.weight"), vec![hd], f32t, Fill::Norm);
        add(n("attn_k_norm.weight"), vec![hd], f32t, Fill::Norm);
        add(n("ffn_norm.weight"), vec![h], f32t, Fill::Norm);
        // A wider router spreads the routing over many experts, as trained models do.
        add(
            n("ffn_gate_inp.weight"),
            vec![h, e],
            f32t,
            Fill::Gauss(4.0 / (h as f32).sqrt()),
        );
        add(
            n("ffn_gate_exps.weight"),
            vec![h, ffn, e],
            r.matrix_type("ffn_gate_exps.weight"),
            g(h),
        );
        add(
            n("ffn_up_exps.weight"),
            vec![h, ffn, e],
            r.matrix_type("ffn_up_exps.weight"),
            g(h),
        );
        add(
            n("ffn_down_exps.weight"),
            vec![ffn, h, e],
            r.matrix_type("ffn_down_exps.weight"),
            g(ffn),
        );
    }
    add("output_norm.weight".into(), vec![h], f32t, Fill::Norm);
    add(
        "output.weight".into(),
        vec![h, vocab],
        r.matrix_type("output.weight"),
        g(h),
    );
    v
}

fn metadata(p: &Preset, n_layers: usize, recipe: Recipe) -> Result<Vec<(String, MetaValue)>> {
    let a = |k: &str| format!("qwen3moe.{k}");
    let u = |x: usize| MetaValue::U32(x as u32);
    let mut m = vec![
        (
            "general.architecture".to_string(),
            MetaValue::String("qwen3moe".into()),
        ),
        (
            "general.name".to_string(),
            MetaValue::String(format!("synthetic {} {:?}", p.name, recipe).to_lowercase()),
        ),
        (a("block_count"), u(n_layers)),
        (a("context_length"), u(p.context_length)),
        (a("embedding_length"), u(p.hidden)),
        (a("feed_forward_length"), u(p.expert_ffn * 8)),
        (a("attention.head_count"), u(p.n_heads)),
        (a("attention.head_count_kv"), u(p.n_kv_heads)),
        (a("attention.key_length"), u(p.head_dim)),
        (a("attention.value_length"), u(p.head_dim)),
        (a("rope.freq_base"), MetaValue::F32(1_000_000.0)),
        (a("attention.layer_norm_rms_epsilon"), MetaValue::F32(1e-6)),
        (a("expert_count"), u(p.n_experts)),
        (a("expert_used_count"), u(p.top_k)),
        (a("expert_feed_forward_length"), u(p.expert_ffn)),
    ];
    m.extend(qwen3_tokenizer_metadata()?);
    Ok(m)
}

/// Rows of Qwen3's embedding: the tokenizer's 151,669 tokens padded to a multiple of 128.
pub const QWEN3_VOCAB: usize = 151_936;
/// The real Qwen3 tokenizer, shipped with the engine (see `engine/assets/qwen3/README.md`).
pub const QWEN3_TOKENIZER_JSON: &[u8] = include_bytes!("../assets/qwen3/tokenizer.json");
/// Qwen3's tokenizer_config.json (special tokens, chat template).
pub const QWEN3_TOKENIZER_CONFIG: &[u8] = include_bytes!("../assets/qwen3/tokenizer_config.json");

/// GGUF `tokenizer.*` metadata for the real Qwen3 tokenizer, with the token list padded
/// to the embedding's row count the way llama.cpp's converter does (`[PADn]`, unused).
pub fn qwen3_tokenizer_metadata() -> Result<Vec<(String, MetaValue)>> {
    let opts = hmoe_tokenizer::GgufExportOptions {
        vocab_size: Some(QWEN3_VOCAB),
        ..Default::default()
    };
    Ok(hmoe_tokenizer::gguf_metadata_from_tokenizer_json_with(
        QWEN3_TOKENIZER_JSON,
        QWEN3_TOKENIZER_CONFIG,
        &opts,
    )?)
}

/// Elements per pooled chunk: one k-quant super-block, eight 32-element blocks.
const CHUNK: usize = 256;
/// Distinct random chunks per (type, scale): enough that no pattern shows in routing.
const POOL: usize = 2048;

struct Pool {
    chunk_bytes: usize,
    bytes: Vec<u8>,
}

fn encode(dtype: GgmlDType, values: &[f32], out: &mut [u8]) -> Result<()> {
    Ok(hmoe_quant::quantize(dtype, values, out)?)
}

impl Pool {
    fn new(dtype: GgmlDType, fill: Fill, rng: &mut StdRng) -> Result<Pool> {
        let chunk_bytes = dtype.bytes_for(CHUNK as u64).unwrap_or(0) as usize;
        let mut bytes = vec![0u8; chunk_bytes * POOL];
        let mut vals = vec![0f32; CHUNK];
        for c in bytes.chunks_exact_mut(chunk_bytes) {
            draw(fill, rng, &mut vals);
            encode(dtype, &vals, c)?;
        }
        Ok(Pool { chunk_bytes, bytes })
    }

    fn chunk(&self, i: usize) -> &[u8] {
        &self.bytes[i * self.chunk_bytes..(i + 1) * self.chunk_bytes]
    }
}

fn draw(fill: Fill, rng: &mut StdRng, out: &mut [f32]) {
    match fill {
        Fill::Norm => out
            .iter_mut()
            .for_each(|v| *v = 1.0 + (rng.random::<f32>() - 0.5) * 0.2),
        Fill::Gauss(std) => {
            let n = Normal::new(0.0f32, std)
                .unwrap_or_else(|_| Normal::new(0.0, 1.0).expect("unit normal"));
            out.iter_mut().for_each(|v| *v = n.sample(rng));
        }
    }
}

/// Writes a synthetic model to `out`; `progress(bytes_done, bytes_total)`.
pub fn write_synthetic(
    opts: &SynthOptions,
    out: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<()> {
    let p = &opts.preset;
    let n_layers = opts
        .layers
        .unwrap_or(p.n_layers)
        .clamp(1, p.n_layers.max(1));
    let planned = plan(p, opts.recipe, n_layers);
    let total: u64 = planned.iter().filter_map(|t| t.desc.n_bytes().ok()).sum();
    let meta = metadata(p, n_layers, opts.recipe)?;
    let descs = planned.iter().map(|t| t.desc.clone()).collect();
    let mut w = GgufWriter::create(out, meta, descs)?;
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut pools: Vec<((GgmlDType, u32), Pool)> = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(4 << 20);
    let mut done = 0u64;
    for t in &planned {
        let n = t.desc.dims.iter().product::<u64>() as usize;
        if !n.is_multiple_of(CHUNK) || matches!(t.fill, Fill::Norm) {
            // Small or odd-sized tensors: draw every value.
            let mut vals = vec![0f32; n];
            draw(t.fill, &mut rng, &mut vals);
            let mut bytes = vec![0u8; t.desc.n_bytes()? as usize];
            encode(t.desc.dtype, &vals, &mut bytes)?;
            w.write_tensor(&t.desc.name, &bytes)?;
            done += bytes.len() as u64;
            progress(done, total);
            continue;
        }
        let key = (
            t.desc.dtype,
            match t.fill {
                Fill::Gauss(s) => s.to_bits(),
                Fill::Norm => 0,
            },
        );
        let pool_idx = match pools.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                pools.push((key, Pool::new(t.desc.dtype, t.fill, &mut rng)?));
                pools.len() - 1
            }
        };
        let pool = &pools[pool_idx].1;
        let mut state = rng.random::<u64>() | 1;
        for _ in 0..n / CHUNK {
            // xorshift64*: fast and plenty random for choosing pool entries.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
            buf.extend_from_slice(pool.chunk((r >> 33) as usize % POOL));
            if buf.len() >= 4 << 20 {
                w.write_chunk(&buf)?;
                done += buf.len() as u64;
                buf.clear();
                progress(done, total);
            }
        }
        if !buf.is_empty() {
            w.write_chunk(&buf)?;
            done += buf.len() as u64;
            buf.clear();
            progress(done, total);
        }
    }
    w.finish()?;
    Ok(())
}
