//! Device-side routing of decode layers through the CUDA expert backend
//! (`hmoe_cuda::GpuExperts::launch_routed`, route.cu): the engine's face of it.
//!
//! With the dense path on the GPU, a decode layer's router and its resident experts run
//! back to back on the device: the model launches the routed pass from the dense call's
//! hook, reads the choice, and hands the dispatcher only what did not run (experts to copy
//! or to run on the CPU). [`DEVICE_ROUTING_ENV`]`=0` turns it off.

use super::{GpuExpertExecutor, Result};
use crate::error::EngineError;
use crate::moe::LayerExperts;
use hmoe_cuda::{DenseOnDevice, DeviceAddend, RoutedChoice};

/// Environment variable: `0` routes every decode layer on the host (the routed pass is on
/// by default wherever the dense path runs on the GPU and experts have VRAM slots).
pub const DEVICE_ROUTING_ENV: &str = "HMOE_DEVICE_ROUTING";

/// Whether device routing is wanted: yes unless [`DEVICE_ROUTING_ENV`] is `0` or `off`.
pub fn device_routing_requested() -> bool {
    !matches!(
        std::env::var(DEVICE_ROUTING_ENV)
            .ok()
            .as_deref()
            .map(str::trim),
        Some("0" | "off" | "false")
    )
}

fn err(what: &str) -> impl Fn(hmoe_cuda::CudaError) -> EngineError + '_ {
    move |e| EngineError::Compute(format!("CUDA device routing ({what}): {e}"))
}

impl GpuExpertExecutor {
    /// Turns on device routing for a model of `n_layers` layers (`n_experts`, `top_k` a
    /// token, `renorm`), `hidden` wide.
    pub fn enable_routing(
        &self,
        n_layers: usize,
        routing: (usize, usize, bool),
        hidden: usize,
    ) -> Result<()> {
        self.lock()?
            .enable_routing(n_layers, routing, hidden)
            .map_err(err("start"))
    }

    /// Launches `experts`' routed pass behind the dense call `d` (see
    /// `GpuExperts::launch_routed`); its choice comes from [`GpuExpertExecutor::wait_routed`].
    pub fn launch_routed(&self, experts: &LayerExperts<'_>, d: DenseOnDevice) -> Result<()> {
        let layout = super::expert_layout(experts, 0).map_err(err("layout"))?;
        let layer = experts.layer as u16;
        self.lock()?
            .launch_routed(layer, &layout, (d.logits, d.hn), d.event)
            .map_err(err("launch"))
    }

    /// Forgets which expert each VRAM slot holds (the scheduler's cache was rebuilt empty:
    /// the device must not keep using experts outside its new plan) and uses only slots
    /// `0..limit` from now on (the scheduler's cache; `None`: the whole arena).
    pub fn forget_experts(&self, limit: Option<usize>) -> Result<()> {
        self.lock()?.forget_experts(limit).map_err(err("reset"))
    }

    /// The last routed pass's choice (None when none is pending).
    pub fn wait_routed(&self) -> Result<Option<RoutedChoice>> {
        self.lock()?.wait_routed().map_err(err("result"))
    }

    /// The number of the last routed pass launched.
    pub fn routed_launches(&self) -> Result<u32> {
        Ok(self.lock()?.routed_launches())
    }

    /// GPU seconds of routed pass number `launch`, if its events are still there.
    pub fn routed_gpu_seconds(&self, launch: u32) -> Result<Option<f64>> {
        let ms = self.lock()?.routed_gpu_ms(launch).map_err(err("timing"))?;
        Ok(ms.map(|m| m as f64 / 1e3))
    }

    /// The routed pass's output plus `rest` (the layer's other GPU experts), for the next
    /// dense call.
    pub fn finish_routed(&self, rest: Option<DeviceAddend>) -> Result<DeviceAddend> {
        self.lock()?.finish_routed(rest).map_err(err("finish"))
    }
}
