//! Settings against a real state on a temp folder: the token leaves the settings table,
//! the models folder moves (or stays) with downloads and the last model following.

use std::sync::Arc;
use std::time::Duration;

use super::helpers;
use super::secrets::{SecretStore, HF_TOKEN, SECRETS_FILE};
use crate::core::app::setup::build_state_with;
use crate::core::downloads::models::DownloadStatus;
use crate::core::downloads::store;
use crate::core::engine::testing::{words, ScriptedLoader};
use crate::core::state::AppState;

fn loader() -> Arc<ScriptedLoader> {
    Arc::new(ScriptedLoader {
        pieces: words(2),
        pace: Duration::from_millis(1),
        ..Default::default()
    })
}

async fn state(dir: &std::path::Path, secrets: SecretStore) -> AppState {
    build_state_with(dir, loader(), secrets).await.unwrap()
}

async fn raw_settings(s: &AppState) -> String {
    sqlx::query_scalar::<_, String>("SELECT value FROM settings WHERE key = 'app'")
        .fetch_one(&s.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn legacy_plain_token_moves_to_the_secret_store() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = SecretStore::file(dir.path().join(SECRETS_FILE));
    {
        let st = state(dir.path(), secrets.clone()).await;
        // What an earlier version wrote: the token inside the settings JSON.
        sqlx::query("INSERT INTO settings (key, value) VALUES ('app', ?)")
            .bind(r#"{"threads":2,"hf_token":"hf_plaintextTOKEN1234"}"#)
            .execute(&st.db)
            .await
            .unwrap();
        st.db.close().await;
    }
    let st = state(dir.path(), secrets.clone()).await;
    assert_eq!(
        secrets.get(HF_TOKEN).unwrap().as_deref(),
        Some("hf_plaintextTOKEN1234")
    );
    let raw = raw_settings(&st).await;
    assert!(
        !raw.contains("hf_plaintext"),
        "token left in the table: {raw}"
    );
    assert!(raw.contains("\"threads\":2"), "other settings kept: {raw}");
    let view = helpers::view(&st).await.unwrap();
    assert_eq!(view.hf_token_masked.as_deref(), Some("hf_…1234"));
    assert_eq!(view.secret_storage.kind, "file");
    let wire = serde_json::to_string(&view).unwrap();
    assert!(
        !wire.contains("plaintext"),
        "full token sent to the UI: {wire}"
    );
    // The hub requests get the token from the store.
    let cfg = crate::core::downloads::commands::hub_config(&st)
        .await
        .unwrap();
    assert_eq!(cfg.token.as_deref(), Some("hf_plaintextTOKEN1234"));
}

#[tokio::test]
async fn settings_set_cannot_change_the_folder_or_store_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), SecretStore::memory()).await;
    let mut s = helpers::load(&st.db).await.unwrap();
    s.models_folder = Some("/etc".into());
    s.hf_token = Some("hf_sneakySneakySneaky".into());
    s.resume_downloads_on_start = false;
    helpers::set(&st, s).await.unwrap();
    let back = helpers::load(&st.db).await.unwrap();
    assert_eq!(back.models_folder, None);
    assert!(!back.resume_downloads_on_start);
    assert!(!raw_settings(&st).await.contains("sneaky"));
}

/// A models folder with a demo file, a finished download, a paused partial one.
async fn populate(st: &AppState) -> (std::path::PathBuf, i64) {
    let models = st.paths().models;
    std::fs::create_dir_all(models.join("demo")).unwrap();
    std::fs::write(models.join("demo/d.gguf"), vec![1u8; 500]).unwrap();
    let hub = models.join("hub/acme/m");
    std::fs::create_dir_all(&hub).unwrap();
    std::fs::write(hub.join("done.gguf"), vec![2u8; 700]).unwrap();
    std::fs::write(hub.join("part.gguf.part"), vec![3u8; 100]).unwrap();
    let dest = hub.join("part.gguf").display().to_string();
    let sha = "0".repeat(64);
    let id = store::insert(&st.db, "acme/m", "main", "part.gguf", 1000, &sha, &dest)
        .await
        .unwrap();
    store::set_state(&st.db, id, DownloadStatus::Paused, 100, None)
        .await
        .unwrap();
    let mut s = helpers::load(&st.db).await.unwrap();
    s.last_model = Some(hub.join("done.gguf").display().to_string());
    helpers::save(&st.db, &s).await.unwrap();
    (models, id)
}

#[tokio::test]
async fn move_carries_models_downloads_and_last_model_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let st = state(dir.path(), SecretStore::memory()).await;
    let (old, id) = populate(&st).await;
    let change = helpers::change_folder(&st, target.path().display().to_string(), true)
        .await
        .unwrap();
    let new = std::fs::canonicalize(target.path()).unwrap();
    assert_eq!(change.moved_files, 3);
    assert_eq!(change.moved_bytes, 1300);
    assert_eq!(change.left_in, None);
    assert_eq!(st.paths().models, new);
    assert_eq!(st.downloads.models_folder(), new);
    assert!(new.join("hub/acme/m/done.gguf").is_file());
    assert!(!old.join("hub/acme/m/done.gguf").exists());
    let row = store::get(&st.db, id).await.unwrap();
    assert_eq!(
        row.dest,
        new.join("hub/acme/m/part.gguf").display().to_string()
    );
    let s = helpers::load(&st.db).await.unwrap();
    assert_eq!(
        s.last_model.as_deref(),
        Some(
            new.join("hub/acme/m/done.gguf")
                .display()
                .to_string()
                .as_str()
        )
    );
    // The library lists the moved models from the new folder.
    let models = crate::core::library::scan_now(&st).await.unwrap();
    assert!(models
        .iter()
        .any(|m| m.path.starts_with(&new.display().to_string())));
    st.db.close().await;

    // Next start: the folder comes from the settings.
    let again = state(dir.path(), SecretStore::memory()).await;
    assert_eq!(again.paths().models, new);
    assert_eq!(again.downloads.models_folder(), new);
}

