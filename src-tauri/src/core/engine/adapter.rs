//! The only file that touches `hmoe_engine::Engine`: adapts it to [`LoadedModel`] /
//! [`ModelLoader`] and reads GGUF headers for the library.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmoe_engine::api::{EngineOptions, Prompt, RuntimeOptions, SamplingParams};
use hmoe_engine::moe::stats::SchedSnapshot;
use hmoe_engine::sched::{ModelShape, StepTelemetry, Trace};
use tokio::sync::broadcast;

use super::models::{GenStream, LoadedModelInfo};
use super::service::{LoadFuture, LoadedModel, ModelLoader, ProgressFn};
use crate::core::library::models::ModelMeta;
use crate::core::sched::source::SchedSource;

/// Loads models with the real engine.
pub struct EngineLoader;

struct Loaded {
    engine: hmoe_engine::Engine,
    path: PathBuf,
}

impl LoadedModel for Loaded {
    fn info(&self) -> LoadedModelInfo {
        let i = self.engine.info();
        LoadedModelInfo {
            path: self.path.display().to_string(),
            name: i.name.clone(),
            architecture: i.architecture.clone(),
            quant: i.quant.clone(),
            context_length: self.engine.context_length() as u64,
        }
    }

    fn generate(&self, prompt: Prompt, params: SamplingParams) -> Result<GenStream, String> {
        let mut g = self
            .engine
            .generate(prompt, params)
            .map_err(|e| e.to_string())?;
        let handle = g.cancel_handle();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        // Forward events from a task that owns the Generation: dropping it would cancel.
        tokio::spawn(async move {
            while let Some(ev) = g.events.recv().await {
                if tx.send(ev).await.is_err() {
                    g.cancel();
                    break;
                }
            }
        });
        Ok(GenStream {
            events: rx,
            cancel: Box::new(move || handle.cancel()),
        })
    }

    fn set_runtime_options(&self, opts: RuntimeOptions) -> Result<(), String> {
        self.engine
            .set_runtime_options(opts)
            .map_err(|e| e.to_string())
    }

    fn sched(&self) -> Option<Arc<dyn SchedSource>> {
        Some(Arc::new(EngineSched(self.engine.clone())))
    }

    fn chat_backend(&self) -> Option<Arc<dyn hmoe_server::ChatBackend>> {
        Some(Arc::new(hmoe_server::EngineBackend::new(
            self.engine.clone(),
        )))
    }
}

/// The engine's scheduler for the live panel.
struct EngineSched(hmoe_engine::Engine);

impl SchedSource for EngineSched {
    fn name(&self) -> String {
        self.0.info().name.clone()
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<StepTelemetry>> {
        self.0.subscribe_telemetry()
    }

    fn snapshot(&self) -> Result<SchedSnapshot, String> {
        self.0.scheduler_snapshot().map_err(|e| e.to_string())
    }

    fn trace(&self) -> Result<Trace, String> {
        self.0.trace().map_err(|e| e.to_string())
    }

    fn shape(&self) -> ModelShape {
        self.0.model_shape().clone()
    }

    fn runtime(&self) -> RuntimeOptions {
        self.0.runtime_options()
    }

    fn set_runtime(&self, opts: RuntimeOptions) -> Result<(), String> {
        self.0.set_runtime_options(opts).map_err(|e| e.to_string())
    }
}

impl ModelLoader for EngineLoader {
    fn load(&self, path: PathBuf, opts: EngineOptions, progress: ProgressFn) -> LoadFuture {
        Box::pin(async move {
            let engine = hmoe_engine::Engine::load(path.clone(), opts, progress)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(Loaded { engine, path }) as Arc<dyn LoadedModel>)
        })
    }
}

/// Header facts of a GGUF file (no weights read).
pub fn inspect(path: &Path) -> Result<ModelMeta, String> {
    let i = hmoe_engine::inspect_model(path).map_err(|e| e.to_string())?;
    Ok(ModelMeta {
        architecture: i.architecture,
        quant: i.quant,
        n_layers: i.config.n_layers as u64,
        n_experts: i.config.n_experts as u64,
        top_k: i.config.top_k as u64,
        context_length: i.config.context_length as u64,
        expert_bytes: i.expert_bytes_total,
        dense_bytes: i.dense_bytes,
    })
}
