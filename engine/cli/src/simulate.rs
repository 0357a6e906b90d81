//! `hmoe simulate`: replays a routing trace through the scheduler, cache and cost model
//! for every policy and cache size, with Belady's optimum as the bound.

use anyhow::{Context, Result};
use clap::Args;
use hmoe_sched::sim::{CacheSize, SimOptions};
use hmoe_sched::{simulate, SimulateArgs};
use std::path::PathBuf;

/// `hmoe simulate` flags.
#[derive(Args, Debug)]
pub struct SimArgs {
    /// Routing trace (JSON lines; `hmoe generate --trace` or `sched-sim gen` write them).
    #[arg(long)]
    pub trace: PathBuf,
    /// Shape preset to cost the trace with, e.g. `qwen3-30b-a3b:q4_k_m` (default: the trace's).
    #[arg(long)]
    pub model_shape: Option<String>,
    /// Cache sizes: VRAM budgets (`8GiB`) or shares of the experts (`20%`), comma separated.
    #[arg(long, default_value = "8GiB,16GiB,24GiB", value_delimiter = ',')]
    pub vram_budget: Vec<String>,
    /// Policies, comma separated.
    #[arg(
        long,
        default_value = "cpu-only,static,static-hot,lru,lfu,mrs,value",
        value_delimiter = ','
    )]
    pub policies: Vec<String>,
    /// Machine profile: `h100`, `build` or a profile JSON file.
    #[arg(long)]
    pub profile: Option<String>,
    /// SVG plot of hit rate and time per token against cache size.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// JSON report.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn simulate_cmd(a: SimArgs) -> Result<()> {
    let sizes = a
        .vram_budget
        .iter()
        .map(|s| {
            s.parse::<CacheSize>()
                .map_err(|e| anyhow::anyhow!("--vram-budget `{s}`: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let args = SimulateArgs {
        trace: a.trace.clone(),
        model_shape: a.model_shape,
        sizes,
        policies: a.policies,
        profile: a.profile,
        out_svg: a.out,
        out_json: a.json,
        options: SimOptions::default(),
    };
    let report = simulate(&args).with_context(|| format!("simulating {}", a.trace.display()))?;
    print!("{}", report.table());
    Ok(())
}
