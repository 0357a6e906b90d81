//! Conversation and message rows (all SQL of the chat domain lives here).

use sqlx::Row;

use super::models::{
    BackendChoice, Conversation, ConversationSettings, Message, MessageStats, MessageStatus,
};
use crate::core::db::{now_ms, Db};
use crate::core::error::{AppError, AppResult};

/// Longest accepted title (characters).
pub const MAX_TITLE_CHARS: usize = 200;

fn conv_from_row(r: &sqlx::sqlite::SqliteRow) -> AppResult<Conversation> {
    let settings: Option<String> = r.try_get("sampling_json")?;
    let backend: Option<String> = r.try_get("backend_json")?;
    Ok(Conversation {
        id: r.try_get("id")?,
        title: r.try_get("title")?,
        system_prompt: r.try_get("system_prompt")?,
        settings: match settings {
            Some(s) => Some(serde_json::from_str::<ConversationSettings>(&s)?),
            None => None,
        },
        backend: match backend {
            Some(b) => Some(serde_json::from_str::<BackendChoice>(&b)?),
            None => None,
        },
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// Sets (or, with `None`, clears) the backend of a conversation.
pub async fn set_backend(
    db: &Db,
    id: i64,
    backend: Option<&BackendChoice>,
) -> AppResult<Conversation> {
    let json = backend.map(serde_json::to_string).transpose()?;
    let n = sqlx::query("UPDATE conversations SET backend_json = ?, updated_at = ? WHERE id = ?")
        .bind(json)
        .bind(now_ms())
        .bind(id)
        .execute(db)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(AppError::NotFound {
            what: "conversation",
            id: id.to_string(),
        });
    }
    get_conversation(db, id).await
}

/// Conversations that used endpoint `endpoint_id` go back to the default backend
/// (the endpoint was deleted).
pub async fn clear_backend_of_endpoint(db: &Db, endpoint_id: i64) -> AppResult<u64> {
    Ok(sqlx::query(
        "UPDATE conversations SET backend_json = NULL \
         WHERE json_extract(backend_json, '$.endpoint_id') = ?",
    )
    .bind(endpoint_id)
    .execute(db)
    .await?
    .rows_affected())
}

fn clean_title(title: &str) -> AppResult<String> {
    let t = title.trim();
    if t.is_empty() {
        return Err(AppError::invalid("title", "must not be empty"));
    }
    Ok(t.chars().take(MAX_TITLE_CHARS).collect())
}

/// Conversations, newest first; `query` filters by title or message text (case-insensitive).
pub async fn list_conversations(db: &Db, query: Option<&str>) -> AppResult<Vec<Conversation>> {
    let q = query.map(str::trim).filter(|q| !q.is_empty());
    let rows = match q {
        None => {
            sqlx::query("SELECT * FROM conversations ORDER BY updated_at DESC, id DESC")
                .fetch_all(db)
                .await?
        }
        Some(q) => {
            // Escape LIKE wildcards so a search for "50%" means the text "50%".
            let pat = format!(
                "%{}%",
                q.replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            );
            sqlx::query(
                "SELECT * FROM conversations c WHERE c.title LIKE ?1 ESCAPE '\\' \
                 OR EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND m.content LIKE ?1 ESCAPE '\\') \
                 ORDER BY updated_at DESC, id DESC",
            )
            .bind(pat)
            .fetch_all(db)
            .await?
        }
    };
    rows.iter().map(conv_from_row).collect()
}

/// One conversation.
pub async fn get_conversation(db: &Db, id: i64) -> AppResult<Conversation> {
    let row = sqlx::query("SELECT * FROM conversations WHERE id = ?")
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| AppError::NotFound {
            what: "conversation",
            id: id.to_string(),
        })?;
    conv_from_row(&row)
}

/// Creates a conversation.
pub async fn create_conversation(db: &Db, title: &str) -> AppResult<Conversation> {
    let title = clean_title(title)?;
    let now = now_ms();
    let id: i64 = sqlx::query(
        "INSERT INTO conversations (title, created_at, updated_at) VALUES (?, ?, ?) RETURNING id",
    )
    .bind(&title)
    .bind(now)
    .bind(now)
    .fetch_one(db)
    .await?
    .try_get(0)?;
    get_conversation(db, id).await
}

/// Renames a conversation.
pub async fn rename_conversation(db: &Db, id: i64, title: &str) -> AppResult<Conversation> {
    let title = clean_title(title)?;
    let n = sqlx::query("UPDATE conversations SET title = ?, updated_at = ? WHERE id = ?")
        .bind(&title)
        .bind(now_ms())
        .bind(id)
        .execute(db)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(AppError::NotFound {
            what: "conversation",
            id: id.to_string(),
        });
    }
    get_conversation(db, id).await
}

