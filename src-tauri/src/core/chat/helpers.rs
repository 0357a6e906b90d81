//! Chat operations behind the commands: send, regenerate, edit-and-resend, export.

use std::sync::Arc;

use hmoe_engine::api::{ChatMessage, Prompt};

use super::models::{
    BackendChoice, ChatStreamEvent, Conversation, ExportFormat, Message, MessageStatus, SendResult,
};
use super::store;
use super::stream::{spawn_reply, ActiveGenerations};
use crate::core::db::Db;
use crate::core::engine::EngineService;
use crate::core::error::{AppError, AppResult};
use crate::core::settings;

/// Longest accepted user message (bytes); the context window is the real limit, this only
/// stops a pasted file from freezing the UI.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// What a chat operation needs from the app state.
pub struct ChatCtx<'a> {
    /// Database.
    pub db: &'a Db,
    /// Engine service.
    pub engine: &'a EngineService,
    /// Running replies.
    pub active: &'a ActiveGenerations,
    /// API keys of remote endpoints.
    pub secrets: &'a crate::core::settings::secrets::SecretStore,
}

fn check_text(text: &str) -> AppResult<()> {
    if text.trim().is_empty() {
        return Err(AppError::invalid("text", "message is empty"));
    }
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(AppError::invalid(
            "text",
            format!("message is longer than {MAX_MESSAGE_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Chat messages from the conversation's history (system prompt first; failed replies
/// left out).
fn build_messages(conv: &Conversation, history: &[Message]) -> Vec<ChatMessage> {
    let mut messages = Vec::with_capacity(history.len() + 1);
    if !conv.system_prompt.trim().is_empty() {
        messages.push(ChatMessage {
            role: "system".into(),
            content: conv.system_prompt.clone(),
        });
    }
    for m in history {
        if m.status == MessageStatus::Error || (m.role == "assistant" && m.content.is_empty()) {
            continue;
        }
        messages.push(ChatMessage {
            role: m.role.clone(),
            content: m.content.clone(),
        });
    }
    messages
}

/// The backend that answers `conv`: its own choice, else the app's default.
async fn backend_of(db: &Db, conv: &Conversation) -> AppResult<BackendChoice> {
    Ok(match conv.backend {
        Some(b) => b,
        None => settings::helpers::load(db).await?.default_backend,
    })
}

/// Inserts the reply row and starts streaming into it.
async fn start_reply(
    ctx: &ChatCtx<'_>,
    conv: &Conversation,
    emit: Arc<dyn Fn(ChatStreamEvent) + Send + Sync>,
) -> AppResult<i64> {
    let history = store::list_messages(ctx.db, conv.id).await?;
    let conv_settings = match &conv.settings {
        Some(s) => s.clone(),
        None => settings::helpers::default_conversation_settings(ctx.db).await?,
    };
    let messages = build_messages(conv, &history);
    let (stream, model_name) = match backend_of(ctx.db, conv).await? {
        BackendChoice::Local => {
            let prompt = Prompt::Chat {
                messages,
                enable_thinking: conv_settings.enable_thinking,
            };
            let (stream, info) = ctx.engine.generate(prompt, conv_settings.sampling).await?;
            (stream, info.name)
        }
        BackendChoice::Remote { endpoint_id } => {
            let (client, ep) = super::remote::client(ctx.db, ctx.secrets, endpoint_id).await?;
            let stream = super::remote::generate(
                &client,
                &messages,
                &conv_settings.sampling,
                conv_settings.enable_thinking,
            )
            .await?;
            (stream, format!("{} @ {}", ep.model, ep.name))
        }
    };
    let reply =
        store::insert_message(ctx.db, conv.id, "assistant", "", MessageStatus::Streaming).await?;
    spawn_reply(
        ctx.db.clone(),
        ctx.active.clone(),
        reply.id,
        model_name,
        stream,
        emit,
    )
    .await;
    Ok(reply.id)
}

/// A local conversation needs a loaded model; a remote one does not.
async fn ensure_model(ctx: &ChatCtx<'_>, conv: &Conversation) -> AppResult<()> {
    if backend_of(ctx.db, conv).await? == BackendChoice::Local
        && ctx.engine.current().await.is_none()
    {
        return Err(AppError::State(
            "no model is loaded: pick one in Models".into(),
        ));
    }
    Ok(())
}

/// Adds the user's message and streams a reply.
pub async fn send(
    ctx: &ChatCtx<'_>,
    conversation_id: i64,
    text: &str,
    emit: Arc<dyn Fn(ChatStreamEvent) + Send + Sync>,
) -> AppResult<SendResult> {
    check_text(text)?;
    let conv = store::get_conversation(ctx.db, conversation_id).await?;
    ensure_model(ctx, &conv).await?;
    let user =
        store::insert_message(ctx.db, conv.id, "user", text, MessageStatus::Complete).await?;
    let assistant_message_id = start_reply(ctx, &conv, emit).await?;
    Ok(SendResult {
        user_message_id: Some(user.id),
        assistant_message_id,
    })
}

/// Replaces the last assistant reply with a new one.
pub async fn regenerate(
    ctx: &ChatCtx<'_>,
    conversation_id: i64,
    emit: Arc<dyn Fn(ChatStreamEvent) + Send + Sync>,
) -> AppResult<SendResult> {
    let conv = store::get_conversation(ctx.db, conversation_id).await?;
    ensure_model(ctx, &conv).await?;
    let history = store::list_messages(ctx.db, conv.id).await?;
    let last_user = history
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .ok_or_else(|| {
            AppError::State("nothing to regenerate: the conversation has no user message".into())
        })?;
    if history.iter().any(|m| m.status == MessageStatus::Streaming) {
        return Err(AppError::State(
            "a reply is still streaming; stop it first".into(),
        ));
    }
    store::delete_from(ctx.db, conv.id, last_user.seq + 1).await?;
    let assistant_message_id = start_reply(ctx, &conv, emit).await?;
    Ok(SendResult {
        user_message_id: None,
        assistant_message_id,
    })
}

/// Changes a user message, drops everything after it, and streams a new reply.
pub async fn edit_resend(
    ctx: &ChatCtx<'_>,
    message_id: i64,
    text: &str,
    emit: Arc<dyn Fn(ChatStreamEvent) + Send + Sync>,
) -> AppResult<SendResult> {
    check_text(text)?;
    let msg = store::get_message(ctx.db, message_id).await?;
    if msg.role != "user" {
        return Err(AppError::invalid(
            "message_id",
            "only user messages can be edited",
        ));
    }
    let conv = store::get_conversation(ctx.db, msg.conversation_id).await?;
    ensure_model(ctx, &conv).await?;
    let history = store::list_messages(ctx.db, conv.id).await?;
    if history.iter().any(|m| m.status == MessageStatus::Streaming) {
        return Err(AppError::State(
            "a reply is still streaming; stop it first".into(),
        ));
    }
    store::set_content(ctx.db, msg.id, text).await?;
    store::delete_from(ctx.db, conv.id, msg.seq + 1).await?;
    let assistant_message_id = start_reply(ctx, &conv, emit).await?;
    Ok(SendResult {
        user_message_id: Some(msg.id),
        assistant_message_id,
    })
}

/// The conversation as Markdown or JSON text.
pub async fn export(db: &Db, conversation_id: i64, format: ExportFormat) -> AppResult<String> {
    let conv = store::get_conversation(db, conversation_id).await?;
    let messages = store::list_messages(db, conversation_id).await?;
    Ok(match format {
        ExportFormat::Json => serde_json::to_string_pretty(&serde_json::json!({
            "format": "hmoe-studio.conversation.v1",
            "conversation": conv,
            "messages": messages,
        }))?,
        ExportFormat::Markdown => export_markdown(&conv, &messages),
    })
}

fn export_markdown(conv: &Conversation, messages: &[Message]) -> String {
    let mut out = format!("# {}\n\n", conv.title);
    if !conv.system_prompt.trim().is_empty() {
        out.push_str(&format!(
            "> **System:** {}\n\n",
            conv.system_prompt.trim().replace('\n', "\n> ")
        ));
    }
    for m in messages {
        let who = match m.role.as_str() {
            "user" => "User",
            "assistant" => "Assistant",
            _ => "System",
        };
        out.push_str(&format!("## {who}\n\n{}\n\n", m.content.trim_end()));
        match m.status {
            MessageStatus::Interrupted => out.push_str("_(interrupted)_\n\n"),
            MessageStatus::Error => out.push_str(&format!(
                "_(error: {})_\n\n",
                m.error.as_deref().unwrap_or("unknown")
            )),
            _ => {}
        }
        if let Some(s) = &m.stats {
            out.push_str(&format!(
                "<sub>{} · {} tokens · {:.1} tok/s · TTFT {:.2} s</sub>\n\n",
                s.model,
                s.stats.completion_tokens,
                s.stats.decode_tok_s,
                s.stats.time_to_first_token_s
            ));
        }
    }
    out
}
