//! `hmoe bench`: prefill and decode speed on this machine, and the expert kernels'
//! achieved weight bandwidth against the machine's measured read bandwidth; with
//! `--sweep`, the same model under every placement setting in one run.

use crate::util::{parse_bytes, ModelArgs};
use anyhow::{bail, Result};
use clap::Args;
use hmoe_engine::bench_sweep::{print_table, row_line, sweep, SweepOptions};
use std::io::Write;
use std::path::PathBuf;

/// `hmoe bench` flags.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt tokens for the prefill measurement.
    #[arg(long, default_value_t = 512)]
    pub prompt_len: usize,
    /// Tokens to decode.
    #[arg(long, default_value_t = 32)]
    pub gen: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Sweep placement settings (policies × budgets × prefetch × routing) on one load.
    #[arg(long)]
    pub sweep: bool,
    /// Policies to sweep.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "cpu-only,static,lru,mrs,value"
    )]
    pub policies: Vec<String>,
    /// VRAM budgets to sweep (sizes like 8GiB, or `all` for the whole arena).
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub budgets: Vec<String>,
    /// Prefetch settings to sweep: on, off or both.
    #[arg(long, default_value = "both")]
    pub prefetch_modes: String,
    /// Routing to sweep: model (the router), replay (calibrated synthetic trace) or both.
    #[arg(long, default_value = "both")]
    pub routing: String,
    /// Decode tokens before each timed sweep run (cache warm-up; not timed).
    #[arg(long, default_value_t = 64)]
    pub warmup: usize,
    /// Append each sweep row as JSON to this file as it is measured.
    #[arg(long)]
    pub jsonl: Option<PathBuf>,
}

fn both(s: &str, a: &str, b: &str) -> Result<Vec<bool>> {
    Ok(match s {
        x if x == a => vec![true],
        x if x == b => vec![false],
        "both" => vec![false, true],
        other => bail!("`{other}`: expected {a}, {b} or both"),
    })
}

pub fn bench(a: BenchArgs) -> Result<()> {
    let engine = a.model.load()?;
    if !a.sweep {
        return Ok(hmoe_engine::bench::run(
            &engine,
            a.prompt_len,
            a.gen,
            a.json,
        )?);
    }
    let budgets = a
        .budgets
        .iter()
        .map(|b| {
            if b == "all" {
                Ok(None)
            } else {
                parse_bytes(b).map(Some)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let opts = SweepOptions {
        policies: a.policies.clone(),
        budgets,
        prefetch: both(&a.prefetch_modes, "on", "off")?,
        replay: both(&a.routing, "replay", "model")?,
        prompt_len: a.prompt_len,
        gen: a.gen,
        threads: a.model.engine.threads,
        warmup: a.warmup,
    };
    let mut out = match &a.jsonl {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?,
        ),
        None => None,
    };
    let rows = sweep(&engine, &opts, |r| {
        eprintln!("{}", row_line(r));
        if let Some(f) = out.as_mut() {
            if let Ok(line) = serde_json::to_string(r) {
                let _ = writeln!(f, "{line}");
            }
        }
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&rows);
    }
    Ok(())
}
