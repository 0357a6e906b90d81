//! The panel's back end: frame aggregation, what-if replay, the subscription loop and
//! the commands through Tauri's mock runtime, against a scripted scheduler.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmoe_engine::api::{EngineOptions, Prompt, RuntimeOptions, SamplingParams};
use hmoe_engine::moe::stats::{AppliedOptions, ExpertStats, SchedSnapshot};
use hmoe_engine::sched::synth::{generate, SynthParams};
use hmoe_engine::sched::telemetry::ExpertEvent;
use hmoe_engine::sched::{
    ExpertKey, LayerTelemetry, ModelShape, Placement, PlanTiming, StepTelemetry, Trace,
    POLICY_NAMES,
};
use serde_json::{json, Value};
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{
    get_ipc_response, mock_builder, mock_context, noop_assets, MockRuntime, INVOKE_KEY,
};
use tauri::webview::InvokeRequest;
use tauri::{App, WebviewWindow, WebviewWindowBuilder};
use tokio::sync::broadcast;

use super::helpers::{
    check_svg, median, slice_trace, what_if, FrameAggregator, TIMELINE_PER_FRAME, WINDOW_STEPS,
};
use super::models::{SchedMessage, WhatIfRequest, PLACE_CPU, PLACE_GPU_FETCH, PLACE_GPU_HIT};
use super::source::SchedSource;
use super::stream::{run, Pacing, Sender};
use crate::core::engine::models::{GenStream, LoadedModelInfo};
use crate::core::engine::service::{LoadFuture, LoadedModel, ModelLoader, ProgressFn};
use crate::core::engine::EngineService;

/// Float comparisons of sums of a few exact binary fractions.
const EPS: f64 = 1e-9;

fn layer(l: u16, ev: &[(u16, Placement)], measured: Option<f64>) -> LayerTelemetry {
    let hits = ev.iter().filter(|e| e.1 == Placement::GpuHit).count() as u32;
    let fetched = ev.iter().filter(|e| e.1 == Placement::GpuFetch).count() as u64;
    LayerTelemetry {
        layer: l,
        experts: ev
            .iter()
            .map(|&(expert, placement)| ExpertEvent {
                expert,
                placement,
                n_tokens: 1,
            })
            .collect(),
        predicted: PlanTiming {
            cpu_s: 0.5e-3,
            gpu_s: 0.25e-3,
            pcie_s: 0.125e-3,
            finish_s: 1e-3,
        },
        measured_s: measured,
        measured_cpu_s: None,
        measured_gpu_s: None,
        measured_copy_s: None,
        bytes_fetched: fetched * 1000,
        bytes_prefetched: 0,
        evictions: 0,
        prefetches: 0,
        hits,
        prefetch_hits: 0,
        evicted: vec![],
        loaded: vec![],
    }
}

fn step(i: u64, layers: Vec<LayerTelemetry>, wall: f64) -> StepTelemetry {
    StepTelemetry {
        step: i,
        n_tokens: 1,
        layers,
        predicted_s: wall,
        measured_s: Some(wall),
    }
}

#[test]
fn a_frame_coalesces_steps_and_counts_over_the_window() {
    let mut a = FrameAggregator::new();
    assert!(a.flush().is_none(), "no steps, no frame");
    let mut l0 = layer(
        0,
        &[(3, Placement::GpuHit), (5, Placement::Cpu)],
        Some(1e-3),
    );
    l0.evicted = vec![ExpertKey::new(0, 9)];
    let l1 = layer(
        1,
        &[(1, Placement::GpuFetch), (2, Placement::Cpu)],
        Some(2e-3),
    );
    a.push(&step(7, vec![l0.clone(), l1.clone()], 0.01));
    let mut l0b = l0.clone();
    l0b.loaded = vec![ExpertKey::new(1, 4)];
    a.push(&step(8, vec![l0b, l1], 0.03));
    a.lagged(2);
    let f = a.flush().expect("frame");
    assert_eq!((f.steps, f.tokens, f.last_step, f.lagged), (2, 2, 8, 2));
    assert_eq!(f.timeline.len(), 2);
    assert_eq!(f.timeline[1].step, 8);
    assert_eq!(f.timeline[1].layers.len(), 2);
    assert_eq!(f.timeline[1].layers[1].measured, 2e-3);
    assert_eq!(
        f.current,
        vec![
            vec![[3, PLACE_GPU_HIT], [5, PLACE_CPU]],
            vec![[1, PLACE_GPU_FETCH], [2, PLACE_CPU]]
        ]
    );
    assert_eq!(f.evicted, vec![[0, 9]]);
    // Background loads and demand fetches both arrive in VRAM.
    assert_eq!(f.loaded, vec![[1, 1], [1, 4]]);
    let c = &f.counters;
    assert_eq!(c.window_steps, 2);
    assert!((c.tok_s - 2.0 / 0.04).abs() < EPS, "{c:?}");
    assert!((c.hit_rate - 0.25).abs() < EPS);
    assert!((c.cpu_share - 0.5).abs() < EPS);
    assert!((c.pcie_gbps - 2000.0 / 0.04 / 1e9).abs() < EPS);
    // CPU busy = measured MoE time of each layer: (1 + 2) ms per step over 40 ms.
    assert!((c.cpu_util - 6e-3 / 0.04).abs() < EPS);
    assert!((c.gpu_util - 1e-3 / 0.04).abs() < EPS);
    // Errors |1 - 1| / 1 = 0 and |1 - 2| / 2 = 0.5, twice each: median 0.25.
    assert!((c.cost_error.expect("measured") - 0.25).abs() < EPS);
    let again = a.flush();
    assert!(again.is_none(), "a frame is sent once");
}

