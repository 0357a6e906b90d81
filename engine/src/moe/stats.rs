//! Per-expert statistics and cache-map snapshots for the live scheduler panel.
//!
//! The placer counts every routed expert (uses, cache hits, fetches, CPU runs, last
//! use) on the worker thread, without locks; [`SchedSnapshot`] is taken between steps
//! (through the worker's command queue), so it never races a plan.

use hmoe_sched::{ExpertCache, ExpertKey, LayerTelemetry, ModelShape, Placement};
use serde::{Deserialize, Serialize};

/// Where an expert stands in the VRAM cache at the end of the last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum Residency {
    /// Not in VRAM.
    Absent = 0,
    /// Resident in VRAM.
    Resident = 1,
    /// Copied in during the last step (demand fetch or background load): it was in
    /// flight on the copy stream during that step.
    Arrived = 2,
    /// Evicted during the last step.
    Evicted = 3,
}

/// Counters of every (layer, expert), flat-indexed `layer * n_experts + expert`
/// (struct of arrays: compact to serialise for a 48 × 128 map).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExpertStats {
    /// Times routed (steps in which the layer selected it).
    pub uses: Vec<u32>,
    /// Of which found resident in VRAM (cache hits).
    pub hits: Vec<u32>,
    /// Of which copied to the GPU then run there.
    pub fetches: Vec<u32>,
    /// Of which run on the CPU.
    pub cpu_runs: Vec<u32>,
    /// Step of the last use (-1: never used).
    pub last_use: Vec<i64>,
}

impl ExpertStats {
    /// Zeroed counters for `n` experts.
    pub fn new(n: usize) -> Self {
        Self {
            uses: vec![0; n],
            hits: vec![0; n],
            fetches: vec![0; n],
            cpu_runs: vec![0; n],
            last_use: vec![-1; n],
        }
    }

    /// Counts one layer of step `step`.
    pub fn record(&mut self, shape: &ModelShape, step: u64, layer: &LayerTelemetry) {
        for e in &layer.experts {
            let f = shape.flat(ExpertKey::new(layer.layer, e.expert));
            if f >= self.uses.len() {
                continue;
            }
            self.uses[f] += 1;
            self.last_use[f] = step as i64;
            match e.placement {
                Placement::GpuHit => self.hits[f] += 1,
                Placement::GpuFetch => self.fetches[f] += 1,
                Placement::Cpu => self.cpu_runs[f] += 1,
            }
        }
    }
}

/// The scheduler settings a placer plans with now (as opposed to those requested).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedOptions {
    /// Cache policy.
    pub policy: String,
    /// Requested VRAM budget for experts (None: whatever the card has).
    pub vram_budget_bytes: Option<u64>,
    /// Next-layer prefetch.
    pub prefetch: bool,
    /// CPU threads running expert kernels and dense products.
    pub threads: usize,
}

/// Everything the cache map needs, taken between two steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedSnapshot {
    /// Steps planned so far.
    pub steps: u64,
    /// Layers.
    pub n_layers: u16,
    /// Experts per layer.
    pub n_experts: u16,
    /// Experts selected per token.
    pub top_k: u16,
    /// Bytes of one expert copy.
    pub expert_bytes: u64,
    /// The GPU the experts may run on; None when there is none (all on the CPU).
    pub gpu: Option<String>,
    /// Settings in force.
    pub applied: AppliedOptions,
    /// Slots of the VRAM cache (0 without a GPU).
    pub cache_slots: u32,
    /// Slots holding an expert.
    pub cache_resident: u32,
    /// Bytes of VRAM the resident experts take.
    pub cache_bytes_used: u64,
    /// Per-expert counters.
    pub stats: ExpertStats,
    /// Per-expert score under the policy in force (higher = kept longer; 0 for policies
    /// without a score).
    pub score: Vec<f32>,
    /// Per-expert residency (see [`Residency`], as its `u8`).
    pub residency: Vec<u8>,
    /// Median relative error of predicted vs measured layer times.
    pub prediction_error: Option<f64>,
}

