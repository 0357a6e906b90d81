//! Typed payloads of the scheduler panel: what goes over its channel and what its
//! commands take and return.

use hmoe_engine::api::RuntimeOptions;
use hmoe_engine::moe::stats::{AppliedOptions, SchedSnapshot};
use serde::{Deserialize, Serialize};

/// The loaded model as the panel sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SchedModel {
    /// Model name.
    pub name: String,
    /// Layers.
    pub n_layers: u16,
    /// Experts per layer.
    pub n_experts: u16,
    /// Experts selected per token and layer.
    pub top_k: u16,
    /// Bytes of one expert.
    pub expert_bytes: u64,
}

/// Per-layer times of one step, seconds: `[cpu, gpu, pcie, finish]` predicted and the
/// measured MoE time (`-1` when the engine did not time it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerTimes {
    /// Predicted CPU busy time.
    pub cpu: f32,
    /// Predicted GPU busy time.
    pub gpu: f32,
    /// Predicted copy-stream busy time (demand fetches).
    pub pcie: f32,
    /// Predicted layer finish time (the critical path: max of the sides + sync).
    pub finish: f32,
    /// Measured MoE time of the layer (-1: not measured).
    pub measured: f32,
}

/// One step in the timeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepSummary {
    /// Step index.
    pub step: u64,
    /// Tokens in the step (1 per decoding sequence; a prefill chunk counts its tokens).
    pub n_tokens: u32,
    /// Measured step time, s (predicted when not measured).
    pub wall_s: f32,
    /// Predicted MoE time of the step, s.
    pub predicted_s: f32,
    /// Routed (layer, expert) uses.
    pub accesses: u32,
    /// Of which cache hits.
    pub hits: u32,
    /// Bytes copied over PCIe (demand + background).
    pub pcie_bytes: u64,
    /// Per layer.
    pub layers: Vec<LayerTimes>,
}

/// Counters over the last [`super::helpers::WINDOW_STEPS`] steps.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counters {
    /// Steps in the window.
    pub window_steps: u32,
    /// Tokens per second of engine time.
    pub tok_s: f64,
    /// Cache hits ÷ routed uses.
    pub hit_rate: f64,
    /// PCIe GB/s.
    pub pcie_gbps: f64,
    /// Share of step time the CPU spent in expert kernels.
    pub cpu_util: f64,
    /// Share of step time the GPU was busy (0 without a GPU).
    pub gpu_util: f64,
    /// Median relative error of predicted vs measured layer times (None: nothing measured).
    pub cost_error: Option<f64>,
    /// Routed uses that ran on the CPU ÷ all uses.
    pub cpu_share: f64,
}

/// Where each selected expert of the latest step ran, per layer: `[expert, placement]`
/// with placement 0 = GPU hit, 1 = GPU after a fetch, 2 = CPU.
pub type Selection = Vec<Vec<[u16; 2]>>;

/// Placement code of a GPU hit in [`Selection`].
pub const PLACE_GPU_HIT: u16 = 0;
/// Placement code of a fetched expert.
pub const PLACE_GPU_FETCH: u16 = 1;
/// Placement code of a CPU run.
pub const PLACE_CPU: u16 = 2;

/// Steps coalesced into one message (at most one per animation frame).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SchedFrame {
    /// Steps in this frame.
    pub steps: u32,
    /// Tokens in this frame.
    pub tokens: u32,
    /// Last step index.
    pub last_step: u64,
    /// Steps the panel missed because it fell behind (dropped by the engine's buffer).
    pub lagged: u64,
    /// Selection of the latest step.
    pub current: Selection,
    /// The latest steps of the frame (at most [`super::helpers::TIMELINE_PER_FRAME`]).
    pub timeline: Vec<StepSummary>,
    /// Experts evicted during the frame, `[layer, expert]`.
    pub evicted: Vec<[u16; 2]>,
    /// Experts copied in during the frame, `[layer, expert]`.
    pub loaded: Vec<[u16; 2]>,
    /// Counters over the recent window.
    pub counters: Counters,
}

/// A message on the panel's channel.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SchedMessage {
    /// The model changed (None: no model loaded).
    Model {
        /// The model.
        model: Option<SchedModel>,
    },
    /// Coalesced steps.
    Frame(SchedFrame),
    /// Cache map and per-expert statistics.
    Snapshot(Box<SchedSnapshot>),
}

/// Scheduler settings: requested vs in force.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SchedOptionsView {
    /// Requested (applied from the next generation on).
    pub requested: RuntimeOptions,
    /// In force now (None: no model).
    pub applied: Option<AppliedOptions>,
    /// The GPU (None: none; every expert runs on the CPU).
    pub gpu: Option<String>,
    /// Policy names.
    pub policies: Vec<String>,
}

/// A what-if replay request.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct WhatIfRequest {
    /// Replay steps from this one on (the current conversation's first step); None: all.
    pub from_step: Option<u64>,
    /// Machine profile to cost with: `h100` (default) or `build`.
    pub profile: Option<String>,
}

/// One policy at one cache size.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WhatIfRow {
    /// Policy (`value+pf`: `value` with next-layer prefetch).
    pub policy: String,
    /// Size label (`10%`).
    pub size: String,
    /// Share of all experts the cache holds.
    pub cache_fraction: f64,
    /// Hit rate.
    pub hit_rate: f64,
    /// Belady's offline bound on the hit rate at this size.
    pub belady_hit_rate: f64,
    /// Predicted tokens per second.
    pub tok_s: f64,
    /// Speed-up over every expert on the CPU.
    pub speedup: f64,
    /// PCIe bytes per token.
    pub pcie_bytes_per_token: f64,
}

/// The what-if report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WhatIfReport {
    /// Steps replayed (after warm-up).
    pub steps: usize,
    /// Tokens in the replayed steps.
    pub tokens: u64,
    /// Warm-up steps not counted.
    pub warmup_steps: usize,
    /// Profile name the times come from.
    pub profile: String,
    /// Model shape name.
    pub shape: String,
    /// Policy in force in the engine.
    pub current_policy: String,
    /// Policies in row order.
    pub policies: Vec<String>,
    /// Sizes in row order.
    pub sizes: Vec<String>,
    /// Rows, by size then policy.
    pub rows: Vec<WhatIfRow>,
}
