//! `hmoe`: the command-line face of the engine.

mod bench;
mod convert;
mod npy;
mod remote_chat;
mod run;
mod serve;
mod simulate;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "hmoe",
    version,
    about = "Hybrid CPU/GPU Mixture-of-Experts inference"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Architecture, sizes, quant types and memory needed of a model file.
    Info(run::InfoArgs),
    /// Generate text from a prompt.
    Generate(run::GenerateArgs),
    /// Interactive chat with a model's chat template, or with a server (--remote URL).
    Chat(run::ChatArgs),
    /// Write the logits of every position of a token sequence as a float32 .npy.
    Logits(run::LogitsArgs),
    /// Write a random-weight model with a preset's real shapes and the Qwen3 tokenizer.
    Synth(convert::SynthArgs),
    /// Re-encode a model's weight matrices (norms and router stay f32).
    Quantize(convert::QuantizeArgs),
    /// Measure prefill and decode speed and the expert kernels' memory bandwidth.
    Bench(bench::BenchArgs),
    /// OpenAI-compatible server (/v1/chat/completions, /v1/completions, /v1/models, /health).
    Serve(serve::ServeArgs),
    /// Speed benchmark client with test_speed.py's semantics.
    BenchServe(serve::BenchServeArgs),
    /// Replay a routing trace through every policy and cache size (no computing).
    Simulate(simulate::SimArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HMOE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Serve(_) | Cmd::BenchServe(_)) {
        quiet_broken_pipe();
    }
    let r: Result<()> = match cli.cmd {
        Cmd::Info(a) => run::info(a),
        Cmd::Generate(a) => run::generate(a),
        Cmd::Chat(a) => run::chat(a),
        Cmd::Logits(a) => run::logits(a),
        Cmd::Synth(a) => convert::synth(a),
        Cmd::Quantize(a) => convert::quantize(a),
        Cmd::Bench(a) => bench::bench(a),
        Cmd::Serve(a) => serve::serve(a),
        Cmd::BenchServe(a) => serve::bench_serve_cmd(a),
        Cmd::Simulate(a) => simulate::simulate_cmd(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// `hmoe info m.gguf | head` closes stdout early: end quietly on SIGPIPE, as other
/// command-line tools do, instead of panicking in `println!` (Rust ignores SIGPIPE, so
/// the write fails and the print macros panic). Not for the servers: a client that
/// hangs up must not end them (their sockets never raise it anyway).
fn quiet_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition at start-up, before any other
    // thread exists; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The error and its causes, skipping causes whose text an outer message already contains
/// (library errors often embed their source's message).
fn describe(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if !msg.contains(&c) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&c);
        }
    }
    msg
}
