//! Settings commands.

use tauri::{AppHandle, Emitter, Runtime, State};

use super::folder::FolderCheck;
use super::helpers::{self, FolderChange};
use super::models::{AppSettings, SettingsView};
use super::panel::{self, PanelSettings};
use super::server::ServerStatus;
use crate::core::error::AppResult;
use crate::core::events;
use crate::core::state::AppState;

/// Settings and read-only facts (the token only masked).
#[tauri::command]
pub async fn settings_get(state: State<'_, AppState>) -> AppResult<SettingsView> {
    helpers::view(&state).await
}

/// Validates, stores and applies settings (runtime knobs reach a loaded model at once).
/// The models folder and the token have their own commands and are not changed here.
#[tauri::command]
pub async fn settings_set(
    state: State<'_, AppState>,
    settings: AppSettings,
) -> AppResult<SettingsView> {
    helpers::set(&state, settings).await?;
    helpers::view(&state).await
}

/// Saves the Hugging Face token in the secret store (`None` or blank removes it).
#[tauri::command]
pub async fn settings_set_hf_token(
    state: State<'_, AppState>,
    token: Option<String>,
) -> AppResult<SettingsView> {
    state
        .secrets
        .set_async(super::secrets::HF_TOKEN, token)
        .await?;
    helpers::view(&state).await
}

/// Checks a folder as the new models folder (exists, writable, space for a move).
#[tauri::command]
pub async fn models_folder_check(
    state: State<'_, AppState>,
    path: String,
) -> AppResult<FolderCheck> {
    helpers::check_folder(&state, path).await
}

/// Opens a folder picker; returns the chosen folder or None.
#[tauri::command]
pub async fn models_folder_pick<R: Runtime>(app: AppHandle<R>) -> AppResult<Option<String>> {
    Ok(crate::core::app::dialog::pick_folder(&app)
        .await?
        .map(|p| p.display().to_string()))
}

/// Switches the models folder, moving the models there (`move_models`) or leaving them.
#[tauri::command]
pub async fn models_folder_change<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, AppState>,
    path: String,
    move_models: bool,
) -> AppResult<FolderChange> {
    let change = helpers::change_folder(&state, path, move_models).await?;
    let _ = app.emit(events::LIBRARY_CHANGED, ());
    if !move_models {
        // The demo model is part of every models folder: write it in the new one.
        let demo = state.paths().demo_model();
        let h = app.clone();
        tauri::async_runtime::spawn(async move {
            let r =
                tokio::task::spawn_blocking(move || crate::core::demo::ensure_demo_model(&demo))
                    .await;
            if matches!(r, Ok(Ok(true))) {
                let _ = h.emit(events::LIBRARY_CHANGED, ());
            }
        });
    }
    Ok(change)
}

/// The local server's status.
#[tauri::command]
pub async fn local_server_status(state: State<'_, AppState>) -> AppResult<ServerStatus> {
    Ok(state.server.status().await)
}

/// Serves the model loaded in the app on 127.0.0.1:`port` (OpenAI-compatible API).
#[tauri::command]
pub async fn local_server_start(
    state: State<'_, AppState>,
    port: u16,
    api_key: Option<String>,
) -> AppResult<ServerStatus> {
    helpers::start_server(&state, port, api_key).await
}

/// Stops the local server.
#[tauri::command]
pub async fn local_server_stop(state: State<'_, AppState>) -> AppResult<ServerStatus> {
    Ok(state.server.stop().await)
}

/// The scheduler panel's view settings (docked, open sections, window, overlays, palette).
#[tauri::command]
pub async fn panel_settings_get(state: State<'_, AppState>) -> AppResult<PanelSettings> {
    panel::load(&state.db).await
}

/// Validates and stores the panel's view settings; returns them as stored.
#[tauri::command]
pub async fn panel_settings_set(
    state: State<'_, AppState>,
    settings: PanelSettings,
) -> AppResult<PanelSettings> {
    panel::save(&state.db, &settings).await?;
    panel::load(&state.db).await
}
