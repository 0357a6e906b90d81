//! Load-time calibration of the cost model's CPU term: the CPU expert kernels are timed
//! on this machine for the model's expert types and shape, fitted into the machine
//! profile, and cached per machine and model shape so later loads skip it.

use crate::error::{EngineError, Result};
use crate::moe::placer::quant_type;
use hmoe_cpu::{calibrate_cpu, CpuPool, ExpertScratch};
use hmoe_gguf::GgmlDType;
use hmoe_sched::{CostModel, MachineProfile, ModelShape};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Tokens per expert measured: decode (1), small batches, prefill-sized groups.
const TOKEN_COUNTS: [usize; 4] = [1, 4, 32, 128];
/// Experts cycled so the weights come from DRAM, as in a real model.
const WORKING_SET_BYTES: usize = 256 << 20;
/// Time spent per (type, tokens) point: the whole calibration stays under ~2 s.
const SECONDS_PER_POINT: f64 = 0.05;

/// What to do about calibration when a model loads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Calibration {
    /// Use the cached profile for this machine and shape, or measure and cache it.
    #[default]
    Auto,
    /// Measure again and overwrite the cache.
    Force,
    /// Use the built-in priors only (tests, quick starts).
    Skip,
}

/// Where profiles are cached: `$HMOE_CACHE_DIR`, else `$XDG_CACHE_HOME/hmoe`, else
/// `~/.cache/hmoe`, under `profiles/`.
pub fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("HMOE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("hmoe")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/hmoe")))?;
    Some(base.join("profiles"))
}

/// A stable name for this machine: CPU model and the pool's thread count.
pub fn machine_id(threads: usize) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{cpu}-{threads}t")
}

/// Times the CPU expert kernels for `types` and fits them into `prior`.
pub fn measure(
    pool: &CpuPool,
    shape: &ModelShape,
    types: &[GgmlDType],
    prior: MachineProfile,
) -> Result<MachineProfile> {
    let mut distinct: Vec<GgmlDType> = types.to_vec();
    distinct.sort();
    distinct.dedup();
    let mut scratch = ExpertScratch::new();
    let timings = calibrate_cpu(
        pool,
        &mut scratch,
        &distinct,
        &TOKEN_COUNTS,
        shape.hidden as usize,
        shape.expert_ffn as usize,
        WORKING_SET_BYTES,
        SECONDS_PER_POINT,
    )
    .map_err(|e| EngineError::Compute(format!("CPU calibration: {e}")))?;
    let mut cost = CostModel::new(prior);
    for t in &timings {
        if let Some(q) = quant_type(t.dtype) {
            cost.observe_cpu(q, t.weight_bytes as u64, t.n_tokens as u32, t.seconds);
        }
    }
    Ok(cost.profile().clone())
}

