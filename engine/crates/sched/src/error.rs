//! Errors of the scheduler crate.

use std::path::PathBuf;

/// Everything that can go wrong in this crate; each variant names the culprit.
#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    /// An unknown model-shape preset name.
    #[error("unknown model shape preset `{0}` (known: qwen3-30b-a3b:q4_k_m, qwen3-30b-a3b:q8_0, qwen3-30b-a3b:bf16)")]
    UnknownPreset(String),
    /// An unknown cache policy name.
    #[error(
        "unknown cache policy `{0}` (known: cpu-only, static, static-hot, lru, lfu, mrs, value)"
    )]
    UnknownPolicy(String),
    /// A size string such as `16GiB` could not be parsed.
    #[error("cannot parse size `{0}` (examples: 8GiB, 512MiB, 20%)")]
    BadSize(String),
    /// An I/O error on a named path.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted (read, write, create).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON document (profile, trace line) did not parse.
    #[error("{path}:{line}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line number (1 for whole-file documents).
        line: usize,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A trace is structurally wrong (bad header, ids out of range, ...).
    #[error("trace {path}:{line}: {msg}")]
    BadTrace {
        /// The file (or `<memory>`).
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// Invalid arguments to a library call.
    #[error("invalid argument: {0}")]
    InvalidArg(String),
}

/// Result alias of this crate.
pub type Result<T, E = SchedError> = std::result::Result<T, E>;
