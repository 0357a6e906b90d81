//! `RemoteChat` and `bench_serve` against a running server with the mock backend.

mod common;

use common::*;
use hmoe_engine::api::{ChatMessage, FinishReason, GenerationEvent, SamplingParams};
use hmoe_server::{bench_serve, BenchArgs, RemoteChat, RemoteError};

fn user(content: &str) -> Vec<ChatMessage> {
    vec![ChatMessage {
        role: "user".into(),
        content: content.into(),
    }]
}

#[tokio::test]
async fn remote_chat_streams_events_and_usage() {
    let srv = start_mock(test_config(), MockBackend::default()).await;
    let remote = RemoteChat::new(
        &format!("{}/v1/chat/completions", srv.base_url()),
        None,
        MOCK_MODEL,
    )
    .unwrap();
    assert_eq!(
        remote.list_models().await.unwrap(),
        vec![MOCK_MODEL.to_string()]
    );
    let params = SamplingParams {
        max_tokens: 4,
        temperature: 0.0,
        ..Default::default()
    };
    let mut stream = remote.stream_chat(&user("hey"), &params).await.unwrap();
    let mut text = String::new();
    let mut done = None;
    while let Some(ev) = stream.next().await {
        match ev.unwrap() {
            GenerationEvent::Text { text: t, .. } => text.push_str(&t),
            GenerationEvent::Done {
                finish_reason,
                stats,
            } => done = Some((finish_reason, stats)),
            GenerationEvent::Error { message } => panic!("{message}"),
        }
    }
    let ids: Vec<u32> = "user:hey\n".bytes().map(u32::from).collect();
    let expected: String = (0..4).map(|k| mock_word(&ids, k)).collect();
    assert_eq!(text, expected);
    let (reason, stats) = done.expect("a Done event");
    assert_eq!(reason, FinishReason::Length);
    assert_eq!(
        (stats.prompt_tokens, stats.completion_tokens),
        (ids.len(), 4)
    );
    let (whole, _) = remote.chat(&user("hey"), &params).await.unwrap();
    assert_eq!(whole, expected);
}

#[tokio::test]
async fn remote_chat_reports_server_errors() {
    let mut cfg = test_config();
    cfg.api_key = Some("k".into());
    let srv = start_mock(cfg, MockBackend::default()).await;
    let params = SamplingParams {
        max_tokens: 2,
        ..Default::default()
    };
    let no_key = RemoteChat::new(&srv.base_url(), None, MOCK_MODEL).unwrap();
    match no_key.stream_chat(&user("x"), &params).await {
        Err(RemoteError::Status { status: 401, .. }) => {}
        other => panic!("expected 401, got {:?}", other.err()),
    }
    let wrong_model = RemoteChat::new(&srv.base_url(), Some("k".into()), "other").unwrap();
    match wrong_model.chat(&user("x"), &params).await {
        Err(RemoteError::Status {
            status: 404,
            message,
            ..
        }) => assert!(message.contains("other")),
        other => panic!("expected 404, got {other:?}"),
    }
}

#[tokio::test]
async fn bench_serve_calibrates_and_reports_every_request() {
    let mut cfg = test_config();
    cfg.max_concurrent = 2;
    let srv = start_mock(cfg, MockBackend::default()).await;
    let report = bench_serve(BenchArgs {
        api_url: format!("{}/v1/chat/completions", srv.base_url()),
        model: MOCK_MODEL.into(),
        prompt_lens: vec![300],
        max_tokens: 6,
        concurrent: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let run = &report.runs[0];
    // The mock counts one token per byte; calibration must land within 1 % (+1).
    assert!(
        run.prompt_tokens.abs_diff(300) <= 4,
        "calibrated to {}",
        run.prompt_tokens
    );
    assert_eq!(run.requests.len(), 3);
    for r in &run.requests {
        assert!(r.ok, "{r:?}");
        assert_eq!(r.completion_tokens, 6);
        assert_eq!(r.finish, "length");
    }
    assert!(report.table().contains("total"));
    let bad = bench_serve(BenchArgs {
        concurrent: 0,
        ..Default::default()
    })
    .await;
    assert!(bad.is_err());
}
