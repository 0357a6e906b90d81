//! Regression guard for the scheduler's hot path: in steady-state decode (Qwen3-30B-A3B
//! shape, `value`, 16 GiB VRAM cache, GPU timings fed back) `place` and `observe` make
//! no heap allocation. Every allocation there is a cold `malloc` between two layers on
//! the GPU machine (docs/notes/bench-sched-overhead.md). Counts, not timings.

#[path = "../examples/sched_overhead/counting.rs"]
mod counting;
#[path = "../examples/sched_overhead/drive.rs"]
#[allow(dead_code)]
mod drive;

use counting::allocs;

use drive::{Driver, NoProbe, Phase, Probe};

/// Allocations per (phase, layer) call.
#[derive(Default)]
struct Count {
    at: u64,
    /// (phase, layer, allocations) of every call that allocated.
    allocating: Vec<(Phase, usize, u64)>,
    /// `place` calls seen.
    calls: u64,
}

impl Probe for Count {
    fn enter(&mut self, _: Phase, _: usize) {
        self.at = allocs();
    }
    fn exit(&mut self, phase: Phase, layer: usize) {
        let n = allocs() - self.at;
        if n > 0 && matches!(phase, Phase::Place | Phase::Observe) {
            // Recording the call allocates: outside the counted window.
            self.allocating.push((phase, layer, n));
        }
        self.calls += u64::from(phase == Phase::Place);
    }
}

/// Steps before the hot path must be allocation-free (buffers grown to their size).
const WARMUP_STEPS: usize = 64;
/// Steps checked.
const CHECKED_STEPS: usize = 64;
/// The `value` policy refreshes its probability table at its first access of every
/// fourth step (layer 0's `place`) with two scratch vectors of its own (value.rs).
const VALUE_REFRESH_ALLOCS: u64 = 2;

#[test]
fn place_and_observe_do_not_allocate_in_steady_state_decode() {
    for prefetch in [true, false] {
        let mut d = Driver::new(prefetch);
        for _ in 0..WARMUP_STEPS {
            d.step(&mut NoProbe);
        }
        let mut c = Count::default();
        c.allocating.reserve(CHECKED_STEPS * 2 * d.n_layers());
        let before = d.counts;
        for _ in 0..CHECKED_STEPS {
            d.step(&mut c);
        }
        // The run really planned GPU work (hits and background loads).
        assert!(d.counts.gpu_hits > before.gpu_hits, "no GPU hits");
        assert!(d.counts.loads > before.loads, "no background loads");
        assert_eq!(c.calls as usize, CHECKED_STEPS * d.n_layers());
        let unexpected: Vec<_> = c
            .allocating
            .iter()
            .filter(|&&(phase, layer, n)| {
                !(phase == Phase::Place && layer == 0 && n <= VALUE_REFRESH_ALLOCS)
            })
            .collect();
        assert!(
            unexpected.is_empty(),
            "prefetch {prefetch}: allocating calls (phase, layer, allocations): {unexpected:?}"
        );
    }
}
