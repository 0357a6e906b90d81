//! Admission control: at most `max_concurrent` generations run, at most `max_queue`
//! wait, and everyone else gets a 429 at once. Slots are RAII guards so that a client
//! that disconnects (its future or stream is dropped) frees its place immediately.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Shared counters and the slot semaphore.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    max_queue: usize,
    queued: AtomicUsize,
    active: AtomicUsize,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    admitted: AtomicU64,
    rejected_busy: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    failed: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
}

/// A snapshot for `/health`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AdmissionStats {
    /// Generations running now.
    pub active: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Slot count.
    pub max_concurrent: usize,
    /// Queue bound.
    pub max_queue: usize,
    /// Requests that got a slot since start.
    pub admitted: u64,
    /// Requests refused with 429.
    pub rejected_busy: u64,
    /// Generations that ran to their end.
    pub completed: u64,
    /// Generations stopped because the client went away.
    pub cancelled: u64,
    /// Generations that failed in the engine.
    pub failed: u64,
    /// Prompt tokens of finished generations.
    pub prompt_tokens: u64,
    /// Completion tokens of finished generations.
    pub completion_tokens: u64,
}

/// How a slot ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Ran to its end.
    Completed,
    /// Failed in the engine.
    Failed,
}

/// A running generation's place. Dropping it without [`Slot::finish`] counts as cancelled.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    _permit: OwnedSemaphorePermit,
    finished: bool,
}

/// Holds a place in the queue while waiting.
struct QueueGuard<'a>(&'a Admission);

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// `max_concurrent` slots and a queue of `max_queue`.
    pub fn new(max_concurrent: usize, max_queue: usize) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            max_queue,
            queued: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            counters: Counters::default(),
        })
    }

    /// Waits for a slot, or fails at once with 429 when the queue is full.
    pub async fn acquire(self: &Arc<Self>) -> Result<Slot, ApiError> {
        // The semaphore is fair: try_acquire does not overtake queued waiters.
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let reserved = self
                    .queued
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                        (q < self.max_queue).then_some(q + 1)
                    });
                if reserved.is_err() {
                    self.counters.rejected_busy.fetch_add(1, Ordering::Relaxed);
                    return Err(ApiError::busy(format!(
                        "server busy: {} generations running and {} requests queued (the limits \
                         of --max-concurrent and --max-queue); retry later",
                        self.max_concurrent, self.max_queue
                    )));
                }
                let _queued = QueueGuard(self);
                self.slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| ApiError::unavailable("server is shutting down"))?
            }
        };
        self.active.fetch_add(1, Ordering::AcqRel);
        self.counters.admitted.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            admission: self.clone(),
            _permit: permit,
            finished: false,
        })
    }

    /// Current numbers.
    pub fn stats(&self) -> AdmissionStats {
        let c = &self.counters;
        AdmissionStats {
            active: self.active.load(Ordering::Acquire),
            queued: self.queued.load(Ordering::Acquire),
            max_concurrent: self.max_concurrent,
            max_queue: self.max_queue,
            admitted: c.admitted.load(Ordering::Relaxed),
            rejected_busy: c.rejected_busy.load(Ordering::Relaxed),
            completed: c.completed.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            prompt_tokens: c.prompt_tokens.load(Ordering::Relaxed),
            completion_tokens: c.completion_tokens.load(Ordering::Relaxed),
        }
    }
}

impl Slot {
    /// Records how the generation ended and its token counts.
    pub fn finish(mut self, outcome: Outcome, prompt_tokens: usize, completion_tokens: usize) {
        let c = &self.admission.counters;
        match outcome {
            Outcome::Completed => c.completed.fetch_add(1, Ordering::Relaxed),
            Outcome::Failed => c.failed.fetch_add(1, Ordering::Relaxed),
        };
        c.prompt_tokens
            .fetch_add(prompt_tokens as u64, Ordering::Relaxed);
        c.completion_tokens
            .fetch_add(completion_tokens as u64, Ordering::Relaxed);
        self.finished = true;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.active.fetch_sub(1, Ordering::AcqRel);
        if !self.finished {
            self.admission
                .counters
                .cancelled
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_queue_is_refused_and_drop_frees() {
        let a = Admission::new(1, 1);
        let s1 = a.acquire().await.unwrap();
        let a2 = a.clone();
        let waiter = tokio::spawn(async move {
            a2.acquire()
                .await
                .map(|s| s.finish(Outcome::Completed, 1, 1))
        });
        // Wait until the waiter is queued.
        while a.stats().queued == 0 {
            tokio::task::yield_now().await;
        }
        let third = a.acquire().await;
        assert_eq!(third.unwrap_err().status.as_u16(), 429);
        drop(s1);
        waiter.await.unwrap().unwrap();
        let st = a.stats();
        assert_eq!(
            (
                st.active,
                st.queued,
                st.cancelled,
                st.completed,
                st.rejected_busy
            ),
            (0, 0, 1, 1, 1)
        );
    }
}
