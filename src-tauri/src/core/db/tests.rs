use sqlx::{Row, SqlitePool};

use super::helpers::{open, recover_after_crash};
use crate::core::chat::models::{ConversationSettings, MessageStats, MessageStatus};
use crate::core::chat::store;
use hmoe_engine::api::{FinishReason, GenerationStats};

#[tokio::test]
async fn open_sets_wal_foreign_keys_and_normal_sync() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir.path().join("a/b/studio.sqlite")).await.unwrap();
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&db)
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode, "wal");
    let fk: i64 = sqlx::query("PRAGMA foreign_keys")
        .fetch_one(&db)
        .await
        .unwrap()
        .get(0);
    assert_eq!(fk, 1);
    // 1 = NORMAL (see the durability note in db/mod.rs).
    let sync: i64 = sqlx::query("PRAGMA synchronous")
        .fetch_one(&db)
        .await
        .unwrap()
        .get(0);
    assert_eq!(sync, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn conversations_crud_and_search(db: SqlitePool) {
    let a = store::create_conversation(&db, "  Rust questions  ")
        .await
        .unwrap();
    assert_eq!(a.title, "Rust questions");
    let b = store::create_conversation(&db, "Cooking").await.unwrap();
    store::insert_message(
        &db,
        b.id,
        "user",
        "how much is 50% of flour?",
        MessageStatus::Complete,
    )
    .await
    .unwrap();
    assert!(store::create_conversation(&db, "   ").await.is_err());

    let all = store::list_conversations(&db, None).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].id, b.id, "newest first");
    let by_text = store::list_conversations(&db, Some("flour")).await.unwrap();
    assert_eq!(by_text.iter().map(|c| c.id).collect::<Vec<_>>(), vec![b.id]);
    let by_title = store::list_conversations(&db, Some("rust")).await.unwrap();
    assert_eq!(
        by_title.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![a.id]
    );
    // "%" is a literal, not a wildcard that matches everything.
    let pct = store::list_conversations(&db, Some("50%")).await.unwrap();
    assert_eq!(pct.len(), 1);
    assert!(store::list_conversations(&db, Some("_"))
        .await
        .unwrap()
        .is_empty());

    let r = store::rename_conversation(&db, a.id, "Renamed")
        .await
        .unwrap();
    assert_eq!(r.title, "Renamed");
    let settings = ConversationSettings {
        enable_thinking: true,
        ..Default::default()
    };
    let u = store::update_settings(&db, a.id, "Be brief.", Some(&settings))
        .await
        .unwrap();
    assert_eq!(u.system_prompt, "Be brief.");
    assert_eq!(u.settings, Some(settings));

    store::delete_conversation(&db, b.id).await.unwrap();
    let left: i64 = sqlx::query("SELECT COUNT(*) FROM messages")
        .fetch_one(&db)
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "messages cascade with their conversation");
    assert!(matches!(
        store::delete_conversation(&db, b.id).await,
        Err(crate::core::error::AppError::NotFound { .. })
    ));
}

#[sqlx::test(migrations = "../migrations")]
async fn messages_keep_order_status_and_stats(db: SqlitePool) {
    let c = store::create_conversation(&db, "t").await.unwrap();
    let u = store::insert_message(&db, c.id, "user", "hi", MessageStatus::Complete)
        .await
        .unwrap();
    let a = store::insert_message(&db, c.id, "assistant", "", MessageStatus::Streaming)
        .await
        .unwrap();
    assert_eq!((u.seq, a.seq), (1, 2));
    assert!(
        store::insert_message(&db, c.id, "robot", "x", MessageStatus::Complete)
            .await
            .is_err()
    );
    assert!(
        store::insert_message(&db, 9999, "user", "x", MessageStatus::Complete)
            .await
            .is_err()
    );

    store::update_content(&db, a.id, "Hel").await.unwrap();
    let stats = MessageStats {
        model: "demo".into(),
        stats: GenerationStats {
            prompt_tokens: 5,
            completion_tokens: 3,
            time_to_first_token_s: 0.25,
            prefill_tok_s: 20.0,
            decode_tok_s: 12.5,
        },
        finish_reason: FinishReason::Cancelled,
    };
    store::finish_message(
        &db,
        a.id,
        "Hello",
        MessageStatus::Complete,
        None,
        Some(&stats),
    )
    .await
    .unwrap();
    let msgs = store::list_messages(&db, c.id).await.unwrap();
    assert_eq!(msgs[1].content, "Hello");
    assert_eq!(msgs[1].status, MessageStatus::Complete);
    assert_eq!(msgs[1].stats.as_ref(), Some(&stats));

    assert_eq!(store::delete_from(&db, c.id, 2).await.unwrap(), 1);
    assert_eq!(store::list_messages(&db, c.id).await.unwrap().len(), 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn recovery_marks_streaming_replies_interrupted(db: SqlitePool) {
    let c = store::create_conversation(&db, "t").await.unwrap();
    let done = store::insert_message(&db, c.id, "assistant", "ok", MessageStatus::Complete)
        .await
        .unwrap();
    let live = store::insert_message(&db, c.id, "assistant", "partial", MessageStatus::Streaming)
        .await
        .unwrap();
    let (m, _) = recover_after_crash(&db).await.unwrap();
    assert_eq!(m, 1);
    assert_eq!(
        store::get_message(&db, live.id).await.unwrap().status,
        MessageStatus::Interrupted
    );
    assert_eq!(
        store::get_message(&db, live.id).await.unwrap().content,
        "partial"
    );
    assert_eq!(
        store::get_message(&db, done.id).await.unwrap().status,
        MessageStatus::Complete
    );
}
