//! Scheduler overhead per MoE layer, without a GPU: the engine's `SchedPlacer` driven
//! through decode steps of the 48-layer Qwen3-30B-A3B shape with a 16 GiB VRAM cache
//! (`value` policy, GPU timings fed back), timing `place`, `observe` and `end_step` as
//! `MoeSummary::sched_seconds` does on the GPU machine.
//!
//! ```text
//! cargo run --release -p hmoe-engine --example sched_overhead -- [STEPS] [WARMUP] [COLD_STEPS] [PRESET] [BUDGET_GIB]
//! ```
//! Prints ns per layer for each call (end_step and begin_step amortised over the
//! layers) with and without prefetch, and heap allocations per layer; then the same with
//! the caches evicted before every call (`cold`), in the engine's order (`engine`) and
//! with L1/L2 evicted but the L3 kept before every call (`l3`, 10x the cold steps);
//! defaults: 2000 steps, 200 warm-up, 20 cold, `qwen3-30b-a3b:q4_k_m`, 16 GiB. The last
//! column is a digest of every placement: equal digests in two builds, equal decisions.

mod counting;
mod drive;

use counting::allocs;

use drive::{Driver, NoProbe, Phase, Probe};
use hmoe_engine::backend::cuda::SlotHints;
use std::time::Instant;

const PHASES: [Phase; 4] = [Phase::Begin, Phase::Place, Phase::Observe, Phase::End];

/// Bytes swept to evict everything: above the build machine's 32 MiB L3, as the expert
/// weights streamed by the CPU share evict the scheduler's state on the GPU machine.
const COLD_BYTES: usize = 48 << 20;
/// Bytes swept for the host work between a layer's end and the next plan (the dense
/// path's launches, routing): about half the L2 (an assumption, see the notes).
const DENSE_BYTES: usize = 1 << 20;
/// Bytes swept to evict the private caches only (twice this machine's 1 MiB L2, far
/// below any L3): a server CPU whose large L3 keeps the scheduler's state while the
/// CPU share streams a few experts through L1/L2.
const L2_BYTES: usize = 4 << 20;

/// What the caches hold when a call starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Caches {
    /// Back-to-back calls: everything stays cached.
    Warm,
    /// Everything evicted before every call (worst case).
    Cold,
    /// The engine's order: the CPU share's streaming (between `place` and `observe`)
    /// evicts everything; the dense path's host work (between `observe` and the next
    /// `place`) evicts part.
    Engine,
    /// L1 and L2 evicted before every call, the L3 kept.
    L3,
}

/// Time and allocations per phase.
#[derive(Default)]
struct Timer {
    started: Option<(Instant, u64)>,
    ns: [u128; 4],
    /// Every call's nanoseconds per phase (for medians: robust to preemption by the
    /// other jobs on a shared machine).
    calls: [Vec<u32>; 4],
    allocs: [u64; 4],
    /// Swept to evict the caches (empty: warm runs).
    full: Vec<u8>,
    part: Vec<u8>,
    engine: bool,
}

/// Writes one byte per cache line of `buf`.
fn sweep(buf: &mut [u8]) {
    for b in buf.iter_mut().step_by(64) {
        *b = b.wrapping_add(1);
    }
    std::hint::black_box(buf);
}

impl Timer {
    fn new(caches: Caches) -> Self {
        let buf = |n: usize| {
            if caches == Caches::Warm {
                Vec::new()
            } else {
                vec![0; n]
            }
        };
        Self {
            full: buf(if caches == Caches::L3 {
                L2_BYTES
            } else {
                COLD_BYTES
            }),
            part: buf(DENSE_BYTES),
            engine: caches == Caches::Engine,
            ..Self::default()
        }
    }

    /// Evicts what the work before `phase` would have evicted.
    fn evict(&mut self, phase: Phase) {
        if !self.engine {
            sweep(&mut self.full);
            return;
        }
        match phase {
            Phase::Observe => sweep(&mut self.full),
            Phase::Place | Phase::Begin | Phase::End => sweep(&mut self.part),
        }
    }
}

fn idx(p: Phase) -> usize {
    PHASES.iter().position(|&q| q == p).unwrap_or(0)
}

impl Probe for Timer {
    fn prepare(&mut self, p: Phase, _: usize) {
        if !self.full.is_empty() {
            self.evict(p);
        }
    }
    fn enter(&mut self, _: Phase, _: usize) {
        self.started = Some((Instant::now(), allocs()));
    }
    fn exit(&mut self, p: Phase, _: usize) {
        let a = allocs();
        if let Some((t, a0)) = self.started.take() {
            let ns = t.elapsed().as_nanos();
            self.ns[idx(p)] += ns;
            self.calls[idx(p)].push(ns.min(u32::MAX as u128) as u32);
            self.allocs[idx(p)] += a - a0;
        }
    }
}

