//! Engine commands: status, load (progress over a channel), unload.

use std::sync::Arc;

use tauri::ipc::Channel;
use tauri::State;

use super::models::{EngineStatus, LoadEvent};
use crate::core::error::{AppError, AppResult};
use crate::core::library;
use crate::core::settings;
use crate::core::state::AppState;

/// What the engine is doing.
#[tauri::command]
pub async fn engine_status(state: State<'_, AppState>) -> AppResult<EngineStatus> {
    Ok(state.engine.status().await)
}

/// Loads a library model (by id) in the background; progress and outcome go to `on_event`.
#[tauri::command]
pub async fn engine_load(
    state: State<'_, AppState>,
    model_id: String,
    on_event: Channel<LoadEvent>,
) -> AppResult<()> {
    let model = library::helpers_find(&state, &model_id).await?;
    if model.meta.is_none() {
        return Err(AppError::State(format!(
            "{} cannot be loaded: {}",
            model.name,
            model.error.as_deref().unwrap_or("unreadable header")
        )));
    }
    let mut s = settings::helpers::load(&state.db).await?;
    let opts = settings::helpers::engine_options(&s);
    s.last_model = Some(model.id.clone());
    settings::helpers::save(&state.db, &s).await?;
    let emit = Arc::new(move |ev: LoadEvent| {
        let _ = on_event.send(ev);
    });
    state.engine.load(model.path.into(), opts, emit).await
}

/// Unloads the model.
#[tauri::command]
pub async fn engine_unload(state: State<'_, AppState>) -> AppResult<()> {
    state.engine.unload().await;
    Ok(())
}