#[test]
fn windows_and_timelines_are_bounded() {
    let mut a = FrameAggregator::new();
    for i in 0..(WINDOW_STEPS as u64 + 40) {
        a.push(&step(i, vec![layer(0, &[(1, Placement::Cpu)], None)], 0.01));
    }
    let f = a.flush().expect("frame");
    assert_eq!(f.steps as usize, WINDOW_STEPS + 40);
    assert_eq!(f.timeline.len(), TIMELINE_PER_FRAME);
    assert_eq!(f.timeline.last().map(|s| s.step), Some(f.last_step));
    assert_eq!(f.counters.window_steps as usize, WINDOW_STEPS);
    assert!(f.counters.cost_error.is_none(), "nothing measured");
    // No GPU: every expert on the CPU, nothing hits, nothing crosses PCIe.
    assert_eq!(
        (
            f.counters.hit_rate,
            f.counters.pcie_gbps,
            f.counters.cpu_share
        ),
        (0.0, 0.0, 1.0)
    );
    assert_eq!(f.timeline[0].layers[0].measured, -1.0);
    assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(&[]), None);
}

fn shape() -> ModelShape {
    let mut s = ModelShape::preset("qwen3-30b-a3b:q4_k_m").expect("preset");
    s.n_layers = 4;
    s
}

fn trace(steps: usize) -> Trace {
    generate(&shape(), &SynthParams::qwen3_calibrated(), steps, 3)
}

#[test]
fn what_if_replays_every_policy_at_every_size() {
    let t = trace(120);
    let rep = what_if(&t, &shape(), &WhatIfRequest::default(), "lru").expect("replay");
    assert_eq!(rep.current_policy, "lru");
    assert_eq!(rep.sizes.len(), 5);
    for p in POLICY_NAMES {
        assert!(rep.policies.iter().any(|x| x == p), "{p}");
    }
    assert!(rep.policies.iter().any(|x| x == "value+pf"));
    assert_eq!(rep.rows.len(), rep.sizes.len() * rep.policies.len());
    assert_eq!(rep.warmup_steps, 24);
    assert_eq!(rep.steps, 96);
    for r in &rep.rows {
        assert!(
            r.tok_s > 0.0 && r.hit_rate >= 0.0 && r.hit_rate <= 1.0,
            "{r:?}"
        );
        if r.policy == "cpu-only" {
            assert_eq!(r.hit_rate, 0.0);
            assert!((r.speedup - 1.0).abs() < 1e-9);
        }
    }
    // A larger cache never lowers LRU's hit rate on this trace.
    let lru: Vec<f64> = rep
        .rows
        .iter()
        .filter(|r| r.policy == "lru")
        .map(|r| r.hit_rate)
        .collect();
    assert!(lru.windows(2).all(|w| w[1] >= w[0]), "{lru:?}");
    let from = what_if(
        &t,
        &shape(),
        &WhatIfRequest {
            from_step: Some(100),
            profile: Some("build".into()),
        },
        "value",
    )
    .expect("replay");
    assert_eq!(from.steps + from.warmup_steps, 20);
    assert!(from.profile.starts_with("build"), "{}", from.profile);
    let e = what_if(&trace(1), &shape(), &WhatIfRequest::default(), "value").unwrap_err();
    assert_eq!(e.kind(), "state");
    let e = what_if(
        &t,
        &shape(),
        &WhatIfRequest {
            profile: Some("../x.json".into()),
            ..Default::default()
        },
        "value",
    )
    .unwrap_err();
    assert_eq!(e.kind(), "invalid");
}

