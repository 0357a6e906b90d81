//! The async engine API that the CLI, the desktop app and the server call.
//!
//! One [`Engine`] owns a loaded model; it runs the forward pass on a dedicated
//! thread and streams [`GenerationEvent`]s back over a tokio channel.

use serde::{Deserialize, Serialize};

/// Sampling and stopping settings for one generation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    /// 1.0 disables top-p.
    pub top_p: f32,
    /// 0.0 disables min-p.
    pub min_p: f32,
    /// 1.0 disables the repetition penalty.
    pub repetition_penalty: f32,
    /// How many recent tokens the repetition penalty looks at.
    pub repetition_window: usize,
    /// Random seed; the same seed gives the same text.
    pub seed: u64,
    /// Maximum new tokens.
    pub max_tokens: usize,
    /// Extra stop strings (EOS always stops).
    pub stop: Vec<String>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.7,
            top_k: 20,
            top_p: 0.8,
            min_p: 0.0,
            repetition_penalty: 1.0,
            repetition_window: 64,
            seed: 0,
            max_tokens: 512,
            stop: Vec::new(),
        }
    }
}

/// A chat message for the model's chat template.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced an end-of-sequence token.
    Stop,
    /// A stop string matched.
    StopString,
    /// `max_tokens` was reached.
    Length,
    /// The caller cancelled.
    Cancelled,
    /// The context window is full.
    ContextFull,
}

/// Timings and counts of one finished generation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GenerationStats {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Seconds from request to the first generated token.
    pub time_to_first_token_s: f64,
    /// Prompt tokens per second.
    pub prefill_tok_s: f64,
    /// Generated tokens per second (after the first).
    pub decode_tok_s: f64,
}

/// One event of a generation stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GenerationEvent {
    /// New text (always complete UTF-8) and the token ids that produced it.
    Text {
        /// The decoded text piece.
        text: String,
        /// Token ids since the previous event.
        tokens: Vec<u32>,
    },
    /// The generation failed; no more events follow.
    Error {
        /// What went wrong.
        message: String,
    },
    /// The generation ended.
    Done {
        /// Why.
        finish_reason: FinishReason,
        /// Timings.
        stats: GenerationStats,
    },
}

/// Which compute device the engine should use.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// CUDA when built with it and a usable GPU is present, else the CPU (with a logged reason).
    #[default]
    Auto,
    /// CPU only.
    Cpu,
    /// CUDA; loading fails with a clear error when it is unavailable.
    Cuda,
}

/// Prompt tokens per prefill step unless set (`--prefill-chunk`). Measured on the H100
/// machine (Q4_K_M, `value`, 1024-token prompts, docs/BENCHMARKS.md session 9), 1024
/// instead of 512 prefilled faster in 7 of 8 pairs, by 7-20% (each step pays the staging
/// copies, the plan and the expert pass's fixed costs once, and a fetched expert serves
/// twice the tokens), but the decode that followed at 8 GiB was 9-19% slower in 3 of 4
/// pairs, and decode is what a chat waits on: 512 stays the default.
pub const DEFAULT_PREFILL_CHUNK: usize = 512;

/// Options fixed when a model is loaded (some can change later, see [`RuntimeOptions`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct EngineOptions {
    /// Compute device.
    pub device: DeviceChoice,
    /// Runtime knobs (threads, policy, budget, prefetch).
    pub runtime: RuntimeOptions,
    /// Cap on the context length (default: the model's).
    pub max_context: Option<usize>,
    /// Tokens processed per prefill chunk.
    pub prefill_chunk: usize,
    /// Compute every product in f32 on dequantised weights (slow; matches the
    /// reference implementation to float rounding). Off: activations are quantised
    /// to 8 bits for the integer dot products, as llama.cpp does.
    pub exact_math: bool,
    /// Cost-model calibration at load (cached per machine and model shape).
    pub calibration: crate::calibrate::Calibration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            device: DeviceChoice::Auto,
            runtime: RuntimeOptions::default(),
            max_context: None,
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
            exact_math: false,
            calibration: crate::calibrate::Calibration::Auto,
        }
    }
}

/// Knobs that take effect at the next generation without reloading the model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RuntimeOptions {
    /// CPU threads for expert kernels (0 = physical cores).
    pub threads: usize,
    /// Expert cache policy name (`cpu-only`, `static`, `static-hot`, `lru`, `lfu`, `mrs`, `value`).
    pub policy: String,
    /// VRAM budget for the expert cache in bytes (None = what the card has free).
    pub vram_budget_bytes: Option<u64>,
    /// Prefetch next-layer experts while the link is idle.
    pub prefetch: bool,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            threads: 0,
            policy: "value".to_string(),
            vram_budget_bytes: None,
            prefetch: true,
        }
    }
}

/// Stage of model loading, for progress bars.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LoadStage {
    /// Opening and validating the GGUF file(s).
    Opening,
    /// Building the tokenizer and chat template.
    Tokenizer,
    /// Preparing dense weights.
    Weights,
    /// Measuring the cost model on this machine.
    Calibrating,
    /// Done.
    Ready,
}

/// A load progress report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoadProgress {
    /// Current stage.
    pub stage: LoadStage,
    /// Units done in this stage.
    pub done: u64,
    /// Units in this stage.
    pub total: u64,
}

/// What a prompt is made of.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Prompt {
    /// Raw text, tokenized as is.
    Text {
        /// The text.
        text: String,
    },
    /// Token ids.
    Tokens {
        /// The ids.
        ids: Vec<u32>,
    },
    /// Messages rendered through the model's chat template.
    Chat {
        /// The conversation so far.
        messages: Vec<ChatMessage>,
        /// Qwen3's `enable_thinking` switch.
        enable_thinking: bool,
    },
}
