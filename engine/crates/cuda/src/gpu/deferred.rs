//! A layer's GPU expert output left on the device ([`GpuExperts::defer_layer`]): the
//! dense path adds it into the residual in its next call, after waiting for the layer's
//! end event on its own stream, so the host does not wait for the GPU share of a layer.
//! The layer's CUDA-event times are read after the next layer is submitted (each
//! submission swaps between two sets of timing events, so the next one is issued without
//! waiting on this one's), or on demand ([`GpuExperts::take_deferred_timings`]).

use super::{drv, GpuExperts, PendingLayer};
use crate::api::{DeviceAddend, LayerTimings};
use crate::error::{CudaError, Result};

/// What a deferred layer leaves to read later.
#[derive(Debug)]
pub(super) struct Deferred {
    timings: LayerTimings,
    /// Host milliseconds from submission to [`GpuExperts::defer_layer`].
    host_ms: f32,
    /// A later submission swapped the timing events: this layer's are in `t_alt`.
    pub(super) swapped: bool,
}

impl GpuExperts {
    /// Leaves a layer submitted with [`GpuExperts::submit_layer_on_device`] on the device
    /// instead of waiting for it: returns where its output is and the event that marks it
    /// ready (None for an empty layer). The output buffer stays valid until the next layer
    /// is submitted (the event until the one after); the caller must consume the output
    /// before the next submission.
    pub fn defer_layer(&mut self, p: PendingLayer) -> Result<Option<DeviceAddend>> {
        if p.values == 0 {
            return Ok(None);
        }
        if !p.on_device {
            return Err(CudaError::InvalidBatch(
                "only a layer submitted with submit_layer_on_device can be deferred".into(),
            ));
        }
        self.in_flight = false;
        let host_ms = p.started.elapsed().as_secs_f32() * 1e3;
        self.harvested = None;
        self.deferred = Some(Deferred {
            timings: p.timings,
            host_ms,
            swapped: false,
        });
        Ok(Some(DeviceAddend {
            ptr: self.out_dev.ptr,
            values: p.values,
            event: self.t[1].cu_event() as u64,
        }))
    }

    /// The CUDA-event times of the last deferred layer, once (None if there is none). Waits
    /// for its events; by the time the dense call that consumed its output has returned,
    /// they have fired. `wall_ms` is the longer of the host's share (submission to
    /// deferral) and the GPU's (first upload to combine).
    pub fn take_deferred_timings(&mut self) -> Result<Option<LayerTimings>> {
        if let Some(t) = self.harvested.take() {
            return Ok(Some(t));
        }
        let Some(d) = self.deferred.take() else {
            return Ok(None);
        };
        let r = (|| {
            self.ctx.bind_to_thread().map_err(drv("bind context"))?;
            let mut t = d.timings;
            let set = if d.swapped { &self.t_alt } else { &self.t };
            super::read_times(set, &mut t)?;
            // The GPU share starts within the submission and the host's share ended at
            // the deferral; neither waited for the other.
            t.wall_ms = d.host_ms.max(t.gpu_ms);
            Ok(t)
        })();
        if r.is_err() {
            self.forget_all_slots();
        }
        r.map(Some)
    }

    /// Reads a deferred layer's times before its events are reused.
    pub(super) fn harvest_deferred(&mut self) -> Result<()> {
        if self.deferred.is_some() {
            self.harvested = self.take_deferred_timings()?;
        }
        Ok(())
    }
}
