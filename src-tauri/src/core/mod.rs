//! App back end, one folder per domain (Jan's layout): `commands` (thin Tauri commands),
//! `helpers` (logic), `models` (serialisable types), `tests`.

pub mod app;
pub mod chat;
pub mod db;
pub mod demo;
pub mod downloads;
pub mod engine;
pub mod error;
pub mod events;
pub mod library;
pub mod sched;
pub mod settings;
pub mod state;
pub mod system;
