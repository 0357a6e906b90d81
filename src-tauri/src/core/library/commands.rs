//! Library commands.

use tauri::{AppHandle, Runtime, State};

use super::models::LibraryModel;
use super::{helpers, helpers_find, scan_now};
use crate::core::error::{AppError, AppResult};
use crate::core::state::AppState;
use crate::core::system::SystemInfo;

/// Every model found, with fit verdicts.
#[tauri::command]
pub async fn models_list(state: State<'_, AppState>) -> AppResult<Vec<LibraryModel>> {
    scan_now(&state).await
}

/// RAM, VRAM, CPUs, free disk.
#[tauri::command]
pub async fn system_info(state: State<'_, AppState>) -> AppResult<SystemInfo> {
    let models = state.paths().models;
    tokio::task::spawn_blocking(move || crate::core::system::collect(&models))
        .await
        .map_err(|e| AppError::State(format!("system info failed: {e}")))
}

/// Deletes a model; returns the bytes freed. Unloads it first if it is loaded.
#[tauri::command]
pub async fn models_delete(state: State<'_, AppState>, id: String) -> AppResult<u64> {
    let model = helpers_find(&state, &id).await?;
    if let Some(m) = state.engine.current().await {
        if m.info().path == model.path {
            state.engine.unload().await;
        }
    }
    tokio::task::spawn_blocking(move || helpers::delete(&model))
        .await
        .map_err(|e| AppError::State(format!("delete failed: {e}")))?
}

/// Opens a file picker (in Rust: the UI has no file-system access) and imports the chosen
/// `.gguf`. Returns the new library entry, or None if cancelled.
#[tauri::command]
pub async fn models_import<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, AppState>,
) -> AppResult<Option<LibraryModel>> {
    let Some(src) = crate::core::app::dialog::open_file(&app, "GGUF model", &["gguf"]).await?
    else {
        return Ok(None);
    };
    let models = state.paths().models;
    let dest = tokio::task::spawn_blocking(move || helpers::import(&src, &models))
        .await
        .map_err(|e| AppError::State(format!("import failed: {e}")))??;
    let id = dest.display().to_string();
    Ok(scan_now(&state).await?.into_iter().find(|m| m.id == id))
}