#[test]
fn traces_slice_from_a_step_and_keep_the_latest() {
    let t = trace(30);
    assert_eq!(slice_trace(&t, Some(10), usize::MAX).steps.len(), 20);
    let s = slice_trace(&t, None, 5);
    assert_eq!(s.steps.len(), 5);
    assert_eq!(s.steps[0].step, 25);
    assert!(check_svg("<svg xmlns='x'><g/></svg>", 100).is_ok());
    assert!(check_svg("<script>alert(1)</script>", 100).is_err());
    assert!(check_svg(&format!("<svg>{}</svg>", "x".repeat(200)), 100).is_err());
}

/// A scheduler double: telemetry pushed by the test, a fixed trace, settings stored.
struct FakeSched {
    tx: broadcast::Sender<Arc<StepTelemetry>>,
    runtime: Mutex<RuntimeOptions>,
    trace: Trace,
}

impl SchedSource for FakeSched {
    fn name(&self) -> String {
        "fake".into()
    }
    fn subscribe(&self) -> broadcast::Receiver<Arc<StepTelemetry>> {
        self.tx.subscribe()
    }
    fn snapshot(&self) -> Result<SchedSnapshot, String> {
        let s = shape();
        let n = s.total_experts();
        let r = self.runtime.lock().map_err(|e| e.to_string())?.clone();
        Ok(SchedSnapshot {
            steps: 0,
            n_layers: s.n_layers,
            n_experts: s.n_experts,
            top_k: s.top_k,
            expert_bytes: s.expert_bytes(),
            gpu: None,
            applied: AppliedOptions {
                policy: r.policy,
                vram_budget_bytes: r.vram_budget_bytes,
                prefetch: r.prefetch,
                threads: 2,
            },
            cache_slots: 0,
            cache_resident: 0,
            cache_bytes_used: 0,
            stats: ExpertStats::new(n),
            score: vec![0.0; n],
            residency: vec![0; n],
            prediction_error: None,
        })
    }
    fn trace(&self) -> Result<Trace, String> {
        Ok(self.trace.clone())
    }
    fn shape(&self) -> ModelShape {
        shape()
    }
    fn runtime(&self) -> RuntimeOptions {
        self.runtime.lock().map(|r| r.clone()).unwrap_or_default()
    }
    fn set_runtime(&self, opts: RuntimeOptions) -> Result<(), String> {
        *self.runtime.lock().map_err(|e| e.to_string())? = opts;
        Ok(())
    }
}

struct FakeModel(Arc<FakeSched>);

impl LoadedModel for FakeModel {
    fn info(&self) -> LoadedModelInfo {
        LoadedModelInfo {
            path: "/fake.gguf".into(),
            name: "fake".into(),
            architecture: "qwen3moe".into(),
            quant: "q4_k_m".into(),
            context_length: 4096,
        }
    }
    fn generate(&self, _: Prompt, _: SamplingParams) -> Result<GenStream, String> {
        Err("the fake model does not generate".into())
    }
    fn set_runtime_options(&self, opts: RuntimeOptions) -> Result<(), String> {
        self.0.set_runtime(opts)
    }
    fn sched(&self) -> Option<Arc<dyn SchedSource>> {
        Some(self.0.clone())
    }
}

struct FakeLoader(Arc<FakeSched>);

impl ModelLoader for FakeLoader {
    fn load(&self, _: PathBuf, _: EngineOptions, _: ProgressFn) -> LoadFuture {
        let m = self.0.clone();
        Box::pin(async move { Ok(Arc::new(FakeModel(m)) as Arc<dyn LoadedModel>) })
    }
}

fn fake() -> Arc<FakeSched> {
    Arc::new(FakeSched {
        tx: broadcast::channel(1024).0,
        runtime: Mutex::new(RuntimeOptions::default()),
        trace: trace(80),
    })
}

