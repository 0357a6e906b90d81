//! The built-in demo model: a tiny synthetic Qwen3-MoE (real tokenizer, random weights)
//! written by the engine on first start, so a fresh install can chat without a download.

use std::path::Path;

use crate::core::error::{AppError, AppResult};

/// File name of the demo model.
pub const DEMO_FILE: &str = "hmoe-demo-tiny-q8_0.gguf";
/// Engine preset and weight type of the demo.
const PRESET: &str = "tiny";
const RECIPE: &str = "q8_0";
/// Fixed seed: every install gets the same demo model.
const SEED: u64 = 7;

/// Writes the demo model to `out` unless it is already there. Blocking (a few seconds):
/// run on a blocking thread. Writes to a temporary name first so that a crash mid-write
/// never leaves a half file that the library would offer.
pub fn ensure_demo_model(out: &Path) -> AppResult<bool> {
    if out.is_file() {
        return Ok(false);
    }
    let dir = out
        .parent()
        .ok_or_else(|| AppError::invalid("path", "demo model path has no folder"))?;
    std::fs::create_dir_all(dir).map_err(|e| AppError::io("create folder", dir, e))?;
    let tmp = out.with_extension("gguf.tmp");
    let opts = hmoe_engine::synth::SynthOptions {
        preset: hmoe_engine::synth::preset(PRESET).map_err(|e| AppError::Engine(e.to_string()))?,
        recipe: hmoe_engine::synth::Recipe::parse(RECIPE)
            .map_err(|e| AppError::Engine(e.to_string()))?,
        seed: SEED,
        layers: None,
    };
    hmoe_engine::synth::write_synthetic(&opts, &tmp, |_, _| {})
        .map_err(|e| AppError::Engine(e.to_string()))?;
    std::fs::rename(&tmp, out).map_err(|e| AppError::io("rename", &tmp, e))?;
    Ok(true)
}
