//! The local OpenAI-compatible server (`hmoe serve` inside the app), started and stopped
//! from Settings. It serves the model loaded in the app through the app's own engine
//! (`start_with`: API requests batch with the app's chats on one worker); a model that
//! cannot lend its engine is loaded again over the same memory-mapped file (`start`).
//! Bound to 127.0.0.1 only (the API key is optional there, as for `hmoe serve`).

use std::path::Path;
use std::sync::Arc;

use hmoe_engine::api::{EngineOptions, LoadProgress};
use hmoe_engine::Engine;
use hmoe_server::{ChatBackend, EngineBackend, ServeConfig, ServerHandle};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::core::error::{AppError, AppResult};

/// What Settings shows about the server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ServerStatus {
    /// Serving now.
    pub running: bool,
    /// `http://127.0.0.1:PORT/v1` while running.
    pub url: Option<String>,
    /// Model name served at `/v1/models`.
    pub model: Option<String>,
    /// Whether clients must send the API key.
    pub api_key_required: bool,
}

struct Running {
    handle: ServerHandle,
    status: ServerStatus,
}

/// The server slot (cheap to share; one server at a time).
#[derive(Default)]
pub struct LocalServer {
    inner: Mutex<Option<Running>>,
}

impl LocalServer {
    /// Current status.
    pub async fn status(&self) -> ServerStatus {
        self.inner
            .lock()
            .await
            .as_ref()
            .map(|r| r.status.clone())
            .unwrap_or_default()
    }

    /// Loads `model` in a new engine and serves it on 127.0.0.1:`port` (0 picks a free
    /// port). Refused while a server runs.
    pub async fn start(
        &self,
        model: &Path,
        opts: EngineOptions,
        port: u16,
        api_key: Option<String>,
    ) -> AppResult<ServerStatus> {
        if self.inner.lock().await.is_some() {
            return Err(AppError::State("the server is already running".into()));
        }
        let progress: Arc<dyn Fn(LoadProgress) + Send + Sync> = Arc::new(|_| {});
        let engine = Engine::load(model.to_path_buf(), opts, progress)
            .await
            .map_err(|e| {
                AppError::Engine(format!("loading {} for the server: {e}", model.display()))
            })?;
        self.start_with(Arc::new(EngineBackend::new(engine)), port, api_key)
            .await
    }

    /// Serves `backend` (normally the app's loaded engine) on 127.0.0.1:`port`. Refused
    /// while a server runs.
    pub async fn start_with(
        &self,
        backend: Arc<dyn ChatBackend>,
        port: u16,
        api_key: Option<String>,
    ) -> AppResult<ServerStatus> {
        let mut slot = self.inner.lock().await;
        if slot.is_some() {
            return Err(AppError::State("the server is already running".into()));
        }
        let api_key = api_key
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty());
        let name = backend.model_id();
        let cfg = ServeConfig {
            host: "127.0.0.1".into(),
            port,
            api_key: api_key.clone(),
            ..ServeConfig::default()
        };
        let handle = hmoe_server::start(cfg, backend)
            .await
            .map_err(|e| AppError::State(format!("the server did not start: {e}")))?;
        let status = ServerStatus {
            running: true,
            url: Some(format!("{}/v1", handle.base_url())),
            model: Some(name),
            api_key_required: api_key.is_some(),
        };
        *slot = Some(Running {
            handle,
            status: status.clone(),
        });
        Ok(status)
    }

    /// Stops the server (open requests get a few seconds to finish).
    pub async fn stop(&self) -> ServerStatus {
        let running = self.inner.lock().await.take();
        if let Some(r) = running {
            if let Err(e) = r.handle.shutdown().await {
                tracing::warn!("stopping the local server: {e}");
            }
        }
        ServerStatus::default()
    }
}
