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
    /// The generation ended.
    Done {
        /// Why.
        finish_reason: FinishReason,
        /// Timings.
        stats: GenerationStats,
    },
}
