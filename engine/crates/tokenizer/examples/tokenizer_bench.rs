//! Load and encode timings for the Qwen3 tokenizer (not a test: timings vary by machine).
//!
//! cargo run --release -p hmoe-tokenizer --example tokenizer_bench [ASSETS_DIR]

use std::collections::BTreeMap;
use std::time::Instant;

use hmoe_tokenizer::{
    gguf_metadata_from_tokenizer_json, ChatMessage, ChatTemplate, RenderOptions, Tokenizer,
};

/// CPU time of this thread in seconds (Linux schedstat), so that a loaded machine does not
/// inflate the numbers; `None` elsewhere.
fn thread_cpu_s() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

/// Best wall time of `runs` runs, printed with the CPU time of that run.
fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = (f64::INFINITY, 0.0);
    let mut out = None;
    for _ in 0..runs {
        let c = thread_cpu_s();
        let t = Instant::now();
        let v = f();
        let wall = t.elapsed().as_secs_f64();
        let cpu = thread_cpu_s().zip(c).map_or(f64::NAN, |(b, a)| b - a);
        if wall < best.0 {
            best = (wall, cpu);
        }
        out = Some(v);
    }
    print!("[cpu {:.1} ms] ", best.1 * 1e3);
    (best.0, out.unwrap_or_else(f))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/qwen3").to_string());
    let tj = std::fs::read(format!("{dir}/tokenizer.json"))?;
    let tc = std::fs::read(format!("{dir}/tokenizer_config.json"))?;

    let (t_json, tok) = best_of(5, || Tokenizer::from_hf_json(&tj, &tc));
    let tok = tok?;
    println!(
        "Tokenizer::from_hf_json (11 MB tokenizer.json): {:.1} ms",
        t_json * 1e3
    );
    let (t_export, meta) = best_of(5, || gguf_metadata_from_tokenizer_json(&tj, &tc));
    let meta: BTreeMap<_, _> = meta?.into_iter().collect();
    println!(
        "gguf_metadata_from_tokenizer_json: {:.1} ms",
        t_export * 1e3
    );
    let (t_gguf, gtok) = best_of(5, || Tokenizer::from_gguf_map(&meta));
    let gtok = gtok?;
    println!(
        "Tokenizer::from_gguf_map ({} tokens, {} merges): {:.1} ms",
        gtok.vocab_size(),
        meta["tokenizer.ggml.merges"]
            .as_array()
            .map_or(0, |a| a.len()),
        t_gguf * 1e3
    );

    let para = "The quick brown fox jumps over the lazy dog. 大型语言模型的混合专家架构在推理时只激活一部分参数。 \
                fn main() { println!(\"hi\"); } 😀👍🏽 1234567890\n";
    let text = para.repeat(2000);
    let (t_enc, ids) = best_of(3, || tok.encode(&text, false));
    let ids = ids?;
    println!(
        "encode {} bytes -> {} tokens: {:.1} ms ({:.2} MB/s)",
        text.len(),
        ids.len(),
        t_enc * 1e3,
        text.len() as f64 / t_enc / 1e6
    );
    let (t_stream, n) = best_of(3, || {
        let mut s = tok.decode_stream(false);
        ids.iter().map(|&id| s.step(id).len()).sum::<usize>()
    });
    println!(
        "DecodeStream {} tokens: {:.1} ms ({:.2} us/token), {n} bytes",
        ids.len(),
        t_stream * 1e3,
        t_stream / ids.len() as f64 * 1e6
    );

    let template = ChatTemplate::new(tok.chat_template().unwrap_or_default())?;
    let msgs: Vec<ChatMessage> = (0..200)
        .map(|i| ChatMessage::new(if i % 2 == 0 { "user" } else { "assistant" }, para))
        .collect();
    let opts = RenderOptions {
        add_generation_prompt: true,
        ..RenderOptions::default()
    };
    let (t_tpl, out) = best_of(3, || template.render(&msgs, &opts));
    println!(
        "chat template, 200 messages: {:.2} ms ({} bytes)",
        t_tpl * 1e3,
        out?.len()
    );

    // Fuel the real template needs for 200 messages (smallest limit that renders).
    let source = tok.chat_template().unwrap_or_default();
    let (mut lo, mut hi) = (1u64, 100_000_000u64);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let limits = hmoe_tokenizer::TemplateLimits {
            fuel: mid,
            ..Default::default()
        };
        if ChatTemplate::with_limits(source, limits)?
            .render(&msgs, &opts)
            .is_ok()
        {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    println!("chat template fuel for 200 messages: {lo} instructions");

    // How long the sandbox lets a hostile template run before stopping it.
    for (name, src) in [
        (
            "endless loop",
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        ),
        (
            "huge output",
            "{% for i in range(100000) %}{{ 'x' * 10000 }}{% endfor %}",
        ),
        (
            "deep recursion",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        ),
    ] {
        let hostile = ChatTemplate::new(src)?;
        let (t, r) = best_of(3, || hostile.render(&msgs[..1], &opts));
        let why = r.err().map_or("no error".into(), |e| e.to_string());
        println!(
            "hostile template ({name}): stopped after {:.1} ms: {why}",
            t * 1e3
        );
    }
    Ok(())
}
