//! The engine's error type: every variant names the problem.

use thiserror::Error;

/// Errors from loading or running a model.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The GGUF file could not be read or is malformed.
    #[error("model file: {0}")]
    Gguf(#[from] hmoe_gguf::GgufError),
    /// A quantised block could not be decoded.
    #[error("quantised weights: {0}")]
    Quant(#[from] hmoe_quant::QuantError),
    /// Tokenizer or chat template failure.
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] hmoe_tokenizer::TokenizerError),
    /// The chat template failed to compile or render.
    #[error("chat template: {0}")]
    Template(#[from] hmoe_tokenizer::TemplateError),
    /// The file's architecture is not one this engine runs.
    #[error("unsupported architecture `{0}` (this engine runs `qwen3moe`)")]
    UnsupportedArchitecture(String),
    /// The metadata is inconsistent or out of range.
    #[error("invalid model metadata: {0}")]
    InvalidMetadata(String),
    /// A tensor is missing.
    #[error("tensor `{0}` is missing from the model file")]
    MissingTensor(String),
    /// A tensor's shape disagrees with the metadata.
    #[error("tensor `{name}` has shape {found:?}, the metadata implies {expected:?}")]
    ShapeMismatch {
        /// Tensor name.
        name: String,
        /// Shape in the file (ggml order).
        found: Vec<u64>,
        /// Shape implied by the metadata (ggml order).
        expected: Vec<u64>,
    },
    /// A tensor's element type cannot be computed with.
    #[error("tensor `{name}` has type {dtype}, which this engine cannot compute with (supported: f32, f16, bf16, q8_0, q4_K, q5_K, q6_K)")]
    UnsupportedTensorType {
        /// Tensor name.
        name: String,
        /// Its type.
        dtype: hmoe_gguf::GgmlDType,
    },
    /// The prompt is empty.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// The prompt does not fit the context window.
    #[error("the prompt has {tokens} tokens but the context window holds {context}")]
    PromptTooLong {
        /// Prompt tokens.
        tokens: usize,
        /// Context size.
        context: usize,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary (size {vocab})")]
    TokenOutOfRange {
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// Bad request parameters.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Tensor math failed (candle).
    #[error("tensor computation: {0}")]
    Compute(String),
    /// The requested device is not available.
    #[error("device unavailable: {0}")]
    DeviceUnavailable(String),
    /// Too many requests are waiting for the engine.
    #[error("the engine queue is full")]
    Busy,
    /// The engine thread is gone.
    #[error("the engine has shut down")]
    ShutDown,
    /// File system failure.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl From<candle_core::Error> for EngineError {
    fn from(e: candle_core::Error) -> Self {
        EngineError::Compute(e.to_string())
    }
}

/// Result alias for the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
