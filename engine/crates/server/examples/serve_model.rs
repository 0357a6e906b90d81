//! Stand-in for `hmoe serve` (same flags) for running the server before the CLI glue
//! exists: `serve_model --model M [--host H] [--port P] [--api-key K]
//! [--max-concurrent N] [--max-queue Q] [--cors-origin O] [--allowed-host H]
//! [--served-model-name N] [--threads T] [--policy P]`.

use std::path::PathBuf;

use hmoe_engine::api::EngineOptions;
use hmoe_server::{run_serve, ServeConfig};

fn parse() -> Result<(PathBuf, ServeConfig, EngineOptions), String> {
    let mut model = None;
    let mut cfg = ServeConfig::default();
    let mut opts = EngineOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--model" => model = Some(PathBuf::from(value()?)),
            "--host" => cfg.host = value()?,
            "--port" => cfg.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--api-key" => cfg.api_key = Some(value()?),
            "--max-concurrent" => cfg.max_concurrent = num(value()?)?,
            "--max-queue" => cfg.max_queue = num(value()?)?,
            "--cors-origin" => cfg.cors_origins.push(value()?),
            "--allowed-host" => cfg.allowed_hosts.push(value()?),
            "--served-model-name" => cfg.served_model_name = Some(value()?),
            "--threads" => opts.runtime.threads = num(value()?)?,
            "--policy" => opts.runtime.policy = value()?,
            other => return Err(format!("unknown flag `{other}`")),
        }
    }
    let model = model.ok_or("--model is required")?;
    Ok((model, cfg, opts))
}

#[tokio::main]
async fn main() {
    let (model, cfg, opts) = match parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("serve_model: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run_serve(model, cfg, opts).await {
        eprintln!("serve_model: {e}");
        std::process::exit(1);
    }
}
