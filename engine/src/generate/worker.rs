//! The engine worker: one thread that owns the model, admits requests, and runs
//! forward steps over all active sequences. Prefill is chunked so a long prompt
//! never stalls the decoding sequences for more than one chunk.

use super::sampler::{validate, Sampler};
use super::stop::{StopMatcher, StopOutcome};
use crate::api::{FinishReason, GenerationEvent, GenerationStats, SamplingParams};
use crate::error::{EngineError, Result};
use crate::model::{KvCache, LogitsFor, Qwen3Moe, SeqStep};
use crate::moe::MoeDispatch;
use hmoe_tokenizer::{DecodeStream, Tokenizer};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::Sender;

/// A request handed to the worker.
pub struct Request {
    /// Prompt token ids (validated non-empty by the caller).
    pub prompt: Vec<u32>,
    /// Sampling settings.
    pub params: SamplingParams,
    /// Events go here; a closed receiver cancels the request.
    pub events: Sender<GenerationEvent>,
    /// Set to cancel.
    pub cancel: Arc<AtomicBool>,
    /// When the request was made (for time to first token).
    pub submitted: Instant,
}

/// A job run on the worker thread with the model and the dispatcher.
pub type ModelJob = Box<dyn FnOnce(&Qwen3Moe, &mut MoeDispatch) + Send>;

/// A job that changes the model or the dispatcher (thread pool, placer settings); it
/// runs when no sequence is active, so a running generation keeps its settings.
pub type ReconfigureJob = Box<dyn FnOnce(&mut Qwen3Moe, &mut MoeDispatch) + Send>;

/// Commands to the worker thread.
pub enum Command {
    /// Start a generation.
    Generate(Box<Request>),
    /// Run a closure with exclusive access to the model and dispatcher
    /// (policy changes, reference logits).
    With(ModelJob),
    /// Change settings before the next generation starts (queued until idle).
    Reconfigure(ReconfigureJob),
    /// Stop the worker.
    Shutdown,
}

/// Worker limits.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// Maximum sequences decoding together.
    pub max_batch: usize,
    /// Prompt tokens processed per step across all prefilling sequences.
    pub prefill_chunk: usize,
    /// Context capacity per sequence.
    pub context: usize,
}

struct Active<'t> {
    req: Box<Request>,
    cache: KvCache,
    /// Prompt tokens not yet prefilled.
    todo: VecDeque<u32>,
    history: Vec<u32>,
    sampler: Sampler,
    decoder: Option<DecodeStream<'t>>,
    stop: StopMatcher,
    generated: usize,
    first_token_at: Option<Instant>,
    prefill_done_at: Option<Instant>,
    next: Option<u32>,
}

impl Active<'_> {
    fn send(&self, ev: GenerationEvent) -> bool {
        self.req.events.blocking_send(ev).is_ok()
    }

    fn finish(&mut self, reason: FinishReason) {
        let mut tail = self
            .decoder
            .as_mut()
            .map(|d| d.finish())
            .unwrap_or_default();
        if let StopOutcome::Continue(t) = self.stop.push(&tail) {
            tail = t;
        }
        tail.push_str(&self.stop.flush());
        if !tail.is_empty() && reason != FinishReason::StopString {
            self.send(GenerationEvent::Text {
                text: tail,
                tokens: vec![],
            });
        }
        let now = Instant::now();
        let first = self.first_token_at.unwrap_or(now);
        let ttft = first.duration_since(self.req.submitted).as_secs_f64();
        let prefill_s = self
            .prefill_done_at
            .unwrap_or(now)
            .duration_since(self.req.submitted)
            .as_secs_f64();
        let decode_s = now.duration_since(first).as_secs_f64();
        let stats = GenerationStats {
            prompt_tokens: self.req.prompt.len(),
            completion_tokens: self.generated,
            time_to_first_token_s: ttft,
            prefill_tok_s: rate(self.req.prompt.len(), prefill_s),
            decode_tok_s: rate(self.generated.saturating_sub(1), decode_s),
        };
        self.send(GenerationEvent::Done {
            finish_reason: reason,
            stats,
        });
    }
}

