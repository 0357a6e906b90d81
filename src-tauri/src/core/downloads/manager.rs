//! Starts, pauses, resumes and cancels transfers; one task per file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::Mutex;

use super::hub::HubClient;
use super::models::{DownloadStatus, DownloadView, HubConfig};
use super::store::{self, DownloadRow};
use super::transfer::{FreeSpaceFn, RetryPolicy, Transfer, CANCEL, DISK_MARGIN_BYTES, PAUSE, RUN};
use super::validate;
use crate::core::db::Db;
use crate::core::error::{AppError, AppResult};

/// Control flag and task of a running transfer.
type Running = (Arc<AtomicU8>, tokio::task::JoinHandle<()>);
type ViewFn = Arc<dyn Fn(DownloadView) + Send + Sync>;
type DoneFn = Arc<dyn Fn(&DownloadRow) + Send + Sync>;

struct Listeners {
    progress: ViewFn,
    finished: DoneFn,
}

/// The download manager (cheap to clone).
#[derive(Clone)]
pub struct DownloadManager {
    db: Db,
    models: Arc<RwLock<PathBuf>>,
    free_space: FreeSpaceFn,
    retry: RetryPolicy,
    running: Arc<Mutex<HashMap<i64, Running>>>,
    listeners: Arc<RwLock<Listeners>>,
}

impl DownloadManager {
    /// A manager that stores files under `models/hub`.
    pub fn new(db: Db, models: PathBuf) -> Self {
        Self {
            db,
            models: Arc::new(RwLock::new(models)),
            free_space: Arc::new(|p: &std::path::Path| crate::core::system::free_space(p)),
            retry: RetryPolicy::default(),
            running: Default::default(),
            listeners: Arc::new(RwLock::new(Listeners {
                progress: Arc::new(|_| {}),
                finished: Arc::new(|_| {}),
            })),
        }
    }

