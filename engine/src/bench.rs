//! `hmoe bench`: prefill and decode speed of the loaded model on this machine, and the
//! CPU expert kernels' achieved weight bandwidth as a fraction of the machine's
//! measured read bandwidth (both measured in the same run).

use crate::error::Result;
use crate::generate::sampler::argmax;
use crate::model::kv_cache::KvCache;
use crate::model::qwen3moe::Qwen3Moe;
use crate::model::{LogitsFor, SeqStep};
use crate::moe::MoeDispatch;
use crate::service::Engine;
use rayon::prelude::*;
use serde::Serialize;
use std::time::Instant;

/// Results of one benchmark run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Model name.
    pub model: String,
    /// Expert weight type.
    pub quant: String,
    /// Worker threads (rayon pool size).
    pub threads: usize,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Prefill tokens per second.
    pub prefill_tok_s: f64,
    /// CPU time of the whole process during prefill (all threads), seconds: on a
    /// machine shared with other work, `prompt_tokens / prefill_cpu_s × threads` is
    /// the rate an idle machine would approach.
    pub prefill_cpu_s: f64,
    /// Decoded tokens.
    pub decode_tokens: usize,
    /// Decode tokens per second.
    pub decode_tok_s: f64,
    /// Expert weight bytes read per decoded token.
    pub expert_bytes_per_token: u64,
    /// Expert weight bytes per second during decode's expert execution.
    pub expert_gb_s: f64,
    /// Share of decode time spent in expert execution.
    pub expert_time_share: f64,
    /// Measured multi-threaded read bandwidth, GB/s.
    pub memory_read_gb_s: f64,
    /// `expert_gb_s / memory_read_gb_s`.
    pub bandwidth_fraction: f64,
}

/// Bytes streamed by the bandwidth probe: far beyond any cache.
const PROBE_BYTES: usize = 1 << 30;

/// Measures multi-threaded read bandwidth (best of three passes over 1 GiB), GB/s.
pub fn memory_read_bandwidth() -> f64 {
    let buf: Vec<u64> = (0..PROBE_BYTES / 8).map(|i| i as u64).collect();
    let mut best = 0f64;
    for _ in 0..3 {
        let t = Instant::now();
        let s: u64 = buf
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
            .reduce(|| 0, u64::wrapping_add);
        let dt = t.elapsed().as_secs_f64();
        std::hint::black_box(s);
        best = best.max(PROBE_BYTES as f64 / dt / 1e9);
    }
    best
}

/// A deterministic pseudo-random prompt over the ordinary-token range of `vocab_size`.
pub(crate) fn bench_prompt(len: usize, vocab_size: usize) -> Vec<u32> {
    bench_prompt_from(len, vocab_size, 0)
}

/// [`bench_prompt`]'s sequence from its `start`-th token on: another prompt of the same
/// kind.
pub(crate) fn bench_prompt_from(len: usize, vocab_size: usize, start: u64) -> Vec<u32> {
    let vocab = (vocab_size as u64).min(150_000);
    (start..start + len as u64)
        .map(|i| ((i * 2_654_435_761) % vocab) as u32)
        .collect()
}

/// Prefills `prompt` into `cache` in steps of `chunk` tokens (the engine's
/// [`Engine::prefill_chunk`], as its generation worker does); returns the last logits.
pub(crate) fn prefill(
    model: &Qwen3Moe,
    moe: &mut MoeDispatch,
    cache: &mut KvCache,
    prompt: &[u32],
    chunk: usize,
) -> Result<Vec<f32>> {
    let mut last = Vec::new();
    for part in prompt.chunks(chunk.max(1)) {
        let mut s = [SeqStep {
            cache: &mut *cache,
            tokens: part,
            logits: LogitsFor::Last,
        }];
        last = model.forward(&mut s, moe)?.swap_remove(0);
    }
    Ok(last)
}

/// Decodes `n` greedy tokens after `tok`; returns the last one.
pub(crate) fn decode_greedy(
    model: &Qwen3Moe,
    moe: &mut MoeDispatch,
    cache: &mut KvCache,
    mut tok: u32,
    n: usize,
) -> Result<u32> {
    for _ in 0..n {
        let one = [tok];
        let mut s = [SeqStep {
            cache: &mut *cache,
            tokens: &one,
            logits: LogitsFor::Last,
        }];
        tok = argmax(&model.forward(&mut s, moe)?.swap_remove(0));
    }
    Ok(tok)
}

/// Runs the benchmark on a loaded engine.
pub fn measure(engine: &Engine, prompt_len: usize, gen: usize) -> Result<BenchReport> {
    let info = engine.info().clone();
    let cfg = info.config.clone();
    let chunk = engine.prefill_chunk();
    let r = engine.with_model(move |model, moe| -> Result<(f64, f64, f64, f64, usize)> {
        let prompt = bench_prompt(prompt_len, cfg.vocab_size);
        let mut cache = model.new_cache(prompt_len + gen + 1);
        let t0 = Instant::now();
        let c0 = hmoe_cpu::topology::process_cpu_seconds();
        let last = prefill(model, moe, &mut cache, &prompt, chunk)?;
        let prefill_s = t0.elapsed().as_secs_f64();
        let prefill_cpu_s = hmoe_cpu::topology::process_cpu_seconds() - c0;
        let cpu_before = moe.summary().cpu_seconds;
        let t1 = Instant::now();
        decode_greedy(model, moe, &mut cache, argmax(&last), gen)?;
        let decode_s = t1.elapsed().as_secs_f64();
        Ok((
            prefill_s,
            prefill_cpu_s,
            decode_s,
            moe.summary().cpu_seconds - cpu_before,
            gen,
        ))
    })??;
    let (prefill_s, prefill_cpu_s, decode_s, expert_s, gen) = r;
    let expert_bytes_per_token = (cfg.n_layers * cfg.top_k) as u64 * info.expert_bytes;
    let expert_gb_s = if expert_s > 0.0 {
        expert_bytes_per_token as f64 * gen as f64 / expert_s / 1e9
    } else {
        0.0
    };
    let mem = memory_read_bandwidth();
    Ok(BenchReport {
        model: info.name,
        quant: info.quant,
        threads: rayon::current_num_threads(),
        prompt_tokens: prompt_len,
        prefill_tok_s: prompt_len as f64 / prefill_s,
        prefill_cpu_s,
        decode_tokens: gen,
        decode_tok_s: gen as f64 / decode_s,
        expert_bytes_per_token,
        expert_gb_s,
        expert_time_share: expert_s / decode_s,
        memory_read_gb_s: mem,
        bandwidth_fraction: expert_gb_s / mem,
    })
}

/// Runs and prints the benchmark.
pub fn run(engine: &Engine, prompt_len: usize, gen: usize, json: bool) -> Result<()> {
    let r = measure(engine, prompt_len, gen)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    } else {
        println!("model {} ({}) · {} threads", r.model, r.quant, r.threads);
        println!(
            "prefill {} tokens: {:.1} tok/s ({:.2} s CPU time on all threads)",
            r.prompt_tokens, r.prefill_tok_s, r.prefill_cpu_s
        );
        println!(
            "decode {} tokens:  {:.2} tok/s",
            r.decode_tokens, r.decode_tok_s
        );
        println!(
            "expert kernels: {:.1} GB/s of weights ({:.0}% of decode time) vs {:.1} GB/s measured read bandwidth = {:.0}%",
            r.expert_gb_s,
            r.expert_time_share * 100.0,
            r.memory_read_gb_s,
            r.bandwidth_fraction * 100.0
        );
    }
    Ok(())
}
