//! `app_info`: version, folders and demo-model state for the UI.

use serde::{Deserialize, Serialize};
use tauri::State;

use crate::core::error::AppResult;
use crate::core::state::AppState;

/// Facts the UI shows in the status bar and settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppInfo {
    /// App version.
    pub version: String,
    /// Data folder.
    pub data_folder: String,
    /// Models folder.
    pub models_folder: String,
    /// Hugging Face cache read by the library.
    pub hf_cache: Option<String>,
    /// Library id of the demo model when it exists.
    pub demo_model_id: Option<String>,
}

/// App facts.
#[tauri::command]
pub async fn app_info(state: State<'_, AppState>) -> AppResult<AppInfo> {
    let paths = state.paths();
    let demo = paths.demo_model();
    Ok(AppInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        data_folder: paths.data.display().to_string(),
        models_folder: paths.models.display().to_string(),
        hf_cache: paths.hf_cache.as_ref().map(|p| p.display().to_string()),
        demo_model_id: demo.is_file().then(|| demo.display().to_string()),
    })
}