#[tokio::test]
async fn leave_switches_without_touching_the_files_and_bad_targets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let st = state(dir.path(), SecretStore::memory()).await;
    let (old, id) = populate(&st).await;
    for bad in ["", "relative/path", "/definitely/not/here"] {
        let e = helpers::change_folder(&st, bad.into(), false)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "invalid", "{bad}: {e}");
    }
    let e = helpers::change_folder(&st, old.join("hub").display().to_string(), true)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("inside"), "{e}");
    assert_eq!(st.paths().models, old, "nothing changed after refusals");

    let change = helpers::change_folder(&st, target.path().display().to_string(), false)
        .await
        .unwrap();
    assert_eq!(change.moved_files, 0);
    assert_eq!(
        change.left_in.as_deref(),
        Some(old.display().to_string().as_str())
    );
    assert!(old.join("hub/acme/m/done.gguf").is_file(), "left in place");
    assert_eq!(
        store::get(&st.db, id).await.unwrap().dest,
        old.join("hub/acme/m/part.gguf").display().to_string(),
        "rows of left files keep their paths"
    );
    assert_eq!(
        st.paths().models,
        std::fs::canonicalize(target.path()).unwrap()
    );
}

#[tokio::test]
async fn local_server_serves_the_model_and_stops() {
    use hmoe_engine::api::{ChatMessage, EngineOptions, SamplingParams};
    use hmoe_engine::calibrate::Calibration;
    use hmoe_engine::synth::{preset, write_synthetic, Recipe, SynthOptions};
    use hmoe_server::RemoteChat;

    let dir = tempfile::tempdir().unwrap();
    // Without a loaded model there is nothing to serve.
    let st = state(dir.path(), SecretStore::memory()).await;
    let e = helpers::start_server(&st, 0, None).await.unwrap_err();
    assert_eq!(e.kind(), "state", "{e}");

    let model = dir.path().join("tiny.gguf");
    let synth = SynthOptions {
        preset: preset("tiny").unwrap(),
        recipe: Recipe::Q8_0,
        seed: 7,
        layers: Some(2),
    };
    write_synthetic(&synth, &model, |_, _| {}).unwrap();
    let opts = EngineOptions {
        calibration: Calibration::Skip,
        ..EngineOptions::default()
    };
    let server = super::server::LocalServer::default();
    let s = server
        .start(&model, opts.clone(), 0, Some(" sk-local ".into()))
        .await
        .unwrap();
    assert!(s.running && s.api_key_required);
    let url = s.url.clone().unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/v1"),
        "{url}"
    );
    assert_eq!(server.status().await, s);
    let name = s.model.clone().unwrap();
    let c = RemoteChat::new(&url, Some("sk-local".into()), &name).unwrap();
    assert_eq!(c.list_models().await.unwrap(), vec![name.clone()]);
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: 4,
        ..SamplingParams::default()
    };
    let msg = [ChatMessage {
        role: "user".into(),
        content: "hi".into(),
    }];
    let (_, stats) = c.chat(&msg, &params).await.unwrap();
    assert!(stats.completion_tokens > 0);
    let anon = RemoteChat::new(&url, None, &name).unwrap();
    assert!(anon
        .list_models()
        .await
        .unwrap_err()
        .to_string()
        .contains("401"));
    let e = server.start(&model, opts, 0, None).await.unwrap_err();
    assert!(e.to_string().contains("already running"), "{e}");

    assert!(!server.stop().await.running);
    assert!(!server.status().await.running);
    assert!(
        c.list_models().await.is_err(),
        "stopped server still answers"
    );
}

#[tokio::test]
async fn local_server_shares_the_apps_engine() {
    use crate::core::engine::adapter::EngineLoader;
    use hmoe_engine::api::{ChatMessage, EngineOptions, SamplingParams};
    use hmoe_engine::calibrate::Calibration;
    use hmoe_engine::synth::{preset, write_synthetic, Recipe, SynthOptions};
    use hmoe_server::RemoteChat;

    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    let synth = SynthOptions {
        preset: preset("tiny").unwrap(),
        recipe: Recipe::Q8_0,
        seed: 5,
        layers: Some(2),
    };
    write_synthetic(&synth, &model, |_, _| {}).unwrap();
    let st = build_state_with(dir.path(), Arc::new(EngineLoader), SecretStore::memory())
        .await
        .unwrap();
    let opts = EngineOptions {
        calibration: Calibration::Skip,
        ..EngineOptions::default()
    };
    st.engine
        .load(model.clone(), opts, Arc::new(|_| {}))
        .await
        .unwrap();
    let loaded = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if let Some(m) = st.engine.current().await {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("model loaded");
    // Steps of the app's engine are visible here: a request through the server must show up.
    let mut steps = loaded.sched().expect("engine scheduler").subscribe();

    let s = helpers::start_server(&st, 0, None).await.unwrap();
    let url = s.url.clone().unwrap();
    let c = RemoteChat::new(&url, None, &s.model.clone().unwrap()).unwrap();
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: 3,
        ..SamplingParams::default()
    };
    let msg = [ChatMessage {
        role: "user".into(),
        content: "hi".into(),
    }];
    let (_, stats) = c.chat(&msg, &params).await.unwrap();
    assert!(stats.completion_tokens > 0);
    let step = tokio::time::timeout(Duration::from_secs(10), steps.recv())
        .await
        .expect("a step of the app's engine")
        .expect("telemetry channel open");
    assert!(!step.layers.is_empty());
    assert!(!st.server.stop().await.running);
}
