//! Command handlers through Tauri's mock runtime: the real IPC path (argument names,
//! serialisation, typed errors) without a window system.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{
    get_ipc_response, mock_builder, mock_context, noop_assets, MockRuntime, INVOKE_KEY,
};
use tauri::webview::InvokeRequest;
use tauri::{App, WebviewWindow, WebviewWindowBuilder};

use super::setup::build_state_with;
use crate::core::engine::testing::{words, ScriptedLoader};
use crate::core::settings::secrets::SecretStore;

struct Harness {
    _dir: tempfile::TempDir,
    _app: App<MockRuntime>,
    webview: WebviewWindow<MockRuntime>,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let loader = Arc::new(ScriptedLoader {
        pieces: words(4),
        pace: Duration::from_millis(1),
        ..Default::default()
    });
    let secrets = SecretStore::file(
        dir.path()
            .join(crate::core::settings::secrets::SECRETS_FILE),
    );
    let state =
        tauri::async_runtime::block_on(build_state_with(dir.path(), loader, secrets)).unwrap();
    let app = mock_builder()
        .invoke_handler(crate::handler())
        .manage(state)
        .build(mock_context(noop_assets()))
        .unwrap();
    let webview = WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
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
        url: "tauri://localhost".parse().unwrap(),
        body: InvokeBody::Json(body),
        headers: Default::default(),
        invoke_key: INVOKE_KEY.to_string(),
    };
    get_ipc_response(&h.webview, req).map(|b| b.deserialize::<Value>().unwrap())
}

