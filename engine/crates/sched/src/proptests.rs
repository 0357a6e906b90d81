//! Property tests on random inputs (fixed-seed loops): the scheduler, cache and simulator
//! together.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::belady::belady_hits;
use crate::cache::ExpertCache;
use crate::cost::CostModel;
use crate::policy::{make_policy, ValueParams, POLICY_NAMES};
use crate::profile::MachineProfile;
use crate::sched::{PredictedExpert, RoutedExpert, SchedConfig, Scheduler, SolverKind};
use crate::shape::{ExpertKey, ModelShape};
use crate::sim::{run_policy, SimOptions};
use crate::solve::solve_exact;
use crate::synth::{generate, SynthParams};

fn random_routed(rng: &mut StdRng, shape: &ModelShape, prefill: bool) -> Vec<RoutedExpert> {
    let n = shape.n_experts as usize;
    let k = if prefill {
        rng.random_range(1..=n)
    } else {
        shape.top_k as usize
    };
    let mut ids: Vec<u16> = (0..n as u16).collect();
    for i in (1..n).rev() {
        ids.swap(i, rng.random_range(0..=i));
    }
    ids.truncate(k);
    ids.into_iter()
        .map(|expert| RoutedExpert {
            expert,
            n_tokens: if prefill { rng.random_range(1..600) } else { 1 },
            weight: rng.random_range(0.01..1.0),
        })
        .collect()
}

/// Budget never exceeded, pinned never evicted, each routed expert placed exactly once,
/// fetches land in distinct slots, and the greedy never beats the exact optimum.
#[test]
fn plans_respect_cache_and_placement_invariants() {
    let mut rng = StdRng::seed_from_u64(42);
    let profile = MachineProfile::h100_box();
    for case in 0..120 {
        let shape = ModelShape::tiny(
            rng.random_range(2..6),
            rng.random_range(8..24),
            rng.random_range(2..6),
        );
        let mut profile = profile.clone();
        // Tiny experts: scale costs so CPU and GPU both win sometimes.
        profile.pcie = profile.pcie.map(|mut l| {
            l.bytes_per_s = rng.random_range(0.1e9..5e9);
            l
        });
        let mut cost = CostModel::new(profile);
        let solver = if case % 2 == 0 {
            SolverKind::Greedy
        } else {
            SolverKind::Exact
        };
        let cfg = SchedConfig {
            solver,
            prefetch: rng.random_bool(0.5),
            background_admit: rng.random_bool(0.5),
            ..SchedConfig::default()
        };
        let mut sched = Scheduler::new(&shape, &mut cost, cfg);
        let policy = POLICY_NAMES[rng.random_range(0..POLICY_NAMES.len())];
        let counts: Vec<u64> = (0..shape.total_experts())
            .map(|_| rng.random_range(0..50))
            .collect();
        let value = ValueParams {
            admission: rng.random_bool(0.5),
            ..ValueParams::default()
        };
        let pol = make_policy(policy, &shape, Some(&counts), value, &[]).unwrap();
        let n_slots = rng.random_range(0..shape.total_experts());
        let mut cache = ExpertCache::with_partition(&shape, n_slots, pol, rng.random_bool(0.5));
        for step in 0..30u64 {
            for layer in 0..shape.n_layers {
                let prefill = rng.random_bool(0.2);
                let routed = random_routed(&mut rng, &shape, prefill);
                let pred: Vec<PredictedExpert> = (0..3)
                    .map(|_| PredictedExpert {
                        expert: rng.random_range(0..shape.n_experts),
                        prob: rng.random_range(0.0..1.0),
                    })
                    .collect::<Vec<_>>();
                let mut pred = pred;
                pred.sort_by_key(|p| p.expert);
                pred.dedup_by_key(|p| p.expert);
                // Another stream holds some residents pinned.
                let held: Vec<ExpertKey> = (0..shape.total_experts())
                    .map(|f| shape.key_of(f))
                    .filter(|&k| cache.is_resident(k) && rng.random_bool(0.1))
                    .collect();
                for &k in &held {
                    cache.pin(k);
                }
                let before_resident: Vec<bool> = routed
                    .iter()
                    .map(|r| cache.is_resident(ExpertKey::new(layer, r.expert)))
                    .collect();
                let plan = sched.plan_layer(step, layer, &routed, &pred, &mut cache, 0.0);
                // Every routed expert placed exactly once.
                let mut placed: Vec<u16> = plan
                    .gpu_hit
                    .iter()
                    .chain(&plan.gpu_fetch)
                    .chain(&plan.cpu)
                    .map(|p| p.expert)
                    .collect();
                placed.sort_unstable();
                let mut want: Vec<u16> = routed.iter().map(|r| r.expert).collect();
                want.sort_unstable();
                assert_eq!(placed, want, "case {case}");
                // Hits were resident, fetches were not.
                for (i, r) in routed.iter().enumerate() {
                    match plan.placement_of(r.expert) {
                        Some(crate::Placement::GpuHit) => assert!(before_resident[i]),
                        Some(crate::Placement::GpuFetch) => assert!(!before_resident[i]),
                        _ => {}
                    }
                }
                assert_eq!(
                    plan.hits as usize,
                    before_resident.iter().filter(|&&r| r).count()
                );
                // Pinned residents survive; GPU experts have distinct slots.
                for k in &held {
                    assert!(!plan.evict.contains(k), "case {case}: pinned {k:?} evicted");
                    assert!(cache.is_resident(*k));
                }
                let mut slots: Vec<u32> = plan
                    .gpu_hit
                    .iter()
                    .chain(&plan.gpu_fetch)
                    .filter_map(|p| p.slot)
                    .collect();
                assert_eq!(slots.len(), plan.gpu_hit.len() + plan.gpu_fetch.len());
                // Cache slots are distinct; staging slots (the last ones) are reused
                // round-robin when more experts stream than there are staging slots.
                let first_staging = (cache.n_slots() - cache.n_staging()) as u32;
                assert!(slots.iter().all(|&s| (s as usize) < cache.n_slots()));
                slots.retain(|&s| s < first_staging);
                let n_cached = slots.len();
                slots.sort_unstable();
                slots.dedup();
                assert_eq!(slots.len(), n_cached);
                assert!(
                    cache.resident_count() + cache.n_staging()
                        <= cache.n_slots().max(cache.resident_count())
                );
                assert!(cache.bytes() <= shape.expert_bytes() * n_slots as u64);
                cache.check_invariants().unwrap();
                // Greedy ≥ exact on the same inputs (re-solved from the plan's view).
                if routed.len() <= 10 && solver == SolverKind::Greedy {
                    let c = *sched.costs();
                    let jobs: Vec<crate::solve::Job> = routed
                        .iter()
                        .enumerate()
                        .map(|(i, r)| crate::solve::Job {
                            cpu_s: c.cpu(r.n_tokens),
                            gpu_s: c.gpu(r.n_tokens),
                            fetch_s: c.fetch_s,
                            resident: before_resident[i],
                        })
                        .collect();
                    let cap = plan.fetch_capacity as usize;
                    if let Some(e) =
                        solve_exact(&jobs, 0.0, cap, c.has_gpu() && cache.n_slots() > 0)
                    {
                        let opt = e.timing.finish_s + profile_sync(&sched);
                        assert!(
                            plan.predicted.finish_s >= opt - crate::solve::TIME_EPS,
                            "case {case}: greedy {:?} < exact {:?} {:?} {jobs:?}",
                            plan.predicted,
                            e.timing,
                            plan
                        );
                    }
                }
                sched.finish_layer(&mut cache);
                for &k in &held {
                    cache.unpin(k);
                }
            }
        }
    }
}

