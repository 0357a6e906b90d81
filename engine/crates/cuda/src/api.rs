//! Types shared by the real backend and the stub.

use serde::Serialize;

/// How expert weights in host memory reach the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HostSource {
    /// Straight from pageable memory (the driver stages it; ~9 GB/s on the GPU machine).
    Pageable,
    /// Copied by the CPU into a ring of pinned staging buffers, then DMA'd.
    Staged,
    /// The mapped model is page-locked (`cuMemHostRegister`): DMA straight from the map.
    /// Falls back to `Staged` for memory outside a registered range.
    Registered,
}

impl std::str::FromStr for HostSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pageable" => Ok(Self::Pageable),
            "staged" => Ok(Self::Staged),
            "registered" => Ok(Self::Registered),
            o => Err(format!(
                "unknown host source `{o}` (pageable, staged, registered)"
            )),
        }
    }
}

/// Settings of the GPU expert backend.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuConfig {
    /// Device ordinal.
    pub ordinal: usize,
    /// VRAM budget for the expert arena in bytes.
    pub budget_bytes: u64,
    /// Bytes of the largest expert (one slot).
    pub slot_bytes: usize,
    /// Fewest slots worth running with (below it the arena is refused).
    pub min_slots: usize,
    /// Model width (sizes the scratch buffers).
    pub hidden: usize,
    /// Largest expert FFN width.
    pub ffn: usize,
    /// Most token rows per layer call (prefill chunk); larger calls grow the buffers.
    pub max_tokens: usize,
    /// Experts per token (pairs per token row).
    pub top_k: usize,
    /// How weights reach the GPU.
    pub host: HostSource,
    /// Pinned staging buffers (each one slot) for [`HostSource::Staged`].
    pub staging_buffers: usize,
}

/// One expert's work for [`crate::GpuExperts::run_layer`].
#[derive(Debug, Clone, Copy)]
pub struct GpuItem<'a> {
    /// Expert index within the layer.
    pub expert: u16,
    /// The scheduler's slot for it, if the plan named one.
    pub slot_hint: Option<u32>,
    /// Gate matrix bytes (host).
    pub gate: &'a [u8],
    /// Up matrix bytes (host).
    pub up: &'a [u8],
    /// Down matrix bytes (host).
    pub down: &'a [u8],
    /// Token rows it serves.
    pub rows: &'a [u32],
    /// Router weight per row.
    pub weights: &'a [f32],
}

/// Measured times of one layer call (CUDA events and host clocks), for the cost model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LayerTimings {
    /// Items computed from resident slots.
    pub hits: u32,
    /// Items copied first.
    pub fetches: u32,
    /// Bytes copied host to device for expert weights.
    pub copied_bytes: u64,
    /// Copy stream time from the first to the last expert copy (ms, events).
    pub copy_ms: f32,
    /// Compute stream time from the input upload to the output download (ms, events).
    pub gpu_ms: f32,
    /// Host time of the whole call (ms).
    pub wall_ms: f32,
}

/// A layer's GPU expert output left on the device instead of copied back: `values` floats
/// at device address `ptr`, ready once the CUDA event `event` (a raw `CUevent` owned by the
/// [`crate::GpuExperts`] that made it, valid while it lives) has fired. The next dense call
/// adds it into the residual on the device (`GpuDense::attention_block`), so the host never
/// waits for the GPU share of a layer: one host round trip per layer instead of two.
/// The buffer stays untouched until the experts' next layer is submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceAddend {
    /// Device address of `values` f32.
    pub ptr: u64,
    /// Number of floats (`n_tokens × hidden`).
    pub values: usize,
    /// Raw `CUevent` handle, as an integer (the type is not `Send`).
    pub event: u64,
}

/// A device buffer of f32 values that one part of the GPU path hands another instead of a
/// host round trip: the dense path's normed hidden state (`GpuDense::hn_on_device`), which
/// the expert pass reads as its input (`GpuExperts::submit_layer_on_device`) instead of
/// uploading the host's copy. Valid until the producer's next call; the engine orders that
/// call after the reader (the next dense call waits for the experts' end event before its
/// kernels write the buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInput {
    /// Device address of `values` f32.
    pub ptr: u64,
    /// Number of floats (`n_tokens × hidden`).
    pub values: usize,
}

/// Copy/compute overlap measurement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct OverlapReport {
    /// Copy alone (ms).
    pub copy_ms: f32,
    /// Compute (spin kernel) alone (ms).
    pub compute_ms: f32,
    /// Both issued together on their two streams (ms, first start to last end).
    pub both_ms: f32,
    /// `(copy + compute − both) / min(copy, compute)`: 1 = fully hidden, 0 = serial.
    pub overlap: f32,
}

/// Kernel-only timing of an expert batch (`GpuExperts::time_expert_kernels`, for
/// `hmoe-cuda-check`).
#[derive(Debug, Clone)]
pub struct KernelTiming {
    /// `[n_tokens][hidden]` output of a full unfused pass on the uploaded x.
    pub out: Vec<f32>,
    /// Mean GPU milliseconds of a full pass (act_round, gate_up, act_round, down, combine).
    pub pass_ms: f32,
    /// Mean GPU milliseconds of gate_up + down alone.
    pub matmul_ms: f32,
    /// The fused decode pass (act_round, gate_up_fused, down_combine) on the same x, for
    /// a batch whose items serve at most 8 tokens each (else empty): its output (to
    /// compare with `out` bit for bit) and mean GPU milliseconds (0 when not run).
    pub fused_out: Vec<f32>,
    /// See `fused_out`.
    pub fused_ms: f32,
}

/// The device router's choice for one decode row (`GpuExperts::wait_routed`).
#[derive(Debug, Clone, PartialEq)]
pub struct RoutedChoice {
    /// Experts, best first.
    pub ids: Vec<u16>,
    /// Their router weights.
    pub weights: Vec<f32>,
    /// Per rank: the expert ran in the routed pass (its weights were in VRAM).
    pub ran: Vec<bool>,
}

/// Where a dense call's outputs will be on the device once the event fires, for a reader
/// on another stream (the routed expert pass, `GpuDense::attention_block_hooked`).
#[derive(Debug, Clone, Copy)]
pub struct DenseOnDevice {
    /// Router logits of the call's rows, `[rows][n_experts]` f32.
    pub logits: u64,
    /// The normed state the experts read.
    pub hn: DeviceInput,
    /// Raw `CUevent` recorded behind the call's kernels.
    pub event: u64,
}