#[test]
fn conversation_commands_round_trip() {
    let h = harness();
    let c = call(&h, "conversation_create", json!({ "title": "First" })).unwrap();
    let id = c["id"].as_i64().unwrap();
    assert_eq!(c["title"], "First");
    let r = call(
        &h,
        "conversation_rename",
        json!({ "id": id, "title": "Renamed" }),
    )
    .unwrap();
    assert_eq!(r["title"], "Renamed");
    let list = call(&h, "conversations_list", json!({ "query": "renam" })).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let md = call(
        &h,
        "conversation_export",
        json!({ "id": id, "format": "markdown" }),
    )
    .unwrap();
    assert!(md.as_str().unwrap().starts_with("# Renamed"));
    let js = call(
        &h,
        "conversation_export",
        json!({ "id": id, "format": "json" }),
    )
    .unwrap();
    let parsed: Value = serde_json::from_str(js.as_str().unwrap()).unwrap();
    assert_eq!(parsed["conversation"]["id"], id);
    assert!(call(&h, "messages_list", json!({ "conversationId": id }))
        .unwrap()
        .as_array()
        .unwrap()
        .is_empty());
    call(&h, "conversation_delete", json!({ "id": id })).unwrap();
    assert!(call(&h, "conversations_list", json!({}))
        .unwrap()
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn errors_are_typed() {
    let h = harness();
    let e = call(
        &h,
        "conversation_rename",
        json!({ "id": 424242, "title": "x" }),
    )
    .unwrap_err();
    assert_eq!(e["kind"], "not_found");
    assert!(e["message"].as_str().unwrap().contains("424242"));
    let e = call(&h, "conversation_create", json!({ "title": "   " })).unwrap_err();
    assert_eq!(e["kind"], "invalid");
    let e = call(
        &h,
        "engine_load",
        json!({ "modelId": "/etc/passwd", "onEvent": "__CHANNEL__:1" }),
    )
    .unwrap_err();
    assert_eq!(
        e["kind"], "not_found",
        "only library models can be loaded: {e}"
    );
    let e = call(&h, "models_delete", json!({ "id": "/etc/passwd" })).unwrap_err();
    assert_eq!(
        e["kind"], "not_found",
        "only library models can be deleted: {e}"
    );
}

#[test]
fn settings_validate_and_persist() {
    let h = harness();
    let v = call(&h, "settings_get", json!({})).unwrap();
    assert_eq!(v["settings"]["policy"], "value");
    let mut s = v["settings"].clone();
    s["threads"] = json!(3);
    s["hf_endpoint"] = json!("http://127.0.0.1:9");
    let saved = call(&h, "settings_set", json!({ "settings": s })).unwrap();
    assert_eq!(saved["settings"]["threads"], 3);
    assert_eq!(
        call(&h, "settings_get", json!({})).unwrap()["settings"]["threads"],
        3
    );
    let mut bad = s.clone();
    bad["policy"] = json!("random");
    assert_eq!(
        call(&h, "settings_set", json!({ "settings": bad })).unwrap_err()["kind"],
        "invalid"
    );
    let mut bad = s;
    bad["hf_endpoint"] = json!("file:///etc");
    assert_eq!(
        call(&h, "settings_set", json!({ "settings": bad })).unwrap_err()["kind"],
        "invalid"
    );
}

#[test]
fn downloads_validate_input_before_any_request() {
    let h = harness();
    for repo in ["../x", "a/b/c", "/abs"] {
        let e = call(&h, "hub_list_files", json!({ "repo": repo })).unwrap_err();
        assert_eq!(e["kind"], "invalid", "{repo}: {e}");
    }
    let e = call(
        &h,
        "download_start",
        json!({ "repo": "a/b", "revision": "main", "files": ["../../x.gguf"] }),
    )
    .unwrap_err();
    assert_eq!(e["kind"], "invalid");
    assert!(call(&h, "downloads_list", json!({}))
        .unwrap()
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn chat_send_without_a_model_is_a_state_error() {
    let h = harness();
    let c = call(&h, "conversation_create", json!({})).unwrap();
    let e = call(
        &h,
        "chat_send",
        json!({ "conversationId": c["id"], "text": "hi", "onEvent": "__CHANNEL__:7" }),
    )
    .unwrap_err();
    assert_eq!(e["kind"], "state", "{e}");
    let st = call(&h, "engine_status", json!({})).unwrap();
    assert_eq!(st["state"], "idle");
}

#[test]
fn token_is_stored_as_a_secret_and_only_shown_masked() {
    let h = harness();
    let v = call(
        &h,
        "settings_set_hf_token",
        json!({ "token": "hf_abcdefghijklmnopQRST" }),
    )
    .unwrap();
    assert_eq!(v["hf_token_masked"], "hf_…QRST");
    assert_eq!(v["secret_storage"]["kind"], "file");
    let all = call(&h, "settings_get", json!({})).unwrap().to_string();
    assert!(
        !all.contains("abcdefghijklmnop"),
        "full token reached the UI: {all}"
    );
    // Saving the other settings (what the UI sends back) keeps the token.
    let mut s = call(&h, "settings_get", json!({})).unwrap()["settings"].clone();
    s["threads"] = json!(2);
    let v = call(&h, "settings_set", json!({ "settings": s })).unwrap();
    assert_eq!(v["hf_token_masked"], "hf_…QRST");
    let v = call(&h, "settings_set_hf_token", json!({ "token": null })).unwrap();
    assert!(v["hf_token_masked"].is_null());
}

#[test]
fn folder_and_remote_commands_validate_their_input() {
    let h = harness();
    let c = call(
        &h,
        "models_folder_check",
        json!({ "path": "/no/such/folder" }),
    )
    .unwrap();
    assert_eq!(c["ok"], false);
    assert!(c["problems"][0]
        .as_str()
        .unwrap()
        .contains("does not exist"));
    let e = call(
        &h,
        "models_folder_change",
        json!({ "path": "relative", "moveModels": true }),
    )
    .unwrap_err();
    assert_eq!(e["kind"], "invalid");
    let conv = call(&h, "conversation_create", json!({})).unwrap();
    let e = call(
        &h,
        "conversation_set_backend",
        json!({ "id": conv["id"], "backend": { "kind": "remote", "endpoint_id": 99 } }),
    )
    .unwrap_err();
    assert_eq!(e["kind"], "not_found");
    let ep = call(
        &h,
        "remote_endpoint_save",
        json!({ "endpoint": { "id": null, "name": "lab", "url": "http://127.0.0.1:9/v1",
                              "model": "m", "api_key": "sk-0123456789abcdef" } }),
    )
    .unwrap();
    assert_eq!(ep["api_key_masked"], "sk-…cdef");
    let c2 = call(
        &h,
        "conversation_set_backend",
        json!({ "id": conv["id"], "backend": { "kind": "remote", "endpoint_id": ep["id"] } }),
    )
    .unwrap();
    assert_eq!(c2["backend"]["endpoint_id"], ep["id"]);
    let list = call(&h, "remote_endpoints_list", json!({}))
        .unwrap()
        .to_string();
    assert!(!list.contains("0123456789"), "{list}");
    let e = call(
        &h,
        "remote_endpoint_save",
        json!({ "endpoint": { "id": null, "name": "x", "url": "file:///etc", "model": "m", "api_key": null } }),
    )
    .unwrap_err();
    assert_eq!(e["kind"], "invalid");
}

#[test]
fn panel_settings_persist_apart_from_app_settings() {
    let h = harness();
    let d = call(&h, "panel_settings_get", json!({})).unwrap();
    assert_eq!(d["docked"], false);
    assert_eq!(d["sections"]["cache_map"], true);
    assert_eq!(d["palette"], "default");
    let mut s = d.clone();
    s["docked"] = json!(true);
    s["sections"]["timeline"] = json!(false);
    s["window_steps"] = json!(32);
    s["palette"] = json!("colorblind");
    let saved = call(&h, "panel_settings_set", json!({ "settings": s })).unwrap();
    assert_eq!(saved, s);
    // Saving the app settings (the settings screen) leaves the panel's document alone.
    let app = call(&h, "settings_get", json!({})).unwrap()["settings"].clone();
    call(&h, "settings_set", json!({ "settings": app })).unwrap();
    assert_eq!(call(&h, "panel_settings_get", json!({})).unwrap(), s);
    let mut bad = s.clone();
    bad["window_steps"] = json!(4);
    let e = call(&h, "panel_settings_set", json!({ "settings": bad })).unwrap_err();
    assert_eq!(e["kind"], "invalid", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("window_steps"),
        "{e}"
    );
    let mut bad = s.clone();
    bad["palette"] = json!(17);
    assert!(call(&h, "panel_settings_set", json!({ "settings": bad })).is_err());
    assert_eq!(call(&h, "panel_settings_get", json!({})).unwrap(), s);
}

/// Every command in build.rs (the app manifest) is allowed in the capability, and nothing
/// else is: a command added to one list and not the other would be unreachable or open.
#[test]
fn capability_allows_exactly_the_manifest_commands() {
    let build = include_str!("../../../build.rs");
    let list = &build[build.find("const COMMANDS").unwrap()..];
    let list = &list[..list.find("];").unwrap()];
    let mut commands: Vec<String> = list
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"'))
        .filter_map(|l| l.strip_suffix("\","))
        .map(|c| format!("allow-{}", c.replace('_', "-")))
        .collect();
    let cap: Value =
        serde_json::from_str(include_str!("../../../capabilities/default.json")).unwrap();
    let mut allowed: Vec<String> = cap["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .filter(|p| p.starts_with("allow-"))
        .map(String::from)
        .collect();
    commands.sort();
    allowed.sort();
    assert!(commands.len() > 40, "parsed {} commands", commands.len());
    assert_eq!(commands, allowed);
}
