//! One file's transfer: resume from `<dest>.part` with HTTP Range, retry network drops,
//! hash while writing, verify the SHA-256, then rename into place. A file is only ever
//! renamed to its final name after the hash matched, so the library never sees a partial
//! or corrupt model.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::hub::HubClient;
use super::models::DownloadStatus;
use super::store::{self, DownloadRow};
use crate::core::db::Db;
use crate::core::error::{AppError, AppResult};

/// Control values shared with the manager.
pub const RUN: u8 = 0;
/// Stop and keep the partial file.
pub const PAUSE: u8 = 1;
/// Stop and delete the partial file.
pub const CANCEL: u8 = 2;

/// Free space kept beyond the file itself (the database and the OS need some too).
pub const DISK_MARGIN_BYTES: u64 = 16 << 20;
/// How often progress reaches the database and the UI.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Weight of the newest sample in the speed average.
const SPEED_SMOOTHING: f64 = 0.3;

/// Retry policy for network drops.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub retries: u32,
    /// First back-off; doubles each time.
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 8,
            backoff: Duration::from_millis(500),
        }
    }
}

/// Free bytes at a path (injectable so tests can simulate a full disk).
pub type FreeSpaceFn = Arc<dyn Fn(&Path) -> std::io::Result<u64> + Send + Sync>;

/// What the transfer reports.
pub type ProgressFn = Arc<dyn Fn(&DownloadRow, f64) + Send + Sync>;

/// Everything a transfer needs.
pub struct Transfer {
    /// Database.
    pub db: Db,
    /// Hub client.
    pub client: HubClient,
    /// Control flag.
    pub control: Arc<AtomicU8>,
    /// Free-space check.
    pub free_space: FreeSpaceFn,
    /// Progress callback (row, bytes per second).
    pub progress: ProgressFn,
    /// Retries.
    pub retry: RetryPolicy,
}

/// Why an attempt stopped.
enum Stop {
    Done,
    Control(u8),
    /// Worth retrying (connection cut, timeout, 5xx).
    Network(String),
}

fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

