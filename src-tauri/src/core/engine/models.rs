//! Engine service types: what the UI sees of the loaded model and of loading.

use hmoe_engine::api::{GenerationEvent, LoadProgress};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// What the app shows about a loaded model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoadedModelInfo {
    /// File the model came from.
    pub path: String,
    /// Display name.
    pub name: String,
    /// Model architecture (e.g. `qwen3moe`).
    pub architecture: String,
    /// Quantisation name.
    pub quant: String,
    /// Context length in tokens.
    pub context_length: u64,
}

/// Engine state for the status bar.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EngineStatus {
    /// No model.
    Idle,
    /// A model is loading.
    Loading {
        /// The file.
        path: String,
        /// Last progress report.
        progress: Option<LoadProgress>,
    },
    /// Ready to generate.
    Ready {
        /// The model.
        model: LoadedModelInfo,
    },
    /// The last load failed.
    Failed {
        /// The file.
        path: String,
        /// Why.
        error: String,
    },
}

/// Channel payload while loading.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LoadEvent {
    /// A progress report from the engine.
    Progress {
        /// The report.
        progress: LoadProgress,
    },
    /// Loaded.
    Ready {
        /// The model.
        model: LoadedModelInfo,
    },
    /// Failed.
    Failed {
        /// Why.
        error: String,
    },
}

/// A running generation as the service hands it out: events, and a cancel switch.
/// Dropping it cancels too.
pub struct GenStream {
    /// Engine events.
    pub events: mpsc::Receiver<GenerationEvent>,
    /// Asks the engine to stop (it then ends the stream with a `Cancelled` done event).
    pub cancel: Box<dyn Fn() + Send + Sync>,
}
