use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmoe_engine::api::{FinishReason, Prompt};
use sqlx::{Row, SqlitePool};

use super::helpers::{self, ChatCtx};
use super::models::{ChatStreamEvent, MessageStatus};
use super::store;
use super::stream::{ActiveGenerations, ReplyWriter, FLUSH_EVERY_TOKENS};
use crate::core::engine::models::LoadEvent;
use crate::core::engine::testing::{words, ScriptedLoader};
use crate::core::engine::EngineService;
use crate::core::settings::secrets::SecretStore;

/// Generous bound for a scripted reply to finish on a loaded CI machine (not a timing assertion).
const WAIT: Duration = Duration::from_secs(20);

struct Fixture {
    db: SqlitePool,
    engine: EngineService,
    active: ActiveGenerations,
    events: Arc<Mutex<Vec<ChatStreamEvent>>>,
    prompts: crate::core::engine::testing::Prompts,
    secrets: SecretStore,
}

impl Fixture {
    async fn new(db: SqlitePool, pieces: usize, pace_ms: u64) -> Self {
        let loader = ScriptedLoader {
            pieces: words(pieces),
            pace: Duration::from_millis(pace_ms),
            ..Default::default()
        };
        let prompts = loader.prompts.clone();
        let engine = EngineService::new(Arc::new(loader));
        engine
            .load(
                "/m.gguf".into(),
                Default::default(),
                Arc::new(|_: LoadEvent| {}),
            )
            .await
            .unwrap();
        for _ in 0..200 {
            if engine.current().await.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Self {
            db,
            engine,
            active: ActiveGenerations::default(),
            events: Default::default(),
            prompts,
            secrets: SecretStore::memory(),
        }
    }

    fn ctx(&self) -> ChatCtx<'_> {
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

    async fn wait_done(&self, message_id: i64) {
        tokio::time::timeout(WAIT, async {
            loop {
                let done = self
                    .events
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|e| matches!(e, ChatStreamEvent::Done { message_id: m, .. } if *m == message_id));
                if done {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("reply finished");
    }

    fn deltas(&self, message_id: i64) -> String {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                ChatStreamEvent::Delta {
                    message_id: m,
                    text,
                } if *m == message_id => Some(text.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .concat()
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn send_streams_and_saves_the_reply_with_stats(db: SqlitePool) {
    let f = Fixture::new(db, 5, 1).await;
    let c = store::create_conversation(&f.db, "t").await.unwrap();
    store::update_settings(&f.db, c.id, "Be brief.", None)
        .await
        .unwrap();
    let r = helpers::send(&f.ctx(), c.id, "hello", f.emit())
        .await
        .unwrap();
    f.wait_done(r.assistant_message_id).await;
    assert_eq!(f.deltas(r.assistant_message_id), "w0 w1 w2 w3 w4 ");
    let msgs = store::list_messages(&f.db, c.id).await.unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1].content, "w0 w1 w2 w3 w4 ");
    assert_eq!(msgs[1].status, MessageStatus::Complete);
    let st = msgs[1].stats.as_ref().unwrap();
    assert_eq!(
        (
            st.stats.completion_tokens,
            st.finish_reason,
            st.model.as_str()
        ),
        (5, FinishReason::Stop, "scripted")
    );

    // The second turn's prompt carries the system prompt and the whole history.
    let r2 = helpers::send(&f.ctx(), c.id, "again", f.emit())
        .await
        .unwrap();
    f.wait_done(r2.assistant_message_id).await;
    let msgs = store::list_messages(&f.db, c.id).await.unwrap();
    assert_eq!(
        msgs.iter().map(|m| m.role.as_str()).collect::<Vec<_>>(),
        ["user", "assistant", "user", "assistant"]
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn stop_keeps_the_partial_reply(db: SqlitePool) {
    let f = Fixture::new(db, 10_000, 5).await;
    let c = store::create_conversation(&f.db, "t").await.unwrap();
    let r = helpers::send(&f.ctx(), c.id, "go", f.emit()).await.unwrap();
    tokio::time::timeout(WAIT, async {
        while f.deltas(r.assistant_message_id).len() < 20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert!(f.active.cancel(r.assistant_message_id).await);
    f.wait_done(r.assistant_message_id).await;
    let m = store::get_message(&f.db, r.assistant_message_id)
        .await
        .unwrap();
    assert_eq!(m.status, MessageStatus::Complete);
    assert_eq!(m.stats.unwrap().finish_reason, FinishReason::Cancelled);
    assert_eq!(
        m.content,
        f.deltas(r.assistant_message_id),
        "saved text is exactly what streamed"
    );
    assert!(m.content.len() < 10_000 * 3);
    assert!(
        !f.active.cancel(r.assistant_message_id).await,
        "no longer running"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn regenerate_and_edit_resend_replace_the_tail(db: SqlitePool) {
    let f = Fixture::new(db, 3, 1).await;
    let c = store::create_conversation(&f.db, "t").await.unwrap();
    let r1 = helpers::send(&f.ctx(), c.id, "one", f.emit())
        .await
        .unwrap();
    f.wait_done(r1.assistant_message_id).await;
    let r2 = helpers::send(&f.ctx(), c.id, "two", f.emit())
        .await
        .unwrap();
    f.wait_done(r2.assistant_message_id).await;

    let g = helpers::regenerate(&f.ctx(), c.id, f.emit()).await.unwrap();
    f.wait_done(g.assistant_message_id).await;
    let msgs = store::list_messages(&f.db, c.id).await.unwrap();
    assert_eq!(msgs.len(), 4);
    assert_eq!(msgs[3].id, g.assistant_message_id);
    assert!(
        store::get_message(&f.db, r2.assistant_message_id)
            .await
            .is_err(),
        "old reply replaced"
    );

    let first_user = r1.user_message_id.unwrap();
    let e = helpers::edit_resend(&f.ctx(), first_user, "ONE", f.emit())
        .await
        .unwrap();
    f.wait_done(e.assistant_message_id).await;
    let msgs = store::list_messages(&f.db, c.id).await.unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].content, "ONE");
    assert!(
        helpers::edit_resend(&f.ctx(), e.assistant_message_id, "x", f.emit())
            .await
            .is_err(),
        "replies are not editable"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn send_without_a_model_changes_nothing(db: SqlitePool) {
    let loader = Arc::new(ScriptedLoader {
        pieces: words(1),
        pace: Duration::ZERO,
        ..Default::default()
    });
    let engine = EngineService::new(loader);
    let active = ActiveGenerations::default();
    let secrets = SecretStore::memory();
    let ctx = ChatCtx {
        db: &db,
        engine: &engine,
        active: &active,
        secrets: &secrets,
    };
    let c = store::create_conversation(&db, "t").await.unwrap();
    let err = helpers::send(&ctx, c.id, "hi", Arc::new(|_: ChatStreamEvent| {}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "state");
    assert!(store::list_messages(&db, c.id).await.unwrap().is_empty());
    assert_eq!(
        helpers::send(&ctx, c.id, "  ", Arc::new(|_: ChatStreamEvent| {}))
            .await
            .unwrap_err()
            .kind(),
        "invalid"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn shutdown_saves_streaming_replies(db: SqlitePool) {
    let f = Fixture::new(db, 10_000, 5).await;
    let c = store::create_conversation(&f.db, "t").await.unwrap();
    let r = helpers::send(&f.ctx(), c.id, "go", f.emit()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    f.active.cancel_all_and_wait(WAIT).await;
    let m = store::get_message(&f.db, r.assistant_message_id)
        .await
        .unwrap();
    assert_eq!(m.status, MessageStatus::Complete);
    assert!(f.active.running().await.is_empty());
}

#[sqlx::test(migrations = "../migrations")]
async fn prompt_uses_system_prompt_and_skips_failed_replies(db: SqlitePool) {
    let f = Fixture::new(db, 2, 1).await;
    let c = store::create_conversation(&f.db, "t").await.unwrap();
    store::update_settings(&f.db, c.id, "SYS", None)
        .await
        .unwrap();
    store::insert_message(&f.db, c.id, "user", "q1", MessageStatus::Complete)
        .await
        .unwrap();
    store::insert_message(&f.db, c.id, "assistant", "bad", MessageStatus::Error)
        .await
        .unwrap();
    let r = helpers::send(&f.ctx(), c.id, "q2", f.emit()).await.unwrap();
    f.wait_done(r.assistant_message_id).await;
    let prompt = f.prompts.lock().unwrap().last().cloned();
    let Some(Prompt::Chat { messages, .. }) = prompt else {
        panic!("chat prompt expected")
    };
    let roles: Vec<_> = messages
        .iter()
        .map(|m| (m.role.as_str(), m.content.as_str()))
        .collect();
    assert_eq!(roles, [("system", "SYS"), ("user", "q1"), ("user", "q2")]);
}

/// Env var that turns [`child_writes_a_streaming_reply_until_killed`] into the child process.
const CHILD_DB_ENV: &str = "HMOE_KILL_TEST_DB";
/// Flushes the parent waits for before it kills the child.
const FLUSHES_BEFORE_KILL: u64 = 5;

/// The child half of the kill -9 test: streams a reply into the database forever, printing
/// each flush. Runs only when the parent test starts it.
#[tokio::test]
#[ignore = "child process of kill_9_mid_reply_keeps_flushed_text"]
async fn child_writes_a_streaming_reply_until_killed() {
    let Some(path) = std::env::var_os(CHILD_DB_ENV) else {
        return;
    };
    let db = crate::core::db::open(std::path::Path::new(&path))
        .await
        .unwrap();
    let c = store::create_conversation(&db, "killed").await.unwrap();
    let m = store::insert_message(&db, c.id, "assistant", "", MessageStatus::Streaming)
        .await
        .unwrap();
    let mut w = ReplyWriter::new(db.clone(), m.id);
    loop {
        if w.push("tok ", 1).await.unwrap() {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "FLUSHED {} {}", w.flushes(), w.content().len()).unwrap();
            out.flush().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn kill_9_mid_reply_keeps_flushed_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("studio.sqlite");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "core::chat::tests::child_writes_a_streaming_reply_until_killed",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_DB_ENV, &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut flushed_len = 0usize;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("FLUSHED ") {
            let mut it = rest.split(' ');
            let n: u64 = it.next().unwrap().parse().unwrap();
            flushed_len = it.next().unwrap().parse().unwrap();
            if n >= FLUSHES_BEFORE_KILL {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix: no destructor, no final flush
    child.wait().unwrap();
    assert!(
        flushed_len >= FLUSH_EVERY_TOKENS * 4,
        "child flushed before the kill"
    );

    let db = crate::core::db::open(&path).await.unwrap();
    let ok: String = sqlx::query("PRAGMA integrity_check")
        .fetch_one(&db)
        .await
        .unwrap()
        .get(0);
    assert_eq!(ok, "ok");
    let (m, _) = crate::core::db::recover_after_crash(&db).await.unwrap();
    assert_eq!(m, 1);
    let row = sqlx::query("SELECT content, status FROM messages")
        .fetch_one(&db)
        .await
        .unwrap();
    let content: String = row.get(0);
    let status: String = row.get(1);
    assert_eq!(status, "interrupted");
    assert!(
        content.len() >= flushed_len,
        "everything up to the last reported flush survived"
    );
    assert!(content.chars().all(|c| "tok ".contains(c)));
}