    /// The models folder downloads go to.
    pub fn models_folder(&self) -> PathBuf {
        match self.models.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Switches the models folder (after the settings moved it).
    pub fn set_models_folder(&self, models: PathBuf) {
        match self.models.write() {
            Ok(mut p) => *p = models,
            Err(poisoned) => *poisoned.into_inner() = models,
        }
    }

    /// Whether any transfer is running.
    pub async fn any_running(&self) -> bool {
        !self.running.lock().await.is_empty()
    }

    /// Replaces the free-space check (tests simulate a full disk with it).
    pub fn with_free_space(mut self, f: FreeSpaceFn) -> Self {
        self.free_space = f;
        self
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, r: RetryPolicy) -> Self {
        self.retry = r;
        self
    }

    /// Sets who hears about progress and finished downloads.
    pub fn set_listeners(&self, progress: ViewFn, finished: DoneFn) {
        if let Ok(mut l) = self.listeners.write() {
            *l = Listeners { progress, finished };
        }
    }

    /// All downloads.
    pub async fn list(&self) -> AppResult<Vec<DownloadView>> {
        // Stamped before the read: an event written after it carries a higher number.
        let seq = super::models::next_view_seq();
        Ok(store::list(&self.db)
            .await?
            .iter()
            .map(|r| r.view_at(0.0, seq))
            .collect())
    }

    /// Starts downloading `files` of `repo` at `revision`. Sizes and hashes come from the
    /// Hub's listing, never from the caller; everything is validated first.
    pub async fn start(
        &self,
        cfg: HubConfig,
        repo: &str,
        revision: &str,
        files: &[String],
    ) -> AppResult<Vec<DownloadView>> {
        validate::repo(repo)?;
        validate::revision(revision)?;
        let models = self.models_folder();
        if files.is_empty() {
            return Err(AppError::invalid("files", "pick at least one file"));
        }
        for f in files {
            validate::file_path(f)?;
        }
        let client = HubClient::new(cfg.clone())?;
        let (_, remote) = client.list_remote(repo, revision).await?;
        let mut plan = Vec::new();
        for f in files {
            let r = remote
                .iter()
                .find(|r| &r.path == f)
                .ok_or_else(|| AppError::NotFound {
                    what: "file",
                    id: format!("{repo}/{f}"),
                })?;
            let dest = validate::destination(&models, repo, f)?;
            if dest.exists() {
                return Err(AppError::State(format!("{f} is already downloaded")));
            }
            let dest_s = dest.display().to_string();
            if store::active_for_dest(&self.db, &dest_s).await?.is_some() {
                return Err(AppError::State(format!("{f} is already being downloaded")));
            }
            plan.push((r.clone(), dest_s));
        }
        let total: u64 = plan.iter().map(|(r, _)| r.size).sum();
        let free =
            (self.free_space)(&models).map_err(|e| AppError::io("check free space", &models, e))?;
        if total + DISK_MARGIN_BYTES > free {
            return Err(AppError::State(format!(
                "not enough disk space: {total} bytes needed, {free} free"
            )));
        }
        let mut out = Vec::new();
        for (r, dest) in plan {
            let id =
                store::insert(&self.db, repo, revision, &r.path, r.size, &r.sha256, &dest).await?;
            let row = store::get(&self.db, id).await?;
            out.push(row.view(0.0));
            self.spawn(client.clone(), row).await;
        }
        Ok(out)
    }

    async fn spawn(&self, client: HubClient, row: DownloadRow) {
        let control = Arc::new(AtomicU8::new(RUN));
        let listeners = self.listeners.clone();
        let progress: super::transfer::ProgressFn =
            Arc::new(move |row: &DownloadRow, speed: f64| {
                if let Ok(l) = listeners.read() {
                    (l.progress)(row.view(speed));
                }
            });
        let t = Transfer {
            db: self.db.clone(),
            client,
            control: control.clone(),
            free_space: self.free_space.clone(),
            progress,
            retry: self.retry,
        };
        let id = row.id;
        let me = self.clone();
        let mut running = self.running.lock().await;
        let handle = tokio::spawn(async move {
            let result = t.run(row).await;
            me.running.lock().await.remove(&id);
            match result {
                Ok(DownloadStatus::Complete) => {
                    if let (Ok(row), Ok(l)) = (store::get(&me.db, id).await, me.listeners.read()) {
                        (l.finished)(&row);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!("download {id}: {e}"),
            }
        });
        running.insert(id, (control, handle));
    }

    /// Pauses a running download (the `.part` file stays). A user's pause is never undone
    /// by the automatic resume at start.
    pub async fn pause(&self, id: i64) -> AppResult<()> {
        let control = self.running.lock().await.get(&id).map(|(c, _)| c.clone());
        match control {
            Some(c) => {
                store::set_auto_resume(&self.db, id, false).await?;
                c.store(PAUSE, Ordering::Relaxed);
                Ok(())
            }
            None => Err(AppError::State(format!("download {id} is not running"))),
        }
    }

    /// Resumes every download the app stopped by exiting or crashing (start-up, when the
    /// setting allows it). Returns the ids resumed; one that fails to resume stays paused
    /// with its error logged, and the others still resume.
    pub async fn resume_interrupted(&self, cfg: HubConfig) -> AppResult<Vec<i64>> {
        let mut resumed = Vec::new();
        for id in store::auto_resume_ids(&self.db).await? {
            match self.resume(cfg.clone(), id).await {
                Ok(()) => resumed.push(id),
                Err(e) => tracing::warn!("download {id} did not resume at start: {e}"),
            }
        }
        Ok(resumed)
    }

    /// Resumes a paused or failed download from its `.part` file.
    pub async fn resume(&self, cfg: HubConfig, id: i64) -> AppResult<()> {
        if self.running.lock().await.contains_key(&id) {
            return Ok(());
        }
        let row = store::get(&self.db, id).await?;
        if !matches!(
            row.status,
            DownloadStatus::Paused | DownloadStatus::Failed | DownloadStatus::Queued
        ) {
            return Err(AppError::State(format!(
                "download {id} is {:?} and cannot resume",
                row.status
            )));
        }
        // Re-check what the row holds: it came from the network once.
        validate::repo(&row.repo)?;
        validate::revision(&row.revision)?;
        validate::sha256(&row.sha256)?;
        let dest = validate::destination(&self.models_folder(), &row.repo, &row.file)?;
        if dest.display().to_string() != row.dest {
            return Err(AppError::invalid(
                "dest",
                "stored destination does not match the models folder",
            ));
        }
        self.spawn(HubClient::new(cfg)?, row).await;
        Ok(())
    }

    /// Cancels a download and deletes its partial file.
    pub async fn cancel(&self, id: i64) -> AppResult<()> {
        let running = self.running.lock().await.get(&id).map(|(c, _)| c.clone());
        if let Some(c) = running {
            c.store(CANCEL, Ordering::Relaxed);
            return Ok(());
        }
        let row = store::get(&self.db, id).await?;
        if row.status == DownloadStatus::Complete {
            return Err(AppError::State(
                "a finished download is deleted from the library, not cancelled".into(),
            ));
        }
        let dest = validate::destination(&self.models_folder(), &row.repo, &row.file)?;
        let mut part = dest.into_os_string();
        part.push(".part");
        let _ = tokio::fs::remove_file(&part).await;
        store::set_state(&self.db, id, DownloadStatus::Cancelled, 0, None).await
    }

    /// Pauses everything (app exit) and waits for the tasks to save their state; these
    /// downloads resume by themselves at the next start.
    pub async fn pause_all(&self) {
        let handles: Vec<_> = {
            let mut g = self.running.lock().await;
            g.drain()
                .map(|(id, (c, h))| {
                    c.store(PAUSE, Ordering::Relaxed);
                    (id, h)
                })
                .collect()
        };
        for (id, h) in handles {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), h).await;
            if let Err(e) = store::set_auto_resume(&self.db, id, true).await {
                tracing::warn!("download {id}: {e}");
            }
        }
    }

    /// The running transfers (tests simulate a crash by aborting one).
    #[cfg(test)]
    pub(crate) async fn running_for_tests(
        &self,
    ) -> tokio::sync::MutexGuard<'_, HashMap<i64, Running>> {
        self.running.lock().await
    }

    /// Waits until download `id` is no longer running (tests, shutdown).
    pub async fn wait(&self, id: i64) {
        while self.running.lock().await.contains_key(&id) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
