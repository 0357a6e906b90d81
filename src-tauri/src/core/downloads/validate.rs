//! Checks on names, revisions and hashes that come from the user or the network, before
//! they reach a URL or the file system (Ollama's CVE-2024-37032 was a `../` in a digest).

use std::path::{Path, PathBuf};

use crate::core::error::{AppError, AppResult};

/// Longest repository part (`org` or `name`), as the Hub allows.
const MAX_REPO_PART: usize = 96;
/// Longest file path inside a repository.
const MAX_FILE_PATH: usize = 1024;
/// Longest single path component on common file systems.
const MAX_COMPONENT: usize = 255;

fn repo_part_ok(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= MAX_REPO_PART
        && p.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !p.contains("..")
}

/// `org/name` with the Hub's characters only.
pub fn repo(repo: &str) -> AppResult<(&str, &str)> {
    let (org, name) = repo
        .split_once('/')
        .ok_or_else(|| AppError::invalid("repo", "expected org/name"))?;
    if !repo_part_ok(org) || !repo_part_ok(name) {
        return Err(AppError::invalid(
            "repo",
            format!("{repo:?} is not a valid org/name"),
        ));
    }
    Ok((org, name))
}

/// A commit hash or a branch/tag name (used in URLs only, but checked all the same).
pub fn revision(rev: &str) -> AppResult<()> {
    let ok = !rev.is_empty()
        && rev.len() <= 128
        && !rev.starts_with('/')
        && !rev.ends_with('/')
        && !rev
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        && rev
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if !ok {
        return Err(AppError::invalid(
            "revision",
            format!("{rev:?} is not a commit, branch or tag name"),
        ));
    }
    Ok(())
}

/// A relative path of plain components ending in `.gguf`: no `..`, no absolute path,
/// no backslash, drive letter or control character.
pub fn file_path(file: &str) -> AppResult<()> {
    let bad = |why: &str| Err(AppError::invalid("file", format!("{file:?}: {why}")));
    if file.is_empty() || file.len() > MAX_FILE_PATH {
        return bad("empty or too long");
    }
    if file.starts_with('/') {
        return bad("absolute path");
    }
    for comp in file.split('/') {
        if comp.is_empty() || comp == "." || comp == ".." {
            return bad("empty, . or .. component");
        }
        if comp.len() > MAX_COMPONENT {
            return bad("component too long");
        }
        if !comp
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
        {
            return bad("unexpected character");
        }
    }
    if !file.ends_with(".gguf") {
        return bad("not a .gguf file");
    }
    Ok(())
}

/// 64 lowercase hex digits.
pub fn sha256(h: &str) -> AppResult<()> {
    if h.len() == 64
        && h.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        Ok(())
    } else {
        Err(AppError::invalid(
            "sha256",
            format!("{h:?} is not a SHA-256 hex digest"),
        ))
    }
}

/// `models/hub/org/name/file`, checked to stay under `models/hub`.
pub fn destination(models: &Path, repo_id: &str, file: &str) -> AppResult<PathBuf> {
    let (org, name) = repo(repo_id)?;
    file_path(file)?;
    let base = models.join("hub").join(org).join(name);
    let dest = base.join(file);
    // Belt and braces: the checks above already rule out any escape.
    if !dest.starts_with(&base)
        || dest
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(AppError::invalid(
            "file",
            format!("{file:?} escapes the models folder"),
        ));
    }
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repos() {
        assert!(repo("unsloth/Qwen3-30B-A3B-Instruct-2507-GGUF").is_ok());
        for bad in [
            "",
            "noslash",
            "a/b/c",
            "../x",
            "a/..",
            "/abs",
            "a/",
            "a/b c",
            "a/.hidden",
            "a\\b/c",
        ] {
            assert!(repo(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn revisions() {
        assert!(revision("main").is_ok());
        assert!(revision("0123456789abcdef0123456789abcdef01234567").is_ok());
        assert!(revision("refs/pr/1").is_ok());
        for bad in ["", "..", "a/../b", "/main", "main/", "a b", "a%2f..", "x\0"] {
            assert!(revision(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn file_paths() {
        assert!(file_path("model-Q4_K_M.gguf").is_ok());
        assert!(file_path("Q4_K_M/model-Q4_K_M-00001-of-00002.gguf").is_ok());
        for bad in [
            "../evil.gguf",
            "a/../../evil.gguf",
            "/etc/passwd.gguf",
            "C:\\x.gguf",
            "a\\..\\b.gguf",
            "./x.gguf",
            "a//b.gguf",
            "x.bin",
            "na\u{0}me.gguf",
            "über.gguf",
            "",
        ] {
            assert!(file_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn hashes() {
        assert!(sha256(&"a".repeat(64)).is_ok());
        assert!(sha256(&"A".repeat(64)).is_err());
        assert!(sha256("../../etc").is_err());
        assert!(sha256(&"a".repeat(63)).is_err());
    }

    #[test]
    fn destinations_stay_inside() {
        let d = destination(Path::new("/data/models"), "org/name", "sub/x.gguf").unwrap();
        assert_eq!(d, Path::new("/data/models/hub/org/name/sub/x.gguf"));
        assert!(destination(Path::new("/data/models"), "org/name", "../../x.gguf").is_err());
        assert!(destination(Path::new("/data/models"), "../name", "x.gguf").is_err());
    }
}
