//! Shared test helpers: a deterministic mock backend and HTTP helpers.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hmoe_engine::api::{FinishReason, GenerationEvent, GenerationStats, Prompt, SamplingParams};
use hmoe_server::{
    BackendError, BackendGeneration, ChatBackend, GenerationStream, ServeConfig, ServerHandle,
};
use serde_json::Value;
use tokio::sync::mpsc;

/// Model name of the mock.
pub const MOCK_MODEL: &str = "mock-model";
/// Mock context length.
pub const MOCK_CONTEXT: usize = 512;

/// Deterministic backend: the output depends only on the prompt ids and params; every
/// token is a word `wN ` with N derived from the prompt. A prompt containing `FAIL`
/// makes the generation fail after one token.
#[derive(Clone, Default)]
pub struct MockBackend {
    /// Delay between tokens.
    pub token_delay: Duration,
    /// Generations whose cancellation the mock observed.
    pub cancelled: Arc<AtomicUsize>,
    /// Generations running inside the mock.
    pub running: Arc<AtomicUsize>,
}

struct MockStream {
    rx: mpsc::Receiver<GenerationEvent>,
    cancel: Arc<AtomicBool>,
}

impl GenerationStream for MockStream {
    fn events(&mut self) -> &mut mpsc::Receiver<GenerationEvent> {
        &mut self.rx
    }
    fn cancel(&mut self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

/// The words the mock generates for these prompt ids.
pub fn mock_word(ids: &[u32], k: usize) -> String {
    let h = ids
        .iter()
        .fold(17u64, |h, &t| h.wrapping_mul(31).wrapping_add(t as u64));
    format!("w{} ", (h.wrapping_add(k as u64 * 7)) % 1000)
}

impl ChatBackend for MockBackend {
    fn model_id(&self) -> String {
        MOCK_MODEL.to_string()
    }
    fn context_length(&self) -> usize {
        MOCK_CONTEXT
    }
    fn vocab_size(&self) -> usize {
        256
    }
    fn tokenize_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>, BackendError> {
        let text = match prompt {
            Prompt::Text { text } => text.clone(),
            Prompt::Tokens { ids } => return Ok(ids.clone()),
            Prompt::Chat { messages, .. } => messages
                .iter()
                .map(|m| format!("{}:{}\n", m.role, m.content))
                .collect(),
        };
        Ok(text.bytes().map(u32::from).collect())
    }
    fn generate(
        &self,
        prompt: Prompt,
        params: SamplingParams,
    ) -> Result<BackendGeneration, BackendError> {
        let Prompt::Tokens { ids } = prompt else {
            return Err(BackendError::InvalidRequest("mock wants token ids".into()));
        };
        let fail = String::from_utf8_lossy(&ids.iter().map(|&t| t as u8).collect::<Vec<_>>())
            .contains("FAIL");
        let (tx, rx) = mpsc::channel(16);
        let cancel = Arc::new(AtomicBool::new(false));
        let (c, cancelled, running, delay) = (
            cancel.clone(),
            self.cancelled.clone(),
            self.running.clone(),
            self.token_delay,
        );
        running.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            for k in 0..params.max_tokens {
                if c.load(Ordering::SeqCst) {
                    cancelled.fetch_add(1, Ordering::SeqCst);
                    running.fetch_sub(1, Ordering::SeqCst);
                    return;
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if fail && k == 1 {
                    let _ = tx
                        .send(GenerationEvent::Error {
                            message: "mock failure".into(),
                        })
                        .await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    return;
                }
                let ev = GenerationEvent::Text {
                    text: mock_word(&ids, k),
                    tokens: vec![k as u32],
                };
                if tx.send(ev).await.is_err() {
                    // Receiver gone: count it as cancelled when the cancel flag was set.
                    if c.load(Ordering::SeqCst) {
                        cancelled.fetch_add(1, Ordering::SeqCst);
                    }
                    running.fetch_sub(1, Ordering::SeqCst);
                    return;
                }
            }
            let stats = GenerationStats {
                prompt_tokens: ids.len(),
                completion_tokens: params.max_tokens,
                ..Default::default()
            };
            let _ = tx
                .send(GenerationEvent::Done {
                    finish_reason: FinishReason::Length,
                    stats,
                })
                .await;
            running.fetch_sub(1, Ordering::SeqCst);
        });
        Ok(BackendGeneration::new(MockStream { rx, cancel }))
    }
}

/// A loopback config on a free port.
pub fn test_config() -> ServeConfig {
    ServeConfig {
        port: 0,
        ..Default::default()
    }
}

/// Starts a server with the mock.
pub async fn start_mock(config: ServeConfig, backend: MockBackend) -> ServerHandle {
    hmoe_server::start(config, Arc::new(backend))
        .await
        .expect("server starts")
}

/// A chat body for the mock.
pub fn chat_body(content: &str, max_tokens: usize, stream: bool) -> Value {
    serde_json::json!({
        "model": MOCK_MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

/// Reads an SSE response to the end: (data payloads except [DONE], saw [DONE]).
pub async fn read_sse(resp: reqwest::Response) -> (Vec<Value>, bool) {
    let text = resp.text().await.expect("body");
    let mut out = Vec::new();
    let mut done = false;
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("data: ") {
            if d == "[DONE]" {
                done = true;
            } else {
                out.push(serde_json::from_str(d).expect("chunk is JSON"));
            }
        }
    }
    (out, done)
}

/// Concatenated `delta.content` of chat chunks.
pub fn stream_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .filter_map(|c| c["delta"]["content"].as_str())
        .collect()
}

/// Polls `/health` until `pred` holds or the bound passes.
pub async fn wait_health(base: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let client = reqwest::Client::new();
    // Generous bound: this is a liveness bound, not a timing assertion.
    for _ in 0..500 {
        let h: Value = client
            .get(format!("{base}/health"))
            .send()
            .await
            .expect("health")
            .json()
            .await
            .expect("json");
        if pred(&h) {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("health condition not reached within 10 s");
}
