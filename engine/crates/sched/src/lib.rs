//! The hybrid scheduler: a calibrated cost model, per-layer CPU/GPU placement plans,
//! the VRAM expert cache and its policies, prefetch, routing traces and the simulator.
//! Pure logic: no backend code lives here, so every decision is testable without a GPU.
//!
//! Per layer the engine calls [`Scheduler::plan_layer`] with the routed experts, executes
//! the [`LayerPlan`], reports measured times to the [`CostModel`] and calls
//! [`Scheduler::finish_layer`]. See docs/notes/sched.md.
#![deny(missing_docs)]

pub mod belady;
pub mod cache;
pub mod cost;
pub mod error;
pub mod fit;
pub mod policy;
pub mod profile;
pub mod sched;
pub mod session;
pub mod shape;
pub mod sim;
pub mod solve;
pub mod svg;
pub mod synth;
pub mod telemetry;
pub mod trace;
pub mod value;

pub use cache::{ExpertCache, SlotLoad};
pub use cost::{CostModel, ErrorReport, ExpertCosts};
pub use error::{Result, SchedError};
pub use policy::{make_policy, CachePolicy, ValueParams, POLICY_NAMES};
pub use profile::MachineProfile;
pub use sched::{
    LayerPlan, PlacedExpert, Placement, PredictedExpert, RoutedExpert, SchedConfig, Scheduler,
    SolverKind,
};
pub use session::SchedSession;
pub use shape::{ExpertKey, ModelShape, QuantType};
pub use sim::{simulate, CacheSize, SimOptions, SimReport, SimulateArgs};
pub use solve::PlanTiming;
pub use telemetry::{LayerTelemetry, StepTelemetry, Telemetry, TelemetryTotals};
pub use trace::{Trace, TraceHeader, TraceLayer, TraceStep, TraceWriter};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod replay_tests;
#[cfg(test)]
mod value_ref;
