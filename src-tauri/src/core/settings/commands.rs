//! Settings commands.

use tauri::State;

use super::helpers;
use super::models::{AppSettings, SettingsView, POLICIES};
use crate::core::error::AppResult;
use crate::core::state::AppState;

/// Settings and read-only facts.
#[tauri::command]
pub async fn settings_get(state: State<'_, AppState>) -> AppResult<SettingsView> {
    Ok(SettingsView {
        settings: helpers::load(&state.db).await?,
        data_folder: state.paths.data.display().to_string(),
        policies: POLICIES.iter().map(|s| s.to_string()).collect(),
    })
}

/// Validates, stores and applies settings (runtime knobs reach a loaded model at once).
#[tauri::command]
pub async fn settings_set(
    state: State<'_, AppState>,
    settings: AppSettings,
) -> AppResult<SettingsView> {
    helpers::save(&state.db, &settings).await?;
    state
        .engine
        .set_runtime_options(helpers::runtime_options(&settings))
        .await?;
    settings_get(state).await
}