/// Residency of every expert from the cache and the last step's loads and evictions.
pub fn residency_map(shape: &ModelShape, cache: &ExpertCache, last: &[LayerTelemetry]) -> Vec<u8> {
    let n = shape.total_experts();
    let mut out = vec![Residency::Absent as u8; n];
    if cache.n_slots() == 0 {
        return out;
    }
    for (f, r) in out.iter_mut().enumerate() {
        if cache.is_resident(shape.key_of(f)) {
            *r = Residency::Resident as u8;
        }
    }
    let mut mark = |k: ExpertKey, r: Residency, only_if_resident: bool| {
        let f = shape.flat(k);
        if f < n && (!only_if_resident || out[f] == Residency::Resident as u8) {
            out[f] = r as u8;
        }
    };
    for l in last {
        for k in &l.evicted {
            mark(*k, Residency::Evicted, false);
        }
    }
    for l in last {
        let fetched = l
            .experts
            .iter()
            .filter(|e| e.placement == Placement::GpuFetch)
            .map(|e| ExpertKey::new(l.layer, e.expert));
        for k in fetched.chain(l.loaded.iter().copied()) {
            mark(k, Residency::Arrived, true);
        }
    }
    out
}

/// Each expert's score under the cache's policy at tick `now` (its time-varying value
/// where it has one, else its eviction priority; policies keep higher-scored experts).
pub fn policy_scores(shape: &ModelShape, cache: &ExpertCache, now: f64) -> Vec<f32> {
    let p = cache.policy();
    (0..shape.total_experts())
        .map(|f| p.value_now(f, now).unwrap_or_else(|| p.priority(f)) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmoe_sched::telemetry::ExpertEvent;
    use hmoe_sched::{make_policy, PlanTiming, ValueParams};

    fn layer(l: u16, ev: &[(u16, Placement)]) -> LayerTelemetry {
        LayerTelemetry {
            layer: l,
            experts: ev
                .iter()
                .map(|&(expert, placement)| ExpertEvent {
                    expert,
                    placement,
                    n_tokens: 1,
                })
                .collect(),
            predicted: PlanTiming::default(),
            measured_s: None,
            measured_cpu_s: None,
            measured_gpu_s: None,
            measured_copy_s: None,
            bytes_fetched: 0,
            bytes_prefetched: 0,
            evictions: 0,
            prefetches: 0,
            hits: 0,
            prefetch_hits: 0,
            evicted: vec![],
            loaded: vec![],
        }
    }

    #[test]
    fn stats_count_each_placement_and_the_last_use() {
        let shape = ModelShape::tiny(2, 4, 2);
        let mut s = ExpertStats::new(shape.total_experts());
        s.record(
            &shape,
            3,
            &layer(1, &[(2, Placement::GpuHit), (3, Placement::Cpu)]),
        );
        s.record(&shape, 5, &layer(1, &[(2, Placement::GpuFetch)]));
        let f = shape.flat(ExpertKey::new(1, 2));
        assert_eq!(
            (s.uses[f], s.hits[f], s.fetches[f], s.cpu_runs[f]),
            (2, 1, 1, 0)
        );
        assert_eq!(s.last_use[f], 5);
        let g = shape.flat(ExpertKey::new(1, 3));
        assert_eq!((s.uses[g], s.cpu_runs[g], s.last_use[g]), (1, 1, 3));
        assert_eq!(s.last_use[0], -1);
    }

    #[test]
    fn residency_marks_arrivals_and_evictions() {
        let shape = ModelShape::tiny(2, 4, 2);
        let pol = make_policy("lru", &shape, None, ValueParams::default(), &[]).unwrap();
        let mut cache = ExpertCache::new(&shape, 4, pol);
        for e in 0..3 {
            assert!(cache.load(ExpertKey::new(0, e)).is_some());
        }
        let mut l0 = layer(0, &[(1, Placement::GpuFetch), (0, Placement::GpuHit)]);
        l0.evicted = vec![ExpertKey::new(1, 3)];
        l0.loaded = vec![ExpertKey::new(0, 2)];
        let r = residency_map(&shape, &cache, &[l0]);
        assert_eq!(r[0], Residency::Resident as u8);
        assert_eq!(r[1], Residency::Arrived as u8);
        assert_eq!(r[2], Residency::Arrived as u8);
        assert_eq!(r[3], Residency::Absent as u8);
        assert_eq!(
            r[shape.flat(ExpertKey::new(1, 3))],
            Residency::Evicted as u8
        );
        // No slots (no GPU): everything absent whatever the telemetry says.
        let pol = make_policy("value", &shape, None, ValueParams::default(), &[]).unwrap();
        let empty = ExpertCache::new(&shape, 0, pol);
        let r = residency_map(&shape, &empty, &[layer(0, &[(1, Placement::Cpu)])]);
        assert!(r.iter().all(|&x| x == Residency::Absent as u8));
    }
}
