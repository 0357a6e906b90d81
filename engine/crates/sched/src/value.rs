//! The `value` cache policy (ours): P(use within the horizon) × time a hit saves ÷ bytes,
//! with P learned online as a reuse hazard over (age, recent use, long-run frequency).

use serde::{Deserialize, Serialize};

use crate::policy::{CachePolicy, Tick};
use crate::shape::ModelShape;

/// Parameters of the `value` policy (see docs/notes/sched.md for the tuning).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValueParams {
    /// Steps ahead over which the probability of use is taken (0: automatic, about how
    /// long an expert stays resident: slots per layer ÷ top_k, 1..=16).
    pub horizon: usize,
    /// Per-step decay of the recent-use score (a state of the hazard table, and the
    /// fallback priority of global caches, which cannot scan).
    pub decay: f64,
    /// Whether loads must beat the victim's value (bypass through staging slots).
    pub admission: bool,
    /// Protect predicted next-layer experts from eviction (global caches).
    pub protect_predicted: bool,
}

impl Default for ValueParams {
    fn default() -> Self {
        Self {
            horizon: 1,
            decay: 0.5,
            admission: false,
            protect_predicted: true,
        }
    }
}

/// Largest age (steps since last use) the hazard table distinguishes.
const MAX_AGE: usize = 64;
/// Long-run frequency classes: use rate vs the uniform rate, <1, <2, ≥2.
const LONG_CLASSES: usize = 3;
/// Recent-use classes: the decayed use score just after the last use, <1.3, <1.8, <2.5, ≥2.5.
const RECENT_CLASSES: usize = 4;
/// Steps between refreshes of the probability table.
const TABLE_REFRESH_STEPS: i64 = 4;
/// Steps of last use tracked individually by the survivor counts.
const RING: usize = MAX_AGE + 2;
/// Pseudo-exposures by which a hazard leans on the previous age's.
const HAZARD_SHRINK: f64 = 4.0;
/// States of the hazard table besides age.
const FREQ_CLASSES: usize = LONG_CLASSES * RECENT_CLASSES;
/// Steps since the last use whose score decay comes from a table (beyond: `powi`).
const DECAY_TABLE: usize = RING;

/// `x.floor()` without the libm call (baseline x86-64 has no rounding instruction):
/// exact for every finite `x` below 2^52 in magnitude (ticks), `floor` beyond.
#[inline]
fn floor(x: f64) -> f64 {
    if x.abs() < 4_503_599_627_370_496.0 {
        let t = x as i64 as f64;
        if t > x {
            t - 1.0
        } else if t == x {
            x // keeps the sign of a zero, as floor does
        } else {
            t
        }
    } else {
        x.floor()
    }
}

/// An expert's use history.
#[derive(Debug, Clone, Copy)]
struct ExpertState {
    /// Step of the last use (`NEG_INFINITY`: never).
    last: f64,
    /// Recent-use score just after the last use (decays by `params.decay` per step).
    recent: f32,
    /// Uses so far.
    uses: u32,
}

impl Default for ExpertState {
    fn default() -> Self {
        Self {
            last: f64::NEG_INFINITY,
            recent: 0.0,
            uses: 0,
        }
    }
}

/// Ours: value = P(use within the horizon) × time a hit saves ÷ bytes.
///
/// P(use) is learned online as a hazard table `h(age, freq)`: the probability that an
/// expert is used again exactly `age` steps after its last use, given its long-run
/// frequency class. Every access of an expert last used `a` steps ago adds one
/// exposure to ages 1..a and one use to age a. Then
/// `P(use within H | age a) = 1 − Π_{j=1..H} (1 − h(a + j, f))`. Recency, frequency and
/// their interaction come from the machine's own routing instead of a fixed formula.
#[derive(Debug)]
pub struct Value {
    /// Per expert: the last use, the recent-use score after it, the use count (one
    /// 16-byte record: an access touches one cache line, not three arrays').
    state: Vec<ExpertState>,
    class: Vec<u8>,
    /// Experts per (step of last use, state), for the last `MAX_AGE + 2` steps: every step
    /// each of them survives one more age (counted without scanning every expert).
    ring: Vec<f64>,
    /// Same for experts whose last use is older than the ring.
    old: Vec<f64>,
    /// Per (age, state): `[uses, exposures]` side by side (one line per access).
    counts: Vec<[f64; 2]>,
    params: ValueParams,
    uniform_rate: f64,
    n_experts: usize,
    layer_factor: Vec<f64>,
    /// P(use within the horizon) per (age, class), refreshed once per step.
    p_table: Vec<f64>,
    table_step: f64,
    horizon: usize,
    n_layers: usize,
    top_k: usize,
    table_ready: bool,
    /// `params.decay.powi(k)` for `k < DECAY_TABLE` (the same `powi`, computed once).
    decay_pow: Vec<f64>,
    /// Scratch of `refresh_table` (hazards, survival), kept: no allocation per refresh.
    hz: Vec<f64>,
    surv: Vec<f64>,
}

