//! `hmoe info`, `generate`, `chat` and `logits`.

use crate::npy;
use crate::util::{human, EngineArgs, ModelArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use hmoe_engine::{
    ChatMessage, Engine, FinishReason, GenerationEvent, GenerationStats, Prompt, SamplingParams,
};
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// `hmoe info` flags.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Model file.
    pub model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Sampling flags.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// 0 disables.
    #[arg(long, default_value_t = 20)]
    pub top_k: usize,
    /// 1 disables.
    #[arg(long, default_value_t = 0.8)]
    pub top_p: f32,
    /// 0 disables.
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// 1 disables.
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// New tokens at most.
    #[arg(long, short = 'n', default_value_t = 256)]
    pub max_tokens: usize,
    /// Stop string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    pub(crate) fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repeat_penalty,
            seed: self.seed,
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            ..SamplingParams::default()
        }
    }
}

/// `hmoe generate` flags.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// The prompt text.
    #[arg(long, short)]
    pub prompt: String,
    /// Wrap the prompt in the chat template as a user message.
    #[arg(long)]
    pub chat: bool,
    /// Print timing statistics to stderr.
    #[arg(long)]
    pub stats: bool,
    /// Write the routing trace of this run (for `hmoe simulate`).
    #[arg(long)]
    pub trace: Option<PathBuf>,
}

/// `hmoe chat` flags.
#[derive(Args, Debug)]
pub struct ChatArgs {
    /// Model file (.gguf); with --remote, the model name to ask for (default: the first
    /// model the server lists).
    #[arg(long, short)]
    pub model: Option<String>,
    /// Chat with an OpenAI-compatible server instead of a local model: its base URL
    /// (`http://host:port`, `.../v1` or `.../v1/chat/completions`).
    #[arg(long, value_name = "URL")]
    pub remote: Option<String>,
    /// API key for --remote (default: $HMOE_API_KEY, then $OPENAI_API_KEY).
    #[arg(long, requires = "remote")]
    pub api_key: Option<String>,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// System prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Let Qwen3 think before answering.
    #[arg(long)]
    pub think: bool,
}

