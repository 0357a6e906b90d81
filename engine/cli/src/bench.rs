//! `hmoe bench`: prefill and decode speed on this machine, and the expert kernels'
//! achieved weight bandwidth against the machine's measured read bandwidth.

use crate::util::ModelArgs;
use anyhow::Result;
use clap::Args;

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
}

pub fn bench(a: BenchArgs) -> Result<()> {
    Ok(hmoe_engine::bench::run(
        &a.model.load()?,
        a.prompt_len,
        a.gen,
        a.json,
    )?)
}
