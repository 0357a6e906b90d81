//! Parsing and bounding OpenAI request bodies. Every client-controlled number is
//! range-checked here and every error names the field, so the engine only ever sees
//! values it can handle.

use hmoe_engine::api::{ChatMessage, Prompt, SamplingParams};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::config::Limits;
use crate::error::ApiError;

/// A validated request, ready for admission.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    /// The `model` field.
    pub model: String,
    /// What to run.
    pub prompt: Prompt,
    /// Sampling settings; `max_tokens` is filled in once the prompt length is known.
    pub params: SamplingParams,
    /// The client's `max_tokens`, if given.
    pub max_tokens: Option<usize>,
    /// Stream over SSE.
    pub stream: bool,
    /// Send a final usage chunk when streaming.
    pub include_usage: bool,
}

/// Parses JSON into `T`; errors name the field path (`messages[0].content`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("malformed JSON body: {inner}")).with_code("invalid_json")
        } else if path == "." && inner.to_string().contains("expected struct") {
            ApiError::bad_request("the request body must be a JSON object")
        } else if path == "." {
            ApiError::bad_request(format!("invalid request body: {inner}"))
        } else {
            ApiError::invalid_field(path.clone(), format!("invalid value for `{path}`: {inner}"))
        }
    })?;
    de.end().map_err(|e| {
        ApiError::bad_request(format!("malformed JSON body: {e}")).with_code("invalid_json")
    })?;
    Ok(value)
}

/// Sampling fields shared by chat and text completions.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RawSampling {
    model: Option<String>,
    stream: Option<bool>,
    stream_options: Option<RawStreamOptions>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    min_p: Option<f64>,
    repetition_penalty: Option<f64>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    seed: Option<Value>,
    n: Option<i64>,
    stop: Option<Value>,
    logprobs: Option<Value>,
    top_logprobs: Option<i64>,
    tools: Option<Value>,
    functions: Option<Value>,
    response_format: Option<Value>,
    logit_bias: Option<Value>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RawStreamOptions {
    include_usage: Option<bool>,
}

