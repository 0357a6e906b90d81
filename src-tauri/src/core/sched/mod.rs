//! The live scheduler panel: telemetry coalesced per animation frame over a channel,
//! scheduler settings, what-if replay of the routing trace, trace and plot export.

pub mod commands;
pub mod helpers;
pub mod models;
pub mod source;
pub mod stream;
#[cfg(test)]
mod tests;