/// Deletes a conversation and (by cascade) its messages and stats.
pub async fn delete_conversation(db: &Db, id: i64) -> AppResult<()> {
    let n = sqlx::query("DELETE FROM conversations WHERE id = ?")
        .bind(id)
        .execute(db)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(AppError::NotFound {
            what: "conversation",
            id: id.to_string(),
        });
    }
    Ok(())
}

/// Sets the system prompt and settings (`None` = follow the defaults).
pub async fn update_settings(
    db: &Db,
    id: i64,
    system_prompt: &str,
    settings: Option<&ConversationSettings>,
) -> AppResult<Conversation> {
    let json = match settings {
        Some(s) => Some(serde_json::to_string(s)?),
        None => None,
    };
    let n = sqlx::query("UPDATE conversations SET system_prompt = ?, sampling_json = ?, updated_at = ? WHERE id = ?")
        .bind(system_prompt)
        .bind(json)
        .bind(now_ms())
        .bind(id)
        .execute(db)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(AppError::NotFound {
            what: "conversation",
            id: id.to_string(),
        });
    }
    get_conversation(db, id).await
}

const MESSAGE_SELECT: &str = "SELECT m.*, s.model, s.prompt_tokens, s.completion_tokens, s.ttft_s, s.prefill_tok_s, \
     s.decode_tok_s, s.finish_reason FROM messages m LEFT JOIN generation_stats s ON s.message_id = m.id";

fn msg_from_row(r: &sqlx::sqlite::SqliteRow) -> AppResult<Message> {
    let status: String = r.try_get("status")?;
    let model: Option<String> = r.try_get("model")?;
    let stats = match model {
        None => None,
        Some(model) => {
            let reason: String = r.try_get("finish_reason")?;
            Some(MessageStats {
                model,
                stats: hmoe_engine::api::GenerationStats {
                    prompt_tokens: r.try_get::<i64, _>("prompt_tokens")?.max(0) as usize,
                    completion_tokens: r.try_get::<i64, _>("completion_tokens")?.max(0) as usize,
                    time_to_first_token_s: r.try_get("ttft_s")?,
                    prefill_tok_s: r.try_get("prefill_tok_s")?,
                    decode_tok_s: r.try_get("decode_tok_s")?,
                },
                finish_reason: serde_json::from_value(serde_json::Value::String(reason))?,
            })
        }
    };
    Ok(Message {
        id: r.try_get("id")?,
        conversation_id: r.try_get("conversation_id")?,
        seq: r.try_get("seq")?,
        role: r.try_get("role")?,
        content: r.try_get("content")?,
        status: MessageStatus::parse(&status)
            .ok_or_else(|| AppError::State(format!("message has unknown status {status:?}")))?,
        error: r.try_get("error")?,
        stats,
        created_at: r.try_get("created_at")?,
    })
}

