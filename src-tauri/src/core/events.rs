//! App-wide event names (low-rate state changes; high-rate streams use `ipc::Channel`).
//! Each name has one payload type, written beside it.

/// Payload: [`crate::core::engine::models::EngineStatus`].
pub const ENGINE_STATUS: &str = "engine-status";
/// Payload: [`crate::core::downloads::models::DownloadView`] (throttled to a few per second).
pub const DOWNLOAD_PROGRESS: &str = "download-progress";
/// Payload: `()` — the library changed (demo written, download finished, model deleted).
pub const LIBRARY_CHANGED: &str = "library-changed";
