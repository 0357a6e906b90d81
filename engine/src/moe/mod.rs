//! Mixture-of-experts execution: routing, the work-item seam, and the executors.
//!
//! The model computes the router and hands the MoE layer an explicit list of
//! [`WorkItem`]s — one per selected expert, with the token rows it serves and their
//! router weights. A [`MoeDispatch`] decides where each item runs (the scheduler's
//! plan) and hands each share to an [`ExpertExecutor`]. Device choice never happens
//! in model code.

pub mod dispatch;
pub mod host_profile;
pub mod placer;
pub mod reference;
pub mod routing;
pub mod stats;

use crate::error::Result;
use crate::model::weights::ExpertTensor;
use hmoe_gguf::{GgmlDType, GgufFile};

pub use dispatch::{DeviceLink, MoeDispatch, PlacementSummary};
pub use routing::{predict_next, route, Routing};

/// One expert applied to some token rows.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkItem {
    /// Expert index within the layer.
    pub expert: u16,
    /// Token rows (indices into the layer input) this expert serves.
    pub rows: Vec<u32>,
    /// Router weight of this expert for each row.
    pub weights: Vec<f32>,
}

/// A weight matrix of one expert, zero-copy in host memory: `rows` outputs of `cols` inputs.
#[derive(Debug, Clone, Copy)]
pub struct MatView<'a> {
    /// Element type.
    pub dtype: GgmlDType,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Row-major quantised bytes.
    pub data: &'a [u8],
}

/// One expert's three matrices.
#[derive(Debug, Clone, Copy)]
pub struct ExpertView<'a> {
    /// Gate projection `[ffn, hidden]`.
    pub gate: MatView<'a>,
    /// Up projection `[ffn, hidden]`.
    pub up: MatView<'a>,
    /// Down projection `[hidden, ffn]`.
    pub down: MatView<'a>,
}

impl ExpertView<'_> {
    /// Bytes of all three matrices.
    pub fn bytes(&self) -> usize {
        self.gate.data.len() + self.up.data.len() + self.down.data.len()
    }
}

/// The stacked expert tensors of one layer, addressable expert by expert.
#[derive(Clone, Copy)]
pub struct LayerExperts<'a> {
    /// Layer index.
    pub layer: usize,
    file: &'a GgufFile,
    gate: &'a ExpertTensor,
    up: &'a ExpertTensor,
    down: &'a ExpertTensor,
}

impl<'a> LayerExperts<'a> {
    /// Binds a layer's expert tensors to the mapped file.
    pub fn new(
        layer: usize,
        file: &'a GgufFile,
        gate: &'a ExpertTensor,
        up: &'a ExpertTensor,
        down: &'a ExpertTensor,
    ) -> Self {
        Self {
            layer,
            file,
            gate,
            up,
            down,
        }
    }

    /// Number of experts.
    pub fn n_experts(&self) -> usize {
        self.gate.info.dims[2] as usize
    }

    /// Bytes of one expert (gate + up + down).
    pub fn expert_bytes(&self) -> usize {
        self.gate.expert_bytes + self.up.expert_bytes + self.down.expert_bytes
    }

    fn mat(&self, t: &ExpertTensor, e: usize) -> MatView<'a> {
        let all = self.file.tensor_data(&t.info);
        MatView {
            dtype: t.dtype,
            rows: t.rows,
            cols: t.cols,
            data: &all[e * t.expert_bytes..(e + 1) * t.expert_bytes],
        }
    }

    /// The view of expert `e` (must be `< n_experts()`; routing guarantees it).
    pub fn expert(&self, e: usize) -> ExpertView<'a> {
        ExpertView {
            gate: self.mat(self.gate, e),
            up: self.mat(self.up, e),
            down: self.mat(self.down, e),
        }
    }
}

/// Runs a share of a layer's work items on one device.
pub trait ExpertExecutor: Send + Sync {
    /// Short name for logs and telemetry (`cpu-ref`, `cpu`, `cuda`).
    fn name(&self) -> &'static str;

    /// For every item and every row `r` with weight `w`:
    /// `out[r] += w · down(silu(gate · x[r]) ⊙ (up · x[r]))`.
    ///
    /// `x` and `out` are `[n_tokens, hidden]`. Items are applied in the order given,
    /// so results are deterministic for a given list.
    fn execute(
        &self,
        experts: &LayerExperts<'_>,
        x: &[f32],
        hidden: usize,
        items: &[WorkItem],
        out: &mut [f32],
    ) -> Result<()>;

    /// As [`Self::execute`], and runs `beside` once on the calling thread, overlapped
    /// with the work where the executor can (the fused CPU executor's pool starts
    /// without its caller). The dispatcher issues the layer's GPU share there. Default:
    /// `beside` first, then the work.
    fn execute_beside(
        &self,
        experts: &LayerExperts<'_>,
        x: &[f32],
        hidden: usize,
        items: &[WorkItem],
        out: &mut [f32],
        beside: &mut dyn FnMut(),
    ) -> Result<()> {
        beside();
        self.execute(experts, x, hidden, items, out)
    }
}