/// Messages of a conversation in order.
pub async fn list_messages(db: &Db, conversation_id: i64) -> AppResult<Vec<Message>> {
    get_conversation(db, conversation_id).await?;
    let sql = sqlx::AssertSqlSafe(format!(
        "{MESSAGE_SELECT} WHERE m.conversation_id = ? ORDER BY m.seq"
    ));
    let rows = sqlx::query(sql).bind(conversation_id).fetch_all(db).await?;
    rows.iter().map(msg_from_row).collect()
}

/// One message.
pub async fn get_message(db: &Db, id: i64) -> AppResult<Message> {
    let sql = sqlx::AssertSqlSafe(format!("{MESSAGE_SELECT} WHERE m.id = ?"));
    let row = sqlx::query(sql)
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| AppError::NotFound {
            what: "message",
            id: id.to_string(),
        })?;
    msg_from_row(&row)
}

/// Appends a message at the end of a conversation.
pub async fn insert_message(
    db: &Db,
    conversation_id: i64,
    role: &str,
    content: &str,
    status: MessageStatus,
) -> AppResult<Message> {
    if !matches!(role, "system" | "user" | "assistant") {
        return Err(AppError::invalid(
            "role",
            format!("{role:?} is not system, user or assistant"),
        ));
    }
    let now = now_ms();
    let mut tx = db.begin().await?;
    let id: i64 = sqlx::query(
        "INSERT INTO messages (conversation_id, seq, role, content, status, created_at, updated_at) \
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE conversation_id = ?1), ?2, ?3, ?4, ?5, ?5) \
         RETURNING id",
    )
    .bind(conversation_id)
    .bind(role)
    .bind(content)
    .bind(status.as_str())
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        if matches!(&e, sqlx::Error::Database(d) if d.is_foreign_key_violation()) {
            AppError::NotFound { what: "conversation", id: conversation_id.to_string() }
        } else {
            AppError::Db(e)
        }
    })?
    .try_get(0)?;
    sqlx::query("UPDATE conversations SET updated_at = ? WHERE id = ?")
        .bind(now)
        .bind(conversation_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    get_message(db, id).await
}

/// Saves the text streamed so far (one small transaction).
pub async fn update_content(db: &Db, id: i64, content: &str) -> AppResult<()> {
    sqlx::query("UPDATE messages SET content = ?, updated_at = ? WHERE id = ?")
        .bind(content)
        .bind(now_ms())
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Ends a reply: final text, status, error and stats in one transaction.
pub async fn finish_message(
    db: &Db,
    id: i64,
    content: &str,
    status: MessageStatus,
    error: Option<&str>,
    stats: Option<&MessageStats>,
) -> AppResult<()> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE messages SET content = ?, status = ?, error = ?, updated_at = ? WHERE id = ?",
    )
    .bind(content)
    .bind(status.as_str())
    .bind(error)
    .bind(now_ms())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if let Some(s) = stats {
        let reason = serde_json::to_value(s.finish_reason)?;
        sqlx::query(
            "INSERT OR REPLACE INTO generation_stats (message_id, model, prompt_tokens, completion_tokens, ttft_s, \
             prefill_tok_s, decode_tok_s, finish_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(&s.model)
        .bind(s.stats.prompt_tokens as i64)
        .bind(s.stats.completion_tokens as i64)
        .bind(s.stats.time_to_first_token_s)
        .bind(s.stats.prefill_tok_s)
        .bind(s.stats.decode_tok_s)
        .bind(reason.as_str().unwrap_or("stop"))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Replaces a message's text (edit before resend).
pub async fn set_content(db: &Db, id: i64, content: &str) -> AppResult<()> {
    update_content(db, id, content).await
}

/// Deletes the messages of a conversation from `seq` on (regenerate, edit-and-resend).
pub async fn delete_from(db: &Db, conversation_id: i64, seq: i64) -> AppResult<u64> {
    Ok(
        sqlx::query("DELETE FROM messages WHERE conversation_id = ? AND seq >= ?")
            .bind(conversation_id)
            .bind(seq)
            .execute(db)
            .await?
            .rows_affected(),
    )
}
