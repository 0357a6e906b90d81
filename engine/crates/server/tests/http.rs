//! HTTP-layer tests over real sockets with the deterministic mock backend.

mod common;

use std::time::Duration;

use common::*;
use reqwest::header;
use serde_json::{json, Value};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post(base: &str, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.expect("error body is JSON");
    assert!(v["error"]["message"].is_string(), "{v}");
    assert!(v["error"]["type"].is_string(), "{v}");
    (status, v["error"].clone())
}

#[tokio::test]
async fn models_and_health() {
    let srv = start_mock(test_config(), MockBackend::default()).await;
    let base = srv.base_url();
    let m: Value = client()
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["id"], MOCK_MODEL);
    let h: Value = client()
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["slots"]["active"], 0);
    let one = client()
        .get(format!("{base}/v1/models/{MOCK_MODEL}"))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    let (s, e) = error_of(
        client()
            .get(format!("{base}/v1/models/other"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (404, Some("model_not_found")));
    srv.shutdown().await.unwrap();
}

#[tokio::test]
async fn chat_non_streaming_shape_and_usage() {
    let srv = start_mock(test_config(), MockBackend::default()).await;
    let resp = post(
        &srv.base_url(),
        "/v1/chat/completions",
        &chat_body("hello", 5, false),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["model"], MOCK_MODEL);
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let prompt_len = "user:hello\n".len();
    let ids: Vec<u32> = "user:hello\n".bytes().map(u32::from).collect();
    let expected: String = (0..5).map(|k| mock_word(&ids, k)).collect();
    assert_eq!(v["choices"][0]["message"]["content"], expected);
    assert_eq!(v["usage"]["prompt_tokens"], prompt_len);
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert_eq!(v["usage"]["total_tokens"], prompt_len + 5);
}

#[tokio::test]
async fn chat_streaming_matches_non_streaming() {
    let srv = start_mock(test_config(), MockBackend::default()).await;
    let base = srv.base_url();
    let whole: Value = post(&base, "/v1/chat/completions", &chat_body("abc", 6, false))
        .await
        .json()
        .await
        .unwrap();
    let resp = post(&base, "/v1/chat/completions", &chat_body("abc", 6, true)).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let (chunks, done) = read_sse(resp).await;
    assert!(done, "stream ends with [DONE]");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(
        stream_text(&chunks),
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    let finish: Vec<&Value> = chunks
        .iter()
        .filter(|c| {
            !c["choices"][0]["finish_reason"].is_null()
                && c["choices"].as_array().is_some_and(|a| !a.is_empty())
        })
        .collect();
    assert_eq!(finish.len(), 1);
    assert_eq!(finish[0]["choices"][0]["finish_reason"], "length");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"].as_array().unwrap().len(), 0);
    assert_eq!(last["usage"], whole["usage"]);
}

#[tokio::test]
async fn stop_sequence_truncates_and_finishes_with_stop() {
    let srv = start_mock(test_config(), MockBackend::default()).await;
    let ids: Vec<u32> = "user:s\n".bytes().map(u32::from).collect();
    let third = mock_word(&ids, 2);
    let mut body = chat_body("s", 8, false);
    body["stop"] = json!([third.trim(), "never-matches"]);
    let v: Value = post(&srv.base_url(), "/v1/chat/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    let expected: String = (0..2).map(|k| mock_word(&ids, k)).collect();
    assert_eq!(v["choices"][0]["message"]["content"], expected);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    body["stream"] = json!(true);
    let (chunks, _) = read_sse(post(&srv.base_url(), "/v1/chat/completions", &body).await).await;
    assert_eq!(stream_text(&chunks), expected);
}

#[tokio::test]
async fn text_completions() {
    let srv = start_mock(test_config(), MockBackend::default()).await;
    let body = json!({"model": MOCK_MODEL, "prompt": "xyz", "max_tokens": 3});
    let v: Value = post(&srv.base_url(), "/v1/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "text_completion");
    let ids: Vec<u32> = "xyz".bytes().map(u32::from).collect();
    let expected: String = (0..3).map(|k| mock_word(&ids, k)).collect();
    assert_eq!(v["choices"][0]["text"], expected);
    let v: Value = post(
        &srv.base_url(),
        "/v1/completions",
        &json!({"model": MOCK_MODEL, "prompt": [1, 2, 3]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        v["usage"]["completion_tokens"], 16,
        "OpenAI's default max_tokens for completions"
    );
    let (s, e) = error_of(
        post(
            &srv.base_url(),
            "/v1/completions",
            &json!({"model": MOCK_MODEL, "prompt": [1, 999]}),
        )
        .await,
    )
    .await;
    assert_eq!((s, e["param"].as_str()), (400, Some("prompt[1]")));
}

#[tokio::test]
async fn invalid_fields_give_400_naming_the_field() {
    let srv = start_mock(test_config(), MockBackend::default()).await;
    let base = srv.base_url();
    let cases = [
        ("n", json!(2)),
        ("temperature", json!(-0.5)),
        ("temperature", json!(1e300)),
        ("top_p", json!(7)),
        ("max_tokens", json!(-1)),
        ("max_tokens", json!(10_000_000_000i64)),
        ("max_tokens", json!("ten")),
        ("seed", json!("x")),
        ("stop", json!(5)),
        ("top_k", json!(-7)),
        ("stream", json!("yes")),
    ];
    for (field, value) in cases {
        let mut body = chat_body("x", 4, false);
        body[field] = value.clone();
        let (s, e) = error_of(post(&base, "/v1/chat/completions", &body).await).await;
        assert_eq!(s, 400, "{field}={value}");
        assert_eq!(e["param"].as_str(), Some(field), "{field}={value}: {e}");
    }
    // Prompt + max_tokens beyond the context.
    let (s, e) = error_of(
        post(
            &base,
            "/v1/chat/completions",
            &chat_body("x", MOCK_CONTEXT, false),
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (400, Some("context_length_exceeded"))
    );
    let long = "y".repeat(MOCK_CONTEXT + 10);
    let (s, e) =
        error_of(post(&base, "/v1/chat/completions", &chat_body(&long, 4, false)).await).await;
    assert_eq!((s, e["param"].as_str()), (400, Some("messages")));
    let (s, _) = error_of(
        post(
            &base,
            "/v1/chat/completions",
            &json!({"model": MOCK_MODEL, "messages": []}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 400);
    let (s, e) = error_of(
        post(
            &base,
            "/v1/chat/completions",
            &json!({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await,
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (404, Some("model_not_found")));
}

#[tokio::test]
async fn malformed_oversized_and_wrong_content_type() {
    let mut cfg = test_config();
    cfg.limits.max_body_bytes = 4096;
    let srv = start_mock(cfg, MockBackend::default()).await;
    let url = format!("{}/v1/chat/completions", srv.base_url());
    for raw in [
        "{",
        "{\"model\": }",
        "[]",
        "\"str\"",
        "{\"messages\": 5, \"model\": \"mock-model\"}",
        "\u{0}",
    ] {
        let r = client()
            .post(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        let (s, _) = error_of(r).await;
        assert_eq!(s, 400, "{raw:?}");
    }
    let big =
        json!({"model": MOCK_MODEL, "messages": [{"role": "user", "content": "z".repeat(10_000)}]});
    let (s, e) = error_of(post(&srv.base_url(), "/v1/chat/completions", &big).await).await;
    assert_eq!((s, e["code"].as_str()), (413, Some("request_too_large")));
    let r = client()
        .post(&url)
        .header(header::CONTENT_TYPE, "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 415);
    let (s, _) = error_of(
        client()
            .get(format!("{}/nope", srv.base_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = error_of(client().get(&url).send().await.unwrap()).await;
    assert_eq!(s, 405);
    // The server is still healthy after all of this.
    wait_health(&srv.base_url(), |h| h["status"] == "ok").await;
}

#[tokio::test]
async fn engine_failure_mid_stream_is_reported() {
    let srv = start_mock(test_config(), MockBackend::default()).await;
    let (s, e) = error_of(
        post(
            &srv.base_url(),
            "/v1/chat/completions",
            &chat_body("FAIL", 4, false),
        )
        .await,
    )
    .await;
    assert_eq!(s, 500);
    assert!(e["message"].as_str().unwrap().contains("mock failure"));
    let (chunks, done) = read_sse(
        post(
            &srv.base_url(),
            "/v1/chat/completions",
            &chat_body("FAIL", 4, true),
        )
        .await,
    )
    .await;
    assert!(done);
    assert!(chunks.last().unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("mock failure"));
    let h = wait_health(&srv.base_url(), |h| h["slots"]["active"] == 0).await;
    assert_eq!(h["slots"]["failed"], 2);
}

#[tokio::test]
async fn host_header_is_checked() {
    let srv = start_mock(test_config(), MockBackend::default()).await;
    let port = srv.local_addr().port();
    let url = format!("{}/v1/models", srv.base_url());
    for host in ["evil.example", "attacker.com:10002", "127.0.0.2"] {
        let r = client()
            .get(&url)
            .header(header::HOST, host)
            .send()
            .await
            .unwrap();
        let (s, e) = error_of(r).await;
        assert_eq!(
            (s, e["code"].as_str()),
            (403, Some("host_not_allowed")),
            "{host}"
        );
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "[::1]".to_string(),
        "LOCALHOST".to_string(),
    ] {
        let r = client()
            .get(&url)
            .header(header::HOST, &host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
    let mut cfg = test_config();
    cfg.allowed_hosts = vec!["my-box.lan".into()];
    let srv2 = start_mock(cfg, MockBackend::default()).await;
    let r = client()
        .get(format!("{}/v1/models", srv2.base_url()))
        .header(header::HOST, "my-box.lan:1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn foreign_origins_are_refused_unless_configured() {
    let srv = start_mock(test_config(), MockBackend::default()).await;
    let base = srv.base_url();
    let url = format!("{base}/v1/chat/completions");
    let r = client()
        .post(&url)
        .header(header::ORIGIN, "https://evil.example")
        .json(&chat_body("x", 2, false))
        .send()
        .await
        .unwrap();
    assert!(r
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .is_none());
    assert_eq!(error_of(r).await.0, 403);
    // Another port on localhost is another origin.
    let r = client()
        .get(format!("{base}/v1/models"))
        .header(header::ORIGIN, "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Same origin is fine.
    let r = client()
        .get(format!("{base}/v1/models"))
        .header(header::ORIGIN, &base)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let pre = client()
        .request(reqwest::Method::OPTIONS, &url)
        .header(header::ORIGIN, "https://evil.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 403);

    let mut cfg = test_config();
    cfg.cors_origins = vec!["https://app.example".into()];
    let srv2 = start_mock(cfg, MockBackend::default()).await;
    let url2 = format!("{}/v1/chat/completions", srv2.base_url());
    let pre = client()
        .request(reqwest::Method::OPTIONS, &url2)
        .header(header::ORIGIN, "https://app.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(
        pre.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example"
    );
    let r = client()
        .post(&url2)
        .header(header::ORIGIN, "https://app.example")
        .json(&chat_body("x", 2, false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example"
    );
    let r = client()
        .post(&url2)
        .header(header::ORIGIN, "https://other.example")
        .json(&chat_body("x", 2, false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn api_key_is_required_when_set() {
    let mut cfg = test_config();
    cfg.api_key = Some("s3cret".into());
    let srv = start_mock(cfg, MockBackend::default()).await;
    let url = format!("{}/v1/chat/completions", srv.base_url());
    let r = client()
        .post(&url)
        .json(&chat_body("x", 2, false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
    let (s, e) = error_of(r).await;
    assert_eq!((s, e["code"].as_str()), (401, Some("invalid_api_key")));
    let r = client()
        .post(&url)
        .bearer_auth("wrong")
        .json(&chat_body("x", 2, false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .get(format!("{}/v1/models", srv.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .post(&url)
        .bearer_auth("s3cret")
        .json(&chat_body("x", 2, false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .get(format!("{}/health", srv.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "health stays open for probes");
}

#[tokio::test]
async fn non_loopback_bind_needs_an_api_key() {
    let cfg = hmoe_server::ServeConfig {
        host: "0.0.0.0".into(),
        port: 0,
        ..Default::default()
    };
    let err = hmoe_server::start(cfg, std::sync::Arc::new(MockBackend::default()))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("without an API key"), "{err}");
}

#[tokio::test]
async fn full_queue_gives_429_and_queued_requests_run_later() {
    let mut cfg = test_config();
    cfg.max_concurrent = 2;
    cfg.max_queue = 1;
    let backend = MockBackend {
        token_delay: Duration::from_millis(20),
        ..Default::default()
    };
    let srv = start_mock(cfg, backend).await;
    let base = srv.base_url();
    // Two long streams occupy both slots.
    let s1 = post(&base, "/v1/chat/completions", &chat_body("a", 400, true)).await;
    let s2 = post(&base, "/v1/chat/completions", &chat_body("b", 400, true)).await;
    wait_health(&base, |h| h["slots"]["active"] == 2).await;
    // A third waits in the queue.
    let b2 = base.clone();
    let queued = tokio::spawn(async move {
        post(&b2, "/v1/chat/completions", &chat_body("c", 2, false))
            .await
            .status()
            .as_u16()
    });
    wait_health(&base, |h| h["slots"]["queued"] == 1).await;
    // A fourth is refused.
    let (s, e) =
        error_of(post(&base, "/v1/chat/completions", &chat_body("d", 2, false)).await).await;
    assert_eq!((s, e["code"].as_str()), (429, Some("server_busy")));
    drop(s1);
    assert_eq!(queued.await.unwrap(), 200);
    drop(s2);
    let h = wait_health(&base, |h| h["slots"]["active"] == 0).await;
    assert_eq!(h["slots"]["rejected_busy"], 1);
}

#[tokio::test]
async fn disconnect_mid_stream_frees_the_slot_and_cancels() {
    let mut cfg = test_config();
    cfg.max_concurrent = 1;
    cfg.max_queue = 0;
    let backend = MockBackend {
        token_delay: Duration::from_millis(10),
        ..Default::default()
    };
    let cancelled = backend.cancelled.clone();
    let running = backend.running.clone();
    let srv = start_mock(cfg, backend).await;
    let base = srv.base_url();
    let mut resp = post(&base, "/v1/chat/completions", &chat_body("long", 450, true)).await;
    let first = resp.chunk().await.unwrap().expect("first chunk");
    assert!(!first.is_empty());
    // While it runs the only slot is taken.
    assert_eq!(
        post(&base, "/v1/chat/completions", &chat_body("x", 1, false))
            .await
            .status(),
        429
    );
    drop(resp);
    wait_health(&base, |h| {
        h["slots"]["active"] == 0 && h["slots"]["cancelled"] == 1
    })
    .await;
    for _ in 0..500 {
        if running.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        cancelled.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the backend saw the cancel"
    );
    assert_eq!(
        post(&base, "/v1/chat/completions", &chat_body("x", 1, false))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn eight_concurrent_streams_complete_independently() {
    let mut cfg = test_config();
    cfg.max_concurrent = 8;
    let backend = MockBackend {
        token_delay: Duration::from_millis(2),
        ..Default::default()
    };
    let srv = start_mock(cfg, backend).await;
    let base = srv.base_url();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let b = base.clone();
        tasks.push(tokio::spawn(async move {
            let (chunks, done) = read_sse(
                post(
                    &b,
                    "/v1/chat/completions",
                    &chat_body(&format!("prompt {i}"), 20, true),
                )
                .await,
            )
            .await;
            assert!(done);
            stream_text(&chunks)
        }));
    }
    let mut outs = Vec::new();
    for t in tasks {
        outs.push(t.await.unwrap());
    }
    for (i, out) in outs.iter().enumerate() {
        let ids: Vec<u32> = format!("user:prompt {i}\n")
            .bytes()
            .map(u32::from)
            .collect();
        let expected: String = (0..20).map(|k| mock_word(&ids, k)).collect();
        assert_eq!(out, &expected, "request {i}");
    }
}

#[tokio::test]
async fn disconnect_during_non_streaming_request_cancels() {
    let mut cfg = test_config();
    cfg.max_concurrent = 1;
    let backend = MockBackend {
        token_delay: Duration::from_millis(10),
        ..Default::default()
    };
    let srv = start_mock(cfg, backend).await;
    let base = srv.base_url();
    let c = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = c
        .post(format!("{base}/v1/chat/completions"))
        .json(&chat_body("slow", 450, false))
        .send()
        .await;
    assert!(r.is_err(), "the client gave up first");
    wait_health(&base, |h| {
        h["slots"]["active"] == 0 && h["slots"]["cancelled"] == 1
    })
    .await;
}
