//! Changing the models folder: checking a candidate (exists, is a folder, writable, space
//! for a move, no name clashes) and moving the models there file by file (a rename on the
//! same file system, copy + delete across file systems, rolled back on failure).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Space kept free on the target beyond the bytes a move copies (the file system needs room
/// for its own bookkeeping, and a full disk breaks the database next door).
pub const MOVE_MARGIN_BYTES: u64 = 256 << 20;

/// What a candidate folder looks like.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FolderCheck {
    /// The folder (absolute, symlinks resolved when it exists).
    pub path: String,
    /// Usable as the models folder (with "leave").
    pub ok: bool,
    /// Why not.
    pub problems: Vec<String>,
    /// Whether the models can also be moved there, and if not why.
    pub can_move: bool,
    /// Why a move is not possible.
    pub move_problem: Option<String>,
    /// Bytes in the current models folder (what a move carries).
    pub models_bytes: u64,
    /// Files in the current models folder.
    pub models_files: u64,
    /// Free bytes on the target's file system.
    pub free_bytes: Option<u64>,
    /// Same file system as the current folder: a move is a rename and needs no space.
    pub same_filesystem: bool,
}

/// Every regular file under `root` (symlinks are not followed), as paths relative to it.
fn files_under(root: &Path) -> io::Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in rd {
            let entry = entry?;
            let ft = entry.file_type()?;
            let r = rel.join(entry.file_name());
            if ft.is_dir() {
                stack.push(r);
            } else if ft.is_file() {
                out.push((r, entry.metadata()?.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(unix)]
fn device(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| m.dev())
}

#[cfg(not(unix))]
fn device(_: &Path) -> Option<u64> {
    None
}

fn writable(dir: &Path) -> io::Result<()> {
    let probe = dir.join(format!(".hmoe-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"ok")?;
    std::fs::remove_file(&probe)
}

/// Checks `target` as the new models folder while `current` holds the models.
pub fn check(
    target: &Path,
    current: &Path,
    free_space: &dyn Fn(&Path) -> io::Result<u64>,
) -> FolderCheck {
    let mut c = FolderCheck {
        path: target.display().to_string(),
        ok: false,
        problems: Vec::new(),
        can_move: false,
        move_problem: None,
        models_bytes: 0,
        models_files: 0,
        free_bytes: None,
        same_filesystem: false,
    };
    if target.as_os_str().is_empty() {
        c.problems.push("choose a folder".into());
        return c;
    }
    if !target.is_absolute() {
        c.problems
            .push(format!("{} is not an absolute path", target.display()));
        return c;
    }
    let meta = match std::fs::metadata(target) {
        Ok(m) => m,
        Err(e) => {
            c.problems
                .push(format!("{} does not exist ({e})", target.display()));
            return c;
        }
    };
    if !meta.is_dir() {
        c.problems
            .push(format!("{} is not a folder", target.display()));
        return c;
    }
    let target = std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
    c.path = target.display().to_string();
    let cur = std::fs::canonicalize(current).unwrap_or_else(|_| current.to_path_buf());
    if target == cur {
        c.problems.push("this is already the models folder".into());
    } else if target.starts_with(&cur) {
        c.problems
            .push("the new folder is inside the current models folder".into());
    }
    if let Err(e) = writable(&target) {
        c.problems
            .push(format!("{} is not writable ({e})", target.display()));
    }
    c.free_bytes = free_space(&target).ok();
    c.same_filesystem = matches!((device(&target), device(&cur)), (Some(a), Some(b)) if a == b);
    match files_under(&cur) {
        Ok(files) => {
            c.models_files = files.len() as u64;
            c.models_bytes = files.iter().map(|(_, n)| n).sum();
            let clash = files.iter().find(|(rel, _)| target.join(rel).exists());
            let needed = if c.same_filesystem {
                0
            } else {
                c.models_bytes + MOVE_MARGIN_BYTES
            };
            c.move_problem = if let Some((rel, _)) = clash {
                Some(format!(
                    "{} already exists in the new folder",
                    rel.display()
                ))
            } else if c.free_bytes.is_some_and(|free| free < needed) {
                Some(format!(
                    "not enough space: the models need {} bytes, {} are free",
                    c.models_bytes,
                    c.free_bytes.unwrap_or(0)
                ))
            } else {
                None
            };
        }
        Err(e) => c.move_problem = Some(format!("cannot read {} ({e})", cur.display())),
    }
    c.ok = c.problems.is_empty();
    c.can_move = c.ok && c.move_problem.is_none();
    c
}

/// What a move did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Files moved.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Moves one file: rename, or copy to a temporary name + rename + delete the source when
/// the rename crosses file systems.
fn move_file(src: &Path, dst: &Path) -> io::Result<()> {
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if std::fs::rename(src, dst).is_ok() {
        return Ok(());
    }
    let mut tmp = dst.as_os_str().to_owned();
    tmp.push(".moving");
    let tmp = PathBuf::from(tmp);
    let n = std::fs::copy(src, &tmp)?;
    let want = std::fs::metadata(src)?.len();
    if n != want {
        let _ = std::fs::remove_file(&tmp);
        return Err(io::Error::other(format!(
            "copied {n} of {want} bytes of {}",
            src.display()
        )));
    }
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dst)?;
    std::fs::remove_file(src)
}

/// Removes the now empty folders under `root` (deepest first), keeping `root`.
fn prune_empty(root: &Path) {
    let mut dirs = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                    dirs.push(e.path());
                }
            }
        }
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
}

