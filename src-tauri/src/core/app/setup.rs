//! Start-up: folders, database, crash recovery, demo model, last model; and clean shutdown.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tauri::{AppHandle, Emitter, Manager, Runtime};

use crate::core::chat::stream::ActiveGenerations;
use crate::core::downloads::DownloadManager;
use crate::core::engine::adapter::EngineLoader;
use crate::core::engine::models::LoadEvent;
use crate::core::engine::{EngineService, ModelLoader};
use crate::core::error::{AppError, AppResult};
use crate::core::settings::secrets::SecretStore;
use crate::core::state::{AppPaths, AppState, DATA_DIR_ENV};
use crate::core::{db, demo, events, settings};

/// How long closing the app waits for streaming replies to be saved.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

/// Builds the state for a data folder (used by the app and by tests).
pub async fn build_state(data: &Path, loader: Arc<dyn ModelLoader>) -> AppResult<AppState> {
    build_state_with(data, loader, SecretStore::open(data)).await
}

/// [`build_state`] with a given secret store (tests).
pub async fn build_state_with(
    data: &Path,
    loader: Arc<dyn ModelLoader>,
    secrets: SecretStore,
) -> AppResult<AppState> {
    let mut paths = AppPaths::under(data);
    let db = db::open(&paths.db).await?;
    if settings::helpers::migrate_legacy_token(&db, &secrets).await? {
        tracing::info!("moved the Hugging Face token out of the settings table");
    }
    paths.models = settings::helpers::models_folder(&settings::helpers::load(&db).await?, data);
    std::fs::create_dir_all(&paths.models)
        .map_err(|e| AppError::io("create folder", &paths.models, e))?;
    let (msgs, dls) = db::recover_after_crash(&db).await?;
    if msgs + dls > 0 {
        tracing::info!(
            "recovered after a crash: {msgs} replies marked interrupted, {dls} downloads paused"
        );
    }
    let downloads = DownloadManager::new(db.clone(), paths.models.clone());
    Ok(AppState {
        paths_now: std::sync::RwLock::new(paths),
        secrets,
        server: Default::default(),
        db,
        engine: EngineService::new(loader),
        active: ActiveGenerations::default(),
        downloads,
    })
}

/// The data folder: `$HMOE_STUDIO_DATA`, else the platform's app-data folder.
pub fn data_dir<R: Runtime>(app: &AppHandle<R>) -> AppResult<std::path::PathBuf> {
    if let Some(d) = std::env::var_os(DATA_DIR_ENV) {
        return Ok(d.into());
    }
    app.path()
        .app_data_dir()
        .map_err(|e| AppError::State(format!("no app data folder: {e}")))
}

/// Tauri `setup`: state first (so commands work at once), then slow work in the background.
pub fn setup<R: Runtime>(app: &AppHandle<R>) -> AppResult<()> {
    let data = data_dir(app)?;
    let state = tauri::async_runtime::block_on(build_state(&data, Arc::new(EngineLoader)))?;
    let (h1, h2) = (app.clone(), app.clone());
    state.downloads.set_listeners(
        Arc::new(move |v: crate::core::downloads::models::DownloadView| {
            let _ = h1.emit(events::DOWNLOAD_PROGRESS, v);
        }),
        Arc::new(move |_: &crate::core::downloads::store::DownloadRow| {
            let _ = h2.emit(events::LIBRARY_CHANGED, ());
        }),
    );
    app.manage(state);
    let handle = app.clone();
    tauri::async_runtime::spawn(async move {
        if let Err(e) = startup_tasks(&handle).await {
            tracing::error!("start-up: {e}");
        }
    });
    Ok(())
}

/// Resumes the downloads the last run stopped by exiting or crashing, unless the setting
/// turns that off. Returns the ids resumed.
pub async fn resume_downloads(state: &AppState) -> AppResult<Vec<i64>> {
    let s = settings::helpers::load(&state.db).await?;
    if !s.resume_downloads_on_start {
        return Ok(Vec::new());
    }
    let cfg = crate::core::downloads::commands::hub_config(state).await?;
    state.downloads.resume_interrupted(cfg).await
}

/// Resumes interrupted downloads, writes the demo model if missing, then loads the last
/// used model (or the demo).
async fn startup_tasks<R: Runtime>(app: &AppHandle<R>) -> AppResult<()> {
    let state = app.state::<AppState>();
    match resume_downloads(&state).await {
        Ok(ids) if !ids.is_empty() => tracing::info!("resumed downloads {ids:?}"),
        Ok(_) => {}
        Err(e) => tracing::error!("resuming downloads: {e}"),
    }
    let demo_path = state.paths().demo_model();
    let p = demo_path.clone();
    let wrote = tokio::task::spawn_blocking(move || demo::ensure_demo_model(&p))
        .await
        .map_err(|e| AppError::State(format!("demo model task failed: {e}")))??;
    if wrote {
        let _ = app.emit(events::LIBRARY_CHANGED, ());
    }
    let s = settings::helpers::load(&state.db).await?;
    let target = s
        .last_model
        .clone()
        .filter(|m| Path::new(m).is_file())
        .unwrap_or_else(|| demo_path.display().to_string());
    load_with_events(
        app,
        &state,
        target.into(),
        settings::helpers::engine_options(&s),
    )
    .await
}

/// Loads a model, broadcasting the engine status as it changes.
pub async fn load_with_events<R: Runtime>(
    app: &AppHandle<R>,
    state: &AppState,
    path: std::path::PathBuf,
    opts: hmoe_engine::api::EngineOptions,
) -> AppResult<()> {
    let h = app.clone();
    let engine = state.engine.clone();
    let emit = Arc::new(move |ev: LoadEvent| {
        let h = h.clone();
        let engine = engine.clone();
        if !matches!(ev, LoadEvent::Progress { .. }) {
            tauri::async_runtime::spawn(async move {
                let _ = h.emit(events::ENGINE_STATUS, engine.status().await);
            });
        }
    });
    state.engine.load(path, opts, emit).await?;
    let _ = app.emit(events::ENGINE_STATUS, state.engine.status().await);
    Ok(())
}

/// Stops streaming replies (they are saved as they stand) before the process exits.
pub fn shutdown<R: Runtime>(app: &AppHandle<R>) {
    if let Some(state) = app.try_state::<AppState>() {
        tauri::async_runtime::block_on(async {
            state.active.cancel_all_and_wait(SHUTDOWN_WAIT).await;
            state.server.stop().await;
            state.downloads.pause_all().await;
            state.engine.unload().await;
            state.db.close().await;
        });
    }
}
