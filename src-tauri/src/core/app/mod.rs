//! App-level commands and start-up.

pub mod atomic;
pub mod commands;
pub mod dialog;
pub mod setup;
#[cfg(test)]
mod tests;
