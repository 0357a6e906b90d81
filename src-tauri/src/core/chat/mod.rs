//! Conversations and streaming replies.

pub mod commands;
pub mod helpers;
pub mod models;
pub mod remote;
#[cfg(test)]
mod remote_tests;
pub mod store;
pub mod stream;
#[cfg(test)]
mod tests;