fn rate(n: usize, s: f64) -> f64 {
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

/// Runs the worker loop until shutdown or until every sender is gone.
pub fn run(
    mut model: Qwen3Moe,
    mut moe: MoeDispatch,
    tokenizer: Option<Arc<Tokenizer>>,
    eos: Vec<u32>,
    cfg: WorkerConfig,
    rx: Receiver<Command>,
) {
    let tokenizer = tokenizer.as_deref();
    let mut active: Vec<Active<'_>> = Vec::new();
    let mut waiting: VecDeque<Box<Request>> = VecDeque::new();
    let mut pending: Vec<ReconfigureJob> = Vec::new();
    loop {
        if active.is_empty() {
            for f in pending.drain(..) {
                f(&mut model, &mut moe);
            }
        }
        // Block only when idle.
        let timeout = if active.is_empty() && waiting.is_empty() {
            Duration::from_secs(3600)
        } else {
            Duration::ZERO
        };
        let mut first = true;
        loop {
            let msg = if first {
                rx.recv_timeout(timeout)
            } else {
                rx.recv_timeout(Duration::ZERO)
            };
            first = false;
            match msg {
                Ok(Command::Generate(r)) => waiting.push_back(r),
                Ok(Command::With(f)) => {
                    // An idle worker applies queued settings first, so a job sent after
                    // them (a snapshot) sees them.
                    if active.is_empty() {
                        for job in pending.drain(..) {
                            job(&mut model, &mut moe);
                        }
                    }
                    // A job reading the scheduler (a snapshot) sees every step so far.
                    moe.publish_telemetry();
                    f(&model, &mut moe)
                }
                Ok(Command::Reconfigure(f)) => pending.push(f),
                Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                    for a in active.iter_mut() {
                        a.finish(FinishReason::Cancelled);
                    }
                    return;
                }
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        // Settings change between generations: never under a running sequence, and
        // before any request queued after them is admitted.
        if active.is_empty() {
            for f in pending.drain(..) {
                f(&mut model, &mut moe);
            }
        }
        while active.len() < cfg.max_batch {
            let Some(req) = waiting.pop_front() else {
                break;
            };
            match admit(&model, tokenizer, req, cfg) {
                Ok(a) => active.push(a),
                Err((req, e)) => {
                    let _ = req.events.blocking_send(GenerationEvent::Error {
                        message: e.to_string(),
                    });
                }
            }
        }
        if active.is_empty() {
            continue;
        }
        if let Err(e) = step(&model, &mut moe, &eos, cfg, &mut active) {
            for a in active.drain(..) {
                let _ = a.req.events.blocking_send(GenerationEvent::Error {
                    message: e.to_string(),
                });
            }
        }
    }
}

type Rejected = (Box<Request>, EngineError);

fn admit<'t>(
    model: &Qwen3Moe,
    tok: Option<&'t Tokenizer>,
    req: Box<Request>,
    cfg: WorkerConfig,
) -> Result<Active<'t>, Rejected> {
    if let Err(e) = validate(&req.params) {
        return Err((req, e));
    }
    if req.prompt.is_empty() {
        return Err((req, EngineError::EmptyPrompt));
    }
    if req.prompt.len() >= cfg.context {
        let tokens = req.prompt.len();
        return Err((
            req,
            EngineError::PromptTooLong {
                tokens,
                context: cfg.context,
            },
        ));
    }
    if let Some(&bad) = req
        .prompt
        .iter()
        .find(|&&t| t as usize >= model.cfg.vocab_size)
    {
        let vocab = model.cfg.vocab_size;
        return Err((req, EngineError::TokenOutOfRange { id: bad, vocab }));
    }
    Ok(Active {
        cache: model.new_cache(cfg.context),
        todo: req.prompt.iter().copied().collect(),
        history: req.prompt.clone(),
        sampler: Sampler::new(req.params.clone()),
        decoder: tok.map(|t| t.decode_stream(true)),
        stop: StopMatcher::new(&req.params.stop),
        generated: 0,
        first_token_at: None,
        prefill_done_at: None,
        next: None,
        req,
    })
}

