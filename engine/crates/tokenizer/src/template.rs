//! Chat templates rendered like Hugging Face's `apply_chat_template`, in a sandbox.
//!
//! A GGUF file's `tokenizer.chat_template` is untrusted code (llama-cpp-python's
//! CVE-2024-34359 executed Python through one). minijinja has no file, OS or attribute
//! access to host objects: no loader is installed (so `include`/`import`/`extends` fail),
//! the context holds only plain data, and every render runs under a fuel (instruction)
//! budget, a recursion limit and an output size cap.

use std::io;

use minijinja::{AutoEscape, Environment, Error, ErrorKind, Value};

use crate::error::TemplateError;
use crate::pyjson::tojson;

const TEMPLATE_NAME: &str = "chat_template";
/// Prefix marking errors raised by the template itself through `raise_exception`.
const RAISE_MARKER: &str = "raise_exception: ";

/// Resource limits of one render.
#[derive(Debug, Clone, Copy)]
pub struct TemplateLimits {
    /// minijinja instructions one render may execute. Qwen3's template spends about 56
    /// per message (11,170 for 200, measured by the tokenizer_bench example), so the
    /// default allows ~90k messages while an endless loop stops after ~0.1 s of CPU.
    pub fuel: u64,
    /// Nesting depth of loops, macros and calls (minijinja caps it at 500).
    pub recursion_limit: usize,
    /// Bytes of rendered text; a prompt beyond this could not fit any context window.
    pub max_output_bytes: usize,
    /// Bytes of template source.
    pub max_source_bytes: usize,
}

impl Default for TemplateLimits {
    fn default() -> Self {
        Self {
            fuel: 5_000_000,
            recursion_limit: 100,
            max_output_bytes: 32 << 20,
            max_source_bytes: 1 << 20,
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatMessage {
    /// "system", "user", "assistant" or "tool".
    pub role: String,
    /// The text.
    pub content: String,
    /// An assistant turn's thinking, rendered by Qwen3's template inside `<think>`.
    pub reasoning_content: Option<String>,
    /// An assistant turn's tool calls as a JSON array text (key order is kept).
    pub tool_calls_json: Option<String>,
}

impl ChatMessage {
    /// A message with a role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Self::default()
        }
    }
}

/// Template variables besides the messages.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// End with the assistant turn's opening so the model answers.
    pub add_generation_prompt: bool,
    /// Qwen3's thinking switch; `None` leaves the variable undefined (thinking on).
    pub enable_thinking: Option<bool>,
    /// Tool definitions as a JSON array text (key order is kept for `tojson`).
    pub tools_json: Option<String>,
    /// Further variables as a JSON object text (e.g. `{"bos_token": "..."}`).
    pub extra_json: Option<String>,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    limits: TemplateLimits,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("limits", &self.limits)
            .finish()
    }
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISE_MARKER}{message}"),
    ))
}

/// Collects output and refuses to grow past the cap.
struct CappedWriter {
    buf: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("chat template output cap"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn parse_json(what: &str, text: &str) -> Result<Value, TemplateError> {
    serde_json::from_str::<Value>(text)
        .map_err(|e| TemplateError::Render(format!("{what} is not valid JSON: {e}")))
}

impl ChatTemplate {
    /// Compiles `source` with the default limits.
    pub fn new(source: &str) -> Result<Self, TemplateError> {
        Self::with_limits(source, TemplateLimits::default())
    }

    /// Compiles `source` with explicit limits.
    pub fn with_limits(source: &str, limits: TemplateLimits) -> Result<Self, TemplateError> {
        if source.len() > limits.max_source_bytes {
            return Err(TemplateError::SourceTooLarge {
                len: source.len(),
                limit: limits.max_source_bytes,
            });
        }
        let mut env = Environment::new();
        // jinja2 settings of transformers' chat-template environment.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", crate::strftime::strftime_now);
        env.set_fuel(Some(limits.fuel));
        env.set_recursion_limit(limits.recursion_limit);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| TemplateError::Syntax(describe(&e)))?;
        Ok(Self { env, limits })
    }

    /// Renders `messages` (see [`ChatMessage`]).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        options: &RenderOptions,
    ) -> Result<String, TemplateError> {
        let mut list = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let mut entries = vec![
                ("role", Value::from(m.role.as_str())),
                ("content", Value::from(m.content.as_str())),
            ];
            if let Some(r) = &m.reasoning_content {
                entries.push(("reasoning_content", Value::from(r.as_str())));
            }
            if let Some(t) = &m.tool_calls_json {
                entries.push((
                    "tool_calls",
                    parse_json(&format!("messages[{i}].tool_calls"), t)?,
                ));
            }
            list.push(Value::from_iter(entries));
        }
        self.render_value(Value::from(list), options)
    }

    /// Renders messages given as a JSON array text in Hugging Face's format (each an
    /// object with `role`, `content` and optional `reasoning_content`, `tool_calls`, ...).
    pub fn render_json(
        &self,
        messages_json: &str,
        options: &RenderOptions,
    ) -> Result<String, TemplateError> {
        self.render_value(parse_json("messages", messages_json)?, options)
    }

    fn render_value(
        &self,
        messages: Value,
        options: &RenderOptions,
    ) -> Result<String, TemplateError> {
        let mut vars: Vec<(String, Value)> = Vec::new();
        if let Some(extra) = &options.extra_json {
            let extra = parse_json("extra variables", extra)?;
            for key in extra
                .try_iter()
                .map_err(|e| TemplateError::Render(format!("extra variables: {e}")))?
            {
                let val = extra.get_item(&key).unwrap_or_default();
                vars.push((key.to_string(), val));
            }
        }
        vars.push(("messages".into(), messages));
        vars.push((
            "add_generation_prompt".into(),
            Value::from(options.add_generation_prompt),
        ));
        if let Some(t) = options.enable_thinking {
            vars.push(("enable_thinking".into(), Value::from(t)));
        }
        if let Some(tools) = &options.tools_json {
            vars.push(("tools".into(), parse_json("tools", tools)?));
        }
        let ctx = Value::from_iter(vars);

        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| TemplateError::Render(describe(&e)))?;
        let mut out = CappedWriter {
            buf: Vec::new(),
            limit: self.limits.max_output_bytes,
            exceeded: false,
        };
        match tmpl.render_captured_to(ctx, &mut out) {
            Ok(_) => String::from_utf8(out.buf)
                .map_err(|e| TemplateError::Render(format!("output is not UTF-8: {e}"))),
            Err(_) if out.exceeded => Err(TemplateError::OutputTooLarge {
                limit: self.limits.max_output_bytes,
            }),
            Err(e) => Err(self.classify(&e)),
        }
    }

    fn classify(&self, e: &Error) -> TemplateError {
        let detail = e.detail().unwrap_or_default();
        if e.kind() == ErrorKind::OutOfFuel {
            TemplateError::FuelExhausted {
                limit: self.limits.fuel,
            }
        } else if detail.contains("recursion limit exceeded") {
            TemplateError::RecursionLimit {
                limit: self.limits.recursion_limit,
            }
        } else if let Some(msg) = detail.strip_prefix(RAISE_MARKER) {
            TemplateError::Raised(msg.to_string())
        } else {
            TemplateError::Render(describe(e))
        }
    }
}

