use std::path::Path;

use super::helpers::{delete, fit, import, scan, split_parts, LibraryRoots};
use super::models::{FitVerdict, ModelMeta, ModelSource};
use crate::core::system::SystemInfo;

const GIB: u64 = 1 << 30;

fn sys(ram: u64, vram: u64) -> SystemInfo {
    SystemInfo {
        ram_total: ram,
        ram_available: ram,
        vram_total: vram,
        gpu_name: None,
        cpus: 2,
        disk_free: 0,
    }
}

fn meta(experts: u64, dense: u64) -> ModelMeta {
    ModelMeta {
        architecture: "qwen3moe".into(),
        quant: "q8_0".into(),
        expert_bytes: experts,
        dense_bytes: dense,
        ..Default::default()
    }
}

fn fake_inspect(p: &Path) -> Result<ModelMeta, String> {
    let bytes = std::fs::read(p).map_err(|e| e.to_string())?;
    if bytes.starts_with(b"GGUF") {
        Ok(meta(bytes.len() as u64 / 2, bytes.len() as u64 / 2))
    } else {
        Err("not a GGUF file".into())
    }
}

fn write(p: &Path, n: usize) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let mut v = b"GGUF".to_vec();
    v.resize(n, 0);
    std::fs::write(p, v).unwrap();
}

#[test]
fn split_names() {
    assert_eq!(
        split_parts("m-Q4_K_M-00001-of-00003.gguf"),
        Some(("m-Q4_K_M", 1, 3))
    );
    assert_eq!(split_parts("m.gguf"), None);
    assert_eq!(split_parts("m-1-of-3.gguf"), None);
}

#[test]
fn fit_verdicts_follow_ram_and_vram() {
    // 30 GiB MoE: 28 GiB experts + 2 GiB dense.
    let m = meta(28 * GIB, 2 * GIB);
    assert_eq!(
        fit(30 * GIB, &m, &sys(64 * GIB, 80 * GIB)).verdict,
        FitVerdict::Fits
    );
    assert_eq!(
        fit(30 * GIB, &m, &sys(64 * GIB, 8 * GIB)).verdict,
        FitVerdict::FitsWithOffload
    );
    assert_eq!(
        fit(30 * GIB, &m, &sys(16 * GIB, 8 * GIB)).verdict,
        FitVerdict::WontFit
    );
    // CPU-only machines: fits if RAM holds it.
    assert_eq!(
        fit(30 * GIB, &m, &sys(64 * GIB, 0)).verdict,
        FitVerdict::Fits
    );
    assert_eq!(
        fit(30 * GIB, &m, &sys(24 * GIB, 0)).verdict,
        FitVerdict::WontFit
    );
    assert!(fit(30 * GIB, &m, &sys(24 * GIB, 0)).reason.contains("GiB"));
}

#[test]
fn scan_finds_app_models_splits_and_hf_cache_and_skips_partials() {
    let d = tempfile::tempdir().unwrap();
    let models = d.path().join("models");
    let cache = d.path().join("hf/hub");
    write(&models.join("demo/demo.gguf"), 100);
    write(&models.join("hub/org/repo/m-Q8_0.gguf"), 200);
    write(&models.join("hub/org/repo/half.gguf.part"), 50);
    write(&models.join("imported/x-00001-of-00002.gguf"), 30);
    write(&models.join("imported/x-00002-of-00002.gguf"), 40);
    write(&models.join("imported/y-00001-of-00002.gguf"), 30); // incomplete split
    std::fs::write(models.join("notes.gguf"), b"nope").unwrap();
    // HF cache: snapshot symlink → blob.
    let repo = cache.join("models--Qwen--Qwen3-GGUF");
    write(&repo.join("blobs/abc123"), 300);
    std::fs::create_dir_all(repo.join("snapshots/rev1")).unwrap();
    std::os::unix::fs::symlink("../../blobs/abc123", repo.join("snapshots/rev1/q.gguf")).unwrap();

    let roots = LibraryRoots {
        models: models.clone(),
        hf_cache: Some(cache),
    };
    let found = scan(&roots, &sys(64 * GIB, 0), &fake_inspect);
    let by_name = |n: &str| {
        found
            .iter()
            .find(|m| m.name == n)
            .unwrap_or_else(|| panic!("{n} missing: {found:?}"))
    };
    assert_eq!(found.len(), 5, "{found:?}");
    assert_eq!(found[0].source, ModelSource::Demo, "demo first");
    assert_eq!(by_name("m-Q8_0.gguf").source, ModelSource::Download);
    assert_eq!(by_name("m-Q8_0.gguf").repo.as_deref(), Some("org/repo"));
    let split = by_name("x.gguf");
    assert_eq!((split.files.len(), split.size_bytes), (2, 70));
    let hf = by_name("q.gguf");
    assert_eq!(
        (hf.source, hf.repo.as_deref(), hf.size_bytes),
        (ModelSource::HfCache, Some("Qwen/Qwen3-GGUF"), 300)
    );
    let bad = by_name("notes.gguf");
    assert!(bad.meta.is_none() && bad.error.is_some() && bad.fit.is_none());
}

#[test]
fn delete_frees_what_it_says_including_hf_blobs() {
    let d = tempfile::tempdir().unwrap();
    let models = d.path().join("models");
    let cache = d.path().join("hub");
    write(&models.join("imported/x-00001-of-00002.gguf"), 1000);
    write(&models.join("imported/x-00002-of-00002.gguf"), 500);
    let repo = cache.join("models--a--b");
    write(&repo.join("blobs/feed"), 4096);
    std::fs::create_dir_all(repo.join("snapshots/r")).unwrap();
    std::os::unix::fs::symlink("../../blobs/feed", repo.join("snapshots/r/m.gguf")).unwrap();
    let roots = LibraryRoots {
        models,
        hf_cache: Some(cache),
    };
    let found = scan(&roots, &sys(64 * GIB, 0), &fake_inspect);
    for m in &found {
        assert_eq!(delete(m).unwrap(), m.size_bytes, "{}", m.name);
        for f in &m.files {
            assert!(std::fs::symlink_metadata(f).is_err(), "{f} still there");
        }
    }
    assert!(!repo.join("blobs/feed").exists());
    assert!(scan(&roots, &sys(64 * GIB, 0), &fake_inspect).is_empty());
}

#[test]
fn import_checks_magic_and_refuses_duplicates() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("outside/model.gguf");
    write(&src, 64);
    let models = d.path().join("models");
    let dest = import(&src, &models).unwrap();
    assert_eq!(dest, models.join("imported/model.gguf"));
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&src).unwrap());
    assert_eq!(import(&src, &models).unwrap_err().kind(), "state");
    let not = d.path().join("outside/fake.gguf");
    std::fs::write(&not, b"ELF\0....").unwrap();
    assert_eq!(import(&not, &models).unwrap_err().kind(), "invalid");
}
