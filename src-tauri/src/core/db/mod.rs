//! SQLite through sqlx: one pool, WAL, foreign keys, embedded migrations.
//!
//! Durability: `synchronous = NORMAL` in WAL mode. A committed transaction survives a crash
//! of the app (kill -9) because it is in the WAL file; only an OS crash or power loss can drop
//! the last transactions, and even then the database stays consistent. FULL would add an
//! fsync per flush of a streaming reply for protection we do not need for chat text.

pub mod helpers;
#[cfg(test)]
mod tests;

pub use helpers::{now_ms, open, recover_after_crash, Db};
