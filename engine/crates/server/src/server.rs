//! Router assembly, binding and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::admission::Admission;
use crate::backend::ChatBackend;
use crate::config::{ConfigError, ServeConfig};
use crate::handlers;
use crate::security::{self, Guard};

/// How long shutdown waits for open streams before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The address could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// Address tried.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    /// The model could not be loaded.
    #[error("cannot load the model: {0}")]
    Load(String),
}

/// Shared by all handlers.
pub struct AppState {
    /// The engine.
    pub backend: Arc<dyn ChatBackend>,
    /// Settings.
    pub config: ServeConfig,
    /// Slots and queue.
    pub admission: Arc<Admission>,
    /// Name clients must send as `model`.
    pub model_id: String,
    /// Unix time the server started (for `/v1/models`).
    pub created: u64,
    /// Monotonic start time (for uptime).
    pub started: Instant,
}

/// The router with all routes and the guard; exposed for embedding and tests.
pub fn router(config: ServeConfig, backend: Arc<dyn ChatBackend>, guard: Guard) -> Router {
    let model_id = config
        .served_model_name
        .clone()
        .unwrap_or_else(|| backend.model_id());
    let body_limit = config.limits.max_body_bytes;
    let state = Arc::new(AppState {
        admission: Admission::new(config.max_concurrent, config.max_queue),
        backend,
        config,
        model_id,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        started: Instant::now(),
    });
    Router::new()
        .route("/v1/chat/completions", post(handlers::chat_completions))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/models", get(handlers::models))
        .route("/v1/models/{id}", get(handlers::model))
        .route("/health", get(handlers::health))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(guard),
            security::guard,
        ))
}

/// A running server: its address and a way to stop it.
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl ServerHandle {
    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port` of this server.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets open requests finish for a few seconds, then cuts them.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut self.task).await {
            Ok(Ok(result)) => Ok(result?),
            Ok(Err(join)) => Err(ServeError::Io(std::io::Error::other(join.to_string()))),
            Err(_) => {
                self.task.abort();
                Ok(())
            }
        }
    }

    /// Waits until the server stops by itself (an I/O error).
    pub async fn wait(&mut self) -> Result<(), ServeError> {
        match (&mut self.task).await {
            Ok(result) => Ok(result?),
            Err(join) => Err(ServeError::Io(std::io::Error::other(join.to_string()))),
        }
    }
}

/// Validates the config, binds and starts serving in the background.
pub async fn start(
    config: ServeConfig,
    backend: Arc<dyn ChatBackend>,
) -> Result<ServerHandle, ServeError> {
    config.validate()?;
    let addr = SocketAddr::new(config.bind_ip()?, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let addr = listener.local_addr()?;
    let guard = Guard::new(&config, addr.ip());
    let app = router(config, backend, guard);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await
    });
    tracing::info!("serving OpenAI-compatible API on http://{addr}/v1");
    Ok(ServerHandle {
        addr,
        stop: Some(stop_tx),
        task,
    })
}

/// Serves until Ctrl-C (or an I/O error), then shuts down.
pub async fn serve(config: ServeConfig, backend: Arc<dyn ChatBackend>) -> Result<(), ServeError> {
    let mut handle = start(config, backend).await?;
    tokio::select! {
        r = handle.wait() => r,
        _ = tokio::signal::ctrl_c() => handle.shutdown().await,
    }
}
