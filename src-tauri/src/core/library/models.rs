//! Model library types.

use serde::{Deserialize, Serialize};

/// Where a model file was found.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ModelSource {
    /// The built-in demo model.
    Demo,
    /// Downloaded by this app.
    Download,
    /// Imported from disk.
    Imported,
    /// Found in the app's models folder.
    App,
    /// Found in the Hugging Face cache.
    HfCache,
}

/// Whether a model runs on this machine.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FitVerdict {
    /// The whole model fits where it computes (VRAM, or RAM on a CPU-only machine).
    Fits,
    /// Dense weights on the GPU, experts from RAM.
    FitsWithOffload,
    /// Too big for RAM + VRAM.
    WontFit,
}

/// The verdict and a sentence that explains it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Fit {
    /// Verdict.
    pub verdict: FitVerdict,
    /// Why, in numbers.
    pub reason: String,
}

/// GGUF facts the library shows (from the header only).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ModelMeta {
    /// `general.architecture`.
    pub architecture: String,
    /// Dominant weight type (e.g. `Q8_0`).
    pub quant: String,
    /// Blocks.
    pub n_layers: u64,
    /// Experts per layer (0 = dense).
    pub n_experts: u64,
    /// Experts per token.
    pub top_k: u64,
    /// Context length.
    pub context_length: u64,
    /// Bytes of expert weights.
    pub expert_bytes: u64,
    /// Bytes of everything else.
    pub dense_bytes: u64,
}

/// One model in the library.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LibraryModel {
    /// Stable id (the path of the first file).
    pub id: String,
    /// Display name.
    pub name: String,
    /// First (or only) file.
    pub path: String,
    /// All files (split models have several).
    pub files: Vec<String>,
    /// Hub repository when known.
    pub repo: Option<String>,
    /// Where it was found.
    pub source: ModelSource,
    /// Bytes on disk that deleting it frees.
    pub size_bytes: u64,
    /// Header facts; None when the header could not be read (see `error`).
    pub meta: Option<ModelMeta>,
    /// Fit on this machine.
    pub fit: Option<Fit>,
    /// Why the header could not be read.
    pub error: Option<String>,
}
