//! Remote OpenAI-compatible endpoints (another `hmoe serve`, vLLM, SGLang, ...): their rows,
//! and a generation that streams from one into the same reply pipeline as the local engine.
//! API keys live in the secret store, never in the database.

use std::sync::Arc;

use hmoe_engine::api::{ChatMessage, FinishReason, GenerationEvent, SamplingParams};
use hmoe_server::RemoteChat;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio::sync::{mpsc, Notify};

use crate::core::db::{now_ms, Db};
use crate::core::engine::models::GenStream;
use crate::core::error::{AppError, AppResult};
use crate::core::settings::secrets::{endpoint_key, mask, SecretStore};

/// Longest endpoint name (characters).
const MAX_NAME_CHARS: usize = 100;
/// Longest model name (bytes; real names are far shorter).
const MAX_MODEL_BYTES: usize = 256;
/// Events buffered between the HTTP stream and the reply writer.
const EVENT_BUFFER: usize = 256;

/// An endpoint as the UI sees it (the key only masked).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RemoteEndpoint {
    /// Row id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Base URL (`http(s)://host:port[/v1]`).
    pub url: String,
    /// Model name sent with each request.
    pub model: String,
    /// The API key, masked, when one is saved.
    pub api_key_masked: Option<String>,
}

/// What the UI sends to create or edit an endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EndpointInput {
    /// Existing row to edit; None creates one.
    pub id: Option<i64>,
    /// Display name.
    pub name: String,
    /// Base URL.
    pub url: String,
    /// Model name.
    pub model: String,
    /// None keeps the saved key, "" removes it, anything else replaces it.
    pub api_key: Option<String>,
}

fn from_row(
    r: &sqlx::sqlite::SqliteRow,
    secrets_mask: Option<String>,
) -> AppResult<RemoteEndpoint> {
    Ok(RemoteEndpoint {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        url: r.try_get("url")?,
        model: r.try_get("model")?,
        api_key_masked: secrets_mask,
    })
}

async fn masked_key(secrets: &SecretStore, id: i64, has_key: bool) -> Option<String> {
    if !has_key {
        return None;
    }
    match secrets.get_async(&endpoint_key(id)).await {
        Ok(k) => k.as_deref().map(mask),
        Err(e) => Some(format!("(unreadable: {e})")),
    }
}

