//! The `value` policy as it was before the scheduler-overhead work (commit e4c1cba),
//! kept for tests only: the reference the fast [`crate::value::Value`] must match plan
//! for plan (see `replay_tests`).

use crate::policy::{CachePolicy, Tick};
use crate::shape::ModelShape;
use crate::value::ValueParams;

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

/// Ours: value = P(use within the horizon) × time a hit saves ÷ bytes.
///
/// P(use) is learned online as a hazard table `h(age, freq)`: the probability that an
/// expert is used again exactly `age` steps after its last use, given its long-run
/// frequency class. Every access of an expert last used `a` steps ago adds one
/// exposure to ages 1..a and one use to age a. Then
/// `P(use within H | age a) = 1 − Π_{j=1..H} (1 − h(a + j, f))`. Recency, frequency and
/// their interaction come from the machine's own routing instead of a fixed formula.
#[derive(Debug)]
pub struct ValueRef {
    /// Recent-use score just after the last use (decays by `params.decay` per step).
    recent: Vec<f32>,
    last: Vec<f64>,
    uses: Vec<u32>,
    class: Vec<u8>,
    /// Experts per (step of last use, state), for the last `MAX_AGE + 2` steps: every step
    /// each of them survives one more age (counted without scanning every expert).
    ring: Vec<f64>,
    /// Same for experts whose last use is older than the ring.
    old: Vec<f64>,
    used: Vec<f64>,
    exposed: Vec<f64>,
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
}

impl ValueRef {
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
            recent: vec![0.0; n],
            last: vec![f64::NEG_INFINITY; n],
            uses: vec![0; n],
            class: vec![0; n],
            ring: vec![0.0; RING * FREQ_CLASSES],
            old: vec![0.0; FREQ_CLASSES],
            used: vec![0.0; (MAX_AGE + 1) * FREQ_CLASSES],
            exposed: vec![0.0; (MAX_AGE + 1) * FREQ_CLASSES],
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
        }
    }

    fn refresh_table(&mut self) {
        // Hazards by age, each shrunk toward the previous age's (ages without data
        // inherit from shorter ones instead of jumping to a flat prior).
        let mut hz = vec![0.0; (MAX_AGE + 2) * FREQ_CLASSES];
        for f in 0..FREQ_CLASSES {
            let mut prior = self.uniform_rate;
            for a in 1..=MAX_AGE {
                let i = a * FREQ_CLASSES + f;
                let h = (self.used[i] + HAZARD_SHRINK * prior) / (self.exposed[i] + HAZARD_SHRINK);
                hz[i] = h;
                prior = h;
            }
            hz[(MAX_AGE + 1) * FREQ_CLASSES + f] = prior;
        }
        // P(no use in ages a+1..=a+H) = S(a+H) / S(a) with the survival S(k) = Π_{j≤k} (1 − h(j)).
        let at = |a: usize, f: usize| hz[a.min(MAX_AGE + 1) * FREQ_CLASSES + f];
        let max_k = MAX_AGE + self.horizon;
        let mut surv = vec![1.0f64; max_k + 1];
        for f in 0..FREQ_CLASSES {
            for k in 1..=max_k {
                surv[k] = surv[k - 1] * (1.0 - at(k, f)).max(1e-12);
            }
            for a in 0..=MAX_AGE {
                let miss = surv[a + self.horizon] / surv[a];
                self.p_table[a * FREQ_CLASSES + f] = 1.0 - miss;
            }
        }
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
                self.exposed[(d - 1) * FREQ_CLASSES + f] += self.ring[slot * FREQ_CLASSES + f];
            }
        }
        for f in 0..FREQ_CLASSES {
            self.exposed[MAX_AGE * FREQ_CLASSES + f] += self.old[f];
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
        let r = self.uses[flat] as f64 / ((now.floor() + 1.0) * self.uniform_rate);
        let long = match r {
            r if r < 1.0 => 0,
            r if r < 2.0 => 1,
            _ => 2,
        };
        let _ = now;
        let recent = match self.recent[flat] {
            x if x < 1.3 => 0,
            x if x < 1.8 => 1,
            x if x < 2.5 => 2,
            _ => 3,
        };
        (long * RECENT_CLASSES + recent) as u8
    }

    fn p_use(&self, flat: usize, now: Tick) -> f64 {
        if self.last[flat] == f64::NEG_INFINITY {
            return self.uniform_rate * 0.5;
        }
        let age = (now.floor() - self.last[flat]).max(0.0);
        let a = (age as usize).min(MAX_AGE);
        // Among equal probabilities the older expert goes first (LRU order), also
        // beyond the table's last age.
        self.p_table[a * FREQ_CLASSES + self.class[flat] as usize] - age * 1e-12
    }
}

impl CachePolicy for ValueRef {
    fn name(&self) -> &'static str {
        "value"
    }
    fn on_access(&mut self, flat: usize, _weight: f32, tick: Tick) {
        let step = tick.floor();
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
        if self.last[flat] > f64::NEG_INFINITY {
            let last = self.last[flat];
            let age = (step - last).max(1.0) as usize;
            let c = self.class[flat] as usize;
            // Leave the survivor counts; ages 1..age−1 were counted step by step.
            if step - last <= (MAX_AGE + 1) as f64 {
                let i = Self::ring_slot(last) * FREQ_CLASSES + c;
                self.ring[i] = (self.ring[i] - 1.0).max(0.0);
            } else {
                self.old[c] = (self.old[c] - 1.0).max(0.0);
            }
            self.exposed[age.min(MAX_AGE) * FREQ_CLASSES + c] += 1.0;
            self.used[age.min(MAX_AGE) * FREQ_CLASSES + c] += 1.0;
        }
        // The score decays per step (integer steps: powi, no exp/ln on the hot path).
        let decayed = if self.last[flat] > f64::NEG_INFINITY {
            self.recent[flat] as f64
                * self
                    .params
                    .decay
                    .powi((step - self.last[flat]).min(1e4) as i32)
        } else {
            0.0
        };
        self.recent[flat] = (decayed + 1.0) as f32;
        self.uses[flat] = self.uses[flat].saturating_add(1);
        self.last[flat] = step;
        self.class[flat] = self.state_after_access(flat, step);
        self.ring[Self::ring_slot(step) * FREQ_CLASSES + self.class[flat] as usize] += 1.0;
    }
    fn priority(&self, flat: usize) -> f64 {
        // Global caches (no scan): the recent score in time-invariant log form.
        let ln_decay = self.params.decay.clamp(1e-6, 1.0 - 1e-9).ln();
        let key = if self.last[flat] > f64::NEG_INFINITY {
            (self.recent[flat] as f64).max(1e-30).ln() - self.last[flat] * ln_decay
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