impl Value {
    /// For `shape`, with `saving_per_byte[layer]` = time a hit saves ÷ bytes per layer
    /// (empty: uniform).
    pub fn new(shape: &ModelShape, params: ValueParams, saving_per_byte: &[f64]) -> Self {
        let layer_factor = if saving_per_byte.is_empty() {
            vec![1.0; shape.n_layers as usize]
        } else {
            let mean = saving_per_byte.iter().sum::<f64>() / saving_per_byte.len() as f64;
            saving_per_byte
                .iter()
                .map(|s| (s / mean.max(1e-300)).max(1e-9))
                .collect()
        };
        let n = shape.total_experts();
        Self {
            state: vec![ExpertState::default(); n],
            class: vec![0; n],
            ring: vec![0.0; RING * FREQ_CLASSES],
            old: vec![0.0; FREQ_CLASSES],
            counts: vec![[0.0; 2]; (MAX_AGE + 1) * FREQ_CLASSES],
            params,
            uniform_rate: shape.top_k as f64 / shape.n_experts.max(1) as f64,
            n_experts: shape.n_experts as usize,
            layer_factor,
            p_table: vec![0.0; (MAX_AGE + 1) * FREQ_CLASSES],
            table_step: f64::NEG_INFINITY,
            horizon: params.horizon.max(1),
            n_layers: shape.n_layers.max(1) as usize,
            top_k: shape.top_k.max(1) as usize,
            table_ready: false,
            // black_box: the same runtime `powi` as the old per-access call, never a
            // constant-folded product in another order.
            decay_pow: (0..DECAY_TABLE as i32)
                .map(|k| params.decay.powi(std::hint::black_box(k)))
                .collect(),
            hz: vec![0.0; (MAX_AGE + 2) * FREQ_CLASSES],
            surv: Vec::new(),
        }
    }

    fn refresh_table(&mut self) {
        // Hazards by age, each shrunk toward the previous age's (ages without data
        // inherit from shorter ones instead of jumping to a flat prior).
        let mut hz = std::mem::take(&mut self.hz);
        for f in 0..FREQ_CLASSES {
            let mut prior = self.uniform_rate;
            for a in 1..=MAX_AGE {
                let i = a * FREQ_CLASSES + f;
                let [used, exposed] = self.counts[i];
                let h = (used + HAZARD_SHRINK * prior) / (exposed + HAZARD_SHRINK);
                hz[i] = h;
                prior = h;
            }
            hz[(MAX_AGE + 1) * FREQ_CLASSES + f] = prior;
        }
        // P(no use in ages a+1..=a+H) = S(a+H) / S(a) with the survival S(k) = Π_{j≤k} (1 − h(j)).
        let at = |a: usize, f: usize| hz[a.min(MAX_AGE + 1) * FREQ_CLASSES + f];
        let max_k = MAX_AGE + self.horizon;
        let mut surv = std::mem::take(&mut self.surv);
        surv.clear();
        surv.resize(max_k + 1, 1.0);
        for f in 0..FREQ_CLASSES {
            for k in 1..=max_k {
                surv[k] = surv[k - 1] * (1.0 - at(k, f)).max(1e-12);
            }
            for a in 0..=MAX_AGE {
                let miss = surv[a + self.horizon] / surv[a];
                self.p_table[a * FREQ_CLASSES + f] = 1.0 - miss;
            }
        }
        self.hz = hz;
        self.surv = surv;
    }

    fn ring_slot(step: f64) -> usize {
        (step as i64).rem_euclid(RING as i64) as usize
    }

