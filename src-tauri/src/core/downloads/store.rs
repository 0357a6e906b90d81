//! Rows of the `downloads` table.

use sqlx::Row;

use super::models::{DownloadStatus, DownloadView};
use crate::core::db::{now_ms, Db};
use crate::core::error::{AppError, AppResult};

/// A download row with everything the transfer needs.
#[derive(Debug, Clone, PartialEq)]
pub struct DownloadRow {
    /// Row id.
    pub id: i64,
    /// `org/name`.
    pub repo: String,
    /// Commit or branch.
    pub revision: String,
    /// Path in the repository.
    pub file: String,
    /// Bytes.
    pub size: u64,
    /// Expected SHA-256.
    pub sha256: String,
    /// ETag of the first response (for If-Range on resume).
    pub etag: Option<String>,
    /// Final path.
    pub dest: String,
    /// Bytes on disk.
    pub bytes_done: u64,
    /// Status.
    pub status: DownloadStatus,
    /// Error.
    pub error: Option<String>,
}

impl DownloadRow {
    /// The UI view (speed and ETA filled in by the running transfer), stamped now: call it
    /// after the row's state was written.
    pub fn view(&self, speed_bps: f64) -> DownloadView {
        self.view_at(speed_bps, super::models::next_view_seq())
    }

    /// The UI view with a given stamp (for lists, stamped before the read).
    pub fn view_at(&self, speed_bps: f64, seq: u64) -> DownloadView {
        let left = self.size.saturating_sub(self.bytes_done) as f64;
        DownloadView {
            id: self.id,
            repo: self.repo.clone(),
            revision: self.revision.clone(),
            file: self.file.clone(),
            size: self.size,
            bytes_done: self.bytes_done,
            status: self.status,
            error: self.error.clone(),
            speed_bps,
            eta_s: (speed_bps > 0.0).then(|| left / speed_bps),
            seq,
        }
    }
}

fn from_row(r: &sqlx::sqlite::SqliteRow) -> AppResult<DownloadRow> {
    let status: String = r.try_get("status")?;
    Ok(DownloadRow {
        id: r.try_get("id")?,
        repo: r.try_get("repo")?,
        revision: r.try_get("revision")?,
        file: r.try_get("file")?,
        size: r.try_get::<i64, _>("size")?.max(0) as u64,
        sha256: r.try_get("sha256")?,
        etag: r.try_get("etag")?,
        dest: r.try_get("dest")?,
        bytes_done: r.try_get::<i64, _>("bytes_done")?.max(0) as u64,
        status: DownloadStatus::parse(&status)
            .ok_or_else(|| AppError::State(format!("download has unknown status {status:?}")))?,
        error: r.try_get("error")?,
    })
}

/// Inserts a queued download.
pub async fn insert(
    db: &Db,
    repo: &str,
    revision: &str,
    file: &str,
    size: u64,
    sha256: &str,
    dest: &str,
) -> AppResult<i64> {
    let now = now_ms();
    Ok(sqlx::query(
        "INSERT INTO downloads (repo, revision, file, size, sha256, dest, status, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?) RETURNING id",
    )
    .bind(repo)
    .bind(revision)
    .bind(file)
    .bind(size as i64)
    .bind(sha256)
    .bind(dest)
    .bind(now)
    .bind(now)
    .fetch_one(db)
    .await?
    .try_get(0)?)
}

/// One download.
pub async fn get(db: &Db, id: i64) -> AppResult<DownloadRow> {
    let r = sqlx::query("SELECT * FROM downloads WHERE id = ?")
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| AppError::NotFound {
            what: "download",
            id: id.to_string(),
        })?;
    from_row(&r)
}

/// All downloads, newest first.
pub async fn list(db: &Db) -> AppResult<Vec<DownloadRow>> {
    sqlx::query("SELECT * FROM downloads ORDER BY id DESC")
        .fetch_all(db)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// A download of the same destination that is not finished (to refuse duplicates).
pub async fn active_for_dest(db: &Db, dest: &str) -> AppResult<Option<i64>> {
    Ok(sqlx::query(
        "SELECT id FROM downloads WHERE dest = ? AND status IN ('queued', 'running', 'paused', 'verifying') LIMIT 1",
    )
    .bind(dest)
    .fetch_optional(db)
    .await?
    .map(|r| r.get(0)))
}

/// Sets status, bytes and error.
pub async fn set_state(
    db: &Db,
    id: i64,
    status: DownloadStatus,
    bytes_done: u64,
    error: Option<&str>,
) -> AppResult<()> {
    sqlx::query(
        "UPDATE downloads SET status = ?, bytes_done = ?, error = ?, updated_at = ? WHERE id = ?",
    )
    .bind(status.as_str())
    .bind(bytes_done as i64)
    .bind(error)
    .bind(now_ms())
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Records progress.
pub async fn set_progress(db: &Db, id: i64, bytes_done: u64) -> AppResult<()> {
    sqlx::query("UPDATE downloads SET bytes_done = ?, updated_at = ? WHERE id = ?")
        .bind(bytes_done as i64)
        .bind(now_ms())
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Records the ETag and commit of the first response.
pub async fn set_etag(db: &Db, id: i64, etag: Option<&str>, commit: Option<&str>) -> AppResult<()> {
    sqlx::query("UPDATE downloads SET etag = COALESCE(?, etag), commit_sha = COALESCE(?, commit_sha) WHERE id = ?")
        .bind(etag)
        .bind(commit)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Marks whether the app (true) or the user (false) stopped a download.
pub async fn set_auto_resume(db: &Db, id: i64, auto: bool) -> AppResult<()> {
    sqlx::query("UPDATE downloads SET auto_resume = ? WHERE id = ?")
        .bind(auto)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Paused downloads the app stopped (exit or crash), oldest first.
pub async fn auto_resume_ids(db: &Db) -> AppResult<Vec<i64>> {
    Ok(sqlx::query(
        "SELECT id FROM downloads WHERE status = 'paused' AND auto_resume = 1 ORDER BY id",
    )
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

/// Rewrites destinations under `from` to `to` (the models folder moved).
pub async fn move_destinations(
    db: &Db,
    from: &std::path::Path,
    to: &std::path::Path,
) -> AppResult<u64> {
    let mut n = 0;
    for row in list(db).await? {
        if let Ok(rel) = std::path::Path::new(&row.dest).strip_prefix(from) {
            sqlx::query("UPDATE downloads SET dest = ? WHERE id = ?")
                .bind(to.join(rel).display().to_string())
                .bind(row.id)
                .execute(db)
                .await?;
            n += 1;
        }
    }
    Ok(n)
}
