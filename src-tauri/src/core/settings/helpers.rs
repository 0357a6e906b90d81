//! Reading, validating and saving settings.

use std::path::{Path, PathBuf};

use hmoe_engine::api::{EngineOptions, RuntimeOptions};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::folder::{self, FolderCheck};
use super::models::{AppSettings, SettingsView, POLICIES};
use super::secrets::{mask, SecretStore, HF_TOKEN};
use crate::core::chat::models::{BackendChoice, ConversationSettings};
use crate::core::db::Db;
use crate::core::error::{AppError, AppResult};
use crate::core::state::{AppPaths, AppState};

/// The single settings key (one JSON document keeps reads and writes atomic).
const KEY: &str = "app";
/// Largest thread count accepted (more is a typo, not a machine).
const MAX_THREADS: usize = 1024;

/// Loads settings (defaults for anything missing).
pub async fn load(db: &Db) -> AppResult<AppSettings> {
    let row = sqlx::query("SELECT value FROM settings WHERE key = ?")
        .bind(KEY)
        .fetch_optional(db)
        .await?;
    match row {
        None => Ok(AppSettings::default()),
        Some(r) => Ok(serde_json::from_str(&r.try_get::<String, _>(0)?)?),
    }
}

/// Checks a settings value before it is stored.
pub fn validate(s: &AppSettings) -> AppResult<()> {
    if s.threads > MAX_THREADS {
        return Err(AppError::invalid(
            "threads",
            format!("{} is more than {MAX_THREADS}", s.threads),
        ));
    }
    if let Some(v) = s.vram_budget_gib {
        if !(v.is_finite() && v >= 0.0) {
            return Err(AppError::invalid(
                "vram_budget_gib",
                "must be a number of GiB, 0 or more",
            ));
        }
    }
    if !POLICIES.contains(&s.policy.as_str()) {
        return Err(AppError::invalid(
            "policy",
            format!("{:?} is not one of {POLICIES:?}", s.policy),
        ));
    }
    let p = &s.default_sampling;
    if !(p.temperature.is_finite() && p.temperature >= 0.0 && (0.0..=1.0).contains(&p.top_p)) {
        return Err(AppError::invalid(
            "default_sampling",
            "temperature must be ≥ 0 and top_p in [0, 1]",
        ));
    }
    if p.max_tokens == 0 {
        return Err(AppError::invalid(
            "default_sampling",
            "max_tokens must be at least 1",
        ));
    }
    let ep = s.hf_endpoint.trim();
    if !(ep.is_empty() || ep.starts_with("https://") || ep.starts_with("http://")) {
        return Err(AppError::invalid(
            "hf_endpoint",
            "must start with https:// or http://",
        ));
    }
    Ok(())
}

/// Validates and stores settings.
pub async fn save(db: &Db, s: &AppSettings) -> AppResult<()> {
    validate(s)?;
    sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        .bind(KEY)
        .bind(serde_json::to_string(s)?)
        .execute(db)
        .await?;
    Ok(())
}

/// Engine runtime options from settings.
pub fn runtime_options(s: &AppSettings) -> RuntimeOptions {
    RuntimeOptions {
        threads: s.threads,
        policy: s.policy.clone(),
        vram_budget_bytes: s.vram_budget_gib.map(|g| (g * (1u64 << 30) as f64) as u64),
        prefetch: s.prefetch,
    }
}

/// Engine options for loading from settings.
pub fn engine_options(s: &AppSettings) -> EngineOptions {
    EngineOptions {
        runtime: runtime_options(s),
        ..EngineOptions::default()
    }
}

/// Conversation settings for conversations without their own.
pub async fn default_conversation_settings(db: &Db) -> AppResult<ConversationSettings> {
    let s = load(db).await?;
    Ok(ConversationSettings {
        sampling: s.default_sampling,
        enable_thinking: s.enable_thinking,
    })
}

/// The Hub endpoint to use (settings, else the public Hub), without a trailing slash.
pub fn endpoint(s: &AppSettings) -> String {
    let ep = s.hf_endpoint.trim();
    let ep = if ep.is_empty() {
        super::models::DEFAULT_ENDPOINT
    } else {
        ep
    };
    ep.trim_end_matches('/').to_string()
}

/// Moves a plain-text token left in the settings by an earlier version into the secret
/// store and rewrites the settings without it. Returns whether there was one.
pub async fn migrate_legacy_token(db: &Db, secrets: &SecretStore) -> AppResult<bool> {
    let s = load(db).await?;
    let Some(token) = s.hf_token.clone() else {
        return Ok(false);
    };
    if !token.trim().is_empty() {
        secrets.set_async(HF_TOKEN, Some(token)).await?;
    }
    // `hf_token` is never serialised: saving drops it from the stored document.
    sqlx::query("UPDATE settings SET value = ? WHERE key = ?")
        .bind(serde_json::to_string(&s)?)
        .bind(KEY)
        .execute(db)
        .await?;
    Ok(true)
}

/// The models folder the settings ask for: theirs if it is a folder, else `<data>/models`.
pub fn models_folder(s: &AppSettings, data: &Path) -> PathBuf {
    match s.models_folder.as_deref().map(PathBuf::from) {
        Some(p) if p.is_dir() => p,
        Some(p) => {
            tracing::warn!(
                "models folder {} is missing; using the default one",
                p.display()
            );
            AppPaths::default_models(data)
        }
        None => AppPaths::default_models(data),
    }
}

