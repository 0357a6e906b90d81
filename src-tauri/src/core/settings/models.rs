//! App settings (stored as one JSON value per key in the `settings` table).

use hmoe_engine::api::SamplingParams;
use serde::{Deserialize, Serialize};

use super::secrets::SecretStorageInfo;
use crate::core::chat::models::BackendChoice;

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
    /// Plain-text token written by earlier versions: read once, moved to the secret store
    /// at start, never written again (the token lives in the keyring or the 0600 file).
    #[serde(skip_serializing)]
    pub hf_token: Option<String>,
    /// Hub endpoint (HF_ENDPOINT mirror); empty = https://huggingface.co.
    pub hf_endpoint: String,
    /// Model loaded at start (a library model id).
    pub last_model: Option<String>,
    /// Downloads the app (not the user) stopped by exiting or crashing resume at start.
    pub resume_downloads_on_start: bool,
    /// Models folder; `None` = `<data folder>/models`. Changed only through
    /// `models_folder_change` (which moves or leaves the models), never by `settings_set`.
    pub models_folder: Option<String>,
    /// Who answers conversations that do not choose (local engine or a remote endpoint).
    pub default_backend: BackendChoice,
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
            resume_downloads_on_start: true,
            models_folder: None,
            default_backend: BackendChoice::Local,
        }
    }
}

/// Settings plus read-only facts for the settings screen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SettingsView {
    /// Editable settings.
    pub settings: AppSettings,
    /// Where the database (and, by default, the models) live.
    pub data_folder: String,
    /// The models folder in use.
    pub models_folder: String,
    /// Known policies.
    pub policies: Vec<String>,
    /// The Hugging Face token, masked (`hf_…WXYZ`), if one is saved.
    pub hf_token_masked: Option<String>,
    /// Where secrets are kept (keyring or the 0600 file), for the note under the token.
    pub secret_storage: SecretStorageInfo,
}
