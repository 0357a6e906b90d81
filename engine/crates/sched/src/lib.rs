//! The hybrid scheduler: a calibrated cost model, per-layer CPU/GPU placement plans,
//! the VRAM expert cache and its policies, prefetch, routing traces and the simulator.
//! Pure logic: no backend code lives here, so every decision is testable without a GPU.
#![deny(missing_docs)]
