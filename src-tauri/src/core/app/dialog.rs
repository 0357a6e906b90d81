//! Native file dialogs, opened by Rust (the UI has no file-system access), with a test seam:
//! WebDriver cannot drive a native dialog, so the end-to-end run sets these variables and
//! the dialogs answer with fixed paths instead of opening. Only whoever starts the process
//! can set them, and that person can already read and write the same files.
//! "Save as" also writes the file, atomically (temporary file, fsync, rename): a reader
//! never sees a half-written export.

use std::path::{Path, PathBuf};

use tauri::{AppHandle, Runtime};
use tauri_plugin_dialog::DialogExt;

use super::atomic;
use crate::core::error::{AppError, AppResult};

/// "Open file" dialogs return this path.
pub const OPEN_FILE_ENV: &str = "HMOE_STUDIO_DIALOG_OPEN_FILE";
/// "Choose folder" dialogs return this path.
pub const PICK_FOLDER_ENV: &str = "HMOE_STUDIO_DIALOG_FOLDER";
/// "Save as" dialogs return `<this folder>/<suggested file name>`.
pub const SAVE_DIR_ENV: &str = "HMOE_STUDIO_DIALOG_SAVE_DIR";

fn stub(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

async fn answer(
    rx: tokio::sync::oneshot::Receiver<Option<tauri_plugin_dialog::FilePath>>,
) -> AppResult<Option<PathBuf>> {
    let Some(p) = rx
        .await
        .map_err(|_| AppError::State("the file dialog closed unexpectedly".into()))?
    else {
        return Ok(None);
    };
    p.into_path()
        .map(Some)
        .map_err(|e| AppError::invalid("path", e.to_string()))
}

/// Asks for one existing file; None if cancelled.
pub async fn open_file<R: Runtime>(
    app: &AppHandle<R>,
    filter: &str,
    extensions: &[&str],
) -> AppResult<Option<PathBuf>> {
    if let Some(p) = stub(OPEN_FILE_ENV) {
        return Ok(Some(p));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    app.dialog()
        .file()
        .add_filter(filter, extensions)
        .pick_file(move |p| {
            let _ = tx.send(p);
        });
    answer(rx).await
}

/// Asks for a folder; None if cancelled.
pub async fn pick_folder<R: Runtime>(app: &AppHandle<R>) -> AppResult<Option<PathBuf>> {
    if let Some(p) = stub(PICK_FOLDER_ENV) {
        return Ok(Some(p));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    app.dialog().file().pick_folder(move |p| {
        let _ = tx.send(p);
    });
    answer(rx).await
}

/// Asks where to save `suggested` (a file name); None if cancelled. Private: exports go
/// through [`save_bytes`] / [`save_with`], which write atomically.
async fn pick_save_path<R: Runtime>(
    app: &AppHandle<R>,
    extension: &str,
    suggested: &str,
) -> AppResult<Option<PathBuf>> {
    if let Some(dir) = stub(SAVE_DIR_ENV) {
        return Ok(Some(dir.join(suggested)));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    app.dialog()
        .file()
        .add_filter(extension, &[extension])
        .set_file_name(suggested)
        .save_file(move |p| {
            let _ = tx.send(p);
        });
    answer(rx).await
}

/// Asks where to save `suggested`, then has `write` fill a temporary file (given its
/// path) on a blocking thread and renames it over the chosen file once complete and
/// fsynced (`atomic::write_with`): the file never appears half-written, and a failure
/// leaves no temporary file. Returns the path, or None if cancelled.
pub async fn save_with<R: Runtime>(
    app: &AppHandle<R>,
    extension: &str,
    suggested: &str,
    write: impl FnOnce(&Path) -> AppResult<()> + Send + 'static,
) -> AppResult<Option<PathBuf>> {
    let Some(path) = pick_save_path(app, extension, suggested).await? else {
        return Ok(None);
    };
    let target = path.clone();
    tokio::task::spawn_blocking(move || atomic::write_with(&target, write))
        .await
        .map_err(|e| AppError::State(format!("saving {} failed: {e}", path.display())))??;
    Ok(Some(path))
}

/// [`save_with`] for content already in memory.
pub async fn save_bytes<R: Runtime>(
    app: &AppHandle<R>,
    extension: &str,
    suggested: &str,
    bytes: Vec<u8>,
) -> AppResult<Option<PathBuf>> {
    save_with(app, extension, suggested, move |tmp| {
        std::fs::write(tmp, &bytes).map_err(|e| AppError::io("write", tmp, e))
    })
    .await
}
