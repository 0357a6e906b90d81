//! Download commands.

use tauri::State;

use super::hub::HubClient;
use super::models::{DownloadView, HubConfig, HubRepoListing, HubSearchHit};
use crate::core::error::AppResult;
use crate::core::settings;
use crate::core::state::AppState;

/// Endpoint from the settings, token from the secret store.
pub async fn hub_config(state: &AppState) -> AppResult<HubConfig> {
    let s = settings::helpers::load(&state.db).await?;
    Ok(HubConfig {
        endpoint: settings::helpers::endpoint(&s),
        token: settings::helpers::hf_token(&state.secrets).await?,
    })
}

/// GGUF files of a repository (split files grouped).
#[tauri::command]
pub async fn hub_list_files(
    state: State<'_, AppState>,
    repo: String,
    revision: Option<String>,
) -> AppResult<HubRepoListing> {
    let client = HubClient::new(hub_config(&state).await?)?;
    client
        .list(repo.trim(), revision.as_deref().unwrap_or("main"))
        .await
}

/// Repositories with GGUF files matching a search text.
#[tauri::command]
pub async fn hub_search(state: State<'_, AppState>, query: String) -> AppResult<Vec<HubSearchHit>> {
    HubClient::new(hub_config(&state).await?)?
        .search(&query)
        .await
}

/// All downloads.
#[tauri::command]
pub async fn downloads_list(state: State<'_, AppState>) -> AppResult<Vec<DownloadView>> {
    state.downloads.list().await
}

/// Starts downloading files of a repository.
#[tauri::command]
pub async fn download_start(
    state: State<'_, AppState>,
    repo: String,
    revision: String,
    files: Vec<String>,
) -> AppResult<Vec<DownloadView>> {
    state
        .downloads
        .start(hub_config(&state).await?, &repo, &revision, &files)
        .await
}

/// Pauses a download.
#[tauri::command]
pub async fn download_pause(state: State<'_, AppState>, id: i64) -> AppResult<()> {
    state.downloads.pause(id).await
}

/// Resumes a download.
#[tauri::command]
pub async fn download_resume(state: State<'_, AppState>, id: i64) -> AppResult<()> {
    state.downloads.resume(hub_config(&state).await?, id).await
}

/// Cancels a download.
#[tauri::command]
pub async fn download_cancel(state: State<'_, AppState>, id: i64) -> AppResult<()> {
    state.downloads.cancel(id).await
}
