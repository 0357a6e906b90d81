//! Opening the database and start-up recovery.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use crate::core::error::{AppError, AppResult};

/// The pool every service shares.
pub type Db = SqlitePool;

/// How long a writer waits for the lock before failing (another connection is mid-commit).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Few connections: writes are serialised by SQLite anyway and the app is single-user.
const MAX_CONNECTIONS: u32 = 4;

/// Opens (creating if needed) the database at `path`, applies the pragmas and migrations.
pub async fn open(path: &Path) -> AppResult<Db> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| AppError::io("create folder", dir, e))?;
    }
    let opts = SqliteConnectOptions::from_str("sqlite:")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    let pool = SqlitePoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .connect_with(opts)
        .await?;
    sqlx::migrate!("../migrations").run(&pool).await?;
    Ok(pool)
}

/// Marks replies that were streaming when the app died as interrupted and downloads that were
/// running as paused by the app (`auto_resume`, so they continue at start unless the setting
/// says no). Returns (messages, downloads) changed.
pub async fn recover_after_crash(db: &Db) -> AppResult<(u64, u64)> {
    let now = now_ms();
    let m = sqlx::query(
        "UPDATE messages SET status = 'interrupted', updated_at = ? WHERE status = 'streaming'",
    )
    .bind(now)
    .execute(db)
    .await?
    .rows_affected();
    let d = sqlx::query(
        "UPDATE downloads SET status = 'paused', auto_resume = 1, updated_at = ? \
         WHERE status IN ('running', 'queued', 'verifying')",
    )
    .bind(now)
    .execute(db)
    .await?
    .rows_affected();
    Ok((m, d))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
