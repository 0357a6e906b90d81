//! Errors of the CPU backend.

use hmoe_quant::QuantError;

/// Why a pool or expert-execution call failed.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// A matrix of a task has the wrong shape or byte size.
    #[error("expert task {task}: {what}: expected {expected}, got {got}")]
    Shape {
        /// Index of the task in the call.
        task: usize,
        /// Which dimension or buffer.
        what: &'static str,
        /// Expected value.
        expected: usize,
        /// Given value.
        got: usize,
    },
    /// A task names a token row outside `x`.
    #[error("expert task {task}: token row {row} outside the {n_tokens} rows of x")]
    TokenRow {
        /// Index of the task.
        task: usize,
        /// The offending row.
        row: u32,
        /// Rows in `x`.
        n_tokens: usize,
    },
    /// A buffer passed to the call has the wrong length.
    #[error("{what}: expected {expected} elements, got {got}")]
    Length {
        /// Which buffer.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// A kernel or quantisation error (unsupported type, unavailable ISA, …).
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// A pool job called `broadcast` (on any pool) from inside a job.
    #[error("CpuPool::broadcast called from inside a pool job (would deadlock)")]
    Reentrant,
    /// A pool thread panicked while running a job.
    #[error("a CPU pool thread panicked while running a job")]
    WorkerPanicked,
    /// The OS refused to start a pool thread.
    #[error("cannot start CPU pool thread {index}: {source}")]
    Spawn {
        /// Thread index.
        index: usize,
        /// The OS error.
        source: std::io::Error,
    },
}