fn step(
    model: &Qwen3Moe,
    moe: &mut MoeDispatch,
    eos: &[u32],
    cfg: WorkerConfig,
    active: &mut Vec<Active<'_>>,
) -> Result<()> {
    // Cancelled or abandoned sequences leave first: the telemetry of every step they
    // ran is out before their `Done` (a client reads the totals after it).
    if active
        .iter()
        .any(|a| a.req.cancel.load(Ordering::Relaxed) || a.req.events.is_closed())
    {
        moe.publish_telemetry();
    }
    active.retain_mut(|a| {
        let gone = a.req.cancel.load(Ordering::Relaxed) || a.req.events.is_closed();
        if gone {
            a.finish(FinishReason::Cancelled);
        }
        !gone
    });
    // Decide each sequence's tokens for this step: one decode token, or a prefill chunk.
    let mut budget = cfg.prefill_chunk.max(1);
    let mut inputs: Vec<Vec<u32>> = Vec::with_capacity(active.len());
    for a in active.iter_mut() {
        if let Some(t) = a.next.take() {
            inputs.push(vec![t]);
        } else if budget > 0 && !a.todo.is_empty() {
            let n = budget.min(a.todo.len());
            budget -= n;
            inputs.push(a.todo.drain(..n).collect());
        } else {
            inputs.push(Vec::new());
        }
    }
    let mut steps: Vec<SeqStep<'_>> = Vec::new();
    let mut idx = Vec::new();
    for (i, (a, toks)) in active.iter_mut().zip(&inputs).enumerate() {
        if toks.is_empty() {
            continue;
        }
        let logits = if a.todo.is_empty() {
            LogitsFor::Last
        } else {
            LogitsFor::None
        };
        steps.push(SeqStep {
            cache: &mut a.cache,
            tokens: toks,
            logits,
        });
        idx.push(i);
    }
    if steps.is_empty() {
        return Ok(());
    }
    let mut outs = model.forward(&mut steps, moe)?;
    drop(steps);
    let mut done = vec![false; active.len()];
    // Sequences that end this step, and why: their `Done` goes out after the step's
    // telemetry (below).
    let mut ending: Vec<(usize, FinishReason)> = Vec::new();
    for (k, &i) in idx.iter().enumerate() {
        let a = &mut active[i];
        let mut logits = std::mem::take(&mut outs[k]);
        if logits.is_empty() {
            continue;
        }
        let now = Instant::now();
        a.prefill_done_at.get_or_insert(now);
        let t = a.sampler.sample(&mut logits, &a.history);
        a.first_token_at.get_or_insert(now);
        a.generated += 1;
        a.history.push(t);
        if eos.contains(&t) {
            ending.push((i, FinishReason::Stop));
            done[i] = true;
            continue;
        }
        let piece = a.decoder.as_mut().map(|d| d.step(t)).unwrap_or_default();
        match a.stop.push(&piece) {
            StopOutcome::Stopped(text) => {
                if !text.is_empty() {
                    a.send(GenerationEvent::Text {
                        text,
                        tokens: vec![t],
                    });
                }
                ending.push((i, FinishReason::StopString));
                done[i] = true;
                continue;
            }
            StopOutcome::Continue(text) => {
                if !a.send(GenerationEvent::Text {
                    text,
                    tokens: vec![t],
                }) {
                    done[i] = true;
                    continue;
                }
            }
        }
        if a.generated >= a.req.params.max_tokens {
            ending.push((i, FinishReason::Length));
            done[i] = true;
        } else if a.cache.remaining() == 0 {
            ending.push((i, FinishReason::ContextFull));
            done[i] = true;
        } else {
            a.next = Some(t);
        }
    }
    if !ending.is_empty() {
        moe.publish_telemetry();
        for (i, reason) in ending {
            active[i].finish(reason);
        }
    }
    let mut i = 0;
    active.retain(|_| {
        let keep = !done[i];
        i += 1;
        keep
    });
    Ok(())
}
