//! Model library: app models folder, Hugging Face cache, imports, fit verdicts.

pub mod commands;
pub mod helpers;
pub mod models;
#[cfg(test)]
mod tests;

use crate::core::error::{AppError, AppResult};
use crate::core::state::AppState;

/// Scans the library off the async threads (stat calls + header reads + nvidia-smi).
pub async fn scan_now(state: &AppState) -> AppResult<Vec<models::LibraryModel>> {
    let paths = state.paths();
    tokio::task::spawn_blocking(move || {
        let sys = crate::core::system::collect(&paths.models);
        helpers::scan(&paths.roots(), &sys, &crate::core::engine::adapter::inspect)
    })
    .await
    .map_err(|e| AppError::State(format!("library scan failed: {e}")))
}

/// Finds a model by id in a fresh scan (ids from the UI are never used as paths directly).
pub async fn helpers_find(state: &AppState, id: &str) -> AppResult<models::LibraryModel> {
    scan_now(state)
        .await?
        .into_iter()
        .find(|m| m.id == id)
        .ok_or_else(|| AppError::NotFound {
            what: "model",
            id: id.to_string(),
        })
}