/// `/v1/chat/completions` body (without the shared sampling fields, which are parsed
/// separately: serde's `flatten` would lose the field path in error messages).
#[derive(Debug, Deserialize)]
struct RawChatRequest {
    messages: Option<Vec<RawMessage>>,
    enable_thinking: Option<bool>,
    chat_template_kwargs: Option<RawTemplateKwargs>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RawTemplateKwargs {
    enable_thinking: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct RawMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Value>,
}

/// `/v1/completions` body.
#[derive(Debug, Deserialize)]
struct RawCompletionRequest {
    prompt: Option<Value>,
    echo: Option<bool>,
    suffix: Option<String>,
    best_of: Option<i64>,
}

/// Bounds of sampling fields. The engine's math is stable inside these ranges.
const TEMPERATURE_MAX: f64 = 2.0;
const TOP_K_MAX: i64 = 1_000_000;
const REPETITION_PENALTY_MAX: f64 = 10.0;
const PENALTY_ABS_MAX: f64 = 2.0;

fn float_in(name: &str, v: Option<f64>, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
    match v {
        Some(x) if !x.is_finite() || x < lo || x > hi => Err(ApiError::invalid_field(
            name,
            format!("`{name}` must be a number in [{lo}, {hi}], got {x}"),
        )),
        other => Ok(other),
    }
}

fn int_in(name: &str, v: Option<i64>, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
    match v {
        Some(x) if x < lo || x > hi => Err(ApiError::invalid_field(
            name,
            format!("`{name}` must be an integer in [{lo}, {hi}], got {x}"),
        )),
        other => Ok(other),
    }
}

fn unsupported(name: &str, what: &str) -> ApiError {
    ApiError::invalid_field(
        name,
        format!("`{name}` is not supported by this server: {what}"),
    )
    .with_code("unsupported_parameter")
}

fn fresh_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // splitmix64 of time and a counter: distinct seeds for requests in the same nanosecond.
    let mut z = nanos ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl RawSampling {
    /// Checks every field and builds the engine's settings.
    fn into_request(self, prompt: Prompt, limits: &Limits) -> Result<GenerationRequest, ApiError> {
        let model = match self.model {
            Some(m) if !m.is_empty() => m,
            _ => return Err(ApiError::invalid_field("model", "`model` is required")),
        };
        int_in("n", self.n, 1, 1).map_err(|_| {
            ApiError::invalid_field("n", "only `n` = 1 is supported")
                .with_code("unsupported_parameter")
        })?;
        if matches!(self.logprobs, Some(Value::Bool(true)))
            || matches!(self.logprobs, Some(Value::Number(_)))
        {
            return Err(unsupported(
                "logprobs",
                "log probabilities are not returned",
            ));
        }
        if self.top_logprobs.unwrap_or(0) != 0 {
            return Err(unsupported(
                "top_logprobs",
                "log probabilities are not returned",
            ));
        }
        for (name, v) in [("tools", &self.tools), ("functions", &self.functions)] {
            if matches!(v, Some(Value::Array(a)) if !a.is_empty())
                || matches!(v, Some(Value::Object(_)))
            {
                return Err(unsupported(name, "tool calling is not implemented"));
            }
        }
        if matches!(&self.logit_bias, Some(Value::Object(m)) if !m.is_empty()) {
            return Err(unsupported("logit_bias", "logit bias is not implemented"));
        }
        if let Some(rf) = &self.response_format {
            if rf.get("type").and_then(Value::as_str) != Some("text") {
                return Err(unsupported(
                    "response_format",
                    "only {\"type\": \"text\"} is accepted",
                ));
            }
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if let Some(x) = float_in(name, v, -PENALTY_ABS_MAX, PENALTY_ABS_MAX)? {
                if x != 0.0 {
                    return Err(unsupported(
                        name,
                        "use `repetition_penalty` instead (only 0 is accepted here)",
                    ));
                }
            }
        }

        let max_hi = limits.max_completion_tokens as i64;
        let mt = int_in("max_tokens", self.max_tokens, 1, max_hi)?;
        let mct = int_in(
            "max_completion_tokens",
            self.max_completion_tokens,
            1,
            max_hi,
        )?;
        let max_tokens = mct.or(mt).map(|v| v as usize);

        let mut params = SamplingParams::default();
        if let Some(t) = float_in("temperature", self.temperature, 0.0, TEMPERATURE_MAX)? {
            params.temperature = t as f32;
        }
        if let Some(p) = float_in("top_p", self.top_p, 0.0, 1.0)? {
            if p == 0.0 {
                // Only the top token survives: that is greedy decoding.
                params.temperature = 0.0;
                params.top_p = 1.0;
            } else {
                params.top_p = p as f32;
            }
        }
        if let Some(k) = int_in("top_k", self.top_k, -1, TOP_K_MAX)? {
            params.top_k = k.max(0) as usize; // -1 (vLLM) and 0 both disable top-k
        }
        if let Some(m) = float_in("min_p", self.min_p, 0.0, 1.0)? {
            params.min_p = m as f32;
        }
        if let Some(r) = float_in(
            "repetition_penalty",
            self.repetition_penalty,
            0.0,
            REPETITION_PENALTY_MAX,
        )? {
            if r == 0.0 {
                return Err(ApiError::invalid_field(
                    "repetition_penalty",
                    "`repetition_penalty` must be > 0",
                ));
            }
            params.repetition_penalty = r as f32;
        }
        params.seed = match self.seed {
            None | Some(Value::Null) => fresh_seed(),
            Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => u,
                (None, Some(i)) => i as u64, // negative seeds are valid in OpenAI's API
                _ => {
                    return Err(ApiError::invalid_field(
                        "seed",
                        format!("`seed` must be a 64-bit integer, got {n}"),
                    ))
                }
            },
            Some(other) => {
                return Err(ApiError::invalid_field(
                    "seed",
                    format!("`seed` must be an integer, got {other}"),
                ))
            }
        };
        params.stop = parse_stop(self.stop, limits)?;
        Ok(GenerationRequest {
            model,
            prompt,
            params,
            max_tokens,
            stream: self.stream.unwrap_or(false),
            include_usage: self
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        })
    }
}

fn parse_stop(v: Option<Value>, limits: &Limits) -> Result<Vec<String>, ApiError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s),
                other => Err(ApiError::invalid_field(
                    format!("stop[{i}]"),
                    format!("`stop[{i}]` must be a string, got {other}"),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "stop",
                format!("`stop` must be a string or an array of strings, got {other}"),
            ))
        }
    };
    if list.len() > limits.max_stop_sequences {
        return Err(ApiError::invalid_field(
            "stop",
            format!(
                "at most {} stop sequences are allowed, got {}",
                limits.max_stop_sequences,
                list.len()
            ),
        ));
    }
    for (i, s) in list.iter().enumerate() {
        if s.is_empty() || s.len() > limits.max_stop_bytes {
            return Err(ApiError::invalid_field(
                format!("stop[{i}]"),
                format!(
                    "each stop sequence must have 1 to {} bytes",
                    limits.max_stop_bytes
                ),
            ));
        }
    }
    Ok(list)
}

