//! Atomic file replacement for exports: the content goes to a temporary file in the target's
//! folder, is fsynced, then renamed over the target. A reader (the user, a script, the e2e
//! test) sees either no file / the previous file or the complete new one, never a prefix;
//! a failed write removes the temporary file and leaves the target as it was.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::core::error::{AppError, AppResult};

/// Distinguishes temporary files of concurrent writes within one process.
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);
/// Suffix of temporary files (hidden: the name also starts with a dot).
pub const TMP_SUFFIX: &str = ".hmoe-tmp";

/// Removes the temporary file unless disarmed (on every early return and on panic).
struct TmpGuard<'a> {
    path: &'a Path,
    armed: bool,
}

impl Drop for TmpGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = std::fs::remove_file(self.path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("could not remove {}: {e}", self.path.display());
                }
            }
        }
    }
}

/// The file a write to `target` must replace: a symlink's destination (so saving over a
/// link updates what it points to instead of replacing the link), else `target` itself.
fn resolve(target: &Path) -> AppResult<PathBuf> {
    match std::fs::symlink_metadata(target) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::canonicalize(target).map_err(|e| AppError::io("resolve link", target, e))
        }
        _ => Ok(target.to_path_buf()),
    }
}

/// Writes `target` atomically: `write` fills a fresh temporary file (given its path) in
/// the same folder, which is then fsynced and renamed over `target`, and the folder is
/// fsynced so the rename survives a crash. Blocking. On any error the temporary file is
/// removed, `target` is untouched and the error names the path and the step.
pub fn write_with(target: &Path, write: impl FnOnce(&Path) -> AppResult<()>) -> AppResult<()> {
    let target = resolve(target)?;
    let name = target
        .file_name()
        .ok_or_else(|| AppError::invalid("path", format!("{} names no file", target.display())))?;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}-{}{TMP_SUFFIX}",
        name.to_string_lossy(),
        std::process::id(),
        NEXT_TMP.fetch_add(1, Ordering::Relaxed)
    ));
    // create_new: never truncate a file someone else owns under that name.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| AppError::io("create", &tmp, e))?;
    let mut guard = TmpGuard {
        path: &tmp,
        armed: true,
    };
    write(&tmp)?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| AppError::io("sync", &tmp, e))?;
    std::fs::rename(&tmp, &target).map_err(|e| AppError::io("rename", &target, e))?;
    guard.armed = false;
    sync_dir(&dir)
}

/// Writes `bytes` to `target` atomically (see [`write_with`]). Blocking.
pub fn write_bytes(target: &Path, bytes: &[u8]) -> AppResult<()> {
    write_with(target, |tmp| {
        std::fs::write(tmp, bytes).map_err(|e| AppError::io("write", tmp, e))
    })
}

/// Makes a rename in `dir` durable (POSIX: the directory entry lives in the folder).
#[cfg(unix)]
fn sync_dir(dir: &Path) -> AppResult<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| AppError::io("sync folder", dir, e))
}

/// Windows cannot open a folder as a file; NTFS journals the rename itself.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> AppResult<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Mid-write the target holds the old content (or does not exist), never a prefix of
    /// the new one; afterwards it holds all of it and no temporary file is left.
    #[test]
    fn target_never_appears_half_written() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("trace.jsonl");
        let content: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let (first, rest) = content.split_at(content.len() / 2);
        write_with(&target, |tmp| {
            let mut f = std::fs::OpenOptions::new().write(true).open(tmp).unwrap();
            f.write_all(first).unwrap();
            f.flush().unwrap();
            assert!(!target.exists(), "target visible before the write finished");
            f.write_all(rest).unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), content);
        assert_eq!(names(dir.path()), ["trace.jsonl"]);

        // Replacing: the old content stays readable until the new one is complete.
        write_with(&target, |tmp| {
            std::fs::write(tmp, b"partial").unwrap();
            assert_eq!(std::fs::read(&target).unwrap(), content);
            std::fs::write(tmp, b"new complete content").unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new complete content");
        assert_eq!(names(dir.path()), ["trace.jsonl"]);
    }

    /// A reader polling the target while large files are written sees only whole files.
    #[test]
    fn concurrent_reader_sees_whole_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("plot.svg");
        let versions: Vec<Vec<u8>> = (0..20u8)
            .map(|v| {
                let mut b = vec![b'<'];
                b.extend(std::iter::repeat_n(b'a' + v, 300_000));
                b.push(b'>');
                b
            })
            .collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (target, stop) = (target.clone(), stop.clone());
            std::thread::spawn(move || {
                loop {
                    // One last read after the writer finished: the file must be there.
                    let done = stop.load(Ordering::Relaxed);
                    match std::fs::read(&target) {
                        Ok(b) => {
                            assert_eq!(b.len(), 300_002, "a partial file was visible");
                            assert_eq!((b[0], b[b.len() - 1]), (b'<', b'>'));
                        }
                        Err(e) => assert!(!done, "no file after the writes: {e}"),
                    }
                    if done {
                        break;
                    }
                }
            })
        };
        for v in &versions {
            write_bytes(&target, v).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().expect("the reader saw a partial file");
        assert_eq!(std::fs::read(&target).unwrap(), versions[19]);
        assert_eq!(names(dir.path()), ["plot.svg"]);
    }

    /// A failing write returns its own error, removes the temporary file and keeps the
    /// previous target as it was.
    #[test]
    fn failed_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.json");
        std::fs::write(&target, b"previous").unwrap();
        let e = write_with(&target, |tmp| {
            std::fs::write(tmp, b"half of it").unwrap();
            Err(AppError::invalid("svg", "disk on fire"))
        })
        .unwrap_err();
        assert!(matches!(e, AppError::Invalid { field: "svg", .. }), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"previous");
        assert_eq!(names(dir.path()), ["out.json"]);

        // The rename fails (the target is a non-empty folder): typed I/O error naming it.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("inside"), b"x").unwrap();
        let e = write_bytes(&blocked, b"data").unwrap_err();
        match &e {
            AppError::Io { op, path, .. } => {
                assert_eq!(*op, "rename");
                assert!(path.ends_with("blocked"), "{path}");
            }
            other => panic!("expected an I/O error, got {other}"),
        }
        assert_eq!(names(dir.path()), ["blocked", "out.json"]);

        // The folder does not exist: nothing is created anywhere.
        let e = write_bytes(&dir.path().join("missing/out.json"), b"x").unwrap_err();
        assert!(matches!(e, AppError::Io { op: "create", .. }), "{e}");
        assert_eq!(names(dir.path()), ["blocked", "out.json"]);
    }

    /// Saving over a symlink updates the file it points to and keeps the link.
    #[cfg(unix)]
    #[test]
    fn writes_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.md");
        let link = dir.path().join("link.md");
        std::fs::write(&real, b"old").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_bytes(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["link.md", "real.md"]);
    }
}
