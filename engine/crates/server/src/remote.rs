//! Client for any OpenAI-compatible endpoint (vLLM, SGLang, another `hmoe serve`),
//! so `hmoe chat --remote URL` and the app can talk to a remote model per conversation.
//! Streams come back as the engine's own [`GenerationEvent`]s.

use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::Stream;
use hmoe_engine::api::{
    ChatMessage, FinishReason, GenerationEvent, GenerationStats, SamplingParams,
};
use serde_json::{json, Value};

use crate::sse_client::{SseError, SseReader};

/// Connect timeout; generation itself may take long, so there is no overall timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong talking to a remote endpoint.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The URL is not `http(s)://...`.
    #[error("invalid endpoint URL `{0}` (expected http:// or https://)")]
    BadUrl(String),
    /// Transport failure.
    #[error("request to {url} failed: {source}")]
    Http {
        /// The URL.
        url: String,
        /// Cause.
        source: reqwest::Error,
    },
    /// The endpoint answered with an error.
    #[error("{url} answered {status}: {message}")]
    Status {
        /// The URL.
        url: String,
        /// HTTP status (0 for an error inside a stream).
        status: u16,
        /// The endpoint's message.
        message: String,
    },
    /// The answer is not what the OpenAI API specifies.
    #[error("unexpected answer from {url}: {message}")]
    Protocol {
        /// The URL.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// Reading the event stream failed.
    #[error(transparent)]
    Sse(#[from] SseError),
}

/// Normalizes `http://h:p`, `http://h:p/v1`, `http://h:p/v1/chat/completions` to the
/// API base (`.../v1`).
pub fn api_base(url: &str) -> Result<String, RemoteError> {
    let u = url.trim().trim_end_matches('/');
    let Some((scheme, rest)) = u.split_once("://") else {
        return Err(RemoteError::BadUrl(url.to_string()));
    };
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
        || rest.is_empty()
    {
        return Err(RemoteError::BadUrl(url.to_string()));
    }
    let u = u
        .strip_suffix("/chat/completions")
        .or_else(|| u.strip_suffix("/completions"))
        .unwrap_or(u);
    let has_path = u.split_once("://").is_some_and(|(_, r)| r.contains('/'));
    Ok(if has_path {
        u.to_string()
    } else {
        format!("{u}/v1")
    })
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<axum::body::Bytes, reqwest::Error>> + Send>>;

/// A remote model.
#[derive(Debug, Clone)]
pub struct RemoteChat {
    base: String,
    api_key: Option<String>,
    model: String,
    client: reqwest::Client,
}

/// A streaming answer; dropping it closes the connection (the server then stops).
pub struct RemoteStream {
    url: String,
    reader: SseReader<ByteStream>,
    started: Instant,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    pieces: usize,
    finish: Option<FinishReason>,
    usage: Option<(usize, usize)>,
    done: bool,
}

impl RemoteChat {
    /// A client for `model` at `base_url` (with or without `/v1`).
    pub fn new(base_url: &str, api_key: Option<String>, model: &str) -> Result<Self, RemoteError> {
        let base = api_base(base_url)?;
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|source| RemoteError::Http {
                url: base.clone(),
                source,
            })?;
        Ok(Self {
            base,
            api_key,
            model: model.to_string(),
            client,
        })
    }

    /// The API base URL (`.../v1`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The model name sent with each request.
    pub fn model(&self) -> &str {
        &self.model
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let mut rb = self.client.request(method, url);
        if let Some(k) = &self.api_key {
            rb = rb.bearer_auth(k);
        }
        rb
    }

    async fn send(
        &self,
        rb: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::Response, RemoteError> {
        let resp = rb.send().await.map_err(|source| RemoteError::Http {
            url: url.to_string(),
            source,
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(body);
        Err(RemoteError::Status {
            url: url.to_string(),
            status,
            message,
        })
    }

    /// Model ids the endpoint lists at `/models`.
    pub async fn list_models(&self) -> Result<Vec<String>, RemoteError> {
        let url = format!("{}/models", self.base);
        let resp = self
            .send(self.request(reqwest::Method::GET, &url), &url)
            .await?;
        let v: Value = resp.json().await.map_err(|source| RemoteError::Http {
            url: url.clone(),
            source,
        })?;
        let data = v["data"].as_array().ok_or_else(|| RemoteError::Protocol {
            url: url.clone(),
            message: "no `data` array in the model list".into(),
        })?;
        Ok(data
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_string))
            .collect())
    }

    /// The JSON body for a chat request (standard OpenAI fields only: strict servers
    /// reject unknown ones such as `top_k`).
    pub fn chat_body(
        &self,
        messages: &[ChatMessage],
        params: &SamplingParams,
        stream: bool,
    ) -> Value {
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "seed": params.seed,
            "stream": stream,
        });
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        if !params.stop.is_empty() {
            body["stop"] = json!(params.stop);
        }
        body
    }

    /// Starts a streaming chat completion.
    pub async fn stream_chat(
        &self,
        messages: &[ChatMessage],
        params: &SamplingParams,
    ) -> Result<RemoteStream, RemoteError> {
        self.stream_body(self.chat_body(messages, params, true))
            .await
    }

    /// Starts a streaming chat completion with a caller-built body (bench, extensions).
    pub async fn stream_body(&self, body: Value) -> Result<RemoteStream, RemoteError> {
        let url = format!("{}/chat/completions", self.base);
        let started = Instant::now();
        let rb = self.request(reqwest::Method::POST, &url).json(&body);
        let resp = self.send(rb, &url).await?;
        let bytes: ByteStream = Box::pin(resp.bytes_stream());
        Ok(RemoteStream {
            url,
            reader: SseReader::new(bytes),
            started,
            first_token: None,
            last_token: None,
            pieces: 0,
            finish: None,
            usage: None,
            done: false,
        })
    }

    /// Non-streaming chat: the whole answer, its finish reason and usage.
    pub async fn chat(
        &self,
        messages: &[ChatMessage],
        params: &SamplingParams,
    ) -> Result<(String, GenerationStats), RemoteError> {
        let mut s = self.stream_chat(messages, params).await?;
        let mut text = String::new();
        while let Some(ev) = s.next().await {
            match ev? {
                GenerationEvent::Text { text: t, .. } => text.push_str(&t),
                GenerationEvent::Done { stats, .. } => return Ok((text, stats)),
                GenerationEvent::Error { message } => {
                    return Err(RemoteError::Status {
                        url: s.url.clone(),
                        status: 0,
                        message,
                    })
                }
            }
        }
        Err(RemoteError::Protocol {
            url: s.url.clone(),
            message: "stream ended without a finish".into(),
        })
    }
}

