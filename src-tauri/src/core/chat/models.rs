//! Chat types shared by the store, the service and the UI (serde names are the wire format).

use hmoe_engine::api::{FinishReason, GenerationStats, SamplingParams};
use serde::{Deserialize, Serialize};

/// A conversation as listed in the sidebar.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Conversation {
    /// Row id.
    pub id: i64,
    /// Title shown in the list.
    pub title: String,
    /// System prompt (may be empty).
    pub system_prompt: String,
    /// Per-conversation settings; `None` means the defaults from settings.
    pub settings: Option<ConversationSettings>,
    /// Who answers: `None` means the app's default backend (settings).
    pub backend: Option<BackendChoice>,
    /// Creation time, ms since epoch.
    pub created_at: i64,
    /// Last change, ms since epoch.
    pub updated_at: i64,
}

/// Who generates the replies of a conversation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackendChoice {
    /// The model loaded in this app.
    #[default]
    Local,
    /// A remote OpenAI-compatible endpoint (see `remote_endpoints`).
    Remote {
        /// Row id of the endpoint.
        endpoint_id: i64,
    },
}

/// Sampling and thinking switch of one conversation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct ConversationSettings {
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// Qwen3 `enable_thinking`.
    pub enable_thinking: bool,
}

/// Where a message stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Finished (including stopped by the user).
    Complete,
    /// Being generated right now.
    Streaming,
    /// The app died while it streamed; the text is what was flushed.
    Interrupted,
    /// Generation failed (see `error`).
    Error,
}

impl MessageStatus {
    /// Database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Complete => "complete",
            MessageStatus::Streaming => "streaming",
            MessageStatus::Interrupted => "interrupted",
            MessageStatus::Error => "error",
        }
    }

    /// Parses the database spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "complete" => MessageStatus::Complete,
            "streaming" => MessageStatus::Streaming,
            "interrupted" => MessageStatus::Interrupted,
            "error" => MessageStatus::Error,
            _ => return None,
        })
    }
}

/// Stats stored with an assistant message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MessageStats {
    /// Model file name that produced it.
    pub model: String,
    /// Engine numbers.
    #[serde(flatten)]
    pub stats: GenerationStats,
    /// Why it ended.
    pub finish_reason: FinishReason,
}

/// One message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    /// Row id.
    pub id: i64,
    /// Owning conversation.
    pub conversation_id: i64,
    /// Position in the conversation.
    pub seq: i64,
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Text (for a streaming reply: up to the last flush).
    pub content: String,
    /// Status.
    pub status: MessageStatus,
    /// Error text when `status == error`.
    pub error: Option<String>,
    /// Generation stats of an assistant reply.
    pub stats: Option<MessageStats>,
    /// Creation time, ms since epoch.
    pub created_at: i64,
}

/// Export formats.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// Readable Markdown.
    Markdown,
    /// Everything, machine-readable.
    Json,
}

/// What `chat_send` and friends return at once (the text streams over the channel).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SendResult {
    /// The user's message (none for regenerate).
    pub user_message_id: Option<i64>,
    /// The assistant reply being streamed.
    pub assistant_message_id: i64,
}

/// Channel payload of a streaming reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatStreamEvent {
    /// New text for the reply.
    Delta {
        /// Reply id.
        message_id: i64,
        /// The new text piece.
        text: String,
    },
    /// The reply ended; stats are stored too.
    Done {
        /// Reply id.
        message_id: i64,
        /// Final status (`complete` or `error`).
        status: MessageStatus,
        /// Stats when the engine sent them.
        stats: Option<MessageStats>,
        /// Error text.
        error: Option<String>,
    },
}