fn message_text(i: usize, content: Option<Value>) -> Result<String, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                let field = format!("messages[{i}].content[{j}]");
                if part.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(ApiError::invalid_field(
                        field,
                        "only content parts of type `text` are supported",
                    ));
                }
                match part.get("text").and_then(Value::as_str) {
                    Some(t) => text.push_str(t),
                    None => {
                        return Err(ApiError::invalid_field(
                            field,
                            "a text part needs a string `text`",
                        ))
                    }
                }
            }
            Ok(text)
        }
        Some(other) => Err(ApiError::invalid_field(
            format!("messages[{i}].content"),
            format!(
                "`messages[{i}].content` must be a string or an array of text parts, got {other}"
            ),
        )),
    }
}

/// Parses and validates a chat completion body.
pub fn parse_chat(body: &[u8], limits: &Limits) -> Result<GenerationRequest, ApiError> {
    let chat: RawChatRequest = parse_json(body)?;
    let sampling: RawSampling = parse_json(body)?;
    chat.validate(sampling, limits)
}

/// Parses and validates a text completion body; token ids must be below `vocab_size`.
pub fn parse_completion(
    body: &[u8],
    limits: &Limits,
    vocab_size: usize,
) -> Result<GenerationRequest, ApiError> {
    let completion: RawCompletionRequest = parse_json(body)?;
    let sampling: RawSampling = parse_json(body)?;
    completion.validate(sampling, limits, vocab_size)
}

impl RawChatRequest {
    fn validate(
        self,
        sampling: RawSampling,
        limits: &Limits,
    ) -> Result<GenerationRequest, ApiError> {
        let raw = self
            .messages
            .ok_or_else(|| ApiError::invalid_field("messages", "`messages` is required"))?;
        if raw.is_empty() {
            return Err(ApiError::invalid_field(
                "messages",
                "`messages` must not be empty",
            ));
        }
        if raw.len() > limits.max_messages {
            return Err(ApiError::invalid_field(
                "messages",
                format!(
                    "at most {} messages are allowed, got {}",
                    limits.max_messages,
                    raw.len()
                ),
            ));
        }
        let mut messages = Vec::with_capacity(raw.len());
        for (i, m) in raw.into_iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                other => {
                    return Err(ApiError::invalid_field(
                        format!("messages[{i}].role"),
                        format!(
                            "role `{other}` is not supported (system, developer, user, assistant)"
                        ),
                    ))
                }
            };
            if matches!(&m.tool_calls, Some(Value::Array(a)) if !a.is_empty()) {
                return Err(unsupported(
                    &format!("messages[{i}].tool_calls"),
                    "tool calling is not implemented",
                ));
            }
            messages.push(ChatMessage {
                role: role.to_string(),
                content: message_text(i, m.content)?,
            });
        }
        let enable_thinking = self
            .chat_template_kwargs
            .and_then(|k| k.enable_thinking)
            .or(self.enable_thinking)
            .unwrap_or(false);
        sampling.into_request(
            Prompt::Chat {
                messages,
                enable_thinking,
            },
            limits,
        )
    }
}

impl RawCompletionRequest {
    fn validate(
        self,
        sampling: RawSampling,
        limits: &Limits,
        vocab_size: usize,
    ) -> Result<GenerationRequest, ApiError> {
        if self.echo.unwrap_or(false) {
            return Err(unsupported("echo", "the prompt is not echoed"));
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(unsupported("suffix", "insertion is not implemented"));
        }
        int_in("best_of", self.best_of, 1, 1).map_err(|_| unsupported("best_of", "only 1"))?;
        let prompt = completion_prompt(self.prompt, vocab_size)?;
        sampling.into_request(prompt, limits)
    }
}

