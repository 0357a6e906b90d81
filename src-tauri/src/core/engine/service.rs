//! The one engine service: owns the loaded model, loads in a background task, hands out
//! generations. Nothing here blocks the caller: loading runs on its own task and the forward
//! pass on the engine's threads.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use hmoe_engine::api::{EngineOptions, LoadProgress, Prompt, RuntimeOptions, SamplingParams};
use tokio::sync::Mutex;

use super::models::{EngineStatus, GenStream, LoadEvent, LoadedModelInfo};
use crate::core::error::{AppError, AppResult};

/// A model the engine has loaded.
pub trait LoadedModel: Send + Sync {
    /// What the UI shows.
    fn info(&self) -> LoadedModelInfo;
    /// Starts a generation.
    fn generate(&self, prompt: Prompt, params: SamplingParams) -> Result<GenStream, String>;
    /// Changes threads, policy, VRAM budget without reloading.
    fn set_runtime_options(&self, opts: RuntimeOptions) -> Result<(), String>;
    /// The scheduler behind the live panel (None: this model has none, e.g. a test double).
    fn sched(&self) -> Option<Arc<dyn crate::core::sched::source::SchedSource>> {
        None
    }
    /// The same engine as an OpenAI-server backend, so the local API server shares the
    /// chat's engine (one worker, one KV budget, batched with the app's own chats) instead
    /// of loading a second one. None: the server loads its own.
    fn chat_backend(&self) -> Option<Arc<dyn hmoe_server::ChatBackend>> {
        None
    }
}

/// Future returned by [`ModelLoader::load`].
pub type LoadFuture = Pin<Box<dyn Future<Output = Result<Arc<dyn LoadedModel>, String>> + Send>>;

/// Progress callback handed to the loader.
pub type ProgressFn = Arc<dyn Fn(LoadProgress) + Send + Sync>;

/// Loads models (the engine adapter in production).
pub trait ModelLoader: Send + Sync {
    /// Loads the GGUF at `path`.
    fn load(&self, path: PathBuf, opts: EngineOptions, progress: ProgressFn) -> LoadFuture;
}

struct Slot {
    status: EngineStatus,
    model: Option<Arc<dyn LoadedModel>>,
    /// Bumped by every load/unload so that a superseded load does not install its model.
    epoch: u64,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The engine service (cheap to clone).
#[derive(Clone)]
pub struct EngineService {
    loader: Arc<dyn ModelLoader>,
    slot: Arc<Mutex<Slot>>,
}

impl EngineService {
    /// A service with no model loaded.
    pub fn new(loader: Arc<dyn ModelLoader>) -> Self {
        let slot = Slot {
            status: EngineStatus::Idle,
            model: None,
            epoch: 0,
            task: None,
        };
        Self {
            loader,
            slot: Arc::new(Mutex::new(slot)),
        }
    }

    /// Current status.
    pub async fn status(&self) -> EngineStatus {
        self.slot.lock().await.status.clone()
    }

    /// The loaded model, if any.
    pub async fn current(&self) -> Option<Arc<dyn LoadedModel>> {
        self.slot.lock().await.model.clone()
    }

    /// Starts loading `path` in the background (replacing any model or load in progress) and
    /// returns at once; `on_event` gets progress and the outcome.
    pub async fn load(
        &self,
        path: PathBuf,
        opts: EngineOptions,
        on_event: Arc<dyn Fn(LoadEvent) + Send + Sync>,
    ) -> AppResult<()> {
        let mut slot = self.slot.lock().await;
        if let Some(t) = slot.task.take() {
            t.abort();
        }
        slot.epoch += 1;
        let epoch = slot.epoch;
        slot.model = None;
        let shown = path.display().to_string();
        slot.status = EngineStatus::Loading {
            path: shown.clone(),
            progress: None,
        };

        let me = self.clone();
        let ev = on_event.clone();
        let progress: ProgressFn = Arc::new(move |p: LoadProgress| {
            ev(LoadEvent::Progress {
                progress: p.clone(),
            });
            let me = me.clone();
            // Status updates must not block the engine's loading thread.
            tokio::spawn(async move {
                let mut s = me.slot.lock().await;
                if s.epoch == epoch {
                    if let EngineStatus::Loading { progress, .. } = &mut s.status {
                        *progress = Some(p);
                    }
                }
            });
        });
        let fut = self.loader.load(path, opts, progress);
        let me = self.clone();
        slot.task = Some(tokio::spawn(async move {
            let result = fut.await;
            let mut s = me.slot.lock().await;
            if s.epoch != epoch {
                return; // superseded by a newer load or an unload
            }
            s.task = None;
            match result {
                Ok(model) => {
                    let info = model.info();
                    s.model = Some(model);
                    s.status = EngineStatus::Ready {
                        model: info.clone(),
                    };
                    on_event(LoadEvent::Ready { model: info });
                }
                Err(error) => {
                    s.status = EngineStatus::Failed {
                        path: shown,
                        error: error.clone(),
                    };
                    on_event(LoadEvent::Failed { error });
                }
            }
        }));
        Ok(())
    }

    /// Drops the model (running generations keep their own handle until they end).
    pub async fn unload(&self) {
        let mut slot = self.slot.lock().await;
        if let Some(t) = slot.task.take() {
            t.abort();
        }
        slot.epoch += 1;
        slot.model = None;
        slot.status = EngineStatus::Idle;
    }

    /// Starts a generation on the loaded model.
    pub async fn generate(
        &self,
        prompt: Prompt,
        params: SamplingParams,
    ) -> AppResult<(GenStream, LoadedModelInfo)> {
        let model = self
            .current()
            .await
            .ok_or_else(|| AppError::State("no model is loaded".into()))?;
        let stream = model.generate(prompt, params).map_err(AppError::Engine)?;
        Ok((stream, model.info()))
    }

    /// Applies runtime options to the loaded model (no-op without one).
    pub async fn set_runtime_options(&self, opts: RuntimeOptions) -> AppResult<()> {
        if let Some(m) = self.current().await {
            m.set_runtime_options(opts).map_err(AppError::Engine)?;
        }
        Ok(())
    }
}
