//! Finding models on disk (app folder + Hugging Face cache), fit verdicts, delete, import.

use std::path::{Path, PathBuf};

use super::models::{Fit, FitVerdict, LibraryModel, ModelMeta, ModelSource};
use crate::core::error::{AppError, AppResult};
use crate::core::system::SystemInfo;

/// How deep the models folder is searched (models/hub/org/repo/sub/file.gguf).
const MAX_DEPTH: usize = 6;
/// VRAM/RAM kept free for KV cache, activations and the rest of the system.
const RUNTIME_MARGIN_BYTES: u64 = 1 << 30;
/// Share of total RAM a model may use (the OS and the app need the rest).
const RAM_USABLE_FRACTION: f64 = 0.85;

/// Folders the library reads.
#[derive(Debug, Clone)]
pub struct LibraryRoots {
    /// The app's models folder.
    pub models: PathBuf,
    /// The Hugging Face hub cache (`$HF_HOME/hub`).
    pub hf_cache: Option<PathBuf>,
}

/// `name-00001-of-00003.gguf` → ("name", 1, 3).
pub fn split_parts(file_name: &str) -> Option<(&str, u32, u32)> {
    let stem = file_name.strip_suffix(".gguf")?;
    let (rest, total) = stem.rsplit_once("-of-")?;
    let (base, idx) = rest.rsplit_once('-')?;
    if idx.len() != 5 || total.len() != 5 {
        return None;
    }
    Some((base, idx.parse().ok()?, total.parse().ok()?))
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() && depth < MAX_DEPTH {
            walk(&p, depth + 1, out);
        } else if (ft.is_file() || ft.is_symlink()) && p.extension().is_some_and(|x| x == "gguf") {
            out.push(p);
        }
    }
}

/// Groups files into models: split parts under their first part; incomplete splits dropped.
fn group(files: Vec<PathBuf>) -> Vec<Vec<PathBuf>> {
    let mut singles = Vec::new();
    let mut splits: std::collections::BTreeMap<(PathBuf, String, u32), Vec<(u32, PathBuf)>> =
        Default::default();
    for f in files {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        match split_parts(&name) {
            Some((base, idx, total)) => {
                let dir = f.parent().map(Path::to_path_buf).unwrap_or_default();
                splits
                    .entry((dir, base.to_string(), total))
                    .or_default()
                    .push((idx, f));
            }
            None => singles.push(vec![f]),
        }
    }
    for ((_, _, total), mut parts) in splits {
        parts.sort();
        let complete = parts.len() == total as usize
            && parts
                .iter()
                .enumerate()
                .all(|(i, (idx, _))| *idx == i as u32 + 1);
        if complete {
            singles.push(parts.into_iter().map(|p| p.1).collect());
        }
    }
    singles
}

fn size_of(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

fn source_for(path: &Path, roots: &LibraryRoots) -> ModelSource {
    let rel = path.strip_prefix(&roots.models).ok();
    match rel
        .and_then(|r| r.components().next())
        .and_then(|c| c.as_os_str().to_str())
    {
        Some("demo") => ModelSource::Demo,
        Some("hub") => ModelSource::Download,
        Some("imported") => ModelSource::Imported,
        _ => ModelSource::App,
    }
}

/// `models/hub/org/repo/...` or `models--org--repo/snapshots/...` → "org/repo".
fn repo_of(path: &Path, roots: &LibraryRoots) -> Option<String> {
    if let Ok(rel) = path.strip_prefix(roots.models.join("hub")) {
        let mut c = rel.components();
        let (a, b) = (
            c.next()?.as_os_str().to_str()?,
            c.next()?.as_os_str().to_str()?,
        );
        return Some(format!("{a}/{b}"));
    }
    let cache = roots.hf_cache.as_ref()?;
    let rel = path.strip_prefix(cache).ok()?;
    let top = rel.components().next()?.as_os_str().to_str()?;
    let name = top.strip_prefix("models--")?;
    let (org, repo) = name.split_once("--")?;
    Some(format!("{org}/{repo}"))
}

/// Every model in the roots, with header facts from `inspect` and a fit verdict.
pub fn scan(
    roots: &LibraryRoots,
    sys: &SystemInfo,
    inspect: &dyn Fn(&Path) -> Result<ModelMeta, String>,
) -> Vec<LibraryModel> {
    let mut files = Vec::new();
    walk(&roots.models, 0, &mut files);
    let mut cache_files = Vec::new();
    if let Some(cache) = &roots.hf_cache {
        if let Ok(rd) = std::fs::read_dir(cache) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("models--") {
                    walk(&e.path().join("snapshots"), 0, &mut cache_files);
                }
            }
        }
    }
    let mut out = Vec::new();
    for (from_cache, groups) in [(false, group(files)), (true, group(cache_files))] {
        for g in groups {
            let first = g[0].clone();
            let name = first
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("model")
                .to_string();
            let size_bytes = size_of(&g);
            let (meta, error) = match inspect(&first) {
                Ok(m) => (Some(m), None),
                Err(e) => (None, Some(e)),
            };
            let fit = meta.as_ref().map(|m| fit(size_bytes, m, sys));
            out.push(LibraryModel {
                id: first.display().to_string(),
                name: split_parts(&name)
                    .map(|(b, _, _)| format!("{b}.gguf"))
                    .unwrap_or(name),
                path: first.display().to_string(),
                files: g.iter().map(|p| p.display().to_string()).collect(),
                repo: repo_of(&first, roots),
                source: if from_cache {
                    ModelSource::HfCache
                } else {
                    source_for(&first, roots)
                },
                size_bytes,
                meta,
                fit,
                error,
            });
        }
    }
    out.sort_by(|a, b| {
        (a.source != ModelSource::Demo, &a.name).cmp(&(b.source != ModelSource::Demo, &b.name))
    });
    out
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

