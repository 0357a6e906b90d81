//! The engine service: one loaded model, loading in the background, generations handed out.

pub mod adapter;
pub mod commands;
pub mod models;
pub mod service;

pub use service::{EngineService, LoadedModel, ModelLoader};
#[cfg(test)]
pub mod testing;