/// The error with its template line, for messages that point at the problem.
fn describe(e: &Error) -> String {
    match e.line() {
        Some(line) => format!("{e} (line {line})"),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A hostile template must fail well within this (generous for slow CI machines).
    const HOSTILE_DEADLINE: Duration = Duration::from_secs(10);

    fn err_of(src: &str) -> TemplateError {
        let t = ChatTemplate::new(src).unwrap();
        let start = Instant::now();
        let e = t.render(&[ChatMessage::new("user", "hi")], &RenderOptions::default());
        assert!(start.elapsed() < HOSTILE_DEADLINE);
        e.unwrap_err()
    }

    #[test]
    fn endless_loop_runs_out_of_fuel() {
        let src =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        assert!(matches!(err_of(src), TemplateError::FuelExhausted { .. }));
    }

    #[test]
    fn huge_output_is_capped() {
        let src = "{% for i in range(100000) %}{{ 'x' * 10000 }}{% endfor %}";
        assert!(matches!(err_of(src), TemplateError::OutputTooLarge { .. }));
    }

    #[test]
    fn deep_recursion_is_stopped() {
        let src = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
        assert!(
            matches!(err_of(src), TemplateError::RecursionLimit { .. }),
            "{:?}",
            err_of(src)
        );
    }

    #[test]
    fn no_file_access() {
        let e = err_of("{% include '/etc/passwd' %}");
        assert!(matches!(e, TemplateError::Render(_)), "{e:?}");
        let e = err_of("{% import '/etc/passwd' as x %}");
        assert!(matches!(e, TemplateError::Render(_)), "{e:?}");
        // Python escape hatches of the CVE are plain undefined lookups here.
        let t =
            ChatTemplate::new("{{ ''.__class__ }}{{ messages.__init__ }}{{ cycler }}{{ self }}")
                .unwrap();
        let out = t.render(&[ChatMessage::new("user", "hi")], &RenderOptions::default());
        assert!(!out.unwrap_or_default().contains("class"));
    }

    #[test]
    fn raise_exception_and_syntax_errors_are_reported() {
        let e = err_of("{{ raise_exception('only user/assistant roles') }}");
        assert!(
            matches!(&e, TemplateError::Raised(m) if m == "only user/assistant roles"),
            "{e:?}"
        );
        let e = ChatTemplate::new("{% for %}").unwrap_err();
        assert!(matches!(e, TemplateError::Syntax(_)), "{e:?}");
        let limits = TemplateLimits {
            max_source_bytes: 4,
            ..TemplateLimits::default()
        };
        assert!(matches!(
            ChatTemplate::with_limits("hello", limits),
            Err(TemplateError::SourceTooLarge { len: 5, limit: 4 })
        ));
    }

    #[test]
    fn python_string_methods_and_hf_whitespace() {
        let t = ChatTemplate::new(
            "{% for m in messages %}\n  {{ m.content.strip().upper().split(',')[-1].lstrip('\\n') }}|\n{% endfor %}\n",
        )
        .unwrap();
        let out = t
            .render(
                &[ChatMessage::new("user", " a,\nb ")],
                &RenderOptions::default(),
            )
            .unwrap();
        // trim_blocks drops the newline after a block tag, lstrip_blocks the indent
        // before one, and the template's final newline is dropped as jinja2 does.
        assert_eq!(out, "  B|\n");
    }
}
