//! A persistent thread pool for data-parallel jobs.
//!
//! `broadcast(f)` runs `f(thread_index, n_threads)` once on every pool thread, the
//! caller being thread 0, and returns when all are done. Idle workers park on a
//! condition variable: after a job they spin only briefly (and not at all when the
//! pool has more threads than cores), so a pool sized to every core never competes
//! with the caller for CPU time the way a spinning pool does. No allocation and no
//! thread start per call.

use crate::topology;
use crate::CpuError;
use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// How to build a [`CpuPool`].
#[derive(Debug, Clone, Default)]
pub struct PoolConfig {
    /// Threads including the caller; 0 = one per physical core.
    pub threads: usize,
    /// Pin worker `i` (1 ≤ i < threads) to the `i`-th physical core. The caller
    /// (thread 0) is never pinned here, as it may be an async runtime thread; a
    /// dedicated inference thread should pin itself to the first core
    /// ([`crate::topology::pin_current_thread`]). On the GPU machine's VM pinning
    /// raised 16-thread decode from ~25 to ~57 GB/s (Q8_0), see docs/notes/bench-cpu.md.
    pub pin: bool,
    /// Busy-wait time in microseconds before parking after a job (and the caller
    /// before sleeping on completion); `None` = automatic (off when threads > cores).
    pub spin: Option<u32>,
}

/// Default spin before parking, in µs: longer than the gaps of a decode layer (the
/// attention, the router, a GPU share), so back-to-back jobs skip the futex wake-up,
/// while an idle pool costs nothing after it. Measured on the GPU machine's 16 cores
/// (`cpu-bench --latency`): an empty broadcast after 200 µs idle took 22 µs with a
/// 50 µs spin and 3 µs with 250 µs; after 2 ms idle (parked) ~60 µs either way.
const DEFAULT_SPIN_US: u32 = 250;

type Job = *const (dyn Fn(usize, usize) + Sync + 'static);

struct Shared {
    /// Bumped (under `lock`) for each job and for shutdown.
    generation: AtomicU64,
    lock: Mutex<()>,
    start: Condvar,
    /// The current job; written only while no worker runs one.
    job: UnsafeCell<Option<Job>>,
    shutdown: AtomicBool,
    pending: AtomicUsize,
    done_lock: Mutex<()>,
    done: Condvar,
    panicked: AtomicBool,
    n_threads: usize,
    spin: u32,
}

// SAFETY: `job` is written by the (single, serialised) caller only between jobs,
// before the Release bump of `generation`; workers read it after an Acquire load
// that observed the bump, and the caller waits for them before writing it again.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// A persistent pool of threads (see the module docs).
pub struct CpuPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    caller: Mutex<()>,
}

impl std::fmt::Debug for CpuPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuPool({} threads)", self.shared.n_threads)
    }
}

fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    // The guarded data is `()`: a poisoned lock carries no broken invariant.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CpuPool {
    /// A pool with one thread per physical core, not pinned.
    pub fn new_default() -> Result<Self, CpuError> {
        Self::new(PoolConfig::default())
    }

    /// A pool of `threads` threads (0 = physical cores).
    pub fn with_threads(threads: usize) -> Result<Self, CpuError> {
        Self::new(PoolConfig {
            threads,
            ..PoolConfig::default()
        })
    }

    /// Builds the pool and starts its `threads - 1` workers.
    pub fn new(cfg: PoolConfig) -> Result<Self, CpuError> {
        let cores = topology::physical_core_cpus();
        let n_threads = if cfg.threads == 0 {
            cores.len().max(1)
        } else {
            cfg.threads
        };
        // The process-wide CPU count (cached before any pinning), not this thread's
        // affinity: a pinned caller must not turn spinning off for everyone.
        let logical = topology::allowed_cpus().len().max(1);
        let spin = cfg.spin.unwrap_or(if n_threads > logical {
            0
        } else {
            DEFAULT_SPIN_US
        });
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            lock: Mutex::new(()),
            start: Condvar::new(),
            job: UnsafeCell::new(None),
            shutdown: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
            done_lock: Mutex::new(()),
            done: Condvar::new(),
            panicked: AtomicBool::new(false),
            n_threads,
            spin,
        });
        let mut pool = CpuPool {
            shared: shared.clone(),
            workers: Vec::with_capacity(n_threads),
            caller: Mutex::new(()),
        };
        for index in 1..n_threads {
            let s = shared.clone();
            let pin_cpu = if cfg.pin && !cores.is_empty() {
                Some(cores[index % cores.len()])
            } else {
                None
            };
            let handle = std::thread::Builder::new()
                .name(format!("hmoe-cpu-{index}"))
                .spawn(move || {
                    // Threads inherit the creator's affinity: a pinned caller would
                    // otherwise put every unpinned worker on its own core.
                    match pin_cpu {
                        Some(cpu) => topology::pin_current_thread(cpu),
                        None => topology::unpin_current_thread(),
                    };
                    worker_loop(&s, index)
                })
                .map_err(|source| CpuError::Spawn { index, source })?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    /// Threads that run each job (the caller included).
    pub fn threads(&self) -> usize {
        self.shared.n_threads
    }

    /// Runs `f(thread_index, n_threads)` on every pool thread (the caller is index
    /// 0) and waits for all. Calls from several threads are serialised.
    pub fn broadcast<F: Fn(usize, usize) + Sync>(&self, f: F) -> Result<(), CpuError> {
        self.broadcast_beside(&mut || {}, f)
    }

    /// As [`Self::broadcast`], but the caller first runs `beside` (once, on its own
    /// thread, after the workers were woken) and only then its share of `f`: other
    /// host work (issuing a GPU share) overlaps the job instead of delaying it. `f`
    /// should hand out work dynamically, or the caller's late share is on the critical
    /// path. `beside` must not use this pool (it would get [`CpuError::Reentrant`]).
    pub fn broadcast_beside<F: Fn(usize, usize) + Sync>(
        &self,
        beside: &mut dyn FnMut(),
        f: F,
    ) -> Result<(), CpuError> {
        // A job that broadcasts again would wait on itself forever.
        if IN_JOB.with(|c| c.get()) {
            return Err(CpuError::Reentrant);
        }
        let _serial = lock(&self.caller);
        let s = &*self.shared;
        let n = s.n_threads;
        if n == 1 {
            return catch_unwind(AssertUnwindSafe(|| {
                in_job(|| {
                    beside();
                    f(0, 1)
                })
            }))
            .map_err(|_| CpuError::WorkerPanicked);
        }
        let f_ref: &(dyn Fn(usize, usize) + Sync) = &f;
        // SAFETY: erasing the lifetime is sound because this function does not
        // return before every worker has finished with the job (pending == 0) and
        // the slot is cleared before `f` goes out of scope.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize, usize) + Sync), Job>(f_ref) };
        s.panicked.store(false, Ordering::Relaxed);
        s.pending.store(n - 1, Ordering::Relaxed);
        {
            let _g = lock(&s.lock);
            // SAFETY: no worker is running a job now (the previous broadcast waited).
            unsafe { *s.job.get() = Some(job) };
            s.generation.fetch_add(1, Ordering::Release);
        }
        s.start.notify_all();
        let mine = catch_unwind(AssertUnwindSafe(|| {
            in_job(|| {
                beside();
                f(0, n)
            })
        }));
        // Wait for the workers: spin briefly, then sleep.
        spin_while(s.spin, || s.pending.load(Ordering::Acquire) != 0);
        if s.pending.load(Ordering::Acquire) != 0 {
            let mut g = lock(&s.done_lock);
            while s.pending.load(Ordering::Acquire) != 0 {
                g = s.done.wait(g).unwrap_or_else(|e| e.into_inner());
            }
        }
        // SAFETY: every worker has finished the job.
        unsafe { *s.job.get() = None };
        if mine.is_err() || s.panicked.load(Ordering::Relaxed) {
            return Err(CpuError::WorkerPanicked);
        }
        Ok(())
    }
}

thread_local! {
    /// Set while this thread runs a pool job.
    static IN_JOB: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with `IN_JOB` set (reset even if `f` panics).
fn in_job<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            IN_JOB.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(IN_JOB.with(|c| c.replace(true)));
    f()
}

/// Busy-waits while `cond` holds, for at most `us` microseconds.
#[inline]
fn spin_while(us: u32, cond: impl Fn() -> bool) {
    if us == 0 || !cond() {
        return;
    }
    let start = std::time::Instant::now();
    let limit = std::time::Duration::from_micros(us as u64);
    loop {
        for _ in 0..32 {
            if !cond() {
                return;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= limit {
            return;
        }
    }
}

fn worker_loop(s: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        // Wait for a new generation: spin a little, then park on the condvar.
        spin_while(s.spin, || s.generation.load(Ordering::Acquire) == seen);
        if s.generation.load(Ordering::Acquire) == seen {
            let mut g = lock(&s.lock);
            while s.generation.load(Ordering::Acquire) == seen {
                g = s.start.wait(g).unwrap_or_else(|e| e.into_inner());
            }
        }
        seen = s.generation.load(Ordering::Acquire);
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: see `Shared`'s Sync impl; the job outlives this call.
        if let Some(job) = unsafe { *s.job.get() } {
            let f = unsafe { &*job };
            if catch_unwind(AssertUnwindSafe(|| in_job(|| f(index, s.n_threads)))).is_err() {
                s.panicked.store(true, Ordering::Relaxed);
            }
        }
        if s.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _g = lock(&s.done_lock);
            s.done.notify_one();
        }
    }
}

