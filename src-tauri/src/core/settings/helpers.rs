//! Reading, validating and saving settings.

use hmoe_engine::api::{EngineOptions, RuntimeOptions};
use sqlx::Row;

use super::models::{AppSettings, POLICIES};
use crate::core::chat::models::ConversationSettings;
use crate::core::db::Db;
use crate::core::error::{AppError, AppResult};

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
