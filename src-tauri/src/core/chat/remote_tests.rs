//! Conversations on a remote endpoint: a real `hmoe-server` started in-process on the
//! engine's synthetic tiny model, reached through the app's chat pipeline with no local
//! model loaded. The saved reply equals what the server answers to the same request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmoe_engine::api::{ChatMessage, EngineOptions, FinishReason, LoadProgress, SamplingParams};
use hmoe_engine::calibrate::Calibration;
use hmoe_engine::synth::{preset, write_synthetic, Recipe, SynthOptions};
use hmoe_engine::Engine;
use hmoe_server::{EngineBackend, RemoteChat, ServeConfig, ServerHandle};
use sqlx::SqlitePool;

use super::helpers::{self, ChatCtx};
use super::models::{BackendChoice, ChatStreamEvent, ConversationSettings, MessageStatus};
use super::remote::{self, EndpointInput};
use super::store;
use super::stream::ActiveGenerations;
use crate::core::engine::testing::ScriptedLoader;
use crate::core::engine::EngineService;
use crate::core::settings::secrets::{endpoint_key, SecretStore};

/// Bound for a reply of the tiny model on a loaded 2-core box (not a timing assertion).
const WAIT: Duration = Duration::from_secs(120);
const KEY: &str = "sk-test-remote-0123456789";

struct Remote {
    srv: ServerHandle,
    _dir: tempfile::TempDir,
}

async fn tiny_server() -> Remote {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let opts = SynthOptions {
        preset: preset("tiny").unwrap(),
        recipe: Recipe::Q8_0,
        seed: 7,
        layers: None,
    };
    write_synthetic(&opts, &path, |_, _| {}).unwrap();
    let progress: Arc<dyn Fn(LoadProgress) + Send + Sync> = Arc::new(|_| {});
    let engine_opts = EngineOptions {
        calibration: Calibration::Skip,
        ..EngineOptions::default()
    };
    let engine = Engine::load(path, engine_opts, progress).await.unwrap();
    let cfg = ServeConfig {
        port: 0,
        api_key: Some(KEY.into()),
        ..Default::default()
    };
    let srv = hmoe_server::start(cfg, Arc::new(EngineBackend::new(engine)))
        .await
        .unwrap();
    Remote { srv, _dir: dir }
}

struct Ctx {
    db: SqlitePool,
    engine: EngineService,
    active: ActiveGenerations,
    secrets: SecretStore,
    events: Arc<Mutex<Vec<ChatStreamEvent>>>,
}

impl Ctx {
    fn new(db: SqlitePool) -> Self {
        Self {
            db,
            // Never loaded: remote conversations must not need a local model.
            engine: EngineService::new(Arc::new(ScriptedLoader::default())),
            active: ActiveGenerations::default(),
            secrets: SecretStore::memory(),
            events: Default::default(),
        }
    }

