//! Settings: threads, VRAM budget, policy, default sampling, Hub endpoint and token (in the
//! secret store), models folder, automatic resume of downloads, default chat backend.

pub mod commands;
pub mod folder;
pub mod helpers;
pub mod models;
pub mod secrets;
#[cfg(test)]
mod tests;
