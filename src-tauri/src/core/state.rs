//! Folders and the shared state every command receives.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crate::core::chat::stream::ActiveGenerations;
use crate::core::db::Db;
use crate::core::downloads::DownloadManager;
use crate::core::engine::EngineService;
use crate::core::library::helpers::LibraryRoots;
use crate::core::settings::secrets::SecretStore;

/// Overrides the data folder (tests, portable installs).
pub const DATA_DIR_ENV: &str = "HMOE_STUDIO_DATA";

/// Where the app keeps its files.
#[derive(Debug, Clone)]
pub struct AppPaths {
    /// Data folder (database, secrets file, default models folder).
    pub data: PathBuf,
    /// SQLite file.
    pub db: PathBuf,
    /// Models folder (`<data>/models` unless moved in Settings).
    pub models: PathBuf,
    /// Hugging Face hub cache, if one can be located.
    pub hf_cache: Option<PathBuf>,
}

impl AppPaths {
    /// Paths under `data`.
    pub fn under(data: &Path) -> Self {
        Self {
            data: data.to_path_buf(),
            db: data.join("studio.sqlite"),
            models: data.join("models"),
            hf_cache: hf_cache_dir(),
        }
    }

    /// The default models folder of `data`.
    pub fn default_models(data: &Path) -> PathBuf {
        data.join("models")
    }

    /// Library roots.
    pub fn roots(&self) -> LibraryRoots {
        LibraryRoots {
            models: self.models.clone(),
            hf_cache: self.hf_cache.clone(),
        }
    }

    /// Where the demo model is written.
    pub fn demo_model(&self) -> PathBuf {
        self.models.join("demo").join(crate::core::demo::DEMO_FILE)
    }
}

/// `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hf_cache_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(p).join("hub"));
    }
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".cache/huggingface/hub"))
}

/// Everything the commands share (managed by Tauri).
pub struct AppState {
    /// Folders (the models folder can change at run time: read it through [`AppState::paths`]).
    pub paths_now: RwLock<AppPaths>,
    /// Secrets (HF token, endpoint API keys).
    pub secrets: SecretStore,
    /// The local OpenAI-compatible server (Settings).
    pub server: crate::core::settings::server::LocalServer,
    /// Database.
    pub db: Db,
    /// Engine service.
    pub engine: EngineService,
    /// Replies streaming now.
    pub active: ActiveGenerations,
    /// Downloads.
    pub downloads: DownloadManager,
}

impl AppState {
    /// The chat context of this state.
    pub fn chat(&self) -> crate::core::chat::helpers::ChatCtx<'_> {
        crate::core::chat::helpers::ChatCtx {
            db: &self.db,
            engine: &self.engine,
            active: &self.active,
            secrets: &self.secrets,
        }
    }

    /// The folders as they are now.
    pub fn paths(&self) -> AppPaths {
        match self.paths_now.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Switches the models folder (library, downloads, demo model).
    pub fn set_models_folder(&self, models: PathBuf) {
        match self.paths_now.write() {
            Ok(mut p) => p.models = models.clone(),
            Err(poisoned) => poisoned.into_inner().models = models.clone(),
        }
        self.downloads.set_models_folder(models);
    }
}
