//! Without the `cuda` feature: the same API, and a constructor that says why it cannot run.

use crate::api::{
    DeviceAddend, DeviceInput, GpuConfig, GpuItem, LayerTimings, OverlapReport, RoutedChoice,
};
use crate::device::DeviceInfo;
use crate::dtype::ExpertLayout;
use crate::error::{CudaError, Result};
use crate::slots::SlotTable;
use std::convert::Infallible;

/// A submitted layer (never exists in this build).
#[derive(Debug)]
pub struct PendingLayer {
    never: Infallible,
}

impl PendingLayer {
    /// Unreachable: no layer can be submitted without CUDA.
    pub fn values(&self) -> usize {
        match self.never {}
    }
}

/// The GPU expert backend (this build has none: [`GpuExperts::new`] fails).
#[derive(Debug)]
pub struct GpuExperts {
    never: Infallible,
}

impl GpuExperts {
    /// Always [`CudaError::NotBuilt`] in this build.
    pub fn new(_cfg: &GpuConfig) -> Result<Self> {
        Err(CudaError::NotBuilt)
    }
    /// The device.
    pub fn info(&self) -> &DeviceInfo {
        match self.never {}
    }
    /// Slots in the arena.
    pub fn n_slots(&self) -> usize {
        match self.never {}
    }
    /// Bytes per slot.
    pub fn slot_bytes(&self) -> usize {
        match self.never {}
    }
    /// Warnings from start-up (arena shrinks).
    pub fn warnings(&self) -> &[String] {
        match self.never {}
    }
    /// The slot table.
    pub fn table(&self) -> &SlotTable {
        match self.never {}
    }
    /// Page-locks host ranges (the mapped model's expert tensors).
    pub fn register_host(&mut self, _parts: &[&[u8]]) -> Result<usize> {
        match self.never {}
    }
    /// Copies an expert into a slot ahead of use.
    pub fn prefetch(
        &mut self,
        _key: (u16, u16),
        _slot: Option<u32>,
        _parts: [&[u8]; 3],
    ) -> Result<u32> {
        match self.never {}
    }
    /// Runs a layer's GPU items and adds their output to `out`.
    pub fn run_layer(
        &mut self,
        _layout: &ExpertLayout,
        _layer: u16,
        _x: &[f32],
        _n_tokens: usize,
        _items: &[GpuItem<'_>],
        _out: &mut [f32],
    ) -> Result<LayerTimings> {
        match self.never {}
    }
    /// Issues a layer's GPU work.
    pub fn submit_layer(
        &mut self,
        _layout: &ExpertLayout,
        _layer: u16,
        _x: &[f32],
        _n_tokens: usize,
        _items: &[GpuItem<'_>],
    ) -> Result<PendingLayer> {
        match self.never {}
    }
    /// Issues a layer's GPU work, its output kept on the device.
    pub fn submit_layer_on_device(
        &mut self,
        _layout: &ExpertLayout,
        _layer: u16,
        _x: &[f32],
        _x_dev: Option<DeviceInput>,
        _n_tokens: usize,
        _items: &[GpuItem<'_>],
    ) -> Result<PendingLayer> {
        match self.never {}
    }
    /// Leaves a submitted layer's output on the device.
    pub fn defer_layer(&mut self, _p: PendingLayer) -> Result<Option<DeviceAddend>> {
        match self.never {}
    }
    /// The last deferred layer's times.
    pub fn take_deferred_timings(&mut self) -> Result<Option<LayerTimings>> {
        match self.never {}
    }
    /// Turns on device-side decode routing.
    pub fn enable_routing(
        &mut self,
        _n_layers: usize,
        _routing: (usize, usize, bool),
        _hidden: usize,
    ) -> Result<()> {
        match self.never {}
    }
    /// Launches a decode layer's routed pass.
    pub fn launch_routed(
        &mut self,
        _layer: u16,
        _layout: &ExpertLayout,
        _inputs: (u64, DeviceInput),
        _after: u64,
    ) -> Result<()> {
        match self.never {}
    }
    /// Forgets which expert each slot holds.
    pub fn forget_experts(&mut self, _limit: Option<usize>) -> Result<()> {
        match self.never {}
    }
    /// The number of the last routed pass launched.
    pub fn routed_launches(&self) -> u32 {
        match self.never {}
    }
    /// GPU milliseconds of a routed pass.
    pub fn routed_gpu_ms(&self, _launch: u32) -> Result<Option<f32>> {
        match self.never {}
    }
    /// The last routed pass's choice.
    pub fn wait_routed(&mut self) -> Result<Option<RoutedChoice>> {
        match self.never {}
    }
    /// The routed pass's output with the rest of the layer's GPU output added.
    pub fn finish_routed(&mut self, _rest: Option<DeviceAddend>) -> Result<DeviceAddend> {
        match self.never {}
    }
    /// Waits for a submitted layer and adds its output to `out`.
    pub fn complete_layer(&mut self, _p: PendingLayer, _out: &mut [f32]) -> Result<LayerTimings> {
        match self.never {}
    }
    /// Host-to-device bandwidth in GB/s.
    pub fn h2d_bandwidth(
        &mut self,
        _bytes: usize,
        _source: crate::api::HostSource,
        _reps: usize,
    ) -> Result<f64> {
        match self.never {}
    }
    /// Changes how expert weights reach the GPU.
    pub fn set_host_source(&mut self, _host: crate::api::HostSource) -> Result<()> {
        match self.never {}
    }
    /// Waits for all issued work.
    pub fn synchronize(&self) -> Result<()> {
        match self.never {}
    }
    /// Host-to-device bandwidth from `src` in GB/s.
    pub fn h2d_from(&mut self, _src: &[u8], _reps: usize) -> Result<f64> {
        match self.never {}
    }
    /// Dense quantised linear (verification launcher).
    pub fn dense_linear(
        &mut self,
        _t: crate::dtype::KernelType,
        _w: &[u8],
        _rows: usize,
        _cols: usize,
        _x: &[f32],
    ) -> Result<Vec<f32>> {
        match self.never {}
    }
    /// Expert kernels alone, timed (`hmoe-cuda-check`).
    pub fn time_expert_kernels(
        &mut self,
        _variant: &[&str],
        _layout: &crate::dtype::ExpertLayout,
        _items: &[crate::api::GpuItem<'_>],
        _x: &[f32],
        _n_tokens: usize,
        _reps: usize,
    ) -> Result<crate::api::KernelTiming> {
        match self.never {}
    }
    /// Dense linear alone, timed (`hmoe-cuda-check`).
    #[allow(clippy::too_many_arguments)]
    pub fn time_dense_linear(
        &mut self,
        _variant: &[&str],
        _t: crate::dtype::KernelType,
        _w: &[u8],
        _rows: usize,
        _cols: usize,
        _x: &[f32],
        _reps: usize,
    ) -> Result<(Vec<f32>, f32)> {
        match self.never {}
    }
    /// RMSNorm (verification launcher).
    pub fn dense_rms_norm(&mut self, _x: &[f32], _w: &[f32], _eps: f32) -> Result<Vec<f32>> {
        match self.never {}
    }
    /// The host profile of decode submissions.
    pub fn submit_profile(&self) -> Option<String> {
        match self.never {}
    }
    /// Copy/compute overlap.
    pub fn overlap_probe(&mut self, _bytes: usize, _spin_cycles: u64) -> Result<OverlapReport> {
        match self.never {}
    }
}
