//! Pins the scheduler's fast paths against their reference forms on a replayed synthetic
//! trace: the same plans, layer by layer (placement must never change with a speed-up).

use crate::policy::{make_policy, CachePolicy, Tick, ValueParams};
use crate::shape::{ExpertKey, ModelShape};
use crate::synth::{generate, SynthParams};
use crate::{CostModel, ExpertCache, MachineProfile, PredictedExpert, SchedConfig, Scheduler};

/// A policy with the trait's per-entry victim scan (`value_now` per resident, the scan
/// before policies had their own loop) around the real one.
struct PerEntryScan(Box<dyn CachePolicy>);

impl CachePolicy for PerEntryScan {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn on_access(&mut self, flat: usize, weight: f32, tick: Tick) {
        self.0.on_access(flat, weight, tick)
    }
    fn priority(&self, flat: usize) -> f64 {
        self.0.priority(flat)
    }
    fn uses_vram(&self) -> bool {
        self.0.uses_vram()
    }
    fn dynamic(&self) -> bool {
        self.0.dynamic()
    }
    fn admit(&self, incoming: usize, victim: usize, now: Tick) -> bool {
        self.0.admit(incoming, victim, now)
    }
    fn value_now(&self, flat: usize, now: Tick) -> Option<f64> {
        self.0.value_now(flat, now)
    }
    fn stages(&self) -> bool {
        self.0.stages()
    }
    fn protects_predicted(&self) -> bool {
        self.0.protects_predicted()
    }
    fn set_capacity(&mut self, n_slots: usize) {
        self.0.set_capacity(n_slots)
    }
    fn initial_residents(&self, shape: &ModelShape, n_slots: usize) -> Vec<ExpertKey> {
        self.0.initial_residents(shape, n_slots)
    }
}

/// Replays `steps` decode steps of the calibrated trace through a scheduler on `fast`
/// and one on `reference` (both partitioned caches of `slots`) and checks every plan.
fn same_plans(
    shape: &ModelShape,
    slots: usize,
    fast: Box<dyn CachePolicy>,
    reference: Box<dyn CachePolicy>,
    steps: usize,
) -> usize {
    let trace = generate(shape, &SynthParams::qwen3_calibrated(), steps, 11);
    let config = SchedConfig {
        prefetch: true,
        ..SchedConfig::default()
    };
    let mut cost = CostModel::new(MachineProfile::h100_box());
    let mut s = [
        Scheduler::new(shape, &mut cost, config),
        Scheduler::new(shape, &mut cost, config),
    ];
    let mut c = [
        ExpertCache::with_partition(shape, slots, fast, true),
        ExpertCache::with_partition(shape, slots, reference, true),
    ];
    let mut evictions = 0;
    for (step, st) in trace.steps.iter().enumerate() {
        for (l, tl) in st.layers.iter().enumerate() {
            let routed: Vec<_> = tl.routed().collect();
            let pred: Vec<_> = tl
                .pred
                .iter()
                .map(|&(expert, prob)| PredictedExpert { expert, prob })
                .collect();
            let plans: Vec<_> = (0..2)
                .map(|i| {
                    let p = s[i].plan_layer(step as u64, l as u16, &routed, &pred, &mut c[i], 0.0);
                    s[i].finish_layer(&mut c[i]);
                    p
                })
                .collect();
            assert_eq!(plans[0], plans[1], "step {step} layer {l}");
            evictions += plans[0].evict.len();
        }
    }
    c[0].check_invariants().expect("cache invariants");
    evictions
}

#[test]
fn value_scan_gives_the_plans_of_the_per_entry_scan() {
    let shape = ModelShape::preset("qwen3-30b-a3b:q4_k_m").expect("preset");
    for admission in [false, true] {
        let params = ValueParams {
            admission,
            ..ValueParams::default()
        };
        let make = || make_policy("value", &shape, None, params, &[]).expect("value policy");
        // 1500 slots: ~31 per layer of 128 experts, so loads evict every layer.
        let reference = Box::new(PerEntryScan(make()));
        let evictions = same_plans(&shape, 1500, make(), reference, 60);
        assert!(evictions > 1000, "the replay must evict: {evictions}");
    }
}
