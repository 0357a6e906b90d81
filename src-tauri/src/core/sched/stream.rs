//! One subscription of the panel: follows the loaded model, coalesces its telemetry into
//! at most one frame per animation frame, and sends a cache-map snapshot a few times a
//! second while steps arrive (and once per model).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmoe_engine::sched::StepTelemetry;
use tauri::async_runtime::JoinHandle;
use tokio::sync::broadcast::{self, error::RecvError};

use super::helpers::FrameAggregator;
use super::models::{SchedMessage, SchedModel};
use super::source::SchedSource;
use crate::core::engine::EngineService;

/// Sends one message; false when the receiver is gone (the subscription then ends).
pub type Sender = Arc<dyn Fn(SchedMessage) -> bool + Send + Sync>;

/// Pacing of a subscription.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// Frame period: one animation frame at 60 Hz.
    pub frame: Duration,
    /// Snapshot (and model check) period.
    pub snapshot: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            frame: Duration::from_millis(16),
            snapshot: Duration::from_millis(250),
        }
    }
}

/// Live subscriptions by id (managed state).
#[derive(Default)]
pub struct Subscriptions {
    next: AtomicU64,
    tasks: Mutex<HashMap<u64, JoinHandle<()>>>,
}

impl Subscriptions {
    /// Starts a subscription; returns its id.
    pub fn start(&self, engine: EngineService, send: Sender, pacing: Pacing) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let task = tauri::async_runtime::spawn(run(engine, send, pacing));
        if let Ok(mut t) = self.tasks.lock() {
            t.retain(|_, h| !h.inner().is_finished());
            t.insert(id, task);
        }
        id
    }

    /// Ends a subscription; false if it was not running.
    pub fn stop(&self, id: u64) -> bool {
        let task = self.tasks.lock().ok().and_then(|mut t| t.remove(&id));
        match task {
            Some(h) => {
                h.abort();
                true
            }
            None => false,
        }
    }
}

async fn next_step(
    rx: &mut Option<broadcast::Receiver<Arc<StepTelemetry>>>,
) -> Result<Arc<StepTelemetry>, RecvError> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

fn model_of(src: &dyn SchedSource) -> SchedModel {
    let shape = src.shape();
    SchedModel {
        name: src.name(),
        n_layers: shape.n_layers,
        n_experts: shape.n_experts,
        top_k: shape.top_k,
        expert_bytes: shape.expert_bytes(),
    }
}

/// The subscription loop; returns when the receiver is gone.
pub async fn run(engine: EngineService, send: Sender, pacing: Pacing) {
    let mut frame_tick = tokio::time::interval(pacing.frame);
    frame_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut slow_tick = tokio::time::interval(pacing.snapshot);
    slow_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut model_key: Option<usize> = None;
    let mut source: Option<Arc<dyn SchedSource>> = None;
    let mut rx: Option<broadcast::Receiver<Arc<StepTelemetry>>> = None;
    let mut agg = FrameAggregator::new();
    let mut first = true;
    let (mut seen, mut snapped): (Option<u64>, Option<u64>) = (None, None);
    let mut need_snapshot = false;
    loop {
        tokio::select! {
            r = next_step(&mut rx) => match r {
                Ok(step) => {
                    agg.push(&step);
                    seen = Some(step.step);
                }
                Err(RecvError::Lagged(n)) => agg.lagged(n),
                Err(RecvError::Closed) => rx = None,
            },
            _ = frame_tick.tick() => {
                if let Some(f) = agg.flush() {
                    if !send(SchedMessage::Frame(f)) {
                        return;
                    }
                }
            }
            _ = slow_tick.tick() => {
                let current = engine.current().await;
                let key = current.as_ref().map(|m| Arc::as_ptr(m) as *const () as usize);
                if first || key != model_key {
                    first = false;
                    model_key = key;
                    source = current.and_then(|m| m.sched());
                    rx = source.as_ref().map(|s| s.subscribe());
                    agg = FrameAggregator::new();
                    let model = source.as_deref().map(model_of);
                    if !send(SchedMessage::Model { model }) {
                        return;
                    }
                    need_snapshot = true;
                }
                if let Some(src) = source.clone() {
                    if need_snapshot || seen != snapped {
                        let snap = tokio::task::spawn_blocking(move || src.snapshot()).await;
                        if let Ok(Ok(s)) = snap {
                            if !send(SchedMessage::Snapshot(Box::new(s))) {
                                return;
                            }
                            need_snapshot = false;
                            snapped = seen;
                        }
                    }
                }
            }
        }
    }
}
