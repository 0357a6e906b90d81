//! Declares the app's own commands so that capabilities can allow them one by one
//! (without an app manifest every command would be reachable from the UI).

/// Every command the UI may call; `capabilities/default.json` allows exactly these.
const COMMANDS: &[&str] = &[
    "app_info",
    "conversations_list",
    "conversation_create",
    "conversation_rename",
    "conversation_delete",
    "conversation_update_settings",
    "conversation_export",
    "conversation_export_save",
    "messages_list",
    "chat_send",
    "chat_regenerate",
    "chat_edit_resend",
    "chat_stop",
    "engine_status",
    "engine_load",
    "engine_unload",
    "sched_subscribe",
    "sched_unsubscribe",
    "sched_snapshot",
    "sched_options_get",
    "sched_options_set",
    "sched_whatif",
    "sched_export_trace",
    "sched_export_plot",
    "models_list",
    "models_import",
    "models_delete",
    "system_info",
    "hub_list_files",
    "hub_search",
    "downloads_list",
    "download_start",
    "download_pause",
    "download_resume",
    "download_cancel",
    "settings_get",
    "settings_set",
    "conversation_set_backend",
    "remote_endpoints_list",
    "remote_endpoint_save",
    "remote_endpoint_delete",
    "remote_endpoint_test",
    "settings_set_hf_token",
    "models_folder_check",
    "models_folder_pick",
    "models_folder_change",
    "local_server_status",
    "local_server_start",
    "local_server_stop",
    "panel_settings_get",
    "panel_settings_set",
];

fn main() {
    let attrs = tauri_build::Attributes::new()
        .app_manifest(tauri_build::AppManifest::new().commands(COMMANDS));
    if let Err(e) = tauri_build::try_build(attrs) {
        // A build script reports failure by panicking; print the reason first.
        eprintln!("tauri-build failed: {e:#}");
        std::process::exit(1);
    }
}
