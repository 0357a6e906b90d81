//! OpenAI-compatible HTTP server for the hmoe engine (`hmoe serve`), the speed
//! benchmark client (`hmoe bench-serve`, `test_speed.py` semantics) and a client for
//! remote OpenAI-compatible endpoints (`hmoe chat --remote`).
//!
//! The server is written against [`ChatBackend`]; `engine_backend` adapts the engine.
#![deny(missing_docs)]

pub mod admission;
pub mod backend;
pub mod config;
pub mod driver;
pub mod error;
mod handlers;
pub mod request;
pub mod security;
pub mod server;
pub mod stop;

pub use backend::{BackendError, BackendGeneration, ChatBackend, GenerationStream};
pub use config::{Limits, ServeConfig, DEFAULT_PORT};
pub use error::ApiError;
pub use server::{router, serve, start, ServeError, ServerHandle};
pub mod bench;
pub mod bench_prompt;
pub mod remote;
pub mod sse_client;

pub use bench::{bench_serve, BenchArgs, BenchError, BenchReport};
pub use remote::{RemoteChat, RemoteError, RemoteStream};
pub mod engine_backend;

pub use engine_backend::{run_serve, EngineBackend};
