//! What the panel needs from a loaded model. The engine adapter implements it
//! (`core/engine/adapter.rs`); tests implement it with scripted telemetry.

use std::sync::Arc;

use hmoe_engine::api::RuntimeOptions;
use hmoe_engine::moe::stats::SchedSnapshot;
use hmoe_engine::sched::{ModelShape, StepTelemetry, Trace};
use tokio::sync::broadcast;

/// The scheduler of a loaded model.
pub trait SchedSource: Send + Sync {
    /// Model name.
    fn name(&self) -> String;
    /// Per-step telemetry.
    fn subscribe(&self) -> broadcast::Receiver<Arc<StepTelemetry>>;
    /// Cache map and per-expert statistics (blocking: waits for the current step).
    fn snapshot(&self) -> Result<SchedSnapshot, String>;
    /// The routing trace kept since the model was loaded (the engine keeps its newest
    /// 4096-8192 steps).
    fn trace(&self) -> Result<Trace, String>;
    /// The scheduler's view of the model.
    fn shape(&self) -> ModelShape;
    /// Requested runtime options.
    fn runtime(&self) -> RuntimeOptions;
    /// Requests new runtime options (applied from the next generation on).
    fn set_runtime(&self, opts: RuntimeOptions) -> Result<(), String>;
}
