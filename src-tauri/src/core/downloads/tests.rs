//! Downloads against the local Hub simulator: cut + resume, wrong checksum, full disk,
//! hostile names, pause/resume across a "restart", redirects and tokens.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::SqlitePool;

use super::manager::DownloadManager;
use super::models::{DownloadStatus, DownloadView, HubConfig};
use super::store;
use super::transfer::RetryPolicy;
use crate::hubsim::{Faults, HubSim, SimFile};

const REPO: &str = "acme/tiny-GGUF";
/// Fast retries: the simulator is local.
const RETRY: RetryPolicy = RetryPolicy {
    retries: 4,
    backoff: Duration::from_millis(20),
};
/// Upper bound for a local transfer to finish on a loaded CI box (not a timing assertion).
const WAIT: Duration = Duration::from_secs(60);

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

async fn sim(files: Vec<SimFile>, extra: Vec<String>, faults: Faults) -> HubSim {
    let mut repos = HashMap::new();
    repos.insert(REPO.to_string(), files);
    HubSim::start("127.0.0.1:0", repos, extra, faults)
        .await
        .unwrap()
}

fn cfg(h: &HubSim) -> HubConfig {
    HubConfig {
        endpoint: h.endpoint(),
        token: None,
    }
}

fn manager(db: &SqlitePool, models: &Path) -> DownloadManager {
    DownloadManager::new(db.clone(), models.to_path_buf()).with_retry(RETRY)
}

async fn finish(m: &DownloadManager, id: i64) {
    tokio::time::timeout(WAIT, m.wait(id))
        .await
        .expect("download ended");
}

#[sqlx::test(migrations = "../migrations")]
async fn cut_mid_file_resumes_with_range_and_verifies(db: SqlitePool) {
    let body = data(700_000, 1);
    let h = sim(
        vec![SimFile::new("m-Q8_0.gguf", body.clone())],
        vec![],
        Faults {
            redirect: true,
            ..Default::default()
        },
    )
    .await;
    h.cut_next(300_000, 2); // two cuts in a row, then a clean transfer
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&db, dir.path());
    let v = m
        .start(cfg(&h), REPO, "main", &["m-Q8_0.gguf".into()])
        .await
        .unwrap();
    finish(&m, v[0].id).await;
    let row = store::get(&db, v[0].id).await.unwrap();
    assert_eq!(row.status, DownloadStatus::Complete, "{:?}", row.error);
    let dest = dir.path().join("hub/acme/tiny-GGUF/m-Q8_0.gguf");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert!(!dest.with_extension("gguf.part").exists());
    let ranges = h.seen().ranges.lock().unwrap().clone();
    assert_eq!(ranges[0], None, "first request is for the whole file");
    assert!(ranges[1..].iter().all(|r| r
        .as_deref()
        .is_some_and(|r| r.starts_with("bytes=") && r != "bytes=0-")));
    assert_eq!(ranges.len(), 3);
    assert_eq!(row.bytes_done, body.len() as u64);
}

#[sqlx::test(migrations = "../migrations")]
async fn wrong_checksum_is_rejected_and_never_offered(db: SqlitePool) {
    let mut f = SimFile::new("bad-Q4_K_M.gguf", data(100_000, 2));
    f.published_sha256 = hex::encode(Sha256::digest(b"something else"));
    let h = sim(vec![f], vec![], Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&db, dir.path());
    let v = m
        .start(cfg(&h), REPO, "main", &["bad-Q4_K_M.gguf".into()])
        .await
        .unwrap();
    finish(&m, v[0].id).await;
    let row = store::get(&db, v[0].id).await.unwrap();
    assert_eq!(row.status, DownloadStatus::Failed);
    assert!(row.error.as_deref().unwrap().contains("checksum mismatch"));
    let base = dir.path().join("hub/acme/tiny-GGUF");
    assert!(
        !base.join("bad-Q4_K_M.gguf").exists(),
        "never renamed into the library"
    );
    assert!(
        !base.join("bad-Q4_K_M.gguf.part").exists(),
        "partial deleted"
    );
    // The library scan does not see it either.
    let roots = crate::core::library::helpers::LibraryRoots {
        models: dir.path().to_path_buf(),
        hf_cache: None,
    };
    let sys = crate::core::system::SystemInfo {
        ram_total: 1 << 34,
        ram_available: 1 << 33,
        vram_total: 0,
        gpu_name: None,
        cpus: 2,
        disk_free: 1 << 30,
    };
    assert!(crate::core::library::helpers::scan(&roots, &sys, &|_| Err("x".into())).is_empty());
}

