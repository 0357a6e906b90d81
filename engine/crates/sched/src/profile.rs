//! Machine profiles: the calibrated numbers the cost model starts from (serde JSON).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, SchedError};
use crate::shape::QuantType;

/// Linear cost of one expert matrix of a given type on a device:
/// `t = bytes/1e6 * (per_mb_s + per_mb_token_s * n_tokens)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KernelCoeffs {
    /// Seconds per MB of weights independent of the token count (streaming the weights).
    pub per_mb_s: f64,
    /// Seconds per MB of weights per token (the compute term).
    pub per_mb_token_s: f64,
}

/// Cost of expert kernels on one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceCosts {
    /// Fixed cost per expert (launches, thread-pool fork/join).
    pub fixed_per_expert_s: f64,
    /// Per storage type, indexed like [`QuantType::ALL`].
    pub coeffs: Vec<(QuantType, KernelCoeffs)>,
}

impl DeviceCosts {
    /// Builds coefficients for every type from a decode bandwidth (bytes/s read while
    /// computing one token) and a compute time per weight per token: the token term is
    /// `t_weight_token × weights per MB`, the streaming term is what is left of `1/bw`
    /// at one token (at least 10% of it, so that streaming never becomes free).
    pub fn from_rates(
        fixed_per_expert_s: f64,
        decode_bytes_per_s: f64,
        s_per_weight_token: f64,
    ) -> Self {
        let coeffs = QuantType::ALL
            .iter()
            .map(|&q| {
                let (b, w) = q.block();
                let weights_per_mb = 1e6 * w as f64 / b as f64;
                let per_mb_token_s = s_per_weight_token * weights_per_mb;
                let stream = 1e6 / decode_bytes_per_s;
                let per_mb_s = (stream - per_mb_token_s).max(0.1 * stream);
                (
                    q,
                    KernelCoeffs {
                        per_mb_s,
                        per_mb_token_s,
                    },
                )
            })
            .collect();
        Self {
            fixed_per_expert_s,
            coeffs,
        }
    }

    /// Coefficients of `q` (zero cost if the profile lacks the type: callers validate).
    pub fn coeff(&self, q: QuantType) -> KernelCoeffs {
        self.coeffs
            .iter()
            .find(|(t, _)| *t == q)
            .map(|(_, c)| *c)
            .unwrap_or(KernelCoeffs {
                per_mb_s: 0.0,
                per_mb_token_s: 0.0,
            })
    }
}

/// Host-to-device copy cost: `t = fixed_s + bytes / bytes_per_s`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkCosts {
    /// Fixed cost per copy.
    pub fixed_s: f64,
    /// Sustained bandwidth.
    pub bytes_per_s: f64,
}

/// Everything the cost model knows about a machine. Stored as JSON; the engine caches
/// one per machine + model shape after calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineProfile {
    /// Human name.
    pub name: String,
    /// Where each number comes from.
    pub notes: Vec<String>,
    /// CPU expert kernels.
    pub cpu: DeviceCosts,
    /// GPU expert kernels (`None`: no GPU, every expert runs on the CPU).
    pub gpu: Option<DeviceCosts>,
    /// Host→device link (`None` without a GPU).
    pub pcie: Option<LinkCosts>,
    /// Per MoE layer with GPU work: the host's overhead beyond the kernels (upload,
    /// launches, download, waiting).
    pub sync_s: f64,
    /// Per MoE layer split between CPU and GPU: what joining the two shares costs beyond
    /// `sync_s` (measured: hybrid layers' overhead minus GPU-only layers'). The solvers
    /// charge it to split plans only, so a split must save more than it costs.
    #[serde(default)]
    pub split_s: f64,
    /// Per layer per step: attention, norms and router (fixed part).
    pub dense_layer_s: f64,
    /// Per layer per token: the token-proportional part of the dense work.
    pub dense_layer_per_token_s: f64,
    /// Per step: embedding, output head, sampling.
    pub token_fixed_s: f64,
}

