//! The small interface the HTTP layer needs from an inference engine.
//!
//! The server is written against [`ChatBackend`] rather than `hmoe_engine::Engine`
//! directly so that the HTTP layer can be tested with a deterministic backend and so
//! that another engine could sit behind the same routes.

use hmoe_engine::api::{GenerationEvent, Prompt, SamplingParams};
use tokio::sync::mpsc;

/// Why a backend refused or failed a generation.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum BackendError {
    /// The request cannot be served as given (maps to HTTP 400).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The prompt does not fit the context window (HTTP 400).
    #[error("the prompt has {prompt_tokens} tokens but the context holds {context_length}")]
    ContextOverflow {
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// The model's context length.
        context_length: usize,
    },
    /// The engine cannot take more work now (HTTP 503).
    #[error("engine unavailable: {0}")]
    Unavailable(String),
    /// The engine failed (HTTP 500).
    #[error("engine error: {0}")]
    Internal(String),
}

/// A running generation as the backend hands it out.
pub trait GenerationStream: Send {
    /// The event channel; it ends after a `Done` event or when the engine stops.
    fn events(&mut self) -> &mut mpsc::Receiver<GenerationEvent>;
    /// Stops the generation now and frees its engine resources.
    fn cancel(&mut self);
}

/// A running generation; dropping it cancels the generation.
pub struct BackendGeneration {
    inner: Box<dyn GenerationStream>,
}

impl BackendGeneration {
    /// Wraps a backend's stream.
    pub fn new(stream: impl GenerationStream + 'static) -> Self {
        Self {
            inner: Box::new(stream),
        }
    }

    /// The next event, or `None` when the stream ended.
    pub async fn next_event(&mut self) -> Option<GenerationEvent> {
        self.inner.events().recv().await
    }

    /// Stops the generation.
    pub fn cancel(&mut self) {
        self.inner.cancel();
    }
}

impl Drop for BackendGeneration {
    fn drop(&mut self) {
        // A client that went away must not keep a decode slot busy.
        self.inner.cancel();
    }
}

/// What the server needs from an engine. Implementations must be cheap to call from
/// async code: `generate` only enqueues work and returns a stream.
pub trait ChatBackend: Send + Sync + 'static {
    /// The model name served at `/v1/models`.
    fn model_id(&self) -> String;
    /// Context window in tokens (prompt + completion).
    fn context_length(&self) -> usize;
    /// Vocabulary size (token ids in prompts must be below it).
    fn vocab_size(&self) -> usize;
    /// The prompt's token ids once rendered (chat template) and tokenized. The server
    /// checks their count against the limits, then passes them to `generate` as
    /// `Prompt::Tokens` so the prompt is tokenized once.
    fn tokenize_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>, BackendError>;
    /// Starts a generation.
    fn generate(
        &self,
        prompt: Prompt,
        params: SamplingParams,
    ) -> Result<BackendGeneration, BackendError>;
    /// Engine-side numbers for `/health` (batching, queue), if the engine has any.
    fn stats(&self) -> Option<serde_json::Value> {
        None
    }
}