/// The settings screen's view: settings, folders, policies, the masked token.
pub async fn view(state: &AppState) -> AppResult<SettingsView> {
    let paths = state.paths();
    let token = state.secrets.get_async(HF_TOKEN).await?;
    Ok(SettingsView {
        settings: load(&state.db).await?,
        data_folder: paths.data.display().to_string(),
        models_folder: paths.models.display().to_string(),
        policies: POLICIES.iter().map(|s| s.to_string()).collect(),
        hf_token_masked: token.as_deref().map(mask),
        secret_storage: state.secrets.info().clone(),
    })
}

/// Stores settings from the UI, keeping what only other commands change (models folder).
pub async fn set(state: &AppState, mut settings: AppSettings) -> AppResult<()> {
    let current = load(&state.db).await?;
    settings.models_folder = current.models_folder;
    settings.hf_token = None;
    if let BackendChoice::Remote { endpoint_id } = settings.default_backend {
        crate::core::chat::remote::get_endpoint(&state.db, endpoint_id).await?;
    }
    save(&state.db, &settings).await?;
    state
        .engine
        .set_runtime_options(runtime_options(&settings))
        .await
}

/// The Hugging Face token from the secret store.
pub async fn hf_token(secrets: &SecretStore) -> AppResult<Option<String>> {
    Ok(secrets
        .get_async(HF_TOKEN)
        .await?
        .filter(|t| !t.trim().is_empty()))
}

/// Checks `path` as the new models folder.
pub async fn check_folder(state: &AppState, path: String) -> AppResult<FolderCheck> {
    let current = state.paths().models;
    tokio::task::spawn_blocking(move || {
        folder::check(Path::new(path.trim()), &current, &|p: &Path| {
            crate::core::system::free_space(p)
        })
    })
    .await
    .map_err(|e| AppError::State(format!("folder check failed: {e}")))
}

/// What changing the models folder did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FolderChange {
    /// The models folder now.
    pub models_folder: String,
    /// Files moved (0 when left).
    pub moved_files: u64,
    /// Bytes moved.
    pub moved_bytes: u64,
    /// Where the models stayed when they were not moved.
    pub left_in: Option<String>,
}

/// Switches the models folder, moving the models (and partial downloads) or leaving them.
pub async fn change_folder(
    state: &AppState,
    path: String,
    move_models: bool,
) -> AppResult<FolderChange> {
    let check = check_folder(state, path).await?;
    if !check.ok {
        return Err(AppError::invalid("path", check.problems.join("; ")));
    }
    if move_models && !check.can_move {
        return Err(AppError::invalid(
            "path",
            check
                .move_problem
                .unwrap_or_else(|| "cannot move there".into()),
        ));
    }
    if state.downloads.any_running().await {
        return Err(AppError::State(
            "downloads are running: pause them (or let them finish) first".into(),
        ));
    }
    let paths = state.paths();
    let (old, new) = (paths.models.clone(), PathBuf::from(&check.path));
    let mut s = load(&state.db).await?;
    let mut change = FolderChange {
        models_folder: check.path.clone(),
        moved_files: 0,
        moved_bytes: 0,
        left_in: None,
    };
    if move_models {
        let (from, to) = (old.clone(), new.clone());
        let moved = tokio::task::spawn_blocking(move || folder::move_models(&from, &to))
            .await
            .map_err(|e| AppError::State(format!("move failed: {e}")))?
            .map_err(|e| AppError::io("move models to", &new, e))?;
        change.moved_files = moved.files;
        change.moved_bytes = moved.bytes;
        crate::core::downloads::store::move_destinations(&state.db, &old, &new).await?;
        if let Some(rel) = s
            .last_model
            .as_deref()
            .and_then(|m| Path::new(m).strip_prefix(&old).ok())
        {
            s.last_model = Some(new.join(rel).display().to_string());
        }
    } else {
        change.left_in = Some(old.display().to_string());
    }
    s.models_folder =
        (new != AppPaths::default_models(&paths.data)).then(|| new.display().to_string());
    save(&state.db, &s).await?;
    state.set_models_folder(new);
    Ok(change)
}

/// Starts the local server on the model loaded in the app, with the app's engine settings.
pub async fn start_server(
    state: &AppState,
    port: u16,
    api_key: Option<String>,
) -> AppResult<super::server::ServerStatus> {
    let model = state.engine.current().await.ok_or_else(|| {
        AppError::State("load a model first: the server serves the model loaded here".into())
    })?;
    // Share the app's engine: one worker batches API requests with the app's chats.
    if let Some(backend) = model.chat_backend() {
        return state.server.start_with(backend, port, api_key).await;
    }
    let s = load(&state.db).await?;
    // After a move of the models folder the loaded model's path is stale (the engine keeps
    // its mapping); the settings already point at the new place.
    let mut path = PathBuf::from(model.info().path);
    if !path.is_file() {
        if let Some(p) = s
            .last_model
            .as_deref()
            .map(PathBuf::from)
            .filter(|p| p.is_file())
        {
            path = p;
        }
    }
    state
        .server
        .start(&path, engine_options(&s), port, api_key)
        .await
}
