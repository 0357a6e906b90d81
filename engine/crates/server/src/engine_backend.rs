//! [`ChatBackend`] for the real engine, and [`run_serve`], the whole of `hmoe serve`.

use std::path::PathBuf;
use std::sync::Arc;

use hmoe_engine::api::{EngineOptions, GenerationEvent, LoadProgress, Prompt, SamplingParams};
use hmoe_engine::{Engine, EngineError, Generation};
use tokio::sync::mpsc;

use crate::backend::{BackendError, BackendGeneration, ChatBackend, GenerationStream};
use crate::config::ServeConfig;
use crate::server::{serve, ServeError};

/// The engine behind the server.
#[derive(Clone)]
pub struct EngineBackend {
    engine: Engine,
}

impl EngineBackend {
    /// Wraps a loaded engine.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

struct EngineStream(Generation);

impl GenerationStream for EngineStream {
    fn events(&mut self) -> &mut mpsc::Receiver<GenerationEvent> {
        &mut self.0.events
    }

    fn cancel(&mut self) {
        self.0.cancel();
    }
}

fn map_error(e: EngineError) -> BackendError {
    match e {
        EngineError::PromptTooLong { tokens, context } => BackendError::ContextOverflow {
            prompt_tokens: tokens,
            context_length: context,
        },
        EngineError::EmptyPrompt
        | EngineError::TokenOutOfRange { .. }
        | EngineError::Tokenizer(_) => BackendError::InvalidRequest(e.to_string()),
        EngineError::InvalidRequest(m) => BackendError::InvalidRequest(m),
        EngineError::Busy | EngineError::ShutDown => BackendError::Unavailable(e.to_string()),
        other => BackendError::Internal(other.to_string()),
    }
}

impl ChatBackend for EngineBackend {
    fn model_id(&self) -> String {
        self.engine.info().name.clone()
    }

    fn context_length(&self) -> usize {
        self.engine.context_length()
    }

    fn vocab_size(&self) -> usize {
        self.engine.info().config.vocab_size
    }

    fn tokenize_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>, BackendError> {
        self.engine.prompt_tokens(prompt).map_err(map_error)
    }

    fn generate(
        &self,
        prompt: Prompt,
        params: SamplingParams,
    ) -> Result<BackendGeneration, BackendError> {
        let generation = self.engine.generate(prompt, params).map_err(map_error)?;
        Ok(BackendGeneration::new(EngineStream(generation)))
    }
}

/// Loads the model and serves it until Ctrl-C: all of `hmoe serve`.
pub async fn run_serve(
    model_path: PathBuf,
    config: ServeConfig,
    options: EngineOptions,
) -> Result<(), ServeError> {
    // Check the server settings before spending time on loading the model.
    config.validate()?;
    let progress: Arc<dyn Fn(LoadProgress) + Send + Sync> = Arc::new(|p: LoadProgress| {
        tracing::debug!(stage = ?p.stage, done = p.done, total = p.total, "loading");
    });
    let engine = Engine::load(model_path.clone(), options, progress)
        .await
        .map_err(|e| ServeError::Load(format!("{}: {e}", model_path.display())))?;
    let backend = EngineBackend::new(engine);
    tracing::info!(
        model = %backend.model_id(),
        context = backend.context_length(),
        "model loaded"
    );
    serve(config, Arc::new(backend)).await
}