    fn chat(&self) -> ChatCtx<'_> {
        ChatCtx {
            db: &self.db,
            engine: &self.engine,
            active: &self.active,
            secrets: &self.secrets,
        }
    }

    fn emit(&self) -> Arc<dyn Fn(ChatStreamEvent) + Send + Sync> {
        let ev = self.events.clone();
        Arc::new(move |e| ev.lock().unwrap().push(e))
    }

    async fn wait_done(&self, id: i64) -> ChatStreamEvent {
        tokio::time::timeout(WAIT, async {
            loop {
                let done = self.events.lock().unwrap().iter().find_map(|e| match e {
                    ChatStreamEvent::Done { message_id, .. } if *message_id == id => {
                        Some(e.clone())
                    }
                    _ => None,
                });
                if let Some(d) = done {
                    return d;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("reply finished")
    }

    fn streamed(&self, id: i64) -> String {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                ChatStreamEvent::Delta { message_id, text } if *message_id == id => {
                    Some(text.as_str())
                }
                _ => None,
            })
            .collect()
    }
}

fn greedy(max_tokens: usize) -> ConversationSettings {
    ConversationSettings {
        sampling: SamplingParams {
            temperature: 0.0,
            max_tokens,
            ..SamplingParams::default()
        },
        enable_thinking: false,
    }
}

async fn endpoint(c: &Ctx, url: &str, key: Option<&str>) -> i64 {
    let input = EndpointInput {
        id: None,
        name: "lab".into(),
        url: url.into(),
        model: "ignored-by-name-check".into(),
        api_key: key.map(str::to_string),
    };
    remote::save_endpoint(&c.db, &c.secrets, &input)
        .await
        .unwrap()
        .id
}

#[sqlx::test(migrations = "../migrations")]
async fn remote_replies_stream_and_are_saved_like_local_ones(db: SqlitePool) {
    let r = tiny_server().await;
    let c = Ctx::new(db);
    // The server checks the model name: ask it which one it serves.
    let probe = RemoteChat::new(&r.srv.base_url(), Some(KEY.into()), "").unwrap();
    let model = probe.list_models().await.unwrap().remove(0);
    let id = endpoint(&c, &r.srv.base_url(), Some(KEY)).await;
    let ep = remote::save_endpoint(
        &c.db,
        &c.secrets,
        &EndpointInput {
            id: Some(id),
            name: "lab".into(),
            url: r.srv.base_url(),
            model: model.clone(),
            api_key: None, // keeps the saved key
        },
    )
    .await
    .unwrap();
    assert_eq!(ep.api_key_masked.as_deref(), Some("sk-…6789"));
    assert_eq!(
        c.secrets.get(&endpoint_key(id)).unwrap().as_deref(),
        Some(KEY)
    );

    let conv = store::create_conversation(&c.db, "remote").await.unwrap();
    store::update_settings(&c.db, conv.id, "", Some(&greedy(12)))
        .await
        .unwrap();
    store::set_backend(
        &c.db,
        conv.id,
        Some(&BackendChoice::Remote { endpoint_id: id }),
    )
    .await
    .unwrap();
    let sent = helpers::send(&c.chat(), conv.id, "Hello there", c.emit())
        .await
        .unwrap();
    let done = c.wait_done(sent.assistant_message_id).await;
    let ChatStreamEvent::Done {
        status,
        stats,
        error,
        ..
    } = done
    else {
        unreachable!()
    };
    assert_eq!(status, MessageStatus::Complete, "{error:?}");
    let stats = stats.expect("stats from the usage chunk");
    assert_eq!(stats.model, format!("{model} @ lab"));
    assert!(stats.stats.prompt_tokens > 0, "usage reached the stats");
    assert!(stats.stats.completion_tokens > 0);
    assert!(matches!(
        stats.finish_reason,
        FinishReason::Length | FinishReason::Stop
    ));

    // Saved exactly as streamed, and equal to the server's own answer to the same request.
    let msgs = store::list_messages(&c.db, conv.id).await.unwrap();
    let reply = msgs.last().unwrap();
    assert_eq!(reply.status, MessageStatus::Complete);
    assert_eq!(reply.content, c.streamed(reply.id));
    assert_eq!(
        reply.stats.as_ref().unwrap().stats.completion_tokens,
        stats.stats.completion_tokens
    );
    let direct = RemoteChat::new(&r.srv.base_url(), Some(KEY.into()), &model).unwrap();
    let (text, _) = direct
        .chat(
            &[ChatMessage {
                role: "user".into(),
                content: "Hello there".into(),
            }],
            &greedy(12).sampling,
        )
        .await
        .unwrap();
    assert_eq!(reply.content, text);

    // Stop mid-stream: what arrived is kept, the reply ends as cancelled.
    store::update_settings(&c.db, conv.id, "", Some(&greedy(400)))
        .await
        .unwrap();
    let events = c.events.clone();
    let active = c.active.clone();
    let sent = helpers::send(&c.chat(), conv.id, "Tell me more", c.emit())
        .await
        .unwrap();
    let rid = sent.assistant_message_id;
    tokio::time::timeout(WAIT, async {
        while !events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, ChatStreamEvent::Delta { message_id, .. } if *message_id == rid))
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("first piece");
    assert!(active.cancel(rid).await);
    let ChatStreamEvent::Done { status, stats, .. } = c.wait_done(rid).await else {
        unreachable!()
    };
    assert_eq!(status, MessageStatus::Complete);
    let stats = stats.unwrap();
    assert_eq!(stats.finish_reason, FinishReason::Cancelled);
    assert!(stats.stats.completion_tokens < 400);
    let saved = store::get_message(&c.db, rid).await.unwrap();
    assert!(!saved.content.is_empty());
    assert_eq!(saved.content, c.streamed(rid));
    let Remote { srv, _dir } = r;
    srv.shutdown().await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn remote_errors_are_clear_and_leave_no_reply(db: SqlitePool) {
    let r = tiny_server().await;
    let c = Ctx::new(db);
    let wrong = endpoint(&c, &r.srv.base_url(), Some("sk-wrong-key-000000")).await;
    let conv = store::create_conversation(&c.db, "r").await.unwrap();
    store::set_backend(
        &c.db,
        conv.id,
        Some(&BackendChoice::Remote { endpoint_id: wrong }),
    )
    .await
    .unwrap();
    let e = helpers::send(&c.chat(), conv.id, "hi", c.emit())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "remote");
    assert!(e.to_string().contains("401"), "{e}");
    let msgs = store::list_messages(&c.db, conv.id).await.unwrap();
    assert!(msgs.iter().all(|m| m.role != "assistant"), "no reply row");
    let e = remote::test_endpoint(&c.db, &c.secrets, wrong)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");

    // The app default decides for conversations without a choice; local needs a model.
    let plain = store::create_conversation(&c.db, "p").await.unwrap();
    let e = helpers::send(&c.chat(), plain.id, "hi", c.emit())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "state", "local default without a model: {e}");

    // Deleting the endpoint sends its conversations back to the default, drops the key.
    remote::delete_endpoint(&c.db, &c.secrets, wrong)
        .await
        .unwrap();
    assert_eq!(
        store::get_conversation(&c.db, conv.id)
            .await
            .unwrap()
            .backend,
        None
    );
    assert_eq!(c.secrets.get(&endpoint_key(wrong)).unwrap(), None);
    // Bad input never reaches the table.
    for (url, model) in [("ftp://x", "m"), ("http://h:1", ""), ("localhost:1", "m")] {
        let e = remote::save_endpoint(
            &c.db,
            &c.secrets,
            &EndpointInput {
                id: None,
                name: "x".into(),
                url: url.into(),
                model: model.into(),
                api_key: None,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), "invalid", "{url} {model}");
    }
    assert!(remote::list_endpoints(&c.db, &c.secrets)
        .await
        .unwrap()
        .is_empty());
    let Remote { srv, _dir } = r;
    srv.shutdown().await.unwrap();
}
