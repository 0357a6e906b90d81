//! `hmoe bench-serve`: the `test_speed.py` measurement against any OpenAI-compatible
//! server. C concurrent streaming requests per prompt length; per request,
//! prefill speed = prompt tokens / time to first token and decode speed = streamed
//! tokens after the first / time from the first to the last token.

use std::time::Instant;

use hmoe_engine::api::GenerationEvent;
use serde::Serialize;
use serde_json::json;

use crate::bench_prompt::{initial_words, next_words, prompt_of_words, MAX_CALIBRATION_ROUNDS};
use crate::remote::{RemoteChat, RemoteError};

/// Benchmark settings (the flags of `hmoe bench-serve`).
#[derive(Debug, Clone, PartialEq)]
pub struct BenchArgs {
    /// Server URL: base, `/v1`, or the full `/v1/chat/completions` as test_speed takes it.
    pub api_url: String,
    /// Model name to send.
    pub model: String,
    /// Target prompt lengths in tokens (test_speed's 1024, 2048, 4096).
    pub prompt_lens: Vec<usize>,
    /// Completion tokens per request.
    pub max_tokens: usize,
    /// Simultaneous requests per prompt length.
    pub concurrent: usize,
    /// Bearer key, if the server wants one.
    pub api_key: Option<String>,
    /// Sampling temperature (test_speed uses 0.3).
    pub temperature: f32,
    /// Calibrate prompt word counts against the server's token counts.
    pub calibrate: bool,
}

impl Default for BenchArgs {
    fn default() -> Self {
        Self {
            api_url: format!(
                "http://127.0.0.1:{}/v1/chat/completions",
                crate::DEFAULT_PORT
            ),
            model: String::new(),
            prompt_lens: vec![1024],
            max_tokens: 512,
            concurrent: 1,
            api_key: None,
            temperature: 0.3,
            calibrate: true,
        }
    }
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad settings.
    #[error("invalid benchmark settings: {0}")]
    Args(String),
    /// The server failed during calibration.
    #[error("calibrating the {target}-token prompt failed: {source}")]
    Calibration {
        /// Target length.
        target: usize,
        /// Cause.
        source: RemoteError,
    },
    /// Client setup failed.
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// One request's result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RequestResult {
    /// Index within its batch.
    pub request: usize,
    /// Prompt tokens (server's usage, else the calibrated count).
    pub prompt_tokens: usize,
    /// Completion tokens (server's usage, else streamed pieces).
    pub completion_tokens: usize,
    /// Seconds to the first streamed text.
    pub ttft_s: f64,
    /// Seconds from the first to the last text.
    pub decode_s: f64,
    /// prompt_tokens / ttft_s.
    pub prefill_tok_s: f64,
    /// (completion_tokens − 1) / decode_s.
    pub decode_tok_s: f64,
    /// The finish reason, or the error.
    pub finish: String,
    /// Whether it succeeded.
    pub ok: bool,
}

/// Results of one prompt length.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BenchRun {
    /// Target prompt length.
    pub target_prompt_tokens: usize,
    /// Measured prompt length (server's count) after calibration.
    pub prompt_tokens: usize,
    /// Words used to build the prompt.
    pub prompt_words: usize,
    /// Per request.
    pub requests: Vec<RequestResult>,
    /// Σ prompt tokens / the longest time to first token.
    pub total_prefill_tok_s: f64,
    /// Σ tokens after the first / (last token of any request − first token of any request).
    pub total_decode_tok_s: f64,
    /// Σ of the per-request decode speeds (what several test_speed versions print as total).
    pub sum_decode_tok_s: f64,
    /// Wall seconds for the whole batch.
    pub wall_s: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BenchReport {
    /// Endpoint.
    pub api_url: String,
    /// Model.
    pub model: String,
    /// Concurrency.
    pub concurrent: usize,
    /// Completion tokens asked per request.
    pub max_tokens: usize,
    /// One entry per prompt length.
    pub runs: Vec<BenchRun>,
}

/// Upper bounds on the settings: beyond these the client itself becomes the test.
const MAX_CONCURRENT: usize = 1024;
const MAX_PROMPT_TOKENS: usize = 1 << 20;
/// Halvings of the first calibration guess when the server rejects it as too long.
const MAX_HALVINGS: usize = 16;

