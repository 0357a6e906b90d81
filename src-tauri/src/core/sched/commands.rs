//! Scheduler panel commands (thin: plumbing only; logic in `helpers` and `stream`).

use std::sync::Arc;

use hmoe_engine::api::RuntimeOptions;
use hmoe_engine::moe::stats::SchedSnapshot;
use hmoe_engine::sched::POLICY_NAMES;
use tauri::ipc::Channel;
use tauri::{AppHandle, Manager, Runtime, State};

use super::helpers;
use super::models::{SchedMessage, SchedOptionsView, WhatIfReport, WhatIfRequest};
use super::source::SchedSource;
use super::stream::{Pacing, Subscriptions};
use crate::core::app::dialog::{save_bytes, save_with};
use crate::core::error::{AppError, AppResult};
use crate::core::state::AppState;

/// Largest plot the UI may hand over for saving.
const MAX_PLOT_BYTES: usize = 4 << 20;

fn subscriptions<R: Runtime>(app: &AppHandle<R>) -> tauri::State<'_, Subscriptions> {
    if app.try_state::<Subscriptions>().is_none() {
        app.manage(Subscriptions::default());
    }
    app.state::<Subscriptions>()
}

async fn source(state: &AppState) -> AppResult<Arc<dyn SchedSource>> {
    state
        .engine
        .current()
        .await
        .and_then(|m| m.sched())
        .ok_or_else(|| AppError::State("no model is loaded".into()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> AppResult<T> + Send + 'static,
) -> AppResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::State(format!("background task failed: {e}")))?
}

/// Streams the panel's messages over `on_event` until [`sched_unsubscribe`] or until the
/// window goes away. Returns the subscription id.
#[tauri::command]
pub async fn sched_subscribe<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, AppState>,
    on_event: Channel<SchedMessage>,
) -> AppResult<u64> {
    let send = Arc::new(move |m: SchedMessage| on_event.send(m).is_ok());
    Ok(subscriptions(&app).start(state.engine.clone(), send, Pacing::default()))
}

/// Ends a subscription.
#[tauri::command]
pub async fn sched_unsubscribe<R: Runtime>(app: AppHandle<R>, id: u64) -> AppResult<bool> {
    Ok(subscriptions(&app).stop(id))
}

/// The cache map and per-expert statistics now (None without a model).
#[tauri::command]
pub async fn sched_snapshot(state: State<'_, AppState>) -> AppResult<Option<SchedSnapshot>> {
    let Some(src) = state.engine.current().await.and_then(|m| m.sched()) else {
        return Ok(None);
    };
    blocking(move || src.snapshot().map(Some).map_err(AppError::Engine)).await
}

async fn options_view(src: Arc<dyn SchedSource>) -> AppResult<SchedOptionsView> {
    let requested = src.runtime();
    let snap = blocking(move || src.snapshot().map_err(AppError::Engine)).await?;
    Ok(SchedOptionsView {
        requested,
        applied: Some(snap.applied),
        gpu: snap.gpu,
        policies: POLICY_NAMES.iter().map(|p| p.to_string()).collect(),
    })
}

/// Requested and applied scheduler settings.
#[tauri::command]
pub async fn sched_options_get(state: State<'_, AppState>) -> AppResult<SchedOptionsView> {
    options_view(source(&state).await?).await
}

/// Requests new settings; they apply from the next generation on, without reloading.
#[tauri::command]
pub async fn sched_options_set(
    state: State<'_, AppState>,
    options: RuntimeOptions,
) -> AppResult<SchedOptionsView> {
    if !POLICY_NAMES.contains(&options.policy.as_str()) {
        return Err(AppError::invalid(
            "policy",
            format!("unknown policy `{}`", options.policy),
        ));
    }
    let src = source(&state).await?;
    src.set_runtime(options).map_err(AppError::Engine)?;
    options_view(src).await
}

/// Replays the routing trace (from `from_step`) under every policy and cache size.
#[tauri::command]
pub async fn sched_whatif(
    state: State<'_, AppState>,
    request: WhatIfRequest,
) -> AppResult<WhatIfReport> {
    let src = source(&state).await?;
    blocking(move || {
        let trace = src.trace().map_err(AppError::Engine)?;
        let policy = src.runtime().policy;
        helpers::what_if(&trace, &src.shape(), &request, &policy)
    })
    .await
}

/// Saves the routing trace (`hmoe-trace` JSON lines, from `from_step`) where the user
/// picks. Returns the path, or None if cancelled.
#[tauri::command]
pub async fn sched_export_trace<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, AppState>,
    from_step: Option<u64>,
) -> AppResult<Option<String>> {
    let src = source(&state).await?;
    let saved = save_with(&app, "jsonl", "routing-trace.jsonl", move |tmp| {
        let trace = src.trace().map_err(AppError::Engine)?;
        let part = helpers::slice_trace(&trace, from_step, usize::MAX);
        part.save(tmp)
            .map_err(|e| AppError::io("write", tmp, std::io::Error::other(e.to_string())))
    })
    .await?;
    Ok(saved.map(|p| p.display().to_string()))
}

/// Saves the what-if plot (the panel's SVG) where the user picks.
#[tauri::command]
pub async fn sched_export_plot<R: Runtime>(
    app: AppHandle<R>,
    svg: String,
) -> AppResult<Option<String>> {
    helpers::check_svg(&svg, MAX_PLOT_BYTES)?;
    let saved = save_bytes(&app, "svg", "what-if.svg", svg.into_bytes()).await?;
    Ok(saved.map(|p| p.display().to_string()))
}
