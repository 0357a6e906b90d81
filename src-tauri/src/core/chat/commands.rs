//! Chat commands (thin: argument plumbing only; logic in `helpers` and `store`).

use std::sync::Arc;

use tauri::ipc::Channel;
use tauri::{AppHandle, Runtime, State};

use super::helpers;
use super::models::{
    BackendChoice, ChatStreamEvent, Conversation, ConversationSettings, ExportFormat, Message,
    SendResult,
};
use super::remote::{self, EndpointInput, RemoteEndpoint};
use super::store;
use crate::core::error::AppResult;
use crate::core::state::AppState;

fn emitter(ch: Channel<ChatStreamEvent>) -> Arc<dyn Fn(ChatStreamEvent) + Send + Sync> {
    // A closed window drops the channel; the reply still finishes and is saved.
    Arc::new(move |ev| {
        let _ = ch.send(ev);
    })
}

/// Lists conversations, optionally filtered by a search text.
#[tauri::command]
pub async fn conversations_list(
    state: State<'_, AppState>,
    query: Option<String>,
) -> AppResult<Vec<Conversation>> {
    store::list_conversations(&state.db, query.as_deref()).await
}

/// Creates a conversation.
#[tauri::command]
pub async fn conversation_create(
    state: State<'_, AppState>,
    title: Option<String>,
) -> AppResult<Conversation> {
    store::create_conversation(&state.db, title.as_deref().unwrap_or("New chat")).await
}

/// Renames a conversation.
#[tauri::command]
pub async fn conversation_rename(
    state: State<'_, AppState>,
    id: i64,
    title: String,
) -> AppResult<Conversation> {
    store::rename_conversation(&state.db, id, &title).await
}

/// Deletes a conversation (stopping its reply first).
#[tauri::command]
pub async fn conversation_delete(state: State<'_, AppState>, id: i64) -> AppResult<()> {
    for m in store::list_messages(&state.db, id).await? {
        state.active.cancel(m.id).await;
    }
    store::delete_conversation(&state.db, id).await
}

/// Sets the system prompt and sampling of a conversation.
#[tauri::command]
pub async fn conversation_update_settings(
    state: State<'_, AppState>,
    id: i64,
    system_prompt: String,
    settings: Option<ConversationSettings>,
) -> AppResult<Conversation> {
    store::update_settings(&state.db, id, &system_prompt, settings.as_ref()).await
}

/// The conversation as Markdown or JSON text.
#[tauri::command]
pub async fn conversation_export(
    state: State<'_, AppState>,
    id: i64,
    format: ExportFormat,
) -> AppResult<String> {
    helpers::export(&state.db, id, format).await
}

/// Asks where to save, then writes the export there. Returns the path, or None if cancelled.
#[tauri::command]
pub async fn conversation_export_save<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, AppState>,
    id: i64,
    format: ExportFormat,
) -> AppResult<Option<String>> {
    let text = helpers::export(&state.db, id, format).await?;
    let conv = store::get_conversation(&state.db, id).await?;
    let ext = match format {
        ExportFormat::Markdown => "md",
        ExportFormat::Json => "json",
    };
    let safe: String = conv
        .title
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == ' ' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = format!("{}.{ext}", safe.trim());
    let saved = crate::core::app::dialog::save_bytes(&app, ext, &name, text.into_bytes()).await?;
    Ok(saved.map(|p| p.display().to_string()))
}

/// Messages of a conversation.
#[tauri::command]
pub async fn messages_list(
    state: State<'_, AppState>,
    conversation_id: i64,
) -> AppResult<Vec<Message>> {
    store::list_messages(&state.db, conversation_id).await
}

/// Sends a message; the reply streams over `on_event`.
#[tauri::command]
pub async fn chat_send(
    state: State<'_, AppState>,
    conversation_id: i64,
    text: String,
    on_event: Channel<ChatStreamEvent>,
) -> AppResult<SendResult> {
    helpers::send(&state.chat(), conversation_id, &text, emitter(on_event)).await
}

/// Regenerates the last reply.
#[tauri::command]
pub async fn chat_regenerate(
    state: State<'_, AppState>,
    conversation_id: i64,
    on_event: Channel<ChatStreamEvent>,
) -> AppResult<SendResult> {
    helpers::regenerate(&state.chat(), conversation_id, emitter(on_event)).await
}

/// Edits a user message and resends from there.
#[tauri::command]
pub async fn chat_edit_resend(
    state: State<'_, AppState>,
    message_id: i64,
    text: String,
    on_event: Channel<ChatStreamEvent>,
) -> AppResult<SendResult> {
    helpers::edit_resend(&state.chat(), message_id, &text, emitter(on_event)).await
}

/// Stops a streaming reply (what was generated stays).
#[tauri::command]
pub async fn chat_stop(state: State<'_, AppState>, message_id: i64) -> AppResult<bool> {
    Ok(state.active.cancel(message_id).await)
}

/// Sets who answers a conversation (`None` = the app's default).
#[tauri::command]
pub async fn conversation_set_backend(
    state: State<'_, AppState>,
    id: i64,
    backend: Option<BackendChoice>,
) -> AppResult<Conversation> {
    if let Some(BackendChoice::Remote { endpoint_id }) = backend {
        remote::get_endpoint(&state.db, endpoint_id).await?;
    }
    store::set_backend(&state.db, id, backend.as_ref()).await
}

/// Remote endpoints (keys masked).
#[tauri::command]
pub async fn remote_endpoints_list(state: State<'_, AppState>) -> AppResult<Vec<RemoteEndpoint>> {
    remote::list_endpoints(&state.db, &state.secrets).await
}

/// Creates or edits a remote endpoint (its key goes to the secret store).
#[tauri::command]
pub async fn remote_endpoint_save(
    state: State<'_, AppState>,
    endpoint: EndpointInput,
) -> AppResult<RemoteEndpoint> {
    remote::save_endpoint(&state.db, &state.secrets, &endpoint).await
}

/// Deletes a remote endpoint; its conversations go back to the default backend.
#[tauri::command]
pub async fn remote_endpoint_delete(state: State<'_, AppState>, id: i64) -> AppResult<()> {
    remote::delete_endpoint(&state.db, &state.secrets, id).await
}

/// Asks the endpoint for its models (connection, key and URL check).
#[tauri::command]
pub async fn remote_endpoint_test(state: State<'_, AppState>, id: i64) -> AppResult<Vec<String>> {
    remote::test_endpoint(&state.db, &state.secrets, id).await
}
