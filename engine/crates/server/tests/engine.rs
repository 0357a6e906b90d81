//! The server over the real engine with the synthetic tiny model.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{read_sse, stream_text, wait_health};
use hmoe_engine::api::{EngineOptions, LoadProgress};
use hmoe_engine::synth::{preset, write_synthetic, Recipe, SynthOptions};
use hmoe_engine::Engine;
use hmoe_server::{EngineBackend, ServeConfig, ServerHandle};
use serde_json::{json, Value};

async fn tiny_server(max_concurrent: usize) -> (ServerHandle, String, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "hmoe-server-engine-test-{}-{max_concurrent}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("tiny.gguf");
    let opts = SynthOptions {
        preset: preset("tiny").expect("tiny preset"),
        recipe: Recipe::Q8_0,
        seed: 7,
        layers: None,
    };
    write_synthetic(&opts, &path, |_, _| {}).expect("synthesize tiny model");
    let progress: Arc<dyn Fn(LoadProgress) + Send + Sync> = Arc::new(|_| {});
    let engine = Engine::load(path.clone(), EngineOptions::default(), progress)
        .await
        .expect("load tiny model");
    let backend = EngineBackend::new(engine);
    let model = hmoe_server::ChatBackend::model_id(&backend);
    let cfg = ServeConfig {
        port: 0,
        max_concurrent,
        max_queue: 16,
        ..Default::default()
    };
    let srv = hmoe_server::start(cfg, Arc::new(backend))
        .await
        .expect("server starts");
    (srv, model, dir)
}

fn body(model: &str, content: &str, max_tokens: usize, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

async fn stream_once(base: &str, model: &str, content: &str, max_tokens: usize) -> (String, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&body(model, content, max_tokens, true))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let (chunks, done) = read_sse(resp).await;
    assert!(done);
    let usage = chunks
        .last()
        .map(|c| c["usage"].clone())
        .unwrap_or(Value::Null);
    (stream_text(&chunks), usage)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_greedy_streams_equal_solo_runs() {
    let (srv, model, dir) = tiny_server(8).await;
    let base = srv.base_url();
    let prompts: Vec<String> = (0..8)
        .map(|i| format!("Question {i}: what colour is item {}?", i * 13))
        .collect();
    let mut solo = Vec::new();
    for p in &prompts {
        solo.push(stream_once(&base, &model, p, 16).await);
    }
    let tasks: Vec<_> = prompts
        .iter()
        .map(|p| {
            let (b, m, p) = (base.clone(), model.clone(), p.clone());
            tokio::spawn(async move { stream_once(&b, &m, &p, 16).await })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let (text, usage) = t.await.expect("task");
        assert_eq!(
            text, solo[i].0,
            "request {i}: concurrent output differs from solo"
        );
        assert_eq!(usage, solo[i].1, "request {i}: usage differs");
        assert!(usage["completion_tokens"].as_u64().unwrap_or(0) >= 1);
    }
    let distinct: std::collections::HashSet<&String> = solo.iter().map(|s| &s.0).collect();
    assert!(
        distinct.len() > 1,
        "different prompts gave identical outputs: {solo:?}"
    );
    let h = wait_health(&base, |h| h["slots"]["active"] == 0).await;
    assert_eq!(h["slots"]["completed"], 16);
    srv.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_usage_and_disconnect_with_the_engine() {
    let (srv, model, dir) = tiny_server(1).await;
    let base = srv.base_url();
    let client = reqwest::Client::new();
    let v: Value = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&body(&model, "Hello there", 5, false))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let usage = &v["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 2, "{v}");
    assert!(usage["completion_tokens"].as_u64().unwrap() <= 5);
    assert!(["stop", "length"].contains(&v["choices"][0]["finish_reason"].as_str().unwrap()));

    // A long generation: leave after the first chunk; the only slot must come back.
    let mut resp = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&body(&model, "Talk for a long time", 3000, true))
        .send()
        .await
        .expect("request");
    resp.chunk().await.expect("read").expect("first chunk");
    drop(resp);
    wait_health(&base, |h| {
        h["slots"]["active"] == 0 && h["slots"]["cancelled"] == 1
    })
    .await;
    let r = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&body(&model, "Again", 2, false))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    srv.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(dir);
}
