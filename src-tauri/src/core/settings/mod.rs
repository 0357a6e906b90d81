//! Settings: threads, VRAM budget, policy, default sampling, Hub endpoint and token (in the
//! secret store), models folder, automatic resume of downloads, default chat backend, the
//! local OpenAI-compatible server, the scheduler panel's view settings.

pub mod commands;
pub mod folder;
pub mod helpers;
pub mod models;
pub mod panel;
pub mod secrets;
pub mod server;
#[cfg(test)]
mod tests;