/// Fit verdict from the model's bytes and this machine's RAM and VRAM.
pub fn fit(file_bytes: u64, meta: &ModelMeta, sys: &SystemInfo) -> Fit {
    let ram = (sys.ram_total as f64 * RAM_USABLE_FRACTION) as u64;
    let need = file_bytes + RUNTIME_MARGIN_BYTES;
    if sys.vram_total == 0 {
        return if need <= ram {
            Fit {
                verdict: FitVerdict::Fits,
                reason: format!(
                    "{} in {} RAM, CPU only (no GPU found)",
                    gib(file_bytes),
                    gib(ram)
                ),
            }
        } else {
            Fit {
                verdict: FitVerdict::WontFit,
                reason: format!("needs {} but {} RAM is usable", gib(need), gib(ram)),
            }
        };
    }
    if need <= sys.vram_total {
        return Fit {
            verdict: FitVerdict::Fits,
            reason: format!("whole model in {} VRAM", gib(sys.vram_total)),
        };
    }
    // Offload: dense weights (and a share of experts) on the GPU, the remaining experts in RAM.
    let dense = if meta.dense_bytes > 0 {
        meta.dense_bytes
    } else {
        file_bytes.saturating_sub(meta.expert_bytes)
    };
    let in_ram = file_bytes.saturating_sub(
        sys.vram_total
            .saturating_sub(RUNTIME_MARGIN_BYTES)
            .max(dense),
    );
    if dense + RUNTIME_MARGIN_BYTES <= sys.vram_total && in_ram <= ram {
        Fit {
            verdict: FitVerdict::FitsWithOffload,
            reason: format!(
                "{} dense + expert cache in VRAM, {} of experts in RAM",
                gib(dense),
                gib(in_ram)
            ),
        }
    } else if need <= ram {
        Fit {
            verdict: FitVerdict::FitsWithOffload,
            reason: format!("runs from {} RAM with experts on the CPU", gib(ram)),
        }
    } else {
        Fit {
            verdict: FitVerdict::WontFit,
            reason: format!(
                "needs {} but RAM {} + VRAM {}",
                gib(need),
                gib(ram),
                gib(sys.vram_total)
            ),
        }
    }
}

/// Deletes a model's files (following Hugging Face cache links to their blobs); returns the
/// bytes freed. `model` must come from a fresh [`scan`], never from the UI's own path.
pub fn delete(model: &LibraryModel) -> AppResult<u64> {
    let mut freed = 0;
    for f in &model.files {
        let p = Path::new(f);
        let link = std::fs::symlink_metadata(p).map_err(|e| AppError::io("inspect", p, e))?;
        if link.file_type().is_symlink() {
            if let Ok(target) = std::fs::canonicalize(p) {
                let len = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(&target).map_err(|e| AppError::io("delete", &target, e))?;
                freed += len;
            }
            std::fs::remove_file(p).map_err(|e| AppError::io("delete", p, e))?;
        } else {
            std::fs::remove_file(p).map_err(|e| AppError::io("delete", p, e))?;
            freed += link.len();
        }
    }
    Ok(freed)
}

/// GGUF files start with these bytes.
const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// Places `src` in `models/imported/` (hard link when possible, else a copy); returns the new path.
pub fn import(src: &Path, models: &Path) -> AppResult<PathBuf> {
    let mut magic = [0u8; 4];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(src).map_err(|e| AppError::io("open", src, e))?;
        f.read_exact(&mut magic)
            .map_err(|e| AppError::io("read", src, e))?;
    }
    if &magic != GGUF_MAGIC {
        return Err(AppError::invalid(
            "file",
            format!("{} is not a GGUF file", src.display()),
        ));
    }
    let name = src
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.ends_with(".gguf"))
        .ok_or_else(|| AppError::invalid("file", "the file name must end in .gguf"))?;
    let dir = models.join("imported");
    std::fs::create_dir_all(&dir).map_err(|e| AppError::io("create folder", &dir, e))?;
    let dest = dir.join(name);
    if dest.exists() {
        return Err(AppError::State(format!("{name} is already in the library")));
    }
    if std::fs::hard_link(src, &dest).is_err() {
        std::fs::copy(src, &dest).map_err(|e| AppError::io("copy", src, e))?;
    }
    Ok(dest)
}
