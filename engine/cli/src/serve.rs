//! `hmoe serve` (OpenAI-compatible server) and `hmoe bench-serve` (test_speed client).

use crate::util::ModelArgs;
use anyhow::Result;
use clap::Args;
use hmoe_server::{bench_serve, run_serve, BenchArgs, ServeConfig, DEFAULT_PORT};

/// `hmoe serve` flags.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to bind (loopback by default).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` (mandatory when binding beyond loopback).
    #[arg(long)]
    pub api_key: Option<String>,
    /// Generations decoding together.
    #[arg(long, default_value_t = 4)]
    pub max_concurrent: usize,
    /// Requests waiting beyond that (then 429).
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Browser origin allowed by CORS (repeatable; none by default).
    #[arg(long)]
    pub cors_origin: Vec<String>,
    /// Extra Host header names to accept.
    #[arg(long)]
    pub allowed_host: Vec<String>,
    /// Model name served at /v1/models.
    #[arg(long)]
    pub served_model_name: Option<String>,
}

/// `hmoe bench-serve` flags.
#[derive(Args, Debug)]
pub struct BenchServeArgs {
    /// Chat completions URL (or server base URL).
    #[arg(long, default_value_t = format!("http://127.0.0.1:{DEFAULT_PORT}/v1/chat/completions"))]
    pub api_url: String,
    /// Model name to send.
    #[arg(long)]
    pub model: String,
    /// Prompt lengths in tokens, comma separated.
    #[arg(long, default_value = "1024", value_delimiter = ',')]
    pub prompt_lens: Vec<usize>,
    /// Completion tokens per request.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Simultaneous requests.
    #[arg(long, default_value_t = 1)]
    pub concurrent: usize,
    /// API key.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Temperature (test_speed uses 0.3).
    #[arg(long, default_value_t = 0.3)]
    pub temperature: f32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn serve(a: ServeArgs) -> Result<()> {
    let config = ServeConfig {
        host: a.host,
        port: a.port,
        api_key: a.api_key,
        max_concurrent: a.max_concurrent,
        max_queue: a.max_queue,
        cors_origins: a.cors_origin,
        allowed_hosts: a.allowed_host,
        served_model_name: a.served_model_name,
        ..ServeConfig::default()
    };
    let options = a.model.options()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_serve(a.model.model.clone(), config, options))?;
    Ok(())
}

pub fn bench_serve_cmd(a: BenchServeArgs) -> Result<()> {
    let args = BenchArgs {
        api_url: a.api_url,
        model: a.model,
        prompt_lens: a.prompt_lens,
        max_tokens: a.max_tokens,
        concurrent: a.concurrent,
        api_key: a.api_key,
        temperature: a.temperature,
        ..BenchArgs::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(bench_serve(args))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