async fn hash_existing(path: &Path, len: u64) -> AppResult<Sha256> {
    let mut h = Sha256::new();
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| AppError::io("open", path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = f
            .read(&mut buf[..want])
            .await
            .map_err(|e| AppError::io("read", path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(h)
}

impl Transfer {
    async fn report(
        &self,
        row: &mut DownloadRow,
        status: DownloadStatus,
        error: Option<String>,
        speed: f64,
    ) -> AppResult<()> {
        row.status = status;
        row.error = error;
        store::set_state(
            &self.db,
            row.id,
            status,
            row.bytes_done,
            row.error.as_deref(),
        )
        .await?;
        (self.progress)(row, speed);
        Ok(())
    }

    /// Runs the download to an end state (complete, failed, paused, cancelled).
    pub async fn run(&self, mut row: DownloadRow) -> AppResult<DownloadStatus> {
        match self.run_inner(&mut row).await {
            Ok(s) => Ok(s),
            Err(e) => {
                let msg = e.to_string();
                self.report(&mut row, DownloadStatus::Failed, Some(msg), 0.0)
                    .await?;
                Ok(DownloadStatus::Failed)
            }
        }
    }

    async fn run_inner(&self, row: &mut DownloadRow) -> AppResult<DownloadStatus> {
        let dest = PathBuf::from(&row.dest);
        let part = part_path(&dest);
        let dir = dest
            .parent()
            .ok_or_else(|| AppError::invalid("dest", "no parent folder"))?;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| AppError::io("create folder", dir, e))?;
        let url = self.client.file_url(&row.repo, &row.revision, &row.file)?;

        // Resume from whatever the .part file holds (after a crash the row may lag behind).
        let mut have = tokio::fs::metadata(&part)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if have > row.size {
            tokio::fs::remove_file(&part)
                .await
                .map_err(|e| AppError::io("delete", &part, e))?;
            have = 0;
        }
        let mut hasher = if have > 0 {
            hash_existing(&part, have).await?
        } else {
            Sha256::new()
        };
        row.bytes_done = have;
        self.report(row, DownloadStatus::Running, None, 0.0).await?;

        let mut attempt = 0u32;
        loop {
            let need = row.size - row.bytes_done;
            let free =
                (self.free_space)(dir).map_err(|e| AppError::io("check free space", dir, e))?;
            if need + DISK_MARGIN_BYTES > free {
                let msg = format!(
                    "not enough disk space: {need} bytes needed, {free} free in {}",
                    dir.display()
                );
                self.report(row, DownloadStatus::Failed, Some(msg), 0.0)
                    .await?;
                return Ok(DownloadStatus::Failed);
            }
            match self.attempt(row, &url, &part, &mut hasher).await? {
                Stop::Done => break,
                Stop::Control(CANCEL) => {
                    let _ = tokio::fs::remove_file(&part).await;
                    row.bytes_done = 0;
                    self.report(row, DownloadStatus::Cancelled, None, 0.0)
                        .await?;
                    return Ok(DownloadStatus::Cancelled);
                }
                Stop::Control(_) => {
                    self.report(row, DownloadStatus::Paused, None, 0.0).await?;
                    return Ok(DownloadStatus::Paused);
                }
                Stop::Network(why) => {
                    attempt += 1;
                    if attempt > self.retry.retries {
                        let msg = format!(
                            "network: {why} (gave up after {} retries; resume to try again)",
                            self.retry.retries
                        );
                        self.report(row, DownloadStatus::Failed, Some(msg), 0.0)
                            .await?;
                        return Ok(DownloadStatus::Failed);
                    }
                    tracing::info!(
                        "download {} interrupted at {} bytes: {why}; retrying",
                        row.id,
                        row.bytes_done
                    );
                    let wait = self.retry.backoff * 2u32.saturating_pow(attempt - 1).min(16);
                    tokio::time::sleep(wait).await;
                    if self.control.load(Ordering::Relaxed) != RUN {
                        continue; // the next attempt sees the flag at once
                    }
                }
            }
        }

        self.report(row, DownloadStatus::Verifying, None, 0.0)
            .await?;
        let got = hex::encode(std::mem::take(&mut hasher).finalize());
        if row.bytes_done != row.size || got != row.sha256 {
            let _ = tokio::fs::remove_file(&part).await;
            let msg = if row.bytes_done != row.size {
                format!(
                    "size mismatch: expected {} bytes, got {}",
                    row.size, row.bytes_done
                )
            } else {
                format!("checksum mismatch: the Hub says sha256 {}, the file has {got}; the file was deleted", row.sha256)
            };
            row.bytes_done = 0;
            self.report(row, DownloadStatus::Failed, Some(msg), 0.0)
                .await?;
            return Ok(DownloadStatus::Failed);
        }
        tokio::fs::rename(&part, &dest)
            .await
            .map_err(|e| AppError::io("rename", &part, e))?;
        self.report(row, DownloadStatus::Complete, None, 0.0)
            .await?;
        Ok(DownloadStatus::Complete)
    }

    async fn attempt(
        &self,
        row: &mut DownloadRow,
        url: &str,
        part: &Path,
        hasher: &mut Sha256,
    ) -> AppResult<Stop> {
        let c = self.control.load(Ordering::Relaxed);
        if c != RUN {
            return Ok(Stop::Control(c));
        }
        if row.bytes_done == row.size {
            return Ok(Stop::Done);
        }
        let resp = match self
            .client
            .get_file(url, row.bytes_done, row.etag.as_deref())
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return Ok(Stop::Network(e.to_string())),
        };
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let commit = resp
            .headers()
            .get("x-repo-commit")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut append = false;
        match status {
            206 => {
                let start = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.strip_prefix("bytes "))
                    .and_then(|s| s.split('-').next())
                    .and_then(|s| s.parse::<u64>().ok());
                if start != Some(row.bytes_done) {
                    return Ok(Stop::Network(format!(
                        "server resumed at {start:?}, not at {}",
                        row.bytes_done
                    )));
                }
                append = true;
            }
            200 => {
                if row.bytes_done > 0 {
                    tracing::info!(
                        "download {}: server sent the whole file; starting over",
                        row.id
                    );
                }
                row.bytes_done = 0;
                *hasher = Sha256::new();
            }
            401 | 403 => {
                return Err(AppError::Hub(format!(
                    "{url}: access denied (HTTP {status}); set a token in Settings"
                )))
            }
            404 => return Err(AppError::Hub(format!("{url}: not found"))),
            416 => {
                // Our .part is not a prefix the server recognises: start again.
                let _ = tokio::fs::remove_file(part).await;
                row.bytes_done = 0;
                *hasher = Sha256::new();
                return Ok(Stop::Network(
                    "range not satisfiable; restarting from zero".into(),
                ));
            }
            s if s >= 500 || s == 429 => return Ok(Stop::Network(format!("HTTP {s}"))),
            s => return Err(AppError::Hub(format!("{url}: HTTP {s}"))),
        }
        if row.etag.is_none() && etag.is_some() {
            row.etag = etag.clone();
            store::set_etag(&self.db, row.id, etag.as_deref(), commit.as_deref()).await?;
        }

        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(part)
            .await
            .map_err(|e| AppError::io("open", part, e))?;
        let mut stream = resp.bytes_stream();
        let mut last = Instant::now();
        let mut since = 0u64;
        let mut speed = 0.0f64;
        let outcome = loop {
            let c = self.control.load(Ordering::Relaxed);
            if c != RUN {
                break Stop::Control(c);
            }
            let chunk = match stream.next().await {
                None => {
                    break if row.bytes_done >= row.size {
                        Stop::Done
                    } else {
                        Stop::Network("connection closed early".into())
                    }
                }
                Some(Err(e)) => break Stop::Network(e.to_string()),
                Some(Ok(b)) => b,
            };
            if row.bytes_done + chunk.len() as u64 > row.size {
                return Err(AppError::Hub(format!(
                    "server sent more than the {} bytes the Hub listed",
                    row.size
                )));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| AppError::io("write", part, e))?;
            hasher.update(&chunk);
            row.bytes_done += chunk.len() as u64;
            since += chunk.len() as u64;
            let dt = last.elapsed();
            if dt >= PROGRESS_EVERY {
                let inst = since as f64 / dt.as_secs_f64();
                speed = if speed == 0.0 {
                    inst
                } else {
                    SPEED_SMOOTHING * inst + (1.0 - SPEED_SMOOTHING) * speed
                };
                file.flush()
                    .await
                    .map_err(|e| AppError::io("write", part, e))?;
                store::set_progress(&self.db, row.id, row.bytes_done).await?;
                (self.progress)(row, speed);
                last = Instant::now();
                since = 0;
            }
        };
        file.flush()
            .await
            .map_err(|e| AppError::io("write", part, e))?;
        file.sync_data()
            .await
            .map_err(|e| AppError::io("sync", part, e))?;
        store::set_progress(&self.db, row.id, row.bytes_done).await?;
        Ok(outcome)
    }
}
