//! Without the `cuda` feature: the dense path's API, and a constructor that says why it
//! cannot run.

use crate::api::{DenseOnDevice, DeviceAddend, DeviceInput};
use crate::dense_model::{DenseSeq, DenseShape, DenseWeights, SeqSpan};
use crate::device::DeviceInfo;
use crate::error::{CudaError, Result};
use std::convert::Infallible;

/// The dense path on the GPU (this build has none: [`GpuDense::new`] fails).
#[derive(Debug)]
pub struct GpuDense {
    never: Infallible,
}

impl GpuDense {
    /// Always [`CudaError::NotBuilt`] in this build (after checking the weights).
    pub fn new(_ordinal: usize, shape: &DenseShape, weights: &DenseWeights<'_>) -> Result<Self> {
        weights.validate(shape)?;
        Err(CudaError::NotBuilt)
    }
    /// The device.
    pub fn info(&self) -> &DeviceInfo {
        match self.never {}
    }
    /// The shape it was built for.
    pub fn shape(&self) -> &DenseShape {
        match self.never {}
    }
    /// Device bytes of the weights.
    pub fn weight_bytes(&self) -> usize {
        match self.never {}
    }
    /// How prefill projections run on int8 kernels (unreachable here).
    pub fn int8_linear(&self) -> Option<crate::dense_ref::Int8Linear> {
        match self.never {}
    }
    /// Device bytes of the KV caches allocated now.
    pub fn kv_bytes(&self) -> usize {
        match self.never {}
    }
    /// Warnings from start-up.
    pub fn warnings(&self) -> &[String] {
        match self.never {}
    }
    /// Decode calls captured as CUDA graphs and graph launches so far.
    pub fn graph_stats(&self) -> (u64, u64) {
        match self.never {}
    }
    /// The profile table when `HMOE_DENSE_PROFILE=1`.
    pub fn profile_report(&self) -> Option<String> {
        match self.never {}
    }
    /// A new sequence of at most `capacity` tokens.
    pub fn new_seq(&self, _capacity: usize) -> DenseSeq {
        match self.never {}
    }
    /// The dense part of one layer.
    pub fn attention_block(
        &mut self,
        _layer: usize,
        _seqs: &[SeqSpan],
        _x: &mut [f32],
        _hn_out: &mut [f32],
        _router_out: &mut [f32],
        _next_router_out: &mut [f32],
    ) -> Result<()> {
        match self.never {}
    }
    /// The dense part of one layer, with the experts' output added to the residual.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_block_with(
        &mut self,
        _layer: usize,
        _seqs: &[SeqSpan],
        _addend: Option<DeviceAddend>,
        _x: &mut [f32],
        _hn_out: &mut [f32],
        _router_out: &mut [f32],
        _next_router_out: &mut [f32],
    ) -> Result<()> {
        match self.never {}
    }
    /// [`GpuDense::attention_block_with`] with a hook after the launch.
    #[allow(clippy::type_complexity)]
    pub fn attention_block_hooked(
        &mut self,
        _layer: usize,
        _seqs: &[SeqSpan],
        _addend: Option<DeviceAddend>,
        _outs: (&mut [f32], &mut [f32], &mut [f32], &mut [f32]),
        _hook: Option<&mut dyn FnMut(DenseOnDevice) -> Result<()>>,
    ) -> Result<()> {
        match self.never {}
    }
    /// The last call's normed hidden state on the device.
    pub fn hn_on_device(&mut self) -> Option<DeviceInput> {
        match self.never {}
    }
    /// Final norm and output head.
    pub fn head(&mut self, _x: &[f32]) -> Result<Vec<f32>> {
        match self.never {}
    }
    /// Lends a CPU pool for large host copies.
    pub fn set_host_pool(&mut self, _pool: Option<std::sync::Arc<hmoe_cpu::CpuPool>>) {
        match self.never {}
    }
}