fn completion_prompt(v: Option<Value>, vocab_size: usize) -> Result<Prompt, ApiError> {
    let v = v.ok_or_else(|| ApiError::invalid_field("prompt", "`prompt` is required"))?;
    let one = match v {
        Value::Array(mut items)
            if items.len() == 1 && matches!(items[0], Value::String(_) | Value::Array(_)) =>
        {
            items.remove(0)
        }
        other => other,
    };
    match one {
        Value::String(text) => Ok(Prompt::Text { text }),
        Value::Array(items) if !items.is_empty() => {
            let mut ids = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item.as_u64() {
                    Some(id) if (id as usize) < vocab_size => ids.push(id as u32),
                    _ => {
                        return Err(ApiError::invalid_field(
                            format!("prompt[{i}]"),
                            format!("token ids must be integers in [0, {vocab_size}), got {item}"),
                        ))
                    }
                }
            }
            Ok(Prompt::Tokens { ids })
        }
        _ => Err(ApiError::invalid_field(
            "prompt",
            "`prompt` must be a string, one-element array of strings, or a non-empty array of token ids (batches are not supported)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<GenerationRequest, ApiError> {
        parse_chat(body.as_bytes(), &Limits::default())
    }

    const MSG: &str = r#""model":"m","messages":[{"role":"user","content":"hi"}]"#;

    #[test]
    fn minimal_chat_parses() {
        let r = chat(&format!("{{{MSG}}}")).unwrap();
        assert_eq!(r.model, "m");
        assert!(!r.stream);
        assert!(
            matches!(r.prompt, Prompt::Chat { ref messages, .. } if messages[0].content == "hi")
        );
    }

    #[test]
    fn numeric_fields_are_bounded_and_named() {
        for (field, value) in [
            ("temperature", "-1"),
            ("temperature", "2.5"),
            ("top_p", "1.5"),
            ("max_tokens", "0"),
            ("max_tokens", "-5"),
            ("max_tokens", "100000000"),
            ("max_completion_tokens", "0"),
            ("top_k", "-2"),
            ("min_p", "2"),
            ("repetition_penalty", "0"),
            ("n", "2"),
            ("presence_penalty", "5"),
        ] {
            let e = chat(&format!("{{{MSG},\"{field}\":{value}}}")).unwrap_err();
            assert_eq!(e.status.as_u16(), 400, "{field}={value}");
            assert_eq!(
                e.param.as_deref(),
                Some(field),
                "{field}={value}: {}",
                e.message
            );
        }
    }

    #[test]
    fn wrong_types_name_the_path() {
        let e = chat(r#"{"model":"m","messages":[{"role":3,"content":"x"}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let e = chat(&format!("{{{MSG},\"max_tokens\":1.5}}")).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        let e = chat(&format!("{{{MSG},\"temperature\":\"hot\"}}")).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        let e = chat(&format!("{{{MSG},\"max_tokens\":1e400}}")).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
    }

    #[test]
    fn malformed_json_is_400() {
        for body in ["{", "[1,2]", "null", "{\"model\":\"m\"} trailing", ""] {
            assert_eq!(chat(body).unwrap_err().status.as_u16(), 400, "{body}");
        }
    }

    #[test]
    fn stop_accepts_string_or_array() {
        let r = chat(&format!("{{{MSG},\"stop\":\"x\"}}")).unwrap();
        assert_eq!(r.params.stop, vec!["x".to_string()]);
        let r = chat(&format!("{{{MSG},\"stop\":[\"a\",\"b\"]}}")).unwrap();
        assert_eq!(r.params.stop.len(), 2);
        assert!(chat(&format!(
            "{{{MSG},\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}}"
        ))
        .is_err());
        assert_eq!(
            chat(&format!("{{{MSG},\"stop\":[1]}}"))
                .unwrap_err()
                .param
                .as_deref(),
            Some("stop[0]")
        );
    }

    #[test]
    fn seed_and_limits_map_to_params() {
        let r = chat(&format!(
            "{{{MSG},\"seed\":-1,\"temperature\":0,\"max_completion_tokens\":7,\"max_tokens\":9}}"
        ))
        .unwrap();
        assert_eq!(r.params.seed, u64::MAX);
        assert_eq!(r.params.temperature, 0.0);
        assert_eq!(r.max_tokens, Some(7));
        assert!(chat(&format!("{{{MSG},\"seed\":1.5}}")).is_err());
    }

    #[test]
    fn completion_prompts() {
        let parse = |b: &str| parse_completion(b.as_bytes(), &Limits::default(), 100);
        assert!(matches!(
            parse(r#"{"model":"m","prompt":"hi"}"#).unwrap().prompt,
            Prompt::Text { .. }
        ));
        assert!(matches!(
            parse(r#"{"model":"m","prompt":[[1,2]]}"#).unwrap().prompt,
            Prompt::Tokens { .. }
        ));
        assert_eq!(
            parse(r#"{"model":"m","prompt":[1,200]}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("prompt[1]")
        );
        assert!(parse(r#"{"model":"m","prompt":["a","b"]}"#).is_err());
        assert!(parse(r#"{"model":"m","prompt":"x","echo":true}"#).is_err());
        assert_eq!(
            parse(r#"{"model":"m","prompt":"x"}"#).unwrap().max_tokens,
            None
        );
    }
}
