//! Cache policies behind one trait: which resident expert to evict, whether to admit.
//!
//! A policy gives each expert an eviction priority (lowest is evicted first) that changes
//! only when the expert is accessed. Decaying scores are stored in log form relative to
//! time zero, `K = ln S(t_last) − t_last · ln γ`, so that comparing `K` compares the
//! decayed scores `S(t) = exp(K + t ln γ)` at any common time `t`: the cache keeps one
//! lazy min-heap and never rescans residents.

use crate::error::{Result, SchedError};
use crate::shape::{ExpertKey, ModelShape};
pub use crate::value::{Value, ValueParams};

/// Time in steps: `step + layer / n_layers`.
pub type Tick = f64;

/// Which resident to evict and whether a background load may replace it.
pub trait CachePolicy: Send {
    /// Name as used on the command line.
    fn name(&self) -> &'static str;
    /// One routed expert of one layer at `tick`, with its router weight.
    fn on_access(&mut self, flat: usize, weight: f32, tick: Tick);
    /// Eviction priority (lowest first); changes only in `on_access`.
    fn priority(&self, flat: usize) -> f64;
    /// Whether the policy uses VRAM at all (`cpu-only`: no).
    fn uses_vram(&self) -> bool {
        true
    }
    /// Whether residents are ever replaced (static policies: no).
    fn dynamic(&self) -> bool {
        true
    }
    /// Whether a load of `incoming` (already told about its access) may evict the
    /// resident `victim` at time `now`; refused background loads are dropped, refused
    /// demand loads run from a staging slot for this layer only (if [`CachePolicy::stages`]).
    fn admit(&self, _incoming: usize, _victim: usize, _now: Tick) -> bool {
        true
    }
    /// A value that may change with time (evict the lowest). `Some` makes a partitioned
    /// cache scan the layer's residents instead of using the priority heap.
    fn value_now(&self, _flat: usize, _now: Tick) -> Option<f64> {
        None
    }
    /// The index in `flats` of the first entry of lowest [`CachePolicy::value_now`] at
    /// `now`, with that value (`None`: no such value, or `flats` empty). A partitioned
    /// cache's victim scan: policies override it with one tight loop.
    fn min_value_now(&self, flats: &[u32], now: Tick) -> Option<(usize, f64)> {
        let mut best: Option<(usize, f64)> = None;
        for (i, &f) in flats.iter().enumerate() {
            let v = self.value_now(f as usize, now)?;
            if best.is_none_or(|(_, b)| v < b) {
                best = Some((i, v));
            }
        }
        best
    }
    /// Whether demand loads that `admit` refuses run from staging slots (bypass) instead
    /// of evicting: the cache then keeps `top_k` of its slots for staging.
    fn stages(&self) -> bool {
        false
    }
    /// Whether the scheduler should protect predicted next-layer experts from eviction.
    fn protects_predicted(&self) -> bool {
        false
    }
    /// Told the cache's slot count once, at cache creation.
    fn set_capacity(&mut self, _n_slots: usize) {}
    /// Experts loaded at start (static policies).
    fn initial_residents(&self, _shape: &ModelShape, _n_slots: usize) -> Vec<ExpertKey> {
        Vec::new()
    }
}

/// Every expert on the CPU (KTransformers' default).
#[derive(Debug, Default)]
pub struct CpuOnly;

impl CachePolicy for CpuOnly {
    fn name(&self) -> &'static str {
        "cpu-only"
    }
    fn on_access(&mut self, _: usize, _: f32, _: Tick) {}
    fn priority(&self, _: usize) -> f64 {
        0.0
    }
    fn uses_vram(&self) -> bool {
        false
    }
    fn dynamic(&self) -> bool {
        false
    }
}

/// Whole layers resident from layer 0 until the budget is full (llama.cpp `--n-cpu-moe`).
#[derive(Debug, Default)]
pub struct StaticLayers;

impl CachePolicy for StaticLayers {
    fn name(&self) -> &'static str {
        "static"
    }
    fn on_access(&mut self, _: usize, _: f32, _: Tick) {}
    fn priority(&self, _: usize) -> f64 {
        0.0
    }
    fn dynamic(&self) -> bool {
        false
    }
    fn initial_residents(&self, shape: &ModelShape, n_slots: usize) -> Vec<ExpertKey> {
        let layers = (n_slots / shape.n_experts.max(1) as usize).min(shape.n_layers as usize);
        (0..layers * shape.n_experts as usize)
            .map(|f| shape.key_of(f))
            .collect()
    }
}

/// A fixed hot set profiled offline (KTransformers' `frequency`): the most used experts.
#[derive(Debug)]
pub struct StaticHot {
    counts: Vec<u64>,
}

impl StaticHot {
    /// From per-expert use counts (indexed by flat key) of a profiling run.
    pub fn from_counts(counts: Vec<u64>) -> Self {
        Self { counts }
    }
}

impl CachePolicy for StaticHot {
    fn name(&self) -> &'static str {
        "static-hot"
    }
    fn on_access(&mut self, _: usize, _: f32, _: Tick) {}
    fn priority(&self, _: usize) -> f64 {
        0.0
    }
    fn dynamic(&self) -> bool {
        false
    }
    fn initial_residents(&self, shape: &ModelShape, n_slots: usize) -> Vec<ExpertKey> {
        let mut idx: Vec<usize> = (0..self.counts.len().min(shape.total_experts())).collect();
        idx.sort_by(|&a, &b| self.counts[b].cmp(&self.counts[a]).then(a.cmp(&b)));
        idx.truncate(n_slots);
        idx.into_iter().map(|f| shape.key_of(f)).collect()
    }
}

/// Least recently used.
#[derive(Debug)]
pub struct Lru {
    last: Vec<f64>,
}

