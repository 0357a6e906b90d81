//! Turns a backend's event stream into text pieces and one finish, applying stop
//! sequences and counting tokens. Shared by the streaming and non-streaming paths.

use std::collections::VecDeque;

use hmoe_engine::api::{FinishReason, GenerationEvent};

use crate::backend::BackendGeneration;
use crate::error::ApiError;
use crate::stop::{StopMatcher, StopStep};

/// One step of a generation, as the HTTP layer sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Text to send.
    Text(String),
    /// The end, with OpenAI's `finish_reason` and the token counts.
    Finished {
        /// `stop` or `length`.
        finish_reason: &'static str,
        /// Prompt tokens.
        prompt_tokens: usize,
        /// Generated tokens.
        completion_tokens: usize,
    },
    /// The engine failed mid-way.
    Failed(ApiError),
}

/// Drives one generation.
pub struct Driver {
    generation: BackendGeneration,
    matcher: StopMatcher,
    prompt_tokens: usize,
    completion_tokens: usize,
    queue: VecDeque<Step>,
    ended: bool,
}

impl Driver {
    /// Wraps a started generation; `prompt_tokens` is the server's own count, replaced
    /// by the engine's when it reports one.
    pub fn new(generation: BackendGeneration, stops: &[String], prompt_tokens: usize) -> Self {
        Self {
            generation,
            matcher: StopMatcher::new(stops),
            prompt_tokens,
            completion_tokens: 0,
            queue: VecDeque::new(),
            ended: false,
        }
    }

    fn finish(&mut self, finish_reason: &'static str) {
        self.queue.push_back(Step::Finished {
            finish_reason,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
        });
        self.ended = true;
    }

    /// The next step; `None` after `Finished` or `Failed`.
    pub async fn next(&mut self) -> Option<Step> {
        loop {
            if let Some(step) = self.queue.pop_front() {
                return Some(step);
            }
            if self.ended {
                return None;
            }
            match self.generation.next_event().await {
                Some(GenerationEvent::Text { text, tokens }) => {
                    self.completion_tokens += tokens.len();
                    match self.matcher.push(&text) {
                        StopStep::Continue(t) => {
                            if !t.is_empty() {
                                return Some(Step::Text(t));
                            }
                        }
                        StopStep::Stopped(t) => {
                            // Our own match: stop the engine now, it may not know this stop.
                            self.generation.cancel();
                            if !t.is_empty() {
                                self.queue.push_back(Step::Text(t));
                            }
                            self.finish("stop");
                        }
                    }
                }
                Some(GenerationEvent::Done {
                    finish_reason,
                    stats,
                }) => {
                    if stats.prompt_tokens > 0 {
                        self.prompt_tokens = stats.prompt_tokens;
                    }
                    self.completion_tokens = self.completion_tokens.max(stats.completion_tokens);
                    let reason = match finish_reason {
                        FinishReason::Stop => "stop",
                        FinishReason::StopString => {
                            // The engine matched a stop string: held-back text is its start.
                            self.matcher.flush();
                            "stop"
                        }
                        FinishReason::Length | FinishReason::ContextFull => "length",
                        FinishReason::Cancelled => {
                            self.ended = true;
                            return Some(Step::Failed(ApiError::unavailable(
                                "the engine cancelled the generation (shutting down?)",
                            )));
                        }
                    };
                    let rest = self.matcher.flush();
                    if !rest.is_empty() {
                        self.queue.push_back(Step::Text(rest));
                    }
                    self.finish(reason);
                }
                Some(GenerationEvent::Error { message }) => {
                    self.ended = true;
                    return Some(Step::Failed(ApiError::internal(format!(
                        "generation failed: {message}"
                    ))));
                }
                None => {
                    self.ended = true;
                    return Some(Step::Failed(ApiError::internal(
                        "the engine ended the generation without a result",
                    )));
                }
            }
        }
    }
}