fn save_atomically(profile: &MachineProfile, path: &Path) -> Result<()> {
    let io = |e: std::io::Error| EngineError::Io {
        path: path.display().to_string(),
        source: e,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // Write then rename: concurrent loads never read a half-written profile.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    profile
        .save(&tmp)
        .map_err(|e| io(std::io::Error::other(e.to_string())))?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The profile to plan with: cached, measured (and cached), or the prior.
pub fn profile_for(
    mode: Calibration,
    pool: &CpuPool,
    shape: &ModelShape,
    types: &[GgmlDType],
    prior: MachineProfile,
) -> Result<MachineProfile> {
    if mode == Calibration::Skip {
        return Ok(prior);
    }
    let path = cache_dir().map(|d| {
        d.join(MachineProfile::cache_file_name(
            &machine_id(pool.threads()),
            // The kernel revision is in the key: new kernels invalidate old measurements.
            &format!(
                "{}-{:?}-k{}",
                shape.hidden,
                shape.expert_quant,
                hmoe_cpu::KERNEL_REVISION
            )
            .replace(' ', ""),
        ))
    });
    if mode == Calibration::Auto {
        if let Some(p) = path.as_deref().filter(|p| p.is_file()) {
            match MachineProfile::load(p) {
                Ok(profile) => return Ok(profile),
                Err(e) => tracing::warn!("ignoring cached profile {}: {e}", p.display()),
            }
        }
    }
    let profile = measure(pool, shape, types, prior)?;
    if let Some(p) = &path {
        if let Err(e) = save_atomically(&profile, p) {
            tracing::warn!("could not cache the calibrated profile: {e}");
        }
    }
    Ok(profile)
}

/// Tokens per expert in the GPU calibration (decode, small batch, prefill-sized groups).
const GPU_TOKEN_COUNTS: [usize; 4] = [1, 4, 32, 128];
/// Experts per GPU calibration call (at most the arena's slots).
const GPU_CAL_EXPERTS: usize = 8;
/// Timed repetitions per GPU point (the fit sees them all; the first may include warm-up).
const GPU_CAL_REPS: usize = 3;

/// Fills the profile's GPU and link terms for the executor's card: starts from the
/// H100 machine's priors where `prior` has none, then times, on this card and with this
/// model's layer-0 experts, copies of non-resident experts (the link) and kernels on
/// resident ones for 1-128 tokens per expert (CUDA events), and fits them. Takes
/// milliseconds; not cached (the card may change between runs).
pub fn calibrate_gpu(
    gpu: &crate::backend::cuda::GpuExpertExecutor,
    experts: &crate::moe::LayerExperts<'_>,
    shape: &ModelShape,
    prior: MachineProfile,
) -> Result<MachineProfile> {
    use crate::moe::WorkItem;
    let mut profile = prior;
    if profile.gpu.is_none() || profile.pcie.is_none() {
        let h = MachineProfile::h100_box();
        profile.gpu = profile.gpu.or(h.gpu);
        profile.pcie = profile.pcie.or(h.pcie);
        profile.notes.push(
            "GPU and link priors from the H100 machine, refitted by calibrate_gpu and online"
                .into(),
        );
    }
    let mut cost = CostModel::new(profile);
    let work = shape.expert_work();
    let hidden = shape.hidden as usize;
    let n = GPU_CAL_EXPERTS
        .min(gpu.n_slots())
        .min(experts.n_experts())
        .max(1);
    let max_tokens = *GPU_TOKEN_COUNTS.iter().max().unwrap_or(&1);
    let x: Vec<f32> = (0..max_tokens * hidden)
        .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
        .collect();
    let mut out = vec![0f32; max_tokens * hidden];
    let items = |first: usize, tokens: usize| -> Vec<WorkItem> {
        (0..n)
            .map(|j| WorkItem {
                expert: ((first + j) % experts.n_experts()) as u16,
                rows: (0..tokens as u32).collect(),
                weights: vec![1.0 / n as f32; tokens],
            })
            .collect()
    };
    // Copies: disjoint expert sets while the layer has them (each set is copied once).
    let sets = (experts.n_experts() / n).clamp(1, GPU_CAL_REPS);
    for set in 0..sets {
        let it = items(set * n, 1);
        let t = gpu.complete(
            gpu.submit(experts, &x[..hidden], hidden, &it)?,
            &mut out[..hidden],
        )?;
        if t.fetches > 0 && t.copied_bytes > 0 && t.copy_ms > 0.0 {
            let f = t.fetches as f64;
            cost.observe_pcie(
                (t.copied_bytes as f64 / f) as u64,
                t.copy_ms as f64 / 1e3 / f,
            );
        }
    }
    // Kernels on the last set, now resident.
    let first = (sets - 1) * n;
    for &tokens in &GPU_TOKEN_COUNTS {
        let it = items(first, tokens);
        let xs = &x[..tokens * hidden];
        for _ in 0..GPU_CAL_REPS {
            let t = gpu.complete(
                gpu.submit(experts, xs, hidden, &it)?,
                &mut out[..tokens * hidden],
            )?;
            if t.fetches == 0 && t.gpu_ms > 0.0 {
                cost.observe_gpu_expert(&work, tokens as f64, t.gpu_ms as f64 / 1e3 / n as f64);
            }
        }
    }
    let fitted = cost.profile().clone();
    if let (Some(g), Some(l)) = (&fitted.gpu, &fitted.pcie) {
        tracing::info!(
            "GPU calibration: link {:.1} GB/s + {:.0} us per copy; expert fixed {:.0} us",
            l.bytes_per_s / 1e9,
            l.fixed_s * 1e6,
            g.fixed_per_expert_s * 1e6
        );
    }
    Ok(fitted)
}