async fn loaded(engine: &EngineService) {
    engine
        .load(
            "/fake.gguf".into(),
            EngineOptions::default(),
            Arc::new(|_| {}),
        )
        .await
        .expect("load");
    for _ in 0..200 {
        if engine.current().await.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the fake model never loaded");
}

#[tokio::test]
async fn the_subscription_follows_the_model_and_coalesces_steps() {
    let f = fake();
    let engine = EngineService::new(Arc::new(FakeLoader(f.clone())));
    let got: Arc<Mutex<Vec<SchedMessage>>> = Arc::default();
    let sink = got.clone();
    let send: Sender = Arc::new(move |m| sink.lock().map(|mut v| v.push(m)).is_ok());
    let pacing = Pacing {
        frame: Duration::from_millis(20),
        snapshot: Duration::from_millis(40),
    };
    let task = tokio::spawn(run(engine.clone(), send, pacing));
    tokio::time::sleep(Duration::from_millis(60)).await;
    loaded(&engine).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // 200 steps in bursts, far faster than frames.
    const STEPS: u64 = 200;
    for i in 0..STEPS {
        let l = layer(0, &[(1, Placement::Cpu)], Some(1e-3));
        let _ = f.tx.send(Arc::new(step(i, vec![l], 0.005)));
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    task.abort();
    let msgs = got.lock().expect("messages").clone();
    let models: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            SchedMessage::Model { model } => Some(model.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(models.first(), Some(&None), "first: no model");
    let m = models.last().cloned().flatten().expect("then the model");
    assert_eq!((m.n_layers, m.n_experts), (4, 128));
    let frames: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            SchedMessage::Frame(f) => Some(f),
            _ => None,
        })
        .collect();
    let steps: u64 = frames.iter().map(|f| f.steps as u64 + f.lagged).sum();
    assert_eq!(steps, STEPS, "every step counted once");
    assert!(
        frames.len() < 20,
        "{} frames for {STEPS} steps: not coalesced",
        frames.len()
    );
    assert!(msgs
        .iter()
        .any(|m| matches!(m, SchedMessage::Snapshot(s) if s.n_experts == 128)));
}

struct Harness {
    _dir: tempfile::TempDir,
    _app: App<MockRuntime>,
    webview: WebviewWindow<MockRuntime>,
}

fn harness(with_model: bool) -> Harness {
    let dir = tempfile::tempdir().expect("tmp");
    let f = fake();
    let state = tauri::async_runtime::block_on(async {
        let state =
            crate::core::app::setup::build_state(dir.path(), Arc::new(FakeLoader(f.clone())))
                .await
                .expect("state");
        if with_model {
            loaded(&state.engine).await;
        }
        state
    });
    let app = mock_builder()
        .invoke_handler(crate::handler())
        .manage(state)
        .build(mock_context(noop_assets()))
        .expect("app");
    let webview = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .expect("webview");
    Harness {
        _dir: dir,
        _app: app,
        webview,
    }
}

fn call(h: &Harness, cmd: &str, body: Value) -> Result<Value, Value> {
    let req = InvokeRequest {
        cmd: cmd.into(),
        callback: CallbackFn(0),
        error: CallbackFn(1),
        url: "tauri://localhost".parse().expect("url"),
        body: InvokeBody::Json(body),
        headers: Default::default(),
        invoke_key: INVOKE_KEY.to_string(),
    };
    get_ipc_response(&h.webview, req).map(|b| b.deserialize::<Value>().expect("json"))
}

#[test]
fn commands_work_through_ipc() {
    let h = harness(true);
    let v = call(&h, "sched_options_get", json!({})).expect("options");
    assert_eq!(v["requested"]["policy"], "value");
    assert_eq!(v["gpu"], Value::Null);
    assert_eq!(v["policies"].as_array().map(|a| a.len()), Some(7));
    let e = call(
        &h,
        "sched_options_set",
        json!({ "options": { "policy": "random", "threads": 0, "vram_budget_bytes": null, "prefetch": true } }),
    )
    .unwrap_err();
    assert_eq!(e["kind"], "invalid");
    let v = call(
        &h,
        "sched_options_set",
        json!({ "options": { "policy": "lru", "threads": 1, "vram_budget_bytes": 1073741824u64, "prefetch": false } }),
    )
    .expect("set");
    assert_eq!(v["requested"]["policy"], "lru");
    assert_eq!(v["applied"]["policy"], "lru");
    let snap = call(&h, "sched_snapshot", json!({})).expect("snapshot");
    assert_eq!(snap["n_experts"], 128);
    assert_eq!(snap["residency"].as_array().map(|a| a.len()), Some(512));
    let rep = call(
        &h,
        "sched_whatif",
        json!({ "request": { "from_step": 10 } }),
    )
    .expect("what-if");
    assert_eq!(rep["current_policy"], "lru");
    assert!(rep["rows"].as_array().is_some_and(|r| r.len() == 40));
    let e = call(&h, "sched_export_plot", json!({ "svg": "<img src=x>" })).unwrap_err();
    assert_eq!(e["kind"], "invalid");
    let id = call(&h, "sched_subscribe", json!({ "onEvent": "__CHANNEL__:3" })).expect("sub");
    assert_eq!(
        call(&h, "sched_unsubscribe", json!({ "id": id })).expect("unsub"),
        true
    );
    assert_eq!(
        call(&h, "sched_unsubscribe", json!({ "id": id })).expect("unsub"),
        false
    );
}

#[test]
fn without_a_model_commands_say_so() {
    let h = harness(false);
    assert_eq!(
        call(&h, "sched_snapshot", json!({})).expect("none"),
        Value::Null
    );
    let e = call(&h, "sched_whatif", json!({ "request": {} })).unwrap_err();
    assert_eq!(e["kind"], "state", "{e}");
    let e = call(&h, "sched_options_get", json!({})).unwrap_err();
    assert_eq!(e["kind"], "state");
}
