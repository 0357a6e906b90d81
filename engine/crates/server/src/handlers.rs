//! Route handlers: `/v1/chat/completions`, `/v1/completions`, `/v1/models`, `/health`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, StreamExt};
use hmoe_engine::api::Prompt;
use serde_json::{json, Value};

use crate::admission::{Outcome, Slot};
use crate::backend::BackendError;
use crate::driver::{Driver, Step};
use crate::error::ApiError;
use crate::request::{parse_chat, parse_completion, GenerationRequest};
use crate::server::AppState;

/// SSE comment interval: keeps proxies from timing out during a long prefill and
/// makes a vanished client show up as a failed write.
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(5);
/// OpenAI's default `max_tokens` for text completions.
const COMPLETIONS_DEFAULT_MAX_TOKENS: usize = 16;

/// Which endpoint shape to answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Text,
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::InvalidRequest(m) => ApiError::bad_request(m),
            BackendError::ContextOverflow { .. } => {
                ApiError::bad_request(e.to_string()).with_code("context_length_exceeded")
            }
            BackendError::Unavailable(m) => ApiError::unavailable(m),
            BackendError::Internal(m) => ApiError::internal(m),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn new_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{nanos:08x}{n:08x}")
}

fn check_json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Requiring JSON also stops browsers' "simple" cross-site form posts.
    if !ct
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err(ApiError::unsupported_media_type(format!(
            "Content-Type must be application/json, got `{ct}`"
        )));
    }
    body.map_err(|rej| {
        if rej.status().as_u16() == 413 {
            ApiError::payload_too_large(format!("request body too large: {}", rej.body_text()))
        } else {
            ApiError::bad_request(format!(
                "could not read the request body: {}",
                rej.body_text()
            ))
        }
    })
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let body = check_json_body(&headers, body)?;
        let req = parse_chat(&body, &st.config.limits)?;
        run(st, Api::Chat, req).await
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/completions`.
pub async fn completions(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let body = check_json_body(&headers, body)?;
        let req = parse_completion(&body, &st.config.limits, st.backend.vocab_size())?;
        run(st, Api::Text, req).await
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// Checks the prompt against the context, waits for a slot and starts the generation.
async fn run(
    st: Arc<AppState>,
    api: Api,
    mut req: GenerationRequest,
) -> Result<Response, ApiError> {
    if req.model != st.model_id {
        return Err(ApiError::not_found(
            format!(
                "model `{}` is not served here; this server serves `{}`",
                req.model, st.model_id
            ),
            "model_not_found",
        )
        .with_param("model"));
    }
    let prompt_field = if api == Api::Chat {
        "messages"
    } else {
        "prompt"
    };
    let context = st.backend.context_length();
    let ids = match req.prompt {
        Prompt::Tokens { ids } => ids,
        p => {
            // Off the async workers: a 4 MiB prompt takes a while to render and tokenize.
            let backend = st.backend.clone();
            tokio::task::spawn_blocking(move || backend.tokenize_prompt(&p))
                .await
                .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))??
        }
    };
    let prompt_tokens = ids.len();
    let max_prompt = st
        .config
        .limits
        .max_prompt_tokens
        .min(context.saturating_sub(1));
    if prompt_tokens == 0 {
        return Err(ApiError::invalid_field(prompt_field, "the prompt is empty"));
    }
    if prompt_tokens > max_prompt {
        return Err(ApiError::invalid_field(
            prompt_field,
            format!("the prompt has {prompt_tokens} tokens; this server accepts at most {max_prompt} (context length {context})"),
        )
        .with_code("context_length_exceeded"));
    }
    let room = context - prompt_tokens;
    let max_tokens = match req.max_tokens {
        Some(m) if m > room => {
            return Err(ApiError::invalid_field(
                "max_tokens",
                format!("max_tokens = {m} plus the {prompt_tokens} prompt tokens exceeds the context length {context}"),
            )
            .with_code("context_length_exceeded"))
        }
        Some(m) => m,
        None if api == Api::Text => COMPLETIONS_DEFAULT_MAX_TOKENS.min(room),
        None => st.config.limits.default_chat_max_tokens.min(room),
    };
    req.params.max_tokens = max_tokens;

    let slot = st.admission.acquire().await?;
    let stops = req.params.stop.clone();
    let generation = st.backend.generate(Prompt::Tokens { ids }, req.params)?;
    let driver = Driver::new(generation, &stops, prompt_tokens);
    let meta = Meta {
        id: new_id(if api == Api::Chat { "chatcmpl" } else { "cmpl" }),
        created: unix_now(),
        model: st.model_id.clone(),
        api,
        include_usage: req.include_usage,
    };
    if req.stream {
        Ok(stream_response(driver, slot, meta))
    } else {
        collect_response(driver, slot, meta).await
    }
}

struct Meta {
    id: String,
    created: u64,
    model: String,
    api: Api,
    include_usage: bool,
}

fn usage_json(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

async fn collect_response(
    mut driver: Driver,
    slot: Slot,
    meta: Meta,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    while let Some(step) = driver.next().await {
        match step {
            Step::Text(t) => text.push_str(&t),
            Step::Failed(e) => {
                slot.finish(Outcome::Failed, 0, 0);
                return Err(e);
            }
            Step::Finished {
                finish_reason,
                prompt_tokens,
                completion_tokens,
            } => {
                slot.finish(Outcome::Completed, prompt_tokens, completion_tokens);
                let choice = match meta.api {
                    Api::Chat => json!({
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": null,
                        "finish_reason": finish_reason,
                    }),
                    Api::Text => json!({
                        "index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason,
                    }),
                };
                let object = if meta.api == Api::Chat {
                    "chat.completion"
                } else {
                    "text_completion"
                };
                return Ok(Json(json!({
                    "id": meta.id,
                    "object": object,
                    "created": meta.created,
                    "model": meta.model,
                    "system_fingerprint": null,
                    "choices": [choice],
                    "usage": usage_json(prompt_tokens, completion_tokens),
                }))
                .into_response());
            }
        }
    }
    Err(ApiError::internal("generation ended without a result"))
}

impl Meta {
    /// One streamed chunk with a text delta and an optional finish reason.
    fn chunk(&self, text: Option<&str>, role: bool, finish_reason: Option<&str>) -> Value {
        let choice = match self.api {
            Api::Chat => {
                let mut delta = serde_json::Map::new();
                if role {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = text {
                    delta.insert("content".into(), json!(t));
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason})
            }
            Api::Text => json!({
                "index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish_reason,
            }),
        };
        let object = if self.api == Api::Chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let mut v = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [choice],
        });
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        v
    }

    fn usage_chunk(&self, prompt_tokens: usize, completion_tokens: usize) -> Value {
        let object = if self.api == Api::Chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [],
            "usage": usage_json(prompt_tokens, completion_tokens),
        })
    }
}

/// State of one SSE stream. Dropping it (client gone) drops the driver, which cancels
/// the generation, and the slot, which frees the place at once.
struct StreamState {
    driver: Driver,
    slot: Option<Slot>,
    meta: Meta,
    started: bool,
}

fn data(v: &Value) -> Event {
    Event::default().data(v.to_string())
}

impl StreamState {
    async fn advance(&mut self) -> Option<Vec<Event>> {
        if !self.started && self.meta.api == Api::Chat {
            self.started = true;
            return Some(vec![data(&self.meta.chunk(Some(""), true, None))]);
        }
        self.started = true;
        match self.driver.next().await? {
            Step::Text(t) => Some(vec![data(&self.meta.chunk(Some(&t), false, None))]),
            Step::Finished {
                finish_reason,
                prompt_tokens,
                completion_tokens,
            } => {
                if let Some(slot) = self.slot.take() {
                    slot.finish(Outcome::Completed, prompt_tokens, completion_tokens);
                }
                let mut events = vec![data(&self.meta.chunk(None, false, Some(finish_reason)))];
                if self.meta.include_usage {
                    events.push(data(
                        &self.meta.usage_chunk(prompt_tokens, completion_tokens),
                    ));
                }
                events.push(Event::default().data("[DONE]"));
                Some(events)
            }
            Step::Failed(e) => {
                if let Some(slot) = self.slot.take() {
                    slot.finish(Outcome::Failed, 0, 0);
                }
                Some(vec![data(&e.body()), Event::default().data("[DONE]")])
            }
        }
    }
}

fn stream_response(driver: Driver, slot: Slot, meta: Meta) -> Response {
    let state = StreamState {
        driver,
        slot: Some(slot),
        meta,
        started: false,
    };
    let events = stream::unfold(state, |mut st| async move {
        let batch = st.advance().await?;
        Some((
            stream::iter(batch.into_iter().map(Ok::<_, std::convert::Infallible>)),
            st,
        ))
    })
    .flatten();
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE))
        .into_response()
}

fn model_json(st: &AppState) -> Value {
    json!({
        "id": st.model_id,
        "object": "model",
        "created": st.created,
        "owned_by": "hmoe",
        "context_length": st.backend.context_length(),
    })
}

/// `GET /v1/models`.
pub async fn models(State(st): State<Arc<AppState>>) -> Response {
    Json(json!({"object": "list", "data": [model_json(&st)]})).into_response()
}

/// `GET /v1/models/{id}`.
pub async fn model(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if id == st.model_id {
        Json(model_json(&st)).into_response()
    } else {
        ApiError::not_found(
            format!("model `{id}` is not served here"),
            "model_not_found",
        )
        .into_response()
    }
}

/// `GET /health`: liveness plus the admission and engine numbers.
pub async fn health(State(st): State<Arc<AppState>>) -> Response {
    Json(json!({
        "status": "ok",
        "model": st.model_id,
        "uptime_s": st.started.elapsed().as_secs_f64(),
        "slots": st.admission.stats(),
        "engine": st.backend.stats(),
    }))
    .into_response()
}

/// Unknown route.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    ApiError::not_found(format!("no route for {}", uri.path()), "not_found").into_response()
}

/// Known route, wrong method.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    ApiError::method_not_allowed(format!("{method} is not allowed on {}", uri.path()))
        .into_response()
}
