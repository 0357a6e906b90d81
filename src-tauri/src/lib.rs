//! Hybrid MoE Studio: the Tauri 2 desktop app around the `hmoe-engine`.
//!
//! Back end layout follows Jan: `core/<domain>/{commands,helpers,models,tests}.rs`.
#![deny(missing_docs)]

pub mod core;
pub mod hubsim;

use tauri::{RunEvent, Runtime};

/// The command handler (shared by the app and the mock-runtime tests).
pub fn handler<R: Runtime>() -> impl Fn(tauri::ipc::Invoke<R>) -> bool + Send + Sync + 'static {
    use crate::core::{app, chat, downloads, engine, library, sched, settings};
    tauri::generate_handler![
        app::commands::app_info,
        chat::commands::conversations_list,
        chat::commands::conversation_create,
        chat::commands::conversation_rename,
        chat::commands::conversation_delete,
        chat::commands::conversation_update_settings,
        chat::commands::conversation_export,
        chat::commands::conversation_export_save,
        chat::commands::messages_list,
        chat::commands::chat_send,
        chat::commands::chat_regenerate,
        chat::commands::chat_edit_resend,
        chat::commands::chat_stop,
        chat::commands::conversation_set_backend,
        chat::commands::remote_endpoints_list,
        chat::commands::remote_endpoint_save,
        chat::commands::remote_endpoint_delete,
        chat::commands::remote_endpoint_test,
        engine::commands::engine_status,
        engine::commands::engine_load,
        engine::commands::engine_unload,
        sched::commands::sched_subscribe,
        sched::commands::sched_unsubscribe,
        sched::commands::sched_snapshot,
        sched::commands::sched_options_get,
        sched::commands::sched_options_set,
        sched::commands::sched_whatif,
        sched::commands::sched_export_trace,
        sched::commands::sched_export_plot,
        library::commands::models_list,
        library::commands::models_import,
        library::commands::models_delete,
        library::commands::system_info,
        downloads::commands::hub_list_files,
        downloads::commands::hub_search,
        downloads::commands::downloads_list,
        downloads::commands::download_start,
        downloads::commands::download_pause,
        downloads::commands::download_resume,
        downloads::commands::download_cancel,
        settings::commands::settings_get,
        settings::commands::settings_set,
        settings::commands::settings_set_hf_token,
        settings::commands::models_folder_check,
        settings::commands::models_folder_pick,
        settings::commands::models_folder_change,
        settings::commands::local_server_status,
        settings::commands::local_server_start,
        settings::commands::local_server_stop,
        settings::commands::panel_settings_get,
        settings::commands::panel_settings_set,
    ]
}

/// Runs the desktop app.
pub fn run() -> anyhow::Result<()> {
    let app = tauri::Builder::default()
        .plugin(tauri_plugin_dialog::init())
        .setup(|app| {
            core::app::setup::setup(app.handle())
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)?;
            Ok(())
        })
        .invoke_handler(handler())
        .build(tauri::generate_context!())?;
    app.run(|handle, event| {
        if let RunEvent::ExitRequested { .. } = event {
            core::app::setup::shutdown(handle);
        }
    });
    Ok(())
}
