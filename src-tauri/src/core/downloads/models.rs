//! Download types (wire format for the UI and rows of the `downloads` table).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Source of [`DownloadView::seq`]: one counter for the whole process.
static VIEW_SEQ: AtomicU64 = AtomicU64::new(1);

/// The next view sequence number. Take it *before* reading a row from the database and
/// *after* writing one, so that a later number always describes a later state.
pub fn next_view_seq() -> u64 {
    VIEW_SEQ.fetch_add(1, Ordering::Relaxed)
}

/// Where a download stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DownloadStatus {
    /// Waiting to start.
    Queued,
    /// Transferring.
    Running,
    /// Stopped by the user or by an app restart; resumes from the `.part` file.
    Paused,
    /// Checking the SHA-256.
    Verifying,
    /// Verified and offered in the library.
    Complete,
    /// Failed (see `error`); a checksum failure deletes the partial file.
    Failed,
    /// Cancelled; the partial file is deleted.
    Cancelled,
}

impl DownloadStatus {
    /// Database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Verifying => "verifying",
            Self::Complete => "complete",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the database spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "paused" => Self::Paused,
            "verifying" => Self::Verifying,
            "complete" => Self::Complete,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

/// A download as the UI shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DownloadView {
    /// Row id.
    pub id: i64,
    /// `org/name`.
    pub repo: String,
    /// Commit (or branch) it downloads from.
    pub revision: String,
    /// File path inside the repository.
    pub file: String,
    /// Total bytes.
    pub size: u64,
    /// Bytes on disk so far.
    pub bytes_done: u64,
    /// Status.
    pub status: DownloadStatus,
    /// Error text.
    pub error: Option<String>,
    /// Recent speed, bytes per second.
    pub speed_bps: f64,
    /// Seconds left at that speed.
    pub eta_s: Option<f64>,
    /// Ordering stamp: the UI keeps the view with the higher `seq`, so a list read before a
    /// state change never overwrites the event that reported the change (the e2e flake
    /// where a paused download showed "running" forever).
    pub seq: u64,
}

/// One GGUF model in a repository listing (split parts grouped).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HubFile {
    /// Display name (the first part for split files).
    pub name: String,
    /// Every file of the model.
    pub files: Vec<String>,
    /// Total bytes.
    pub size: u64,
    /// Quant guessed from the file name (`Q4_K_M`, `Q8_0`, ...).
    pub quant: Option<String>,
    /// SHA-256 of each file, as the Hub publishes them.
    pub sha256: Vec<String>,
}

/// GGUF files of a repository at a revision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HubRepoListing {
    /// `org/name`.
    pub repo: String,
    /// The revision asked for.
    pub revision: String,
    /// The commit it resolved to.
    pub commit: Option<String>,
    /// GGUF models.
    pub files: Vec<HubFile>,
}

/// A repository found by a Hub search.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HubSearchHit {
    /// `org/name` (validated).
    pub repo: String,
    /// Downloads the Hub reports (last 30 days).
    pub downloads: Option<u64>,
    /// Likes.
    pub likes: Option<u64>,
}

/// Endpoint and token for Hub requests.
#[derive(Debug, Clone, PartialEq)]
pub struct HubConfig {
    /// Base URL without a trailing slash.
    pub endpoint: String,
    /// Bearer token.
    pub token: Option<String>,
}