/// `hmoe logits` flags.
#[derive(Args, Debug)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Token ids separated by spaces or commas.
    #[arg(long)]
    pub tokens: String,
    /// Output .npy path.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn info(a: InfoArgs) -> Result<()> {
    let info = hmoe_engine::inspect_model(&a.model)
        .with_context(|| format!("reading {}", a.model.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    let c = &info.config;
    println!("name:          {}", info.name);
    println!("architecture:  {}", info.architecture);
    println!("file size:     {}", human(info.file_bytes));
    println!("expert quant:  {}", info.quant);
    println!(
        "layers {} · hidden {} · heads {}/{} (head_dim {}) · experts {} top-{} (ffn {}) · vocab {} · context {}",
        c.n_layers, c.hidden, c.n_heads, c.n_kv_heads, c.head_dim, c.n_experts, c.top_k, c.expert_ffn, c.vocab_size, c.context_length
    );
    let types: Vec<String> = info
        .bytes_by_type
        .iter()
        .map(|(t, b)| format!("{t} {}", human(*b)))
        .collect();
    println!("tensor types:  {}", types.join(", "));
    println!(
        "experts:       {} total, {} per expert",
        human(info.expert_bytes_total),
        human(info.expert_bytes)
    );
    println!("dense weights: {}", human(info.dense_bytes));
    println!(
        "memory:        ~{} RAM to run on the CPU (file is memory-mapped) + {} KV cache per 1k tokens",
        human(info.file_bytes + info.dense_bytes),
        human(info.kv_bytes_per_token * 1024)
    );
    Ok(())
}

/// Streams one generation to stdout; returns why it ended, its stats and its text.
pub(crate) fn stream(
    engine: &Engine,
    prompt: Prompt,
    params: SamplingParams,
) -> Result<(FinishReason, GenerationStats, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut gen = engine.generate(prompt, params)?;
    rt.block_on(async {
        let mut out = std::io::stdout();
        let mut reply = String::new();
        while let Some(ev) = gen.events.recv().await {
            match ev {
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
        bail!("the engine stopped without finishing the generation")
    })
}

pub(crate) fn print_stats(reason: FinishReason, s: &GenerationStats) {
    eprintln!(
        "\n[{:?}] prompt {} tok at {:.1} tok/s · {} tok at {:.2} tok/s · first token after {:.3} s",
        reason,
        s.prompt_tokens,
        s.prefill_tok_s,
        s.completion_tokens,
        s.decode_tok_s,
        s.time_to_first_token_s
    );
}

pub fn generate(a: GenerateArgs) -> Result<()> {
    let engine = a.model.load()?;
    let prompt = if a.chat {
        Prompt::Chat {
            messages: vec![ChatMessage {
                role: "user".into(),
                content: a.prompt.clone(),
            }],
            enable_thinking: false,
        }
    } else {
        Prompt::Text {
            text: a.prompt.clone(),
        }
    };
    let (reason, stats, _) = stream(&engine, prompt, a.sampling.params())?;
    println!();
    if a.stats {
        print_stats(reason, &stats);
        let t = engine.telemetry_totals();
        eprintln!(
            "experts: {} routed uses, {} on the CPU, {} GPU hits, {} fetched",
            t.accesses, t.cpu_runs, t.gpu_hits, t.fetches
        );
        if let Some(e) = engine.prediction_error() {
            eprintln!(
                "cost model: median layer-time prediction error {:.1}%",
                e * 100.0
            );
        }
    }
    if let Some(path) = &a.trace {
        engine
            .save_trace(path)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("routing trace written to {}", path.display());
    }
    Ok(())
}

/// The system message, if any, that starts a chat.
pub(crate) fn initial_messages(system: Option<&str>) -> Vec<ChatMessage> {
    system
        .map(|s| ChatMessage {
            role: "system".into(),
            content: s.to_string(),
        })
        .into_iter()
        .collect()
}

/// The chat loop shared by local and remote chat: reads a line, adds it to the history,
/// lets `reply` stream the answer, prints the stats, keeps the answer in the history.
pub(crate) fn chat_loop(
    name: &str,
    mut messages: Vec<ChatMessage>,
    mut reply: impl FnMut(&[ChatMessage]) -> Result<(FinishReason, GenerationStats, String)>,
) -> Result<()> {
    eprintln!("chatting with {name} — empty line or Ctrl-D to quit");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok(());
        }
        messages.push(ChatMessage {
            role: "user".into(),
            content: line.trim_end().to_string(),
        });
        let (reason, stats, text) = reply(&messages)?;
        println!();
        print_stats(reason, &stats);
        messages.push(ChatMessage {
            role: "assistant".into(),
            content: text,
        });
    }
}

pub fn chat(a: ChatArgs) -> Result<()> {
    if let Some(url) = &a.remote {
        return crate::remote_chat::chat(url, &a);
    }
    let Some(path) = &a.model else {
        bail!("--model is required (a .gguf file), or chat with a server with --remote URL");
    };
    let engine = a.engine.load(std::path::Path::new(path))?;
    let messages = initial_messages(a.system.as_deref());
    chat_loop(&engine.info().name, messages, |history| {
        stream(
            &engine,
            Prompt::Chat {
                messages: history.to_vec(),
                enable_thinking: a.think,
            },
            a.sampling.params(),
        )
    })
}

pub fn logits(a: LogitsArgs) -> Result<()> {
    let tokens: Vec<u32> = a
        .tokens
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .with_context(|| format!("`{s}` is not a token id"))
        })
        .collect::<Result<_>>()?;
    if tokens.is_empty() {
        bail!("--tokens is empty");
    }
    let engine = a.model.load()?;
    let n = tokens.len();
    let vocab = engine.info().config.vocab_size;
    let logits = engine.logits(tokens, a.model.engine.prefill_chunk)?;
    let f =
        std::fs::File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    npy::write_f32(std::io::BufWriter::new(f), &[n, vocab], &logits)
        .with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!("wrote [{n}, {vocab}] logits to {}", a.out.display());
    Ok(())
}