/// Moves every file under `from` to the same place under `to`. On failure the files moved
/// so far go back, so the models are in one folder or the other, never split.
pub fn move_models(from: &Path, to: &Path) -> io::Result<Moved> {
    let files = files_under(from)?;
    if let Some((rel, _)) = files.iter().find(|(rel, _)| to.join(rel).exists()) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists in {}", rel.display(), to.display()),
        ));
    }
    let mut done: Vec<&PathBuf> = Vec::new();
    let mut moved = Moved::default();
    for (rel, len) in &files {
        if let Err(e) = move_file(&from.join(rel), &to.join(rel)) {
            for back in done.iter().rev() {
                if let Err(e2) = move_file(&to.join(back), &from.join(back)) {
                    tracing::error!("moving {} back failed: {e2}", back.display());
                }
            }
            prune_empty(to);
            return Err(io::Error::new(
                e.kind(),
                format!("moving {} failed: {e}", rel.display()),
            ));
        }
        done.push(rel);
        moved.files += 1;
        moved.bytes += len;
    }
    prune_empty(from);
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plenty(_: &Path) -> io::Result<u64> {
        Ok(1 << 40)
    }

    fn layout(root: &Path) {
        std::fs::create_dir_all(root.join("demo")).unwrap();
        std::fs::create_dir_all(root.join("hub/acme/m")).unwrap();
        std::fs::write(root.join("demo/d.gguf"), vec![1u8; 1000]).unwrap();
        std::fs::write(root.join("hub/acme/m/x.gguf"), vec![2u8; 3000]).unwrap();
        std::fs::write(root.join("hub/acme/m/y.gguf.part"), vec![3u8; 10]).unwrap();
    }

    #[test]
    fn check_names_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        let cur = dir.path().join("models");
        layout(&cur);
        let c = check(Path::new("relative/x"), &cur, &plenty);
        assert!(!c.ok && c.problems[0].contains("absolute"), "{c:?}");
        let c = check(&dir.path().join("nope"), &cur, &plenty);
        assert!(!c.ok && c.problems[0].contains("does not exist"), "{c:?}");
        let f = dir.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        assert!(check(&f, &cur, &plenty).problems[0].contains("not a folder"));
        assert!(check(&cur, &cur, &plenty).problems[0].contains("already"));
        assert!(check(&cur.join("hub"), &cur, &plenty).problems[0].contains("inside"));

        let target = dir.path().join("new");
        std::fs::create_dir_all(&target).unwrap();
        let c = check(&target, &cur, &plenty);
        assert!(c.ok && c.can_move, "{c:?}");
        assert_eq!((c.models_files, c.models_bytes), (3, 4010));
        assert!(c.same_filesystem, "both under one temp dir");

        // Not enough space only matters across file systems; a clash always blocks a move.
        std::fs::create_dir_all(target.join("demo")).unwrap();
        std::fs::write(target.join("demo/d.gguf"), b"other").unwrap();
        let c = check(&target, &cur, &plenty);
        assert!(c.ok && !c.can_move);
        assert!(c.move_problem.unwrap().contains("already exists"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn unwritable_folder_is_refused() {
        // procfs refuses new files even for root (permission bits would not stop root).
        let dir = tempfile::tempdir().unwrap();
        let c = check(Path::new("/proc"), dir.path(), &plenty);
        assert!(!c.ok);
        assert!(
            c.problems.iter().any(|p| p.contains("not writable")),
            "{c:?}"
        );
    }

    #[test]
    fn move_carries_every_file_and_leaves_no_folders() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("a"), dir.path().join("b"));
        layout(&from);
        std::fs::create_dir_all(&to).unwrap();
        let m = move_models(&from, &to).unwrap();
        assert_eq!(
            m,
            Moved {
                files: 3,
                bytes: 4010
            }
        );
        assert_eq!(
            std::fs::read(to.join("hub/acme/m/x.gguf")).unwrap(),
            vec![2u8; 3000]
        );
        assert!(
            to.join("hub/acme/m/y.gguf.part").is_file(),
            "partial downloads move too"
        );
        assert!(
            std::fs::read_dir(&from).unwrap().next().is_none(),
            "old folder emptied"
        );
    }

    #[test]
    fn clash_moves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("a"), dir.path().join("b"));
        layout(&from);
        std::fs::create_dir_all(to.join("hub/acme/m")).unwrap();
        std::fs::write(to.join("hub/acme/m/x.gguf"), b"mine").unwrap();
        let e = move_models(&from, &to).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(from.join("demo/d.gguf").is_file());
        assert_eq!(
            std::fs::read(to.join("hub/acme/m/x.gguf")).unwrap(),
            b"mine"
        );
    }

    #[test]
    fn space_is_checked_across_file_systems() {
        // /dev/shm is a tmpfs on Linux: a different file system from the temp dir (if not,
        // the case is not testable here and is skipped).
        let shm = Path::new("/dev/shm");
        let dir = tempfile::tempdir().unwrap();
        let cur = dir.path().join("models");
        layout(&cur);
        if !shm.is_dir() || device(shm) == device(dir.path()) {
            return;
        }
        let target = tempfile::tempdir_in(shm).unwrap();
        let c = check(target.path(), &cur, &|_| Ok(100));
        assert!(c.ok && !c.same_filesystem);
        assert!(c.move_problem.unwrap().contains("not enough space"));
        // A real cross-device move copies, verifies and deletes.
        let m = move_models(&cur, target.path()).unwrap();
        assert_eq!(m.files, 3);
        assert!(target.path().join("demo/d.gguf").is_file());
        assert!(!cur.join("demo/d.gguf").exists());
    }
}
