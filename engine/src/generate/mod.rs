//! Generation: sampling, stop strings, and the worker that batches every active
//! sequence into shared forward steps (continuous batching with chunked prefill).

pub mod sampler;
pub mod stop;
pub mod worker;

pub use sampler::Sampler;
pub use stop::{StopMatcher, StopOutcome};
