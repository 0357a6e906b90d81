//! `hmoe chat --remote URL`: the interactive chat against any OpenAI-compatible server
//! (another `hmoe serve`, vLLM, SGLang, ...), streamed like the local chat.

use std::io::Write;

use anyhow::{bail, Context, Result};
use hmoe_engine::{ChatMessage, FinishReason, GenerationEvent, GenerationStats, SamplingParams};
use hmoe_server::RemoteChat;
use serde_json::json;

use crate::run::{chat_loop, initial_messages, ChatArgs};

/// Environment variables read for the key when `--api-key` is absent (a key on the
/// command line is visible to every user in `ps`).
const KEY_ENV: [&str; 2] = ["HMOE_API_KEY", "OPENAI_API_KEY"];

fn api_key(flag: Option<&str>) -> Option<String> {
    flag.map(str::to_string).or_else(|| {
        KEY_ENV
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    })
}

/// Runs the chat loop against `url`.
pub fn chat(url: &str, a: &ChatArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let key = api_key(a.api_key.as_deref());
    let model = match &a.model {
        Some(m) => m.clone(),
        None => {
            // No name given: ask the server which model it serves.
            let probe = RemoteChat::new(url, key.clone(), "")?;
            let models = rt
                .block_on(probe.list_models())
                .with_context(|| format!("listing the models of {}", probe.base_url()))?;
            match models.into_iter().next() {
                Some(m) => m,
                None => bail!("{} lists no model; pass --model NAME", probe.base_url()),
            }
        }
    };
    let client = RemoteChat::new(url, key, &model)?;
    let params = a.sampling.params();
    let name = format!("{model} at {}", client.base_url());
    chat_loop(&name, initial_messages(a.system.as_deref()), |history| {
        rt.block_on(stream_reply(&client, history, &params, a.think))
    })
}

/// Streams one answer to stdout; returns why it ended, its stats and its text.
async fn stream_reply(
    client: &RemoteChat,
    history: &[ChatMessage],
    params: &SamplingParams,
    think: bool,
) -> Result<(FinishReason, GenerationStats, String)> {
    let mut body = client.chat_body(history, params, true);
    if think {
        // Qwen3's switch as vLLM, SGLang and hmoe serve take it; sent only when asked
        // for, since strict servers reject unknown fields.
        body["chat_template_kwargs"] = json!({"enable_thinking": true});
    }
    let mut s = client.stream_body(body).await?;
    let mut out = std::io::stdout();
    let mut reply = String::new();
    while let Some(ev) = s.next().await {
        match ev? {
            GenerationEvent::Text { text, .. } => {
                out.write_all(text.as_bytes())?;
                out.flush()?;
                reply.push_str(&text);
            }
            GenerationEvent::Error { message } => bail!("generation failed: {message}"),
            GenerationEvent::Done {
                finish_reason,
                stats,
            } => return Ok((finish_reason, stats, reply)),
        }
    }
    bail!("the server ended the stream without finishing the answer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_wins_over_environment() {
        assert_eq!(api_key(Some("k1")).as_deref(), Some("k1"));
    }
}