/// Checks the fields of an endpoint; returns the cleaned (name, url, model).
pub fn validate(input: &EndpointInput) -> AppResult<(String, String, String)> {
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(AppError::invalid(
            "name",
            format!("must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    let url = input.url.trim();
    hmoe_server::remote::api_base(url).map_err(|e| AppError::invalid("url", e.to_string()))?;
    let model = input.model.trim();
    if model.is_empty() || model.len() > MAX_MODEL_BYTES || model.chars().any(char::is_control) {
        return Err(AppError::invalid(
            "model",
            "must be a model name the server knows (see its /v1/models)",
        ));
    }
    Ok((name.to_string(), url.to_string(), model.to_string()))
}

/// Every endpoint, by name.
pub async fn list_endpoints(db: &Db, secrets: &SecretStore) -> AppResult<Vec<RemoteEndpoint>> {
    let rows = sqlx::query("SELECT * FROM remote_endpoints ORDER BY name, id")
        .fetch_all(db)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: i64 = r.try_get("id")?;
        let has_key: bool = r.try_get("has_key")?;
        out.push(from_row(r, masked_key(secrets, id, has_key).await)?);
    }
    Ok(out)
}

/// One endpoint row: (endpoint, has_key).
pub async fn get_endpoint(db: &Db, id: i64) -> AppResult<(RemoteEndpoint, bool)> {
    let r = sqlx::query("SELECT * FROM remote_endpoints WHERE id = ?")
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| AppError::NotFound {
            what: "remote endpoint",
            id: id.to_string(),
        })?;
    Ok((from_row(&r, None)?, r.try_get("has_key")?))
}

/// Creates or edits an endpoint; the key goes to the secret store.
pub async fn save_endpoint(
    db: &Db,
    secrets: &SecretStore,
    input: &EndpointInput,
) -> AppResult<RemoteEndpoint> {
    let (name, url, model) = validate(input)?;
    let now = now_ms();
    let id = match input.id {
        Some(id) => {
            get_endpoint(db, id).await?;
            sqlx::query(
                "UPDATE remote_endpoints SET name = ?, url = ?, model = ?, updated_at = ? WHERE id = ?",
            )
            .bind(&name)
            .bind(&url)
            .bind(&model)
            .bind(now)
            .bind(id)
            .execute(db)
            .await?;
            id
        }
        None => sqlx::query(
            "INSERT INTO remote_endpoints (name, url, model, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&name)
        .bind(&url)
        .bind(&model)
        .bind(now)
        .bind(now)
        .fetch_one(db)
        .await?
        .try_get(0)?,
    };
    if let Some(key) = &input.api_key {
        let key = key.trim();
        secrets
            .set_async(&endpoint_key(id), Some(key.to_string()))
            .await?;
        sqlx::query("UPDATE remote_endpoints SET has_key = ? WHERE id = ?")
            .bind(!key.is_empty())
            .bind(id)
            .execute(db)
            .await?;
    }
    let (mut ep, has_key) = get_endpoint(db, id).await?;
    ep.api_key_masked = masked_key(secrets, id, has_key).await;
    Ok(ep)
}

/// Deletes an endpoint and its key; conversations that used it go back to the default.
pub async fn delete_endpoint(db: &Db, secrets: &SecretStore, id: i64) -> AppResult<()> {
    get_endpoint(db, id).await?;
    secrets.set_async(&endpoint_key(id), None).await?;
    super::store::clear_backend_of_endpoint(db, id).await?;
    sqlx::query("DELETE FROM remote_endpoints WHERE id = ?")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// A client for endpoint `id` with its key.
pub async fn client(
    db: &Db,
    secrets: &SecretStore,
    id: i64,
) -> AppResult<(RemoteChat, RemoteEndpoint)> {
    let (ep, has_key) = get_endpoint(db, id).await?;
    let key = if has_key {
        secrets.get_async(&endpoint_key(id)).await?
    } else {
        None
    };
    let c =
        RemoteChat::new(&ep.url, key, &ep.model).map_err(|e| AppError::Remote(e.to_string()))?;
    Ok((c, ep))
}

/// Models the endpoint lists (the settings screen's "Test").
pub async fn test_endpoint(db: &Db, secrets: &SecretStore, id: i64) -> AppResult<Vec<String>> {
    let (c, _) = client(db, secrets, id).await?;
    c.list_models()
        .await
        .map_err(|e| AppError::Remote(e.to_string()))
}

/// Starts a streaming chat on the endpoint and hands it out as a [`GenStream`], so the
/// reply is saved and shown exactly like a local one. Connection and HTTP errors (refused,
/// 401, unknown model) come back here, before any reply row exists.
pub async fn generate(
    client: &RemoteChat,
    messages: &[ChatMessage],
    params: &SamplingParams,
    enable_thinking: bool,
) -> AppResult<GenStream> {
    let mut body = client.chat_body(messages, params, true);
    if enable_thinking {
        // Qwen3's switch as hmoe serve, vLLM and SGLang take it; only sent when on, since
        // strict servers reject unknown fields.
        body["chat_template_kwargs"] = serde_json::json!({"enable_thinking": true});
    }
    let mut stream = client
        .stream_body(body)
        .await
        .map_err(|e| AppError::Remote(e.to_string()))?;
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    let stop = Arc::new(Notify::new());
    let stopped = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stopped.notified() => {
                    // Dropping the stream closes the connection: the server stops too.
                    let stats = stream.stats();
                    drop(stream);
                    let _ = tx.send(GenerationEvent::Done { finish_reason: FinishReason::Cancelled, stats }).await;
                    return;
                }
                ev = stream.next() => {
                    let (ev, last) = match ev {
                        None => return,
                        Some(Ok(ev)) => {
                            let last = matches!(ev, GenerationEvent::Done { .. } | GenerationEvent::Error { .. });
                            (ev, last)
                        }
                        Some(Err(e)) => (GenerationEvent::Error { message: e.to_string() }, true),
                    };
                    if tx.send(ev).await.is_err() || last {
                        return;
                    }
                }
            }
        }
    });
    Ok(GenStream {
        events: rx,
        // notify_one keeps the permit if the task is not waiting yet: a stop is never lost.
        cancel: Box::new(move || stop.notify_one()),
    })
}
