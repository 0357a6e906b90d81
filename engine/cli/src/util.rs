//! Shared CLI helpers: engine options from flags, progress bars, byte formatting.

use anyhow::{Context, Result};
use clap::Args;
use hmoe_engine::calibrate::Calibration;
use hmoe_engine::{DeviceChoice, Engine, EngineOptions, LoadProgress, LoadStage, RuntimeOptions};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Flags every command that loads a model shares.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model file (.gguf; for split files any part).
    #[arg(long, short)]
    pub model: PathBuf,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Engine flags without the model path (`hmoe chat` takes `--model` as a path or, with
/// `--remote`, as a model name).
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// cpu, cuda or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// CPU threads for the expert kernels (0 = physical cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Expert cache policy.
    #[arg(long, default_value = "value")]
    pub policy: String,
    /// VRAM budget for the expert cache, e.g. 8GiB.
    #[arg(long)]
    pub vram_budget: Option<String>,
    /// Disable next-layer prefetch.
    #[arg(long)]
    pub no_prefetch: bool,
    /// Context length cap.
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Prompt tokens per prefill chunk.
    #[arg(long, default_value_t = hmoe_engine::api::DEFAULT_PREFILL_CHUNK)]
    pub prefill_chunk: usize,
    /// Compute in f32 on dequantised weights (slow; matches the reference to rounding).
    #[arg(long)]
    pub exact: bool,
    /// Cost-model calibration: auto (cached per machine and shape), force, or skip.
    #[arg(long, default_value = "auto")]
    pub calibrate: String,
}

/// Parses sizes like `8GiB`, `512MiB`, `16GB`, `1000000`.
pub fn parse_bytes(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("`{s}` is not a size"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => anyhow::bail!("unknown size unit `{other}` in `{s}`"),
    };
    anyhow::ensure!(v.is_finite() && v >= 0.0, "size `{s}` must be non-negative");
    Ok((v * mult) as u64)
}

/// Human-readable bytes.
pub fn human(b: u64) -> String {
    let b = b as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

impl ModelArgs {
    /// Engine options from the flags.
    pub fn options(&self) -> Result<EngineOptions> {
        self.engine.options()
    }

    /// Loads the model with a progress bar on stderr.
    pub fn load(&self) -> Result<Engine> {
        self.engine.load(&self.model)
    }
}

impl EngineArgs {
    /// Engine options from the flags.
    pub fn options(&self) -> Result<EngineOptions> {
        let device = match self.device.as_str() {
            "auto" => DeviceChoice::Auto,
            "cpu" => DeviceChoice::Cpu,
            "cuda" => DeviceChoice::Cuda,
            other => anyhow::bail!("unknown device `{other}` (cpu, cuda, auto)"),
        };
        Ok(EngineOptions {
            device,
            runtime: RuntimeOptions {
                threads: self.threads,
                policy: self.policy.clone(),
                vram_budget_bytes: self.vram_budget.as_deref().map(parse_bytes).transpose()?,
                prefetch: !self.no_prefetch,
            },
            max_context: self.ctx,
            prefill_chunk: self.prefill_chunk,
            exact_math: self.exact,
            calibration: match self.calibrate.as_str() {
                "auto" => Calibration::Auto,
                "force" => Calibration::Force,
                "skip" => Calibration::Skip,
                other => anyhow::bail!("unknown --calibrate `{other}` (auto, force, skip)"),
            },
        })
    }

    /// Loads the model at `path` with a progress bar on stderr.
    pub fn load(&self, path: &Path) -> Result<Engine> {
        let bar = ProgressBar::new(1);
        bar.set_style(
            ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let b = bar.clone();
        let progress = Arc::new(move |p: LoadProgress| {
            b.set_message(format!("{:?}", p.stage));
            b.set_length(p.total.max(1));
            b.set_position(p.done);
            if p.stage == LoadStage::Ready {
                b.finish_and_clear();
            }
        });
        let engine = Engine::load_blocking(path, self.options()?, progress)
            .with_context(|| format!("loading {}", path.display()))?;
        bar.finish_and_clear();
        Ok(engine)
    }
}
