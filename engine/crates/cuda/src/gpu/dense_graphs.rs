//! CUDA graphs of the dense path's decode calls: a decode layer is ~15 small kernels whose
//! launches, one by one, cost more than the kernels (measured on an H200: ~90 us to enqueue
//! and ~216 us of stream time per layer call, against ~30 us of kernel work). The kernel
//! sequence of a call depends only on the layer, the row count, whether the next layer's
//! router runs, the attention grid (a power-of-two split count) and the experts' output it
//! adds first (a fixed buffer of the expert backend), so it is captured once
//! per such key and replayed with one launch. Everything else a call changes lives in device
//! memory the graph reads: positions, cache addresses, the split plan, the inputs.
//!
//! Profiling (`HMOE_DENSE_PROFILE=1`) times a graph as a whole; `HMOE_CUDA_GRAPHS=0`
//! with it times each kernel.
//!
//! A graph holds the addresses of the call buffers: [`GraphCache::invalidate`] drops every
//! graph when one of them is reallocated.
//!
//! The expert backend keeps a cache of its own for decode expert passes of resident
//! experts (gpu.rs, [`PassKey`]).

use super::drv;
use crate::dtype::KernelType;
use crate::error::{CudaError, Result};
use crate::GRAPHS_ENV;
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaGraph, CudaStream};
use std::collections::HashMap;
use std::sync::Arc;

/// Calls of at most this many rows (decode steps of a few sequences) use graphs; prefill
/// calls are few and long, their launches do not matter.
pub(crate) const GRAPH_MAX_ROWS: usize = 8;
/// Graphs kept at most (48 layers x a few row counts x a few split grids); past this the
/// cache starts over rather than grow without bound in a long-running server.
const MAX_GRAPHS: usize = 1024;

/// What a captured call depends on besides device memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct GraphKey {
    pub layer: usize,
    pub rows: usize,
    pub grid_splits: usize,
    /// Query heads per split-attention warp (a kernel argument, so part of the graph).
    pub hpw: usize,
    pub next: bool,
    /// The experts' output the call adds first (its device address), if any.
    pub addend: Option<u64>,
}

/// What a captured decode expert pass (index-table upload, input rounding, fused gate_up,
/// down + combine) depends on besides the contents of its buffers: the kernels (types and
/// shape), the batch's size and layout, and every buffer address it reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PassKey {
    /// gate/up and down kernel types, hidden, ffn.
    pub kernels: (KernelType, KernelType, usize, usize),
    /// Items, token rows and index-table bytes; whether x is rounded first.
    pub batch: (usize, usize, usize, bool),
    /// Input source, x, index tables (device and pinned host), activations, per-pair
    /// outputs, output, arrival counters, the int8 products and their scales.
    pub buffers: [u64; 10],
}

/// The captured calls, by key.
pub(crate) struct GraphCache<K = GraphKey> {
    graphs: HashMap<K, CudaGraph>,
    disabled: bool,
    captures: u64,
    replays: u64,
}

impl<K> Default for GraphCache<K> {
    fn default() -> Self {
        Self {
            graphs: HashMap::new(),
            disabled: false,
            captures: 0,
            replays: 0,
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy> GraphCache<K> {
    /// Graphs on unless [`GRAPHS_ENV`] is `0`.
    pub(crate) fn from_env() -> Self {
        Self {
            disabled: std::env::var(GRAPHS_ENV).is_ok_and(|v| v.trim() == "0"),
            ..Self::default()
        }
    }

    /// Whether a call of `rows` rows should run from a graph.
    pub(crate) fn wants(&self, rows: usize) -> bool {
        !self.disabled && rows <= GRAPH_MAX_ROWS
    }

    /// Whether graphs are on at all.
    pub(crate) fn enabled(&self) -> bool {
        !self.disabled
    }

    /// Drops every graph (a call buffer moved).
    pub(crate) fn invalidate(&mut self) {
        self.graphs.clear();
    }

    /// Captures the graph of `key` from `launch` (which must only enqueue kernels on
    /// `stream`) unless it exists. The stream must be idle: nothing it holds is captured.
    pub(crate) fn ensure(
        &mut self,
        stream: &Arc<CudaStream>,
        key: K,
        launch: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        if self.graphs.contains_key(&key) {
            return Ok(());
        }
        if self.graphs.len() >= MAX_GRAPHS {
            self.graphs.clear();
        }
        // Thread-local capture: other threads' CUDA calls (the expert backend's copy
        // stream) are neither captured nor refused.
        stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(drv("cuStreamBeginCapture"))?;
        let launched = launch();
        // Always end the capture, so that the stream is usable after an error.
        let graph = stream
            .end_capture(CUgraphInstantiate_flags(0))
            .map_err(drv("cuStreamEndCapture"));
        launched?;
        let graph = graph?.ok_or_else(|| CudaError::Driver {
            op: "cuStreamEndCapture".into(),
            detail: "the capture produced no graph".into(),
        })?;
        self.captures += 1;
        self.graphs.insert(key, graph);
        Ok(())
    }

    /// Enqueues the graph of `key` (after [`GraphCache::ensure`]).
    pub(crate) fn launch(&mut self, key: K) -> Result<()> {
        let graph = self.graphs.get(&key).ok_or_else(|| CudaError::Driver {
            op: "CUDA graph".into(),
            detail: "no graph was captured for this call".into(),
        })?;
        graph.launch().map_err(drv("cuGraphLaunch"))?;
        self.replays += 1;
        Ok(())
    }

    /// Graphs captured and launched so far.
    pub(crate) fn stats(&self) -> (u64, u64) {
        (self.captures, self.replays)
    }
}