async fn probe_prompt_tokens(client: &RemoteChat, prompt: &str) -> Result<usize, RemoteError> {
    let body = json!({
        "model": client.model(),
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 1,
        "temperature": 0.0,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let mut s = client.stream_body(body).await?;
    while let Some(ev) = s.next().await {
        ev?;
    }
    s.usage().map(|u| u.0).ok_or_else(|| RemoteError::Protocol {
        url: client.base_url().to_string(),
        message: "the server sent no usage chunk (stream_options.include_usage)".into(),
    })
}

/// Builds the prompt for `target` tokens: (prompt, words, measured tokens).
async fn calibrated_prompt(
    client: &RemoteChat,
    target: usize,
    calibrate: bool,
) -> Result<(String, usize, usize), BenchError> {
    let mut words = initial_words(target);
    if !calibrate {
        return Ok((prompt_of_words(words), words, target));
    }
    let err = |source| BenchError::Calibration { target, source };
    let mut halvings = 0;
    let mut measured = loop {
        match probe_prompt_tokens(client, &prompt_of_words(words)).await {
            Ok(m) => break m,
            // The first guess can overshoot a small context: halve and try again.
            Err(RemoteError::Status { status: 400, .. })
                if words > 1 && halvings < MAX_HALVINGS =>
            {
                words /= 2;
                halvings += 1;
            }
            Err(e) => return Err(err(e)),
        }
    };
    for _ in 0..MAX_CALIBRATION_ROUNDS {
        match next_words(words, measured, target) {
            Some(w) => {
                words = w;
                measured = probe_prompt_tokens(client, &prompt_of_words(words))
                    .await
                    .map_err(err)?;
            }
            None => break,
        }
    }
    Ok((prompt_of_words(words), words, measured))
}

struct Timed {
    result: RequestResult,
    first: Option<Instant>,
    last: Option<Instant>,
}

async fn one_request(
    client: RemoteChat,
    request: usize,
    prompt: String,
    prompt_tokens: usize,
    args: BenchArgs,
) -> Timed {
    let body = json!({
        "model": args.model,
        "messages": [{"role": "system", "content": ""}, {"role": "user", "content": prompt}],
        "temperature": args.temperature,
        "top_p": 1.0,
        "max_tokens": args.max_tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let started = Instant::now();
    let mut res = RequestResult {
        request,
        prompt_tokens,
        completion_tokens: 0,
        ttft_s: 0.0,
        decode_s: 0.0,
        prefill_tok_s: 0.0,
        decode_tok_s: 0.0,
        finish: String::new(),
        ok: false,
    };
    let (mut first, mut last) = (None, None);
    let mut pieces = 0;
    let outcome: Result<(), RemoteError> = async {
        let mut s = client.stream_body(body).await?;
        while let Some(ev) = s.next().await {
            match ev? {
                GenerationEvent::Text { .. } => {
                    let now = Instant::now();
                    first.get_or_insert(now);
                    last = Some(now);
                    pieces += 1;
                }
                GenerationEvent::Done { finish_reason, .. } => {
                    res.finish = format!("{finish_reason:?}").to_lowercase();
                }
                GenerationEvent::Error { message } => {
                    return Err(RemoteError::Status {
                        url: client.base_url().to_string(),
                        status: 0,
                        message,
                    });
                }
            }
        }
        if let Some((p, c)) = s.usage() {
            res.prompt_tokens = p;
            res.completion_tokens = c;
        } else {
            res.completion_tokens = pieces;
        }
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        res.finish = format!("error: {e}");
    } else {
        res.ok = true;
    }
    if let (Some(f), Some(l)) = (first, last) {
        res.ttft_s = (f - started).as_secs_f64();
        res.decode_s = (l - f).as_secs_f64();
        if res.ttft_s > 0.0 {
            res.prefill_tok_s = res.prompt_tokens as f64 / res.ttft_s;
        }
        if res.decode_s > 0.0 {
            res.decode_tok_s = res.completion_tokens.saturating_sub(1) as f64 / res.decode_s;
        }
    }
    Timed {
        result: res,
        first,
        last,
    }
}

/// Runs the benchmark.
pub async fn bench_serve(args: BenchArgs) -> Result<BenchReport, BenchError> {
    if args.concurrent == 0 || args.concurrent > MAX_CONCURRENT {
        return Err(BenchError::Args(format!(
            "--concurrent must be in 1..={MAX_CONCURRENT}"
        )));
    }
    if args.max_tokens == 0 {
        return Err(BenchError::Args("--max-tokens must be at least 1".into()));
    }
    if args.prompt_lens.is_empty()
        || args
            .prompt_lens
            .iter()
            .any(|&p| p == 0 || p > MAX_PROMPT_TOKENS)
    {
        return Err(BenchError::Args(format!(
            "--prompt-lens must be a list of lengths in 1..={MAX_PROMPT_TOKENS}"
        )));
    }
    let client = RemoteChat::new(&args.api_url, args.api_key.clone(), &args.model)?;
    let mut runs = Vec::new();
    for &target in &args.prompt_lens {
        let (prompt, words, measured) = calibrated_prompt(&client, target, args.calibrate).await?;
        let started = Instant::now();
        let tasks: Vec<_> = (0..args.concurrent)
            .map(|i| {
                tokio::spawn(one_request(
                    client.clone(),
                    i,
                    prompt.clone(),
                    measured,
                    args.clone(),
                ))
            })
            .collect();
        let mut timed = Vec::new();
        for t in tasks {
            match t.await {
                Ok(r) => timed.push(r),
                Err(e) => return Err(BenchError::Args(format!("a request task failed: {e}"))),
            }
        }
        let wall_s = started.elapsed().as_secs_f64();
        runs.push(aggregate(target, measured, words, timed, wall_s));
    }
    Ok(BenchReport {
        api_url: args.api_url,
        model: args.model,
        concurrent: args.concurrent,
        max_tokens: args.max_tokens,
        runs,
    })
}

fn aggregate(
    target: usize,
    measured: usize,
    words: usize,
    timed: Vec<Timed>,
    wall_s: f64,
) -> BenchRun {
    let ok: Vec<&Timed> = timed.iter().filter(|t| t.result.ok).collect();
    let prompt_sum: usize = ok.iter().map(|t| t.result.prompt_tokens).sum();
    let max_ttft = ok.iter().map(|t| t.result.ttft_s).fold(0.0, f64::max);
    let decode_sum: usize = ok
        .iter()
        .map(|t| t.result.completion_tokens.saturating_sub(1))
        .sum();
    let first = ok.iter().filter_map(|t| t.first).min();
    let last = ok.iter().filter_map(|t| t.last).max();
    let window = match (first, last) {
        (Some(f), Some(l)) => (l - f).as_secs_f64(),
        _ => 0.0,
    };
    BenchRun {
        target_prompt_tokens: target,
        prompt_tokens: measured,
        prompt_words: words,
        total_prefill_tok_s: if max_ttft > 0.0 {
            prompt_sum as f64 / max_ttft
        } else {
            0.0
        },
        total_decode_tok_s: if window > 0.0 {
            decode_sum as f64 / window
        } else {
            0.0
        },
        sum_decode_tok_s: ok.iter().map(|t| t.result.decode_tok_s).sum(),
        requests: timed.into_iter().map(|t| t.result).collect(),
        wall_s,
    }
}

impl BenchReport {
    /// A plain-text table: one row per request, one total row per prompt length.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "bench-serve {} model={} concurrent={} max_tokens={}",
            self.api_url, self.model, self.concurrent, self.max_tokens
        );
        let _ = writeln!(
            s,
            "{:>8} {:>5} {:>8} {:>8} {:>8} {:>12} {:>12}  finish",
            "target", "req", "prompt", "compl", "ttft_s", "prefill t/s", "decode t/s"
        );
        for run in &self.runs {
            for r in &run.requests {
                let _ = writeln!(
                    s,
                    "{:>8} {:>5} {:>8} {:>8} {:>8.3} {:>12.1} {:>12.2}  {}",
                    run.target_prompt_tokens,
                    r.request,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.ttft_s,
                    r.prefill_tok_s,
                    r.decode_tok_s,
                    r.finish
                );
            }
            let prompt: usize = run.requests.iter().map(|r| r.prompt_tokens).sum();
            let compl: usize = run.requests.iter().map(|r| r.completion_tokens).sum();
            let max_ttft = run.requests.iter().map(|r| r.ttft_s).fold(0.0, f64::max);
            let _ = writeln!(s, "{:>8} {:>5} {:>8} {:>8} {:>8.3} {:>12.1} {:>12.2}  total (Σ per-request decode {:.2} t/s, wall {:.2} s)", run.target_prompt_tokens, "all", prompt, compl, max_ttft, run.total_prefill_tok_s, run.total_decode_tok_s, run.sum_decode_tok_s, run.wall_s);
        }
        s
    }
}
