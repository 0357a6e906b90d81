//! Settings: threads, VRAM budget, policy, default sampling, Hub endpoint and token.

pub mod commands;
pub mod helpers;
pub mod models;