#[sqlx::test(migrations = "../migrations")]
async fn full_disk_is_refused_before_and_during(db: SqlitePool) {
    // Injectable free-space check (no tmpfs mount needed): first refuse up front...
    let h = sim(
        vec![SimFile::new("big-Q8_0.gguf", data(200_000, 3))],
        vec![],
        Faults::default(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&db, dir.path()).with_free_space(Arc::new(|_: &Path| Ok(100_000)));
    let err = m
        .start(cfg(&h), REPO, "main", &["big-Q8_0.gguf".into()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not enough disk space"), "{err}");
    assert!(store::list(&db).await.unwrap().is_empty());

    // ...then fill up between start and resume: the transfer stops with a clear error.
    let space = Arc::new(std::sync::atomic::AtomicU64::new(1 << 40));
    let s2 = space.clone();
    let m = manager(&db, dir.path()).with_free_space(Arc::new(move |_: &Path| {
        Ok(s2.load(std::sync::atomic::Ordering::SeqCst))
    }));
    h.cut_next(50_000, 1);
    let v = m
        .start(cfg(&h), REPO, "main", &["big-Q8_0.gguf".into()])
        .await
        .unwrap();
    space.store(1000, std::sync::atomic::Ordering::SeqCst);
    finish(&m, v[0].id).await;
    let row = store::get(&db, v[0].id).await.unwrap();
    assert_eq!(row.status, DownloadStatus::Failed);
    assert!(
        row.error
            .as_deref()
            .unwrap()
            .contains("not enough disk space"),
        "{:?}",
        row.error
    );
    // After freeing space, resume completes from the partial file.
    space.store(1 << 40, std::sync::atomic::Ordering::SeqCst);
    m.resume(cfg(&h), v[0].id).await.unwrap();
    finish(&m, v[0].id).await;
    assert_eq!(
        store::get(&db, v[0].id).await.unwrap().status,
        DownloadStatus::Complete
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn hostile_names_are_never_listed_or_downloaded(db: SqlitePool) {
    let extra = vec![
        "../../escape.gguf".to_string(),
        "/etc/abs.gguf".to_string(),
        "a/../../b.gguf".to_string(),
        "..\\win.gguf".to_string(),
    ];
    let h = sim(
        vec![SimFile::new("ok-Q8_0.gguf", data(10, 4))],
        extra,
        Faults::default(),
    )
    .await;
    let client = super::hub::HubClient::new(cfg(&h)).unwrap();
    let listing = client.list(REPO, "main").await.unwrap();
    assert_eq!(
        listing
            .files
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["ok-Q8_0.gguf"]
    );
    assert_eq!(listing.commit.as_deref(), Some(crate::hubsim::SIM_COMMIT));
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&db, dir.path());
    for bad in ["../../escape.gguf", "/etc/abs.gguf"] {
        assert_eq!(
            m.start(cfg(&h), REPO, "main", &[bad.into()])
                .await
                .unwrap_err()
                .kind(),
            "invalid"
        );
    }
    assert_eq!(
        m.start(cfg(&h), "../acme", "main", &["ok-Q8_0.gguf".into()])
            .await
            .unwrap_err()
            .kind(),
        "invalid"
    );
    assert_eq!(
        m.start(cfg(&h), REPO, "../main", &["ok-Q8_0.gguf".into()])
            .await
            .unwrap_err()
            .kind(),
        "invalid"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing written"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn pause_then_restart_resumes_from_the_part_file(db: SqlitePool) {
    let body = data(2_000_000, 5);
    let h = sim(
        vec![SimFile::new("slow-Q8_0.gguf", body.clone())],
        vec![],
        Faults::default(),
    )
    .await;
    h.set_slow(Some(Duration::from_millis(30)));
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&db, dir.path());
    let events = Arc::new(std::sync::Mutex::new(Vec::<DownloadView>::new()));
    let sink = events.clone();
    m.set_listeners(
        Arc::new(move |v| sink.lock().unwrap().push(v)),
        Arc::new(|_| {}),
    );
    let v = m
        .start(cfg(&h), REPO, "main", &["slow-Q8_0.gguf".into()])
        .await
        .unwrap();
    let id = v[0].id;
    tokio::time::timeout(WAIT, async {
        while store::get(&db, id).await.unwrap().bytes_done < 200_000 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    // A list read before the pause lands must order before the "paused" event.
    let listed_before = m.list().await.unwrap();
    m.pause(id).await.unwrap();
    finish(&m, id).await;
    let paused = store::get(&db, id).await.unwrap();
    assert_eq!(paused.status, DownloadStatus::Paused);
    let last = events.lock().unwrap().last().cloned().expect("events");
    assert_eq!(last.status, DownloadStatus::Paused);
    assert!(
        last.seq > listed_before[0].seq,
        "paused event must win over the older list"
    );
    assert!(paused.bytes_done > 0 && paused.bytes_done < body.len() as u64);

    // "Restart": a new manager on the same database; crash recovery leaves it paused.
    crate::core::db::recover_after_crash(&db).await.unwrap();
    h.set_slow(None);
    let m2 = manager(&db, dir.path());
    m2.resume(cfg(&h), id).await.unwrap();
    finish(&m2, id).await;
    let done = store::get(&db, id).await.unwrap();
    assert_eq!(done.status, DownloadStatus::Complete, "{:?}", done.error);
    assert_eq!(
        std::fs::read(dir.path().join("hub/acme/tiny-GGUF/slow-Q8_0.gguf")).unwrap(),
        body
    );
    let last = h.seen().ranges.lock().unwrap().last().cloned().flatten();
    assert!(last
        .unwrap()
        .starts_with(&format!("bytes={}", paused.bytes_done)));
}

#[sqlx::test(migrations = "../migrations")]
async fn cancel_deletes_the_partial_file(db: SqlitePool) {
    let h = sim(
        vec![SimFile::new("c-Q8_0.gguf", data(1_000_000, 6))],
        vec![],
        Faults::default(),
    )
    .await;
    h.set_slow(Some(Duration::from_millis(30)));
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&db, dir.path());
    let v = m
        .start(cfg(&h), REPO, "main", &["c-Q8_0.gguf".into()])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    m.cancel(v[0].id).await.unwrap();
    finish(&m, v[0].id).await;
    assert_eq!(
        store::get(&db, v[0].id).await.unwrap().status,
        DownloadStatus::Cancelled
    );
    assert!(!dir
        .path()
        .join("hub/acme/tiny-GGUF/c-Q8_0.gguf.part")
        .exists());
}

#[sqlx::test(migrations = "../migrations")]
async fn token_is_sent_and_missing_token_is_explained(db: SqlitePool) {
    let faults = Faults {
        token: Some("hf_secret".into()),
        ..Default::default()
    };
    let h = sim(
        vec![SimFile::new("g-Q8_0.gguf", data(1000, 7))],
        vec![],
        faults,
    )
    .await;
    let client = super::hub::HubClient::new(cfg(&h)).unwrap();
    let err = client.list(REPO, "main").await.unwrap_err();
    assert!(err.to_string().contains("token"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&db, dir.path());
    let with = HubConfig {
        endpoint: h.endpoint(),
        token: Some("hf_secret".into()),
    };
    let v = m
        .start(with, REPO, "main", &["g-Q8_0.gguf".into()])
        .await
        .unwrap();
    finish(&m, v[0].id).await;
    assert_eq!(
        store::get(&db, v[0].id).await.unwrap().status,
        DownloadStatus::Complete
    );
    assert_eq!(
        h.seen().auth.lock().unwrap()[0].as_deref(),
        Some("Bearer hf_secret")
    );
}

/// Waits until download `id` has at least `bytes` on disk.
async fn wait_bytes(db: &SqlitePool, id: i64, bytes: u64) {
    tokio::time::timeout(WAIT, async {
        while store::get(db, id).await.unwrap().bytes_done < bytes {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("transfer progressed");
}

#[sqlx::test(migrations = "../migrations")]
async fn app_exit_and_crash_resume_by_themselves_but_a_user_pause_does_not(db: SqlitePool) {
    let bodies: Vec<Vec<u8>> = (0..3).map(|i| data(4_000_000, 10 + i)).collect();
    let names = ["exit-Q8_0.gguf", "crash-Q8_0.gguf", "user-Q8_0.gguf"];
    let files = names
        .iter()
        .zip(&bodies)
        .map(|(n, b)| SimFile::new(n, b.clone()))
        .collect();
    let h = sim(files, vec![], Faults::default()).await;
    h.set_slow(Some(Duration::from_millis(50)));
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&db, dir.path());
    let mut ids = Vec::new();
    for n in names {
        ids.push(m.start(cfg(&h), REPO, "main", &[n.into()]).await.unwrap()[0].id);
    }
    for &id in &ids {
        wait_bytes(&db, id, 100_000).await;
    }
    // The user pauses one; the app then exits (pauses the rest itself)...
    m.pause(ids[2]).await.unwrap();
    finish(&m, ids[2]).await;
    // ...except that the "crash" download's task dies without saving its state.
    {
        let mut running = m.running_for_tests().await;
        if let Some((_, handle)) = running.remove(&ids[1]) {
            handle.abort();
        }
    }
    m.pause_all().await;
    assert_eq!(
        store::get(&db, ids[1]).await.unwrap().status,
        DownloadStatus::Running,
        "the crashed one is left as the crash left it"
    );

    // Next start: crash recovery, then the automatic resume.
    crate::core::db::recover_after_crash(&db).await.unwrap();
    h.set_slow(None);
    let m2 = manager(&db, dir.path());
    let resumed = m2.resume_interrupted(cfg(&h)).await.unwrap();
    assert_eq!(
        resumed,
        vec![ids[0], ids[1]],
        "exit and crash resume, the user's pause stays"
    );
    for &id in &ids[..2] {
        finish(&m2, id).await;
    }
    for (i, &id) in ids[..2].iter().enumerate() {
        let row = store::get(&db, id).await.unwrap();
        assert_eq!(row.status, DownloadStatus::Complete, "{:?}", row.error);
        let path = dir.path().join("hub/acme/tiny-GGUF").join(names[i]);
        assert_eq!(std::fs::read(path).unwrap(), bodies[i], "verified bytes");
    }
    let user = store::get(&db, ids[2]).await.unwrap();
    assert_eq!(user.status, DownloadStatus::Paused);
    // Every resume continued from its part file.
    let ranges = h.seen().ranges.lock().unwrap().clone();
    assert!(
        ranges.iter().filter(|r| r.is_some()).count() >= 2,
        "{ranges:?}"
    );
    // A second start finds nothing left to resume.
    assert!(m2.resume_interrupted(cfg(&h)).await.unwrap().is_empty());
}

#[tokio::test]
async fn auto_resume_off_leaves_interrupted_downloads_paused() {
    let h = sim(
        vec![SimFile::new("off-Q8_0.gguf", data(3_000_000, 20))],
        vec![],
        Faults::default(),
    )
    .await;
    h.set_slow(Some(Duration::from_millis(30)));
    let dir = tempfile::tempdir().unwrap();
    let st = crate::core::app::setup::build_state_with(
        dir.path(),
        std::sync::Arc::new(crate::core::engine::testing::ScriptedLoader::default()),
        crate::core::settings::secrets::SecretStore::memory(),
    )
    .await
    .unwrap();
    let mut s = crate::core::settings::helpers::load(&st.db).await.unwrap();
    s.hf_endpoint = h.endpoint();
    s.resume_downloads_on_start = false;
    crate::core::settings::helpers::save(&st.db, &s)
        .await
        .unwrap();
    let id = st
        .downloads
        .start(cfg(&h), REPO, "main", &["off-Q8_0.gguf".into()])
        .await
        .unwrap()[0]
        .id;
    wait_bytes(&st.db, id, 50_000).await;
    st.downloads.pause_all().await;
    assert!(crate::core::app::setup::resume_downloads(&st)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store::get(&st.db, id).await.unwrap().status,
        DownloadStatus::Paused
    );
    // With the setting on (the default), the same start resumes it.
    s.resume_downloads_on_start = true;
    crate::core::settings::helpers::save(&st.db, &s)
        .await
        .unwrap();
    h.set_slow(None);
    assert_eq!(
        crate::core::app::setup::resume_downloads(&st)
            .await
            .unwrap(),
        vec![id]
    );
    finish(&st.downloads, id).await;
    assert_eq!(
        store::get(&st.db, id).await.unwrap().status,
        DownloadStatus::Complete
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn search_finds_repositories_and_drops_hostile_ids(_db: SqlitePool) {
    let extra = vec!["../../escape".to_string(), "a/b/c".to_string()];
    let h = sim(
        vec![SimFile::new("s-Q8_0.gguf", data(10, 30))],
        extra,
        Faults::default(),
    )
    .await;
    let client = super::hub::HubClient::new(cfg(&h)).unwrap();
    let hits = client.search("TINY gguf").await.unwrap();
    assert!(
        hits.is_empty(),
        "no repo contains the whole phrase: {hits:?}"
    );
    let hits = client.search("Tiny").await.unwrap();
    assert_eq!(
        hits.iter().map(|h| h.repo.as_str()).collect::<Vec<_>>(),
        [REPO]
    );
    assert_eq!(hits[0].downloads, Some(42));
    for bad in ["", "   ", &"x".repeat(101), "a\nb"] {
        assert_eq!(
            client.search(bad).await.unwrap_err().kind(),
            "invalid",
            "{bad:?}"
        );
    }
}