impl Drop for CpuPool {
    fn drop(&mut self) {
        {
            let _g = lock(&self.shared.lock);
            self.shared.shutdown.store(true, Ordering::Release);
            self.shared.generation.fetch_add(1, Ordering::Release);
        }
        self.shared.start.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_runs_each_job_once() {
        for threads in [1usize, 2, 3, 8, 16] {
            let pool = CpuPool::with_threads(threads).unwrap();
            assert_eq!(pool.threads(), threads);
            let hits: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
            for _ in 0..200 {
                pool.broadcast(|i, n| {
                    assert_eq!(n, threads);
                    hits[i].fetch_add(1, Ordering::Relaxed);
                })
                .unwrap();
            }
            for h in &hits {
                assert_eq!(h.load(Ordering::Relaxed), 200);
            }
        }
    }

    #[test]
    fn borrowed_data_and_disjoint_results() {
        let pool = CpuPool::new(PoolConfig {
            threads: 4,
            pin: true,
            spin: Some(0),
        })
        .unwrap();
        let data: Vec<u64> = (0..10_000).collect();
        let sums: Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
        pool.broadcast(|i, n| {
            let chunk = data.len().div_ceil(n);
            let s: u64 = data.iter().skip(i * chunk).take(chunk).sum();
            sums[i].store(s, Ordering::Relaxed);
        })
        .unwrap();
        let total: u64 = sums.iter().map(|s| s.load(Ordering::Relaxed)).sum();
        assert_eq!(total, data.iter().sum::<u64>());
    }

    #[test]
    fn broadcasting_from_inside_a_job_is_an_error_not_a_deadlock() {
        for threads in [1usize, 3] {
            let pool = CpuPool::with_threads(threads).unwrap();
            let errors = AtomicUsize::new(0);
            pool.broadcast(|_, _| {
                if matches!(pool.broadcast(|_, _| {}), Err(CpuError::Reentrant)) {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            })
            .unwrap();
            assert_eq!(errors.load(Ordering::Relaxed), threads);
            pool.broadcast(|_, _| {}).unwrap();
        }
    }

    #[test]
    fn beside_runs_once_on_the_caller_while_the_workers_work() {
        const ITEMS: usize = 64;
        for threads in [1usize, 2, 4] {
            let pool = CpuPool::with_threads(threads).unwrap();
            let caller = std::thread::current().id();
            let (next, done) = (AtomicUsize::new(0), AtomicUsize::new(0));
            let mut calls = 0;
            let mut seen_by_beside = 0;
            let mut beside = || {
                calls += 1;
                assert_eq!(std::thread::current().id(), caller);
                assert!(matches!(
                    pool.broadcast(|_, _| {}),
                    Err(CpuError::Reentrant)
                ));
                // With workers, the whole job can finish before the caller takes part.
                let start = std::time::Instant::now();
                while threads > 1 && done.load(Ordering::Acquire) < ITEMS {
                    assert!(start.elapsed().as_secs() < 10, "workers did not run beside");
                    std::hint::spin_loop();
                }
                seen_by_beside = done.load(Ordering::Acquire);
            };
            pool.broadcast_beside(&mut beside, |_, _| {
                while next.fetch_add(1, Ordering::Relaxed) < ITEMS {
                    done.fetch_add(1, Ordering::AcqRel);
                }
            })
            .unwrap();
            assert_eq!(calls, 1);
            assert_eq!(done.load(Ordering::Relaxed), ITEMS);
            let expect_seen = if threads > 1 { ITEMS } else { 0 };
            assert_eq!(seen_by_beside, expect_seen, "{threads} threads");
        }
    }

    #[test]
    fn a_panicking_job_is_an_error_and_the_pool_survives() {
        let pool = CpuPool::with_threads(3).unwrap();
        let r = pool.broadcast(|i, _| {
            if i == 2 {
                panic!("test panic in worker");
            }
        });
        assert!(matches!(r, Err(CpuError::WorkerPanicked)));
        let count = AtomicUsize::new(0);
        pool.broadcast(|_, _| {
            count.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(count.load(Ordering::Relaxed), 3);
    }
}
