//! Streams a reply from the engine to the UI and into the database at the same time.
//!
//! The reply row is flushed every [`FLUSH_EVERY_TOKENS`] tokens or [`FLUSH_INTERVAL`],
//! whichever comes first, so a crash loses at most that much text.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmoe_engine::api::{FinishReason, GenerationEvent};
use tokio::sync::Mutex;

use super::models::{ChatStreamEvent, MessageStats, MessageStatus};
use super::store;
use crate::core::db::Db;
use crate::core::engine::models::GenStream;
use crate::core::error::AppResult;

/// Flush the streaming reply after this many new tokens ...
pub const FLUSH_EVERY_TOKENS: usize = 16;
/// ... or after this much time since the last flush.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);

/// Accumulates a reply and writes it to its row in small transactions.
pub struct ReplyWriter {
    db: Db,
    message_id: i64,
    content: String,
    unflushed_tokens: usize,
    last_flush: Instant,
    flushes: u64,
}

impl ReplyWriter {
    /// A writer for the (already inserted, `streaming`) reply row `message_id`.
    pub fn new(db: Db, message_id: i64) -> Self {
        Self {
            db,
            message_id,
            content: String::new(),
            unflushed_tokens: 0,
            last_flush: Instant::now(),
            flushes: 0,
        }
    }

    /// Text so far.
    pub fn content(&self) -> &str {
        &self.content
    }

    /// Number of flushes done.
    pub fn flushes(&self) -> u64 {
        self.flushes
    }

    /// Adds a piece; flushes when the token or time threshold is crossed. Returns whether it flushed.
    pub async fn push(&mut self, text: &str, tokens: usize) -> AppResult<bool> {
        self.content.push_str(text);
        self.unflushed_tokens += tokens.max(1);
        if self.unflushed_tokens >= FLUSH_EVERY_TOKENS
            || self.last_flush.elapsed() >= FLUSH_INTERVAL
        {
            self.flush().await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes the text so far.
    pub async fn flush(&mut self) -> AppResult<()> {
        store::update_content(&self.db, self.message_id, &self.content).await?;
        self.unflushed_tokens = 0;
        self.last_flush = Instant::now();
        self.flushes += 1;
        Ok(())
    }

    /// Final write with status and stats.
    pub async fn finish(
        self,
        status: MessageStatus,
        error: Option<&str>,
        stats: Option<&MessageStats>,
    ) -> AppResult<()> {
        store::finish_message(
            &self.db,
            self.message_id,
            &self.content,
            status,
            error,
            stats,
        )
        .await
    }
}

/// Cancel switches of the replies streaming now, by message id.
#[derive(Clone, Default)]
pub struct ActiveGenerations {
    inner: Arc<Mutex<HashMap<i64, Active>>>,
}

struct Active {
    cancel: Arc<dyn Fn() + Send + Sync>,
    done: tokio::sync::watch::Receiver<bool>,
}

impl ActiveGenerations {
    /// Asks the generation of `message_id` to stop; false if it is not running.
    pub async fn cancel(&self, message_id: i64) -> bool {
        match self.inner.lock().await.get(&message_id) {
            Some(a) => {
                (a.cancel)();
                true
            }
            None => false,
        }
    }

    /// Whether any reply is streaming in `ids`.
    pub async fn running(&self) -> Vec<i64> {
        self.inner.lock().await.keys().copied().collect()
    }

    /// Cancels everything and waits (up to `wait`) until every reply is saved.
    pub async fn cancel_all_and_wait(&self, wait: Duration) {
        let dones: Vec<_> = {
            let g = self.inner.lock().await;
            g.values()
                .map(|a| {
                    (a.cancel)();
                    a.done.clone()
                })
                .collect()
        };
        let all = async {
            for mut d in dones {
                let _ = d.wait_for(|v| *v).await;
            }
        };
        let _ = tokio::time::timeout(wait, all).await;
    }
}

/// Registers the reply as running (so `chat_stop` finds it at once), then spawns the task
/// that drives it: engine events → channel + database.
pub async fn spawn_reply(
    db: Db,
    active: ActiveGenerations,
    message_id: i64,
    model_name: String,
    stream: GenStream,
    emit: Arc<dyn Fn(ChatStreamEvent) + Send + Sync>,
) {
    let GenStream { mut events, cancel } = stream;
    let cancel: Arc<dyn Fn() + Send + Sync> = Arc::from(cancel);
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    active.inner.lock().await.insert(
        message_id,
        Active {
            cancel,
            done: done_rx,
        },
    );
    let registry = active;
    // Detached: the task ends when the engine ends the stream; shutdown waits on `done`.
    drop(tokio::spawn(async move {
        let mut writer = ReplyWriter::new(db, message_id);
        let mut outcome: Option<(FinishReason, hmoe_engine::api::GenerationStats)> = None;
        let mut failure: Option<String> = None;
        while let Some(ev) = events.recv().await {
            match ev {
                GenerationEvent::Text { text, tokens } => {
                    emit(ChatStreamEvent::Delta {
                        message_id,
                        text: text.clone(),
                    });
                    if let Err(e) = writer.push(&text, tokens.len()).await {
                        failure = Some(format!("saving the reply failed: {e}"));
                        break;
                    }
                }
                GenerationEvent::Done {
                    finish_reason,
                    stats,
                } => {
                    outcome = Some((finish_reason, stats));
                    break;
                }
                GenerationEvent::Error { message } => {
                    failure = Some(message);
                    break;
                }
            }
        }
        let (status, stats, error) = match (outcome, failure) {
            (Some((finish_reason, stats)), None) => (
                MessageStatus::Complete,
                Some(MessageStats {
                    model: model_name,
                    stats,
                    finish_reason,
                }),
                None,
            ),
            (_, Some(e)) => (MessageStatus::Error, None, Some(e)),
            (None, None) => (
                MessageStatus::Error,
                None,
                Some("the engine stopped without finishing the reply".into()),
            ),
        };
        let saved = writer
            .finish(status, error.as_deref(), stats.as_ref())
            .await;
        let error = match saved {
            Ok(()) => error,
            Err(e) => Some(format!("saving the reply failed: {e}")),
        };
        let status = if error.is_some() {
            MessageStatus::Error
        } else {
            status
        };
        registry.inner.lock().await.remove(&message_id);
        let _ = done_tx.send(true);
        emit(ChatStreamEvent::Done {
            message_id,
            status,
            stats,
            error,
        });
    }));
}
