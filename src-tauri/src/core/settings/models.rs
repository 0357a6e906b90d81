//! App settings (stored as one JSON value per key in the `settings` table).

use hmoe_engine::api::SamplingParams;
use serde::{Deserialize, Serialize};

/// Everything the settings screen edits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AppSettings {
    /// CPU threads for expert kernels (0 = all physical cores).
    pub threads: usize,
    /// VRAM budget for the expert cache in GiB (None = what the card has free).
    pub vram_budget_gib: Option<f64>,
    /// Expert cache policy (`value`, `lru`, `lfu`, `static`, `cpu-only`, ...).
    pub policy: String,
    /// Prefetch next-layer experts.
    pub prefetch: bool,
    /// Sampling used by conversations without their own.
    pub default_sampling: SamplingParams,
    /// Qwen3 thinking on by default.
    pub enable_thinking: bool,
    /// Hugging Face token (sent only to the configured endpoint).
    pub hf_token: Option<String>,
    /// Hub endpoint (HF_ENDPOINT mirror); empty = https://huggingface.co.
    pub hf_endpoint: String,
    /// Model loaded at start (a library model id).
    pub last_model: Option<String>,
}

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Policies the engine knows (see `RuntimeOptions::policy`).
pub const POLICIES: &[&str] = &[
    "value",
    "lru",
    "lfu",
    "mrs",
    "static",
    "static-hot",
    "cpu-only",
];

impl Default for AppSettings {
    fn default() -> Self {
        Self {
            threads: 0,
            vram_budget_gib: None,
            policy: "value".into(),
            prefetch: true,
            default_sampling: SamplingParams::default(),
            enable_thinking: false,
            hf_token: None,
            hf_endpoint: std::env::var("HF_ENDPOINT").unwrap_or_default(),
            last_model: None,
        }
    }
}

/// Settings plus read-only facts for the settings screen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SettingsView {
    /// Editable settings.
    pub settings: AppSettings,
    /// Where the database and models live.
    pub data_folder: String,
    /// Known policies.
    pub policies: Vec<String>,
}