fn profile_sync(s: &Scheduler) -> f64 {
    // finish_s includes the join cost; the raw solver's does not.
    let _ = s;
    MachineProfile::h100_box().sync_s
}

/// Belady's hit rate bounds every policy that loads only what it uses (no prefetch, no
/// background admission), on random and calibrated traces, global and partitioned.
#[test]
fn belady_bounds_every_policy_without_prefetch() {
    let mut rng = StdRng::seed_from_u64(9);
    let profile = MachineProfile::h100_box();
    let mut traces = Vec::new();
    for i in 0..6 {
        let shape = ModelShape::tiny(
            rng.random_range(2..5),
            rng.random_range(8..32),
            rng.random_range(2..6),
        );
        let p = SynthParams {
            p_repeat: rng.random_range(0.0..0.6),
            p_window: rng.random_range(0.0..0.3),
            window_decay: rng.random_range(0.5..0.95),
            window: 16,
            pop_tau: rng.random_range(3.0..40.0),
            pred_recall: 0.8,
        };
        traces.push(generate(&shape, &p, 150, i));
    }
    let qshape = ModelShape::preset("qwen3-30b-a3b:q4_k_m").unwrap();
    let mut small = qshape.clone();
    small.n_layers = 4;
    traces.push(generate(&small, &SynthParams::qwen3_calibrated(), 120, 5));
    traces.push(generate(&small, &SynthParams::uniform(), 120, 5));
    let cfg = SchedConfig {
        prefetch: false,
        background_admit: false,
        ..SchedConfig::default()
    };
    for t in &traces {
        let shape = &t.header.shape;
        for frac in [0.05, 0.2, 0.5] {
            let slots = (frac * shape.total_experts() as f64) as usize;
            let (bh, bt) = belady_hits(t, slots, 10);
            let bound = bh as f64 / bt as f64;
            for partitioned in [false, true] {
                for p in POLICY_NAMES {
                    let opts = SimOptions {
                        warmup_steps: 10,
                        partitioned,
                        ..SimOptions::default()
                    };
                    let r = run_policy(t, shape, &profile, p, slots, &opts, cfg).unwrap();
                    assert_eq!(r.totals.accesses, bt, "{p}: same accesses counted");
                    let hit = r.totals.hit_rate();
                    assert!(
                        hit <= bound + 1e-12,
                        "{p} {frac} part={partitioned}: {hit} > belady {bound} on {}",
                        t.header.source
                    );
                }
            }
        }
    }
}
