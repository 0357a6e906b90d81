//! Pins the scheduler's fast paths against their reference forms on a replayed synthetic
//! trace: the same plans, layer by layer (placement must never change with a speed-up).
//! The reference `value` policy is the one before the overhead work ([`ValueRef`]),
//! scanning victims through `value_now` per resident ([`PerEntryScan`]).

use crate::policy::{make_policy, CachePolicy, Tick, ValueParams};
use crate::shape::{ExpertKey, ModelShape};
use crate::synth::{generate, SynthParams};
use crate::value_ref::ValueRef;
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
fn value_gives_the_plans_of_the_reference_value_policy() {
    // The fast policy (compact state, its own scan loop, powi table, libm-free floor)
    // against the policy as it was, scanning through `value_now` per resident.
    for preset in ["qwen3-30b-a3b:q4_k_m", "qwen3-30b-a3b:q8_0"] {
        let shape = ModelShape::preset(preset).expect("preset");
        for (slots, admission) in [(1500, false), (1500, true), (2500, false), (2500, true)] {
            let params = ValueParams {
                admission,
                ..ValueParams::default()
            };
            let saving: Vec<f64> = (0..shape.n_layers).map(|l| 1.0 + (l % 5) as f64).collect();
            let fast = make_policy("value", &shape, None, params, &saving).expect("value");
            let reference = Box::new(PerEntryScan(Box::new(ValueRef::new(
                &shape, params, &saving,
            ))));
            let evictions = same_plans(&shape, slots, fast, reference, 40);
            assert!(
                evictions > 20,
                "{preset} {slots}: the replay must evict: {evictions}"
            );
        }
    }
}

#[test]
fn value_state_equals_the_reference_after_every_layer() {
    let shape = ModelShape::preset("qwen3-30b-a3b:q4_k_m").expect("preset");
    let params = ValueParams::default();
    let saving: Vec<f64> = (0..shape.n_layers).map(|l| 1.0 + (l % 5) as f64).collect();
    let mut a = crate::value::Value::new(&shape, params, &saving);
    let mut b = ValueRef::new(&shape, params, &saving);
    a.set_capacity(1500);
    b.set_capacity(1500);
    let trace = generate(&shape, &SynthParams::qwen3_calibrated(), 40, 11);
    for (step, st) in trace.steps.iter().enumerate() {
        for (l, tl) in st.layers.iter().enumerate() {
            let tick = step as f64 + l as f64 / 48.0;
            for r in tl.routed() {
                let f = l * 128 + r.expert as usize;
                a.on_access(f, r.weight, tick);
                b.on_access(f, r.weight, tick);
            }
            for f in 0..shape.total_experts() {
                let (x, y) = (a.value_now(f, tick), b.value_now(f, tick));
                assert_eq!(
                    x.map(f64::to_bits),
                    y.map(f64::to_bits),
                    "step {step} layer {l} flat {f}"
                );
            }
        }
    }
}