    /// At a new step `t`: every expert not used at step `t − 1` survived one more age.
    /// Counting these every step (not only when the expert returns) keeps the hazard of
    /// rarely returning experts from being overestimated (right-censoring).
    fn count_survivals(&mut self, t: f64) {
        for d in 2..=MAX_AGE + 1 {
            let slot = Self::ring_slot(t - d as f64);
            for f in 0..FREQ_CLASSES {
                self.counts[(d - 1) * FREQ_CLASSES + f][1] += self.ring[slot * FREQ_CLASSES + f];
            }
        }
        for f in 0..FREQ_CLASSES {
            self.counts[MAX_AGE * FREQ_CLASSES + f][1] += self.old[f];
        }
        // Experts last used at t − MAX_AGE − 1 leave the ring; their slot becomes t + 1's.
        let leaving = Self::ring_slot(t - (MAX_AGE + 1) as f64);
        for f in 0..FREQ_CLASSES {
            self.old[f] += self.ring[leaving * FREQ_CLASSES + f];
            self.ring[leaving * FREQ_CLASSES + f] = 0.0;
        }
    }

    /// State just after an access at `now` (uses and score already updated).
    fn state_after_access(&self, flat: usize, now: Tick) -> u8 {
        let r = self.state[flat].uses as f64 / ((floor(now) + 1.0) * self.uniform_rate);
        let long = match r {
            r if r < 1.0 => 0,
            r if r < 2.0 => 1,
            _ => 2,
        };
        let _ = now;
        let recent = match self.state[flat].recent {
            x if x < 1.3 => 0,
            x if x < 1.8 => 1,
            x if x < 2.5 => 2,
            _ => 3,
        };
        (long * RECENT_CLASSES + recent) as u8
    }

    fn p_use(&self, flat: usize, now: Tick) -> f64 {
        self.p_use_at(flat, floor(now))
    }

    /// [`Value::p_use`] with `now` already floored (scans floor it once).
    #[inline]
    fn p_use_at(&self, flat: usize, now_floor: f64) -> f64 {
        let last = self.state[flat].last;
        if last == f64::NEG_INFINITY {
            return self.uniform_rate * 0.5;
        }
        let age = (now_floor - last).max(0.0);
        let a = (age as usize).min(MAX_AGE);
        // Among equal probabilities the older expert goes first (LRU order), also
        // beyond the table's last age.
        self.p_table[a * FREQ_CLASSES + self.class[flat] as usize] - age * 1e-12
    }
}

