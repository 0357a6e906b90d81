//! Conversations and streaming replies.

pub mod commands;
pub mod helpers;
pub mod models;
pub mod store;
pub mod stream;
#[cfg(test)]
mod tests;
