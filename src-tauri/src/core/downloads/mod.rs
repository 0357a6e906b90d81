//! Download manager: the Hub protocol (listing, resolve, Range), resumable transfers with
//! SHA-256 verification, state in SQLite so that downloads survive a restart.

pub mod commands;
pub mod hub;
pub mod manager;
pub mod models;
pub mod store;
#[cfg(test)]
mod tests;
pub mod transfer;
pub mod validate;

pub use manager::DownloadManager;