/// The model and budget of a run.
#[derive(Clone)]
struct Setup {
    preset: String,
    budget: u64,
}

fn run(setup: &Setup, prefetch: bool, caches: Caches, steps: usize, warmup: usize) {
    let mut d = Driver::with(&setup.preset, setup.budget, prefetch);
    for _ in 0..warmup {
        d.step(&mut NoProbe);
    }
    let c0 = d.counts;
    let mut t = Timer::new(caches);
    let wall = Instant::now();
    for _ in 0..steps {
        d.step(&mut t);
    }
    let wall = wall.elapsed().as_secs_f64();
    let layers = (steps * d.n_layers()) as f64;
    let per = |p: Phase| t.ns[idx(p)] as f64 / layers;
    let median = |p: Phase| {
        let mut v = t.calls[idx(p)].clone();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    let al = |p: Phase| t.allocs[idx(p)] as f64 / layers;
    let c = d.counts;
    let routed =
        (c.cpu + c.gpu_hits + c.gpu_fetches - c0.cpu - c0.gpu_hits - c0.gpu_fetches).max(1) as f64;
    let (place, observe) = (per(Phase::Place), per(Phase::Observe));
    let (end, begin) = (per(Phase::End), per(Phase::Begin));
    println!(
        "| {} | {} | {steps} | {place:.0} ({}) | {observe:.0} ({}) | {:.0} | {end:.0} ({}) | {:.0} | {:.2} / {:.2} / {:.2} | {:.2} | {:.2} | {wall:.2} | {:016x} |",
        if prefetch { "on" } else { "off" },
        match caches {
            Caches::Warm => "warm",
            Caches::Cold => "cold",
            Caches::Engine => "engine",
            Caches::L3 => "l3",
        },
        median(Phase::Place),
        median(Phase::Observe),
        place + observe,
        median(Phase::End) / d.n_layers() as u32,
        place + observe + end + begin,
        al(Phase::Place),
        al(Phase::Observe),
        al(Phase::Begin) + al(Phase::End),
        (c.gpu_hits - c0.gpu_hits) as f64 / routed,
        (c.gpu_fetches - c0.gpu_fetches) as f64 / routed,
        d.digest,
    );
}

/// `SlotHints::publish` alone (the CUDA backend's slot map, called by `place` for every
/// layer): median ns per call over `iters` calls with 48 layers × 7 experts published,
/// caches evicted before each call if `cold`.
fn publish_alone(cold: bool, iters: usize) -> u32 {
    let hints = SlotHints::default();
    let mut t = Timer::new(if cold { Caches::Cold } else { Caches::Warm });
    for i in 0..iters {
        let layer = (i % 48) as u16;
        let pairs = (0..7u16).map(|k| ((k * 17 + i as u16) % 128, (layer as u32) * 128 + k as u32));
        if i < 48 {
            hints.publish(layer, pairs);
            continue;
        }
        t.prepare(Phase::Place, 0);
        t.enter(Phase::Place, 0);
        hints.publish(layer, pairs);
        t.exit(Phase::Place, 0);
    }
    let v = &mut t.calls[idx(Phase::Place)];
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let steps: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let warmup: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200);
    let cold_steps: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(20);
    let setup = Setup {
        preset: args
            .next()
            .unwrap_or_else(|| "qwen3-30b-a3b:q4_k_m".to_string()),
        budget: args
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .map_or(drive::BUDGET_BYTES, |gib| gib << 30),
    };
    println!(
        "{} at a {} GiB expert budget",
        setup.preset,
        setup.budget >> 30
    );
    println!("ns per MoE layer: mean (median of the calls); begin/end_step amortised over the layers; allocations per layer");
    println!();
    println!("| prefetch | caches | steps | place ns | observe ns | place+observe ns | end_step ns | total ns/layer | allocs place / observe / step | GPU hit share | fetch share | wall s | plan digest |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for prefetch in [true, false] {
        run(&setup, prefetch, Caches::Warm, steps, warmup);
    }
    // Cold: every call starts with its state evicted from L1-L3; engine: the evictions
    // in the engine's order (slow: each full sweep writes COLD_BYTES).
    if cold_steps > 0 {
        run(&setup, true, Caches::Cold, cold_steps, warmup);
        run(&setup, true, Caches::Engine, cold_steps, warmup);
        run(&setup, true, Caches::L3, cold_steps * 10, warmup);
    }
    println!();
    println!(
        "SlotHints::publish alone (part of place): median {} ns warm, {} ns cold",
        publish_alone(false, 100_000),
        publish_alone(true, 48 * cold_steps.max(1)),
    );
}