fn finish_reason(s: &str) -> FinishReason {
    match s {
        "length" => FinishReason::Length,
        _ => FinishReason::Stop,
    }
}

impl RemoteStream {
    /// Seconds from sending the request to the first text (None before it).
    pub fn time_to_first_token(&self) -> Option<f64> {
        self.first_token.map(|t| (t - self.started).as_secs_f64())
    }

    /// Seconds from the first to the last text piece.
    pub fn decode_time(&self) -> Option<f64> {
        Some((self.last_token? - self.first_token?).as_secs_f64())
    }

    /// Text pieces received so far (one per token on most servers).
    pub fn pieces(&self) -> usize {
        self.pieces
    }

    /// `(prompt_tokens, completion_tokens)` from the usage chunk, if the server sent it.
    pub fn usage(&self) -> Option<(usize, usize)> {
        self.usage
    }

    /// Stats so far: token counts from the usage chunk when the server sent one (else the
    /// number of text pieces), timings measured here.
    pub fn stats(&self) -> GenerationStats {
        let (prompt_tokens, completion_tokens) = self.usage.unwrap_or((0, self.pieces));
        let ttft = self.time_to_first_token().unwrap_or(0.0);
        let decode = self.decode_time().unwrap_or(0.0);
        GenerationStats {
            prompt_tokens,
            completion_tokens,
            time_to_first_token_s: ttft,
            prefill_tok_s: if ttft > 0.0 {
                prompt_tokens as f64 / ttft
            } else {
                0.0
            },
            decode_tok_s: if decode > 0.0 {
                completion_tokens.saturating_sub(1) as f64 / decode
            } else {
                0.0
            },
        }
    }

    /// The next event: text pieces, then one `Done` with stats from usage and timings.
    pub async fn next(&mut self) -> Option<Result<GenerationEvent, RemoteError>> {
        if self.done {
            return None;
        }
        loop {
            let data = match self.reader.next_data().await {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e.into()));
                }
                None => {
                    self.done = true;
                    return self
                        .finish
                        .map(|finish_reason| {
                            Ok(GenerationEvent::Done {
                                finish_reason,
                                stats: self.stats(),
                            })
                        })
                        .or_else(|| {
                            Some(Err(RemoteError::Protocol {
                                url: self.url.clone(),
                                message: "stream ended without a finish_reason".into(),
                            }))
                        });
                }
            };
            if data.trim() == "[DONE]" {
                self.done = true;
                let finish_reason = self.finish.unwrap_or(FinishReason::Stop);
                return Some(Ok(GenerationEvent::Done {
                    finish_reason,
                    stats: self.stats(),
                }));
            }
            let v: Value = match serde_json::from_str(&data) {
                Ok(v) => v,
                Err(e) => {
                    self.done = true;
                    return Some(Err(RemoteError::Protocol {
                        url: self.url.clone(),
                        message: format!("bad JSON in stream: {e}"),
                    }));
                }
            };
            if let Some(err) = v.get("error") {
                self.done = true;
                let message = err["message"]
                    .as_str()
                    .unwrap_or("unknown error")
                    .to_string();
                return Some(Err(RemoteError::Status {
                    url: self.url.clone(),
                    status: 0,
                    message,
                }));
            }
            if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                let get = |k: &str| u[k].as_u64().unwrap_or(0) as usize;
                self.usage = Some((get("prompt_tokens"), get("completion_tokens")));
            }
            let Some(choice) = v["choices"].as_array().and_then(|c| c.first()) else {
                continue;
            };
            if let Some(f) = choice["finish_reason"].as_str() {
                self.finish = Some(finish_reason(f));
            }
            let text = choice["delta"]["content"]
                .as_str()
                .or_else(|| choice["text"].as_str())
                .unwrap_or("");
            if !text.is_empty() {
                let now = Instant::now();
                self.first_token.get_or_insert(now);
                self.last_token = Some(now);
                self.pieces += 1;
                return Some(Ok(GenerationEvent::Text {
                    text: text.to_string(),
                    tokens: Vec::new(),
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_base_normalizes() {
        assert_eq!(api_base("http://h:1").unwrap(), "http://h:1/v1");
        assert_eq!(api_base("http://h:1/v1/").unwrap(), "http://h:1/v1");
        assert_eq!(
            api_base("http://h:1/v1/chat/completions").unwrap(),
            "http://h:1/v1"
        );
        assert_eq!(
            api_base("https://x.ai/api/v2").unwrap(),
            "https://x.ai/api/v2"
        );
        assert!(api_base("ftp://h").is_err());
        assert!(api_base("localhost:1").is_err());
    }
}
