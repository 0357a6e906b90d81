//! `hmoe synth` and `hmoe quantize`.

use crate::util::human;
use anyhow::{Context, Result};
use clap::Args;
use hmoe_engine::gguf::{GgufFile, GgufWriter, TensorDesc};
use hmoe_engine::synth::{preset, write_synthetic, Recipe, SynthOptions};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

/// `hmoe synth` flags.
#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Preset: tiny or qwen3-30b-a3b.
    #[arg(long)]
    pub preset: String,
    /// f32, bf16, q8_0, q4_k_m, q4_k or q6_k.
    #[arg(long, default_value = "q8_0")]
    pub dtype: String,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep only the first N layers.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Output path.
    #[arg(long, short)]
    pub out: PathBuf,
}

/// `hmoe quantize` flags.
#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// Input model.
    #[arg(long = "in")]
    pub input: PathBuf,
    /// Output model.
    #[arg(long, short)]
    pub out: PathBuf,
    /// q8_0, q4_k_m, q4_k, q6_k, bf16 or f32.
    #[arg(long)]
    pub dtype: String,
}

fn bytes_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("[{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

pub fn synth(a: SynthArgs) -> Result<()> {
    let opts = SynthOptions {
        preset: preset(&a.preset)?,
        recipe: Recipe::parse(&a.dtype)?,
        seed: a.seed,
        layers: a.layers,
    };
    let bar = bytes_bar(0);
    write_synthetic(&opts, &a.out, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| format!("writing {}", a.out.display()))?;
    bar.finish_and_clear();
    let size = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
    eprintln!("wrote {} ({})", a.out.display(), human(size));
    Ok(())
}

/// Tensors that stay in their original type: norms (1-D) and the router, as llama.cpp keeps them.
fn keeps_type(name: &str, dims: &[u64]) -> bool {
    dims.len() == 1 || name.ends_with("ffn_gate_inp.weight")
}

pub fn quantize(a: QuantizeArgs) -> Result<()> {
    let recipe = Recipe::parse(&a.dtype)?;
    let src = GgufFile::open(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
    let mut plan = Vec::new();
    for t in src.tensors() {
        let kind = t
            .name
            .split_once('.')
            .filter(|(b, _)| *b == "blk")
            .map_or(t.name.as_str(), |(_, rest)| {
                rest.split_once('.').map_or(rest, |(_, k)| k)
            });
        let target = if keeps_type(&t.name, &t.dims) {
            t.dtype
        } else {
            let want = recipe.matrix_type(kind);
            if t.dims[0] % want.block_size() as u64 == 0 {
                want
            } else {
                eprintln!(
                    "note: {} rows of {} are not whole {} blocks; kept as {}",
                    t.name, t.dims[0], want, t.dtype
                );
                t.dtype
            }
        };
        plan.push((t.clone(), target));
    }
    let meta: Vec<_> = src
        .metadata()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let descs = plan
        .iter()
        .map(|(t, d)| TensorDesc::new(t.name.clone(), &t.dims, *d))
        .collect();
    let mut w = GgufWriter::create(&a.out, meta, descs)?;
    let bar = bytes_bar(src.file_size_total());
    for (t, target) in &plan {
        let data = src.tensor_data(t);
        if *target == t.dtype {
            w.write_tensor(&t.name, data)?;
        } else {
            let row = t.dims[0] as usize;
            let rows = (t.n_elements() as usize) / row;
            let (in_row, out_row) = (
                hmoe_engine::quant::row_bytes(t.dtype, row)?,
                hmoe_engine::quant::row_bytes(*target, row)?,
            );
            let mut vals = vec![0f32; row];
            let mut out = vec![0u8; out_row];
            for r in 0..rows {
                hmoe_engine::quant::dequantize(
                    t.dtype,
                    &data[r * in_row..(r + 1) * in_row],
                    &mut vals,
                )?;
                hmoe_engine::quant::quantize(*target, &vals, &mut out)?;
                w.write_chunk(&out)?;
            }
        }
        bar.inc(t.n_bytes);
    }
    w.finish()?;
    bar.finish_and_clear();
    eprintln!("wrote {}", a.out.display());
    Ok(())
}