impl Lru {
    /// For `n` experts.
    pub fn new(n: usize) -> Self {
        Self {
            last: vec![f64::NEG_INFINITY; n],
        }
    }
}

impl CachePolicy for Lru {
    fn name(&self) -> &'static str {
        "lru"
    }
    fn on_access(&mut self, flat: usize, _: f32, tick: Tick) {
        self.last[flat] = tick;
    }
    fn priority(&self, flat: usize) -> f64 {
        self.last[flat]
    }
}

/// Least frequently used (ties: least recent).
#[derive(Debug)]
pub struct Lfu {
    count: Vec<u64>,
    last: Vec<f64>,
}

impl Lfu {
    /// For `n` experts.
    pub fn new(n: usize) -> Self {
        Self {
            count: vec![0; n],
            last: vec![0.0; n],
        }
    }
}

impl CachePolicy for Lfu {
    fn name(&self) -> &'static str {
        "lfu"
    }
    fn on_access(&mut self, flat: usize, _: f32, tick: Tick) {
        self.count[flat] += 1;
        self.last[flat] = tick;
    }
    fn priority(&self, flat: usize) -> f64 {
        // Recency only breaks ties: ticks stay far below 1e9.
        self.count[flat] as f64 + self.last[flat] * 1e-9
    }
}

/// An exponentially decayed score in time-invariant log form (see the module docs).
#[derive(Debug, Clone)]
pub struct DecayedScore {
    k: Vec<f64>,
    ln_decay: f64,
}

impl DecayedScore {
    /// Scores of `n` experts decaying by `decay` per step.
    pub fn new(n: usize, decay: f64) -> Self {
        Self {
            k: vec![f64::NEG_INFINITY; n],
            ln_decay: decay.clamp(1e-6, 1.0 - 1e-9).ln(),
        }
    }
    /// Adds `amount` at time `t`.
    pub fn add(&mut self, flat: usize, amount: f64, t: Tick) {
        let s = self.value(flat, t) + amount;
        self.k[flat] = s.max(1e-300).ln() - t * self.ln_decay;
    }
    /// The decayed score at time `t`.
    pub fn value(&self, flat: usize, t: Tick) -> f64 {
        (self.k[flat] + t * self.ln_decay).exp()
    }
    /// The time-invariant key.
    pub fn key(&self, flat: usize) -> f64 {
        self.k[flat]
    }
}

/// HybriMoE's minus-recent-score: per step `S ← α S + router weight`; evict the minimum.
#[derive(Debug)]
pub struct Mrs {
    score: DecayedScore,
}

/// HybriMoE's decay (α); the paper leaves it a tunable, 0.9 keeps ~10 steps of memory.
pub const MRS_ALPHA: f64 = 0.9;

impl Mrs {
    /// For `n` experts with decay `alpha`.
    pub fn new(n: usize, alpha: f64) -> Self {
        Self {
            score: DecayedScore::new(n, alpha),
        }
    }
}

impl CachePolicy for Mrs {
    fn name(&self) -> &'static str {
        "mrs"
    }
    fn on_access(&mut self, flat: usize, weight: f32, tick: Tick) {
        self.score.add(flat, weight as f64, tick);
    }
    fn priority(&self, flat: usize) -> f64 {
        self.score.key(flat)
    }
}

/// Policy names accepted by [`make_policy`].
pub const POLICY_NAMES: [&str; 7] = [
    "cpu-only",
    "static",
    "static-hot",
    "lru",
    "lfu",
    "mrs",
    "value",
];

/// Builds a policy by name. `hot_counts` feeds `static-hot` (flat-indexed use counts).
pub fn make_policy(
    name: &str,
    shape: &ModelShape,
    hot_counts: Option<&[u64]>,
    value: ValueParams,
    saving_per_byte: &[f64],
) -> Result<Box<dyn CachePolicy>> {
    let n = shape.total_experts();
    Ok(match name {
        "cpu-only" => Box::new(CpuOnly),
        "static" => Box::new(StaticLayers),
        "static-hot" => Box::new(StaticHot::from_counts(
            hot_counts.map(|c| c.to_vec()).unwrap_or_else(|| vec![0; n]),
        )),
        "lru" => Box::new(Lru::new(n)),
        "lfu" => Box::new(Lfu::new(n)),
        "mrs" => Box::new(Mrs::new(n, MRS_ALPHA)),
        "value" => Box::new(Value::new(shape, value, saving_per_byte)),
        other => return Err(SchedError::UnknownPolicy(other.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decayed_key_orders_like_decayed_score() {
        let mut d = DecayedScore::new(2, 0.5);
        d.add(0, 4.0, 0.0); // 4 at t=0 → 0.5 at t=3
        d.add(1, 1.0, 2.0); // 1 at t=2 → 0.5 at t=3
        d.add(1, 0.1, 3.0); // 0.6 at t=3
        assert!((d.value(0, 3.0) - 0.5).abs() < 1e-12);
        assert!((d.value(1, 3.0) - 0.6).abs() < 1e-12);
        assert!(d.key(1) > d.key(0));
    }

    #[test]
    fn static_policies_pick_their_sets() {
        let s = ModelShape::tiny(4, 8, 2);
        let l = StaticLayers.initial_residents(&s, 20);
        assert_eq!(l.len(), 16);
        assert!(l.iter().all(|k| k.layer < 2));
        let mut counts = vec![0u64; 32];
        counts[31] = 9;
        counts[5] = 3;
        let h = StaticHot::from_counts(counts).initial_residents(&s, 2);
        assert_eq!(h, vec![s.key_of(31), s.key_of(5)]);
        assert!(make_policy("nope", &s, None, ValueParams::default(), &[]).is_err());
    }
}
