//! Decode layers routed on the device (backend/cuda/routed.rs): the dispatcher's side.
//! The model launches a layer's routed pass from the dense call's hook
//! ([`MoeDispatch::launch_routed`]), reads the choice ([`MoeDispatch::take_routed`]), and
//! [`MoeDispatch::run_layer`] then places all the layer's experts as usual (the scheduler
//! sees every access) but runs only those the routed pass did not.

use super::MoeDispatch;
use crate::error::Result;
use crate::moe::LayerExperts;
use hmoe_cuda::{DenseOnDevice, LayerTimings, RoutedChoice};

/// Device-side routing state.
#[derive(Debug, Default)]
pub(super) struct DeviceRouting {
    /// The CUDA backend routes decode layers on the device.
    on: bool,
    /// A routed pass was launched for the current layer; its choice is not read yet.
    launched: bool,
    /// The current layer's experts that ran in the routed pass, and the pass's number.
    pub(super) ran: Option<(Vec<u16>, u32)>,
}

impl MoeDispatch {
    /// Turns on device routing (unless `HMOE_DEVICE_ROUTING=0`) for a model of `n_layers`
    /// layers (`n_experts`, `top_k` a token, `renorm`) `hidden` wide. Needs the CUDA
    /// backend with VRAM slots; the caller also needs the dense path on the GPU (the router
    /// logits on the device). A backend that cannot leaves it off with a warning.
    pub fn enable_device_routing(
        &mut self,
        n_layers: usize,
        routing: (usize, usize, bool),
        hidden: usize,
    ) {
        let Some(cuda) = &self.cuda else { return };
        if !crate::backend::cuda::device_routing_requested() || cuda.n_slots() == 0 {
            return;
        }
        match cuda.enable_routing(n_layers, routing, hidden) {
            Ok(()) => self.routing.on = true,
            Err(e) => tracing::warn!("decode layers are routed on the host: {e}"),
        }
    }

    /// Whether this step's decode layers may be routed on the device (on, the routing is
    /// the model's, not a replayed trace, and the policy runs experts on the GPU).
    pub fn device_routing(&self) -> bool {
        self.routing.on
            && self.cuda.is_some()
            && !self.replaying()
            && self.placer.runs_gpu_experts()
    }

    /// Launches `experts`' routed pass behind the dense call `d`. A failure turns device
    /// routing off (with a warning) and leaves the layer to the host.
    pub fn launch_routed(&mut self, experts: &LayerExperts<'_>, d: DenseOnDevice) {
        let Some(cuda) = &self.cuda else { return };
        match cuda.launch_routed(experts, d) {
            Ok(()) => self.routing.launched = true,
            Err(e) => {
                tracing::warn!("device routing is off from now on: {e}");
                self.routing.on = false;
            }
        }
    }

    /// Feeds the deferred layer back to the placer now: called from the dense call's hook,
    /// while the GPU runs the next layer's dense part, it takes the feedback (~6 us a
    /// layer, `HMOE_MOE_PROFILE=1`) off the path between the router and the experts.
    pub fn feed_back_deferred(&mut self) {
        if let Err(e) = self.flush_pending() {
            tracing::warn!("the deferred GPU layer's times could not be read: {e}");
        }
    }

    /// The scheduler's work that needs no result of the dense call in flight: the
    /// deferred layer's feedback and the last step's telemetry (~45 µs a decode step on
    /// the GPU machine, built here instead of at the step's end, where the GPU idles).
    /// Called from the dense call's hook; its time counts as `hooked_sched_seconds`.
    pub fn while_gpu_busy(&mut self) {
        self.hooked_step = true;
        let before = self.summary.sched_seconds;
        self.feed_back_deferred();
        self.publish_telemetry();
        self.summary.hooked_sched_seconds += self.summary.sched_seconds - before;
        if let Some(d) = self.hook_delay {
            super::spin_until(std::time::Instant::now(), d);
        }
    }

    /// The choice of the routed pass launched for this layer (None when none was): the
    /// experts and weights the layer must use, and which of them already ran.
    pub fn take_routed(&mut self) -> Result<Option<RoutedChoice>> {
        if !std::mem::take(&mut self.routing.launched) {
            return Ok(None);
        }
        let Some(cuda) = &self.cuda else {
            return Ok(None);
        };
        let got = cuda
            .wait_routed()
            .and_then(|c| Ok((c, cuda.routed_launches()?)));
        let (choice, launch) = match got {
            Ok(v) => v,
            Err(e) => {
                self.routing.on = false;
                return Err(e);
            }
        };
        if let Some(c) = &choice {
            let ran = c.ids.iter().zip(&c.ran).filter(|(_, &r)| r);
            self.routing.ran = Some((ran.map(|(&e, _)| e).collect(), launch));
        }
        Ok(choice)
    }

    /// Drops a routed pass's choice that no layer took (its step failed in between),
    /// after waiting for it, so that the next launch's choice is the one read.
    pub(super) fn discard_routed(&mut self) {
        self.routing.ran = None;
        if !std::mem::take(&mut self.routing.launched) {
            return;
        }
        if let Some(Err(e)) = self.cuda.as_ref().map(|c| c.wait_routed()) {
            tracing::warn!("device routing is off from now on: {e}");
            self.routing.on = false;
        }
    }

    /// A routed layer's GPU times: the routed pass's (`launch`, `n_ran` experts) merged
    /// with the rest's (`rest`, the layer's other GPU experts, after it on the stream).
    pub(super) fn routed_timings(
        &self,
        launch: u32,
        n_ran: usize,
        rest: Option<LayerTimings>,
    ) -> Option<LayerTimings> {
        let routed_s = self
            .cuda
            .as_ref()
            .and_then(|c| c.routed_gpu_seconds(launch).ok().flatten());
        let Some(s) = routed_s else { return rest };
        let ms = (s * 1e3) as f32;
        let mut t = rest.unwrap_or_default();
        t.gpu_ms += ms;
        t.hits += n_ran as u32;
        t.wall_ms = t.wall_ms.max(t.gpu_ms);
        Some(t)
    }
}