impl MachineProfile {
    /// The GPU machine of the brief (H100 80GB + 16-core Sapphire Rapids), from measured
    /// numbers where the brief has them and marked estimates elsewhere.
    pub fn h100_box() -> Self {
        // KTransformers Q4_K prefill: 512 tokens at 281 tok/s = 1.822 s for
        // 512 × 48 × 8 × 4.72 M weight-tokens → 1.96e-12 s per weight-token.
        let cpu_weight_token = 1.822 / (512.0 * 48.0 * 8.0 * 4_718_592.0);
        // GPU: 100 TFLOP/s effective on quantised mmq → 2e-14 s per weight-token (estimate).
        let gpu_weight_token = 2.0 / 100e12;
        Self {
            name: "gpu-box-h100".into(),
            notes: vec![
                "cpu decode 52 GB/s: llama.cpp all experts on CPU, Q8_0 27.3 tok/s x 1.92 GB (brief, measured)".into(),
                "cpu compute 1.96e-12 s/weight-token: KTransformers Q4_K prefill 512 at 281 tok/s (brief, measured)".into(),
                "cpu fixed 5 us/expert: thread-pool fork/join for 3 matmuls (estimate, calibrate)".into(),
                "pcie 54 GB/s pinned + 8 us/copy: 5 MB chunks at ~105 us (brief, measured)".into(),
                "gpu 2 TB/s effective HBM, 100 TFLOP/s effective, 10 us/expert launches (estimates, calibrate)".into(),
                "dense 45 us/layer: llama.cpp all-GPU Q4_K 272.8 tok/s = 3.67 ms/token minus ~25 us of fused experts per layer (derived)".into(),
                "sync 15 us/layer, token fixed 0.25 ms (output head 255 MB at HBM speed + sampling) (estimates)".into(),
            ],
            cpu: DeviceCosts::from_rates(5e-6, 52e9, cpu_weight_token),
            gpu: Some(DeviceCosts::from_rates(10e-6, 2.0e12, gpu_weight_token)),
            pcie: Some(LinkCosts { fixed_s: 8e-6, bytes_per_s: 54e9 }),
            sync_s: 15e-6,
            split_s: 0.0,
            dense_layer_s: 45e-6,
            dense_layer_per_token_s: 0.4e-6,
            token_fixed_s: 250e-6,
        }
    }

    /// The 2-core, no-GPU build machine: priors from llama.cpp's `--layers 4` runs there,
    /// meant to be replaced by the engine's calibration.
    pub fn build_box() -> Self {
        // tg128 37.1 tok/s reads ~0.38 GB/token (4 layers of Q4_K experts, attention,
        // Q6_K output head) → ~14 GB/s; pp512 403 tok/s → ~1 GFLOP/token at ~0.4 TFLOP/s.
        Self {
            name: "build-box-2core".into(),
            notes: vec![
                "priors from llama.cpp -t 2 on the --layers 4 model (brief): ~14 GB/s decode, ~0.4 TFLOP/s prefill; replace by calibration".into(),
            ],
            cpu: DeviceCosts::from_rates(3e-6, 14e9, 2.0 / 0.4e12),
            gpu: None,
            pcie: None,
            sync_s: 0.0,
            split_s: 0.0,
            dense_layer_s: 200e-6,
            dense_layer_per_token_s: 20e-6,
            token_fixed_s: 20e-3,
        }
    }

    /// Built-in profile by name: `h100` / `gpu-box-h100`, `build` / `build-box-2core`.
    pub fn builtin(name: &str) -> Option<Self> {
        match name {
            "h100" | "gpu-box-h100" => Some(Self::h100_box()),
            "build" | "build-box-2core" => Some(Self::build_box()),
            _ => None,
        }
    }

    /// Loads a profile from JSON.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| SchedError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| SchedError::Json {
            path: path.to_path_buf(),
            line: 1,
            source,
        })
    }

    /// A built-in name or a JSON file path.
    pub fn builtin_or_load(name_or_path: &str) -> Result<Self> {
        match Self::builtin(name_or_path) {
            Some(p) => Ok(p),
            None => Self::load(Path::new(name_or_path)),
        }
    }

    /// Writes the profile as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|source| SchedError::Json {
            path: path.to_path_buf(),
            line: 1,
            source,
        })?;
        std::fs::write(path, text).map_err(|source| SchedError::Io {
            op: "write",
            path: path.to_path_buf(),
            source,
        })
    }

    /// File name under which the engine caches a calibrated profile for this machine
    /// (the engine supplies an id, e.g. CPU model + GPU name) and model shape.
    pub fn cache_file_name(machine_id: &str, shape_name: &str) -> String {
        let clean = |s: &str| {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        };
        format!("profile-{}-{}.json", clean(machine_id), clean(shape_name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h100_profile_reproduces_brief_numbers() {
        let p = MachineProfile::h100_box();
        let link = p.pcie.unwrap();
        // A 5 MiB chunk: the brief measured ~105 us.
        let t = link.fixed_s + 5.0 * 1048576.0 / link.bytes_per_s;
        assert!((t - 105e-6).abs() < 5e-6, "{t}");
        // CPU decode of one MB of Q8_0 at one token = 1/52 GB/s.
        let c = p.cpu.coeff(QuantType::Q8_0);
        assert!(((c.per_mb_s + c.per_mb_token_s) - 1e6 / 52e9).abs() < 1e-9);
    }

    #[test]
    fn profile_json_round_trip() {
        let dir = std::env::temp_dir().join(format!("hmoe-sched-prof-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(MachineProfile::cache_file_name("xeon/h100", "qwen3:q8"));
        let p = MachineProfile::h100_box();
        p.save(&path).unwrap();
        assert_eq!(MachineProfile::load(&path).unwrap(), p);
        assert!(MachineProfile::load(&dir.join("missing.json")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