impl CachePolicy for Value {
    fn name(&self) -> &'static str {
        "value"
    }
    fn on_access(&mut self, flat: usize, _weight: f32, tick: Tick) {
        let step = floor(tick);
        if step != self.table_step {
            // Steps advance one at a time in decode; a jump counts each step between.
            let first = if self.table_step.is_finite() && step - self.table_step <= RING as f64 {
                self.table_step + 1.0
            } else {
                step
            };
            let mut t = first;
            while t <= step {
                self.count_survivals(t);
                t += 1.0;
            }
            self.table_step = step;
            // The hazards move slowly; refreshing every few steps keeps the spike rare.
            if (step as i64).rem_euclid(TABLE_REFRESH_STEPS) == 0 || !self.table_ready {
                self.refresh_table();
                self.table_ready = true;
            }
        }
        let st = self.state[flat];
        if st.last > f64::NEG_INFINITY {
            let last = st.last;
            let age = (step - last).max(1.0) as usize;
            let c = self.class[flat] as usize;
            // Leave the survivor counts; ages 1..age−1 were counted step by step.
            if step - last <= (MAX_AGE + 1) as f64 {
                let i = Self::ring_slot(last) * FREQ_CLASSES + c;
                self.ring[i] = (self.ring[i] - 1.0).max(0.0);
            } else {
                self.old[c] = (self.old[c] - 1.0).max(0.0);
            }
            let n = &mut self.counts[age.min(MAX_AGE) * FREQ_CLASSES + c];
            n[1] += 1.0;
            n[0] += 1.0;
        }
        // The score decays per step (integer steps: powi, no exp/ln on the hot path).
        let decayed = if st.last > f64::NEG_INFINITY {
            let k = (step - st.last).min(1e4) as i32;
            let pow = match self.decay_pow.get(k as usize) {
                Some(&p) if k >= 0 => p,
                _ => self.params.decay.powi(k),
            };
            st.recent as f64 * pow
        } else {
            0.0
        };
        self.state[flat] = ExpertState {
            last: step,
            recent: (decayed + 1.0) as f32,
            uses: st.uses.saturating_add(1),
        };
        self.class[flat] = self.state_after_access(flat, step);
        self.ring[Self::ring_slot(step) * FREQ_CLASSES + self.class[flat] as usize] += 1.0;
    }
    fn priority(&self, flat: usize) -> f64 {
        // Global caches (no scan): the recent score in time-invariant log form.
        let ln_decay = self.params.decay.clamp(1e-6, 1.0 - 1e-9).ln();
        let st = self.state[flat];
        let key = if st.last > f64::NEG_INFINITY {
            (st.recent as f64).max(1e-30).ln() - st.last * ln_decay
        } else {
            f64::NEG_INFINITY
        };
        key + self
            .layer_factor
            .get(flat / self.n_experts)
            .copied()
            .unwrap_or(1.0)
            .ln()
    }
    fn value_now(&self, flat: usize, now: Tick) -> Option<f64> {
        Some(
            self.p_use(flat, now)
                * self
                    .layer_factor
                    .get(flat / self.n_experts)
                    .copied()
                    .unwrap_or(1.0),
        )
    }
    fn min_value_now(&self, flats: &[u32], now: Tick) -> Option<(usize, f64)> {
        // value_now of each, in one loop: `now` floored once, the layer's factor looked
        // up when the layer changes (the cache scans one layer), no call per entry.
        let now_floor = floor(now);
        let (mut base, mut factor) = (usize::MAX, 1.0);
        let mut best: Option<(usize, f64)> = None;
        for (i, &f) in flats.iter().enumerate() {
            let f = f as usize;
            if f < base || f - base >= self.n_experts {
                let l = f / self.n_experts;
                base = l * self.n_experts;
                factor = self.layer_factor.get(l).copied().unwrap_or(1.0);
            }
            let v = self.p_use_at(f, now_floor) * factor;
            if best.is_none_or(|(_, b)| v < b) {
                best = Some((i, v));
            }
        }
        best
    }
    fn admit(&self, incoming: usize, victim: usize, now: Tick) -> bool {
        if !self.params.admission {
            return true;
        }
        let v = |f| self.value_now(f, now).unwrap_or(0.0);
        v(incoming) > v(victim)
    }
    fn protects_predicted(&self) -> bool {
        self.params.protect_predicted
    }
    fn stages(&self) -> bool {
        self.params.admission
    }
    fn set_capacity(&mut self, n_slots: usize) {
        if self.params.horizon == 0 {
            self.horizon = (n_slots / (self.n_layers * self.top_k)).clamp(1, 16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_floor_and_decay_table_equal_the_libm_ones() {
        let mut x = 0.123f64;
        for i in 0..20_000 {
            x = (x * 3.71 + 0.29).fract();
            let t = (i as f64 - 500.0) * 1.5 + x * if i % 3 == 0 { 1e-9 } else { 1.0 };
            for v in [t, -t, (i as f64).floor(), i as f64 + 47.0 / 48.0] {
                assert_eq!(floor(v).to_bits(), v.floor().to_bits(), "{v}");
            }
        }
        for v in [0.0, -0.0, 1e300, -1e300, 4.6e15 + 0.5, f64::INFINITY, -0.5] {
            assert_eq!(floor(v).to_bits(), v.floor().to_bits(), "{v}");
        }
        assert!(floor(f64::NAN).is_nan());
        let s = ModelShape::tiny(1, 4, 1);
        let v = Value::new(&s, ValueParams::default(), &[]);
        for (k, &p) in v.decay_pow.iter().enumerate() {
            let want = v.params.decay.powi(std::hint::black_box(k as i32));
            assert_eq!(p.to_bits(), want.to_bits(), "k = {k}");
        }
    }

    #[test]
    fn value_learns_the_reuse_hazard() {
        // Expert 0 returns exactly every second step; expert 1 is used once and never again.
        let s = ModelShape::tiny(1, 4, 1);
        let p = ValueParams {
            horizon: 1,
            ..ValueParams::default()
        };
        let mut v = Value::new(&s, p, &[]);
        v.on_access(1, 0.5, 0.0);
        for step in (0..=44).step_by(2) {
            v.on_access(0, 0.5, step as f64);
        }
        // Step 44 refreshed the table (every 4 steps).
        let just_used = v.value_now(0, 44.0).unwrap();
        let due_next = v.value_now(0, 45.0).unwrap();
        assert!(
            just_used < 0.1,
            "never used one step after its use: {just_used}"
        );
        assert!(due_next > 0.8, "always used two steps after: {due_next}");
        // Expert 1's survived ages were counted: its value is the low long-age hazard.
        assert!(v.value_now(1, 44.0).unwrap() < due_next);
    }
}
