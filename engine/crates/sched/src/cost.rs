//! The cost model: T_cpu, T_gpu, T_pcie per expert and token count, refined online.
//!
//! Per device and storage type `d`, one expert matrix of `mb` megabytes serving `n` tokens
//! costs `mb · (s_d + c_d · n)`; an expert adds a fixed per-expert cost `f` (launches,
//! fork/join). A copy costs `f_link + bytes / bw`. Everything is linear in the
//! parameters, so measured samples refine them by least squares (see [`crate::fit`]).

use serde::{Deserialize, Serialize};

use crate::fit::PriorLeastSquares;
use crate::profile::{DeviceCosts, KernelCoeffs, LinkCosts, MachineProfile};
use crate::shape::{ExpertWork, QuantType};

/// Forgetting factor per sample: the last ~2000 samples dominate the fit.
const FIT_DECAY: f64 = 0.9995;
/// The prior weighs a tenth of a sample: a handful of measurements override it.
const FIT_RIDGE: f64 = 0.1;
/// Weight of a new sample in the join-cost average (~50 layers of memory).
const SYNC_EWMA: f64 = 0.02;
/// A join cost above this is an outlier (a stall), not the join.
const SYNC_MAX_S: f64 = 5e-3;
/// Layer-error samples kept for the median.
const ERROR_WINDOW: usize = 4096;

/// Cost of one expert (of a given model) as a linear function of its token count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ExpertCosts {
    /// CPU: seconds at zero tokens (fixed + streaming).
    pub cpu_base_s: f64,
    /// CPU: seconds per token.
    pub cpu_per_token_s: f64,
    /// GPU: seconds at zero tokens (`INFINITY` without a GPU).
    pub gpu_base_s: f64,
    /// GPU: seconds per token.
    pub gpu_per_token_s: f64,
    /// Host→device copy of the whole expert (`INFINITY` without a link).
    pub fetch_s: f64,
    /// Bytes of the expert.
    pub bytes: u64,
}

impl ExpertCosts {
    /// CPU time for `n` tokens.
    #[inline]
    pub fn cpu(&self, n: u32) -> f64 {
        self.cpu_base_s + self.cpu_per_token_s * n as f64
    }
    /// GPU compute time for `n` tokens (expert resident).
    #[inline]
    pub fn gpu(&self, n: u32) -> f64 {
        self.gpu_base_s + self.gpu_per_token_s * n as f64
    }
    /// Whether a GPU exists at all.
    pub fn has_gpu(&self) -> bool {
        self.gpu_base_s.is_finite() && self.fetch_s.is_finite()
    }
    /// Time a resident copy saves against the best alternative for a miss.
    pub fn hit_saving(&self, n: u32) -> f64 {
        if !self.has_gpu() {
            return 0.0;
        }
        (self.cpu(n).min(self.fetch_s + self.gpu(n)) - self.gpu(n)).max(0.0)
    }
}

/// Median relative error of predicted vs measured times.
#[derive(Debug, Clone, Default)]
pub struct ErrorTracker {
    rel: Vec<f64>,
    next: usize,
    total: u64,
}

/// Summary of prediction errors.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// Samples seen in total.
    pub samples: u64,
    /// Median of |pred − meas| / meas over the window.
    pub median_rel: f64,
    /// 90th percentile of the same.
    pub p90_rel: f64,
    /// Median of (pred − meas) / meas: > 0 means the model is pessimistic.
    pub median_bias: f64,
}

impl ErrorTracker {
    /// Records one pair (ignored unless both are positive and finite).
    pub fn record(&mut self, predicted_s: f64, measured_s: f64) {
        if !(predicted_s.is_finite() && measured_s.is_finite() && measured_s > 0.0) {
            return;
        }
        let e = (predicted_s - measured_s) / measured_s;
        if self.rel.len() < ERROR_WINDOW {
            self.rel.push(e);
        } else {
            self.rel[self.next] = e;
        }
        self.next = (self.next + 1) % ERROR_WINDOW;
        self.total += 1;
    }

    /// The median absolute relative error alone, as [`ErrorTracker::report`]'s
    /// `median_rel`, by selection in `scratch` (reused: no allocation once warm, linear
    /// time instead of two sorts; the engine publishes it every step).
    pub fn median_abs(&self, scratch: &mut Vec<f64>) -> Option<f64> {
        if self.rel.is_empty() {
            return None;
        }
        scratch.clear();
        scratch.extend(self.rel.iter().map(|e| e.abs()));
        let i = ((scratch.len() - 1) as f64 * 0.5).round() as usize;
        let (_, m, _) = scratch.select_nth_unstable_by(i, f64::total_cmp);
        Some(*m)
    }

    /// Median absolute/90th percentile/median signed relative error (`None`: no samples).
    pub fn report(&self) -> Option<ErrorReport> {
        if self.rel.is_empty() {
            return None;
        }
        let mut abs: Vec<f64> = self.rel.iter().map(|e| e.abs()).collect();
        let mut signed = self.rel.clone();
        abs.sort_by(f64::total_cmp);
        signed.sort_by(f64::total_cmp);
        let q = |v: &[f64], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        Some(ErrorReport {
            samples: self.total,
            median_rel: q(&abs, 0.5),
            p90_rel: q(&abs, 0.9),
            median_bias: q(&signed, 0.5),
        })
    }
}

/// Online-refined cost model of one machine.
#[derive(Debug, Clone)]
pub struct CostModel {
    profile: MachineProfile,
    cpu_fit: PriorLeastSquares,
    gpu_fit: Option<PriorLeastSquares>,
    link_fit: Option<PriorLeastSquares>,
    /// Dense part of a step (everything but the MoE layers): `[fixed, per token]`.
    dense_fit: PriorLeastSquares,
    n_layers: u16,
    layer_err: ErrorTracker,
    step_err: ErrorTracker,
    dirty: bool,
    /// Moving average of split (CPU and GPU) layers' overhead; minus `profile.sync_s`
    /// (GPU-only layers') it is `profile.split_s`.
    split_sync_s: f64,
}

/// Parameter vector of a device: `[fixed, s_d for d in ALL, c_d for d in ALL]`.
fn device_params(d: &DeviceCosts) -> Vec<f64> {
    let mut v = vec![d.fixed_per_expert_s];
    v.extend(QuantType::ALL.iter().map(|&q| d.coeff(q).per_mb_s));
    v.extend(QuantType::ALL.iter().map(|&q| d.coeff(q).per_mb_token_s));
    // A zero prior could never move (parameters are relative to it).
    v.iter().map(|&x| x.max(1e-12)).collect()
}

fn device_from_params(p: &[f64]) -> DeviceCosts {
    let k = QuantType::ALL.len();
    DeviceCosts {
        fixed_per_expert_s: p[0],
        coeffs: QuantType::ALL
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                (
                    q,
                    KernelCoeffs {
                        per_mb_s: p[1 + i],
                        per_mb_token_s: p[1 + k + i],
                    },
                )
            })
            .collect(),
    }
}

/// Parameters (and features) of a device fit: fixed, then per type per MB and per MB-token.
const DEVICE_PARAMS: usize = 1 + 2 * QuantType::ALL.len();

/// Features of one expert (or matrix) run: `[1, mb_d…, mb_d·n…]` (on the stack: the
/// engine observes every layer). `n_tokens` may be a mean: the model is linear in the
/// token count, so the mean run of a group of experts has the group's mean features.
fn device_features(work: &[(QuantType, u64)], n_tokens: f64, fixed: f64) -> [f64; DEVICE_PARAMS] {
    let k = QuantType::ALL.len();
    let mut x = [0.0; DEVICE_PARAMS];
    x[0] = fixed;
    for &(q, bytes) in work {
        let mb = bytes as f64 / 1e6;
        x[1 + q.index()] += mb;
        x[1 + k + q.index()] += mb * n_tokens;
    }
    x
}

fn device_time(d: &DeviceCosts, work: &[(QuantType, u64)], n_tokens: u32, fixed: f64) -> f64 {
    fixed * d.fixed_per_expert_s
        + work
            .iter()
            .map(|&(q, b)| {
                let c = d.coeff(q);
                b as f64 / 1e6 * (c.per_mb_s + c.per_mb_token_s * n_tokens as f64)
            })
            .sum::<f64>()
}

impl CostModel {
    /// A model starting from `profile`.
    pub fn new(profile: MachineProfile) -> Self {
        let cpu_fit = PriorLeastSquares::new(device_params(&profile.cpu), FIT_DECAY, FIT_RIDGE);
        let gpu_fit = profile
            .gpu
            .as_ref()
            .map(|g| PriorLeastSquares::new(device_params(g), FIT_DECAY, FIT_RIDGE));
        let link_fit = profile.pcie.map(|l| {
            PriorLeastSquares::new(
                vec![l.fixed_s.max(1e-12), 1e6 / l.bytes_per_s],
                FIT_DECAY,
                FIT_RIDGE,
            )
        });
        let split_sync_s = profile.sync_s + profile.split_s;
        Self {
            dense_fit: PriorLeastSquares::new(vec![1e-3, 1e-4], FIT_DECAY, FIT_RIDGE),
            n_layers: 0,
            profile,
            cpu_fit,
            gpu_fit,
            link_fit,
            layer_err: ErrorTracker::default(),
            step_err: ErrorTracker::default(),
            dirty: false,
            split_sync_s,
        }
    }

    /// Sets the layer count the profile's dense terms are per (0 until set: the step
    /// predictions then have no dense part until the first observation).
    pub fn set_layers(&mut self, n_layers: u16) {
        self.n_layers = n_layers;
        let (fixed, per_token) = self.profile_dense(1);
        self.dense_fit = PriorLeastSquares::new(
            vec![fixed.max(1e-6), per_token.max(1e-7)],
            FIT_DECAY,
            FIT_RIDGE,
        );
    }

    fn profile_dense(&self, _n_tokens: u32) -> (f64, f64) {
        let l = self.n_layers as f64;
        (
            self.profile.dense_layer_s * l + self.profile.token_fixed_s,
            self.profile.dense_layer_per_token_s * l,
        )
    }

    /// Predicted dense time of a step of `n_tokens` (attention, norms, routers, head:
    /// everything but the MoE layers), from the online fit once steps were observed.
    pub fn dense_step_s(&self, n_tokens: u32) -> f64 {
        let p = if self.dense_fit.samples() > 0.0 {
            self.dense_fit.solve()
        } else {
            let (a, b) = self.profile_dense(n_tokens);
            vec![a, b]
        };
        p[0] + p[1] * n_tokens as f64
    }

    /// A measured step: `dense_s` is its time outside the MoE layers.
    pub fn observe_dense_step(&mut self, n_tokens: u32, dense_s: f64) {
        if dense_s.is_finite() && dense_s > 0.0 {
            self.dense_fit.observe(&[1.0, n_tokens as f64], dense_s);
        }
    }

    /// A measured layer with GPU work: its time beyond the busier side's (upload, launch,
    /// download, waiting, and for a layer `split` between CPU and GPU the join), refitted
    /// as moving averages: GPU-only layers give `sync_s`, split layers their own overhead,
    /// whose excess over `sync_s` is `split_s`.
    pub fn observe_sync(&mut self, residual_s: f64, split: bool) {
        if residual_s.is_finite() {
            let r = residual_s.clamp(0.0, SYNC_MAX_S);
            if split {
                self.split_sync_s += SYNC_EWMA * (r - self.split_sync_s);
            } else {
                self.profile.sync_s += SYNC_EWMA * (r - self.profile.sync_s);
            }
            self.profile.split_s = (self.split_sync_s - self.profile.sync_s).max(0.0);
        }
    }

    /// A step's predicted vs measured time, for the error report.
    pub fn observe_step(&mut self, predicted_s: f64, measured_s: f64) {
        self.step_err.record(predicted_s, measured_s);
    }

    /// Step-time prediction error so far.
    pub fn step_error_report(&self) -> Option<ErrorReport> {
        self.step_err.report()
    }

    /// The current (refitted) profile, ready to be saved for the next start.
    pub fn profile(&mut self) -> &MachineProfile {
        self.refit();
        &self.profile
    }

    /// Applies the samples seen so far to the profile (cheap; called lazily).
    pub fn refit(&mut self) {
        if !self.dirty {
            return;
        }
        if self.cpu_fit.samples() > 0.0 {
            self.profile.cpu = device_from_params(&self.cpu_fit.solve());
        }
        if let (Some(f), Some(_)) = (&self.gpu_fit, &self.profile.gpu) {
            if f.samples() > 0.0 {
                self.profile.gpu = Some(device_from_params(&f.solve()));
            }
        }
        if let Some(f) = &self.link_fit {
            if f.samples() > 0.0 {
                let p = f.solve();
                self.profile.pcie = Some(LinkCosts {
                    fixed_s: p[0],
                    bytes_per_s: 1e6 / p[1].max(1e-15),
                });
            }
        }
        self.dirty = false;
    }

    /// Predicted CPU time of one expert's work for `n_tokens`.
    pub fn t_cpu(&self, work: &ExpertWork, n_tokens: u32) -> f64 {
        device_time(&self.profile.cpu, &work.parts, n_tokens, 1.0)
    }

    /// Predicted GPU compute time (`INFINITY` without a GPU).
    pub fn t_gpu(&self, work: &ExpertWork, n_tokens: u32) -> f64 {
        self.profile.gpu.as_ref().map_or(f64::INFINITY, |g| {
            device_time(g, &work.parts, n_tokens, 1.0)
        })
    }

    /// Predicted host→device copy time (`INFINITY` without a link).
    pub fn t_pcie(&self, bytes: u64) -> f64 {
        self.profile
            .pcie
            .map_or(f64::INFINITY, |l| l.fixed_s + bytes as f64 / l.bytes_per_s)
    }

    /// The per-expert linear costs the scheduler uses (refits first).
    pub fn expert_costs(&mut self, work: &ExpertWork) -> ExpertCosts {
        self.refit();
        let cpu0 = self.t_cpu(work, 0);
        let gpu0 = self.t_gpu(work, 0);
        ExpertCosts {
            cpu_base_s: cpu0,
            cpu_per_token_s: self.t_cpu(work, 1) - cpu0,
            gpu_base_s: gpu0,
            gpu_per_token_s: if gpu0.is_finite() {
                self.t_gpu(work, 1) - gpu0
            } else {
                0.0
            },
            fetch_s: self.t_pcie(work.bytes()),
            bytes: work.bytes(),
        }
    }

    /// A measured CPU run of one matrix of type `dtype` and `bytes` bytes (a
    /// micro-benchmark sample; no per-expert fixed cost).
    pub fn observe_cpu(&mut self, dtype: QuantType, bytes: u64, n_tokens: u32, seconds: f64) {
        self.cpu_fit.observe(
            &device_features(&[(dtype, bytes)], n_tokens as f64, 0.0),
            seconds,
        );
        self.dirty = true;
    }

    /// A measured CPU run of a whole expert serving `n_tokens` tokens, or the mean run of
    /// a group of experts (`n_tokens` their mean token count, `seconds` the group's time
    /// over its size).
    pub fn observe_cpu_expert(&mut self, work: &ExpertWork, n_tokens: f64, seconds: f64) {
        self.cpu_fit
            .observe(&device_features(&work.parts, n_tokens, 1.0), seconds);
        self.dirty = true;
    }

    /// A measured GPU run of one matrix (ignored without a GPU).
    pub fn observe_gpu(&mut self, dtype: QuantType, bytes: u64, n_tokens: u32, seconds: f64) {
        if let Some(f) = &mut self.gpu_fit {
            f.observe(
                &device_features(&[(dtype, bytes)], n_tokens as f64, 0.0),
                seconds,
            );
            self.dirty = true;
        }
    }

    /// A measured GPU run of a whole expert, or the mean run of a group (as
    /// [`CostModel::observe_cpu_expert`]); ignored without a GPU.
    pub fn observe_gpu_expert(&mut self, work: &ExpertWork, n_tokens: f64, seconds: f64) {
        if let Some(f) = &mut self.gpu_fit {
            f.observe(&device_features(&work.parts, n_tokens, 1.0), seconds);
            self.dirty = true;
        }
    }

    /// A measured host→device copy (ignored without a link).
    pub fn observe_pcie(&mut self, bytes: u64, seconds: f64) {
        if let Some(f) = &mut self.link_fit {
            f.observe(&[1.0, bytes as f64 / 1e6], seconds);
            self.dirty = true;
        }
    }

    /// A layer's predicted vs measured MoE time, for the error report.
    pub fn observe_layer(&mut self, predicted_s: f64, measured_s: f64) {
        self.layer_err.record(predicted_s, measured_s);
    }

    /// Prediction error so far (`None` before any layer was observed).
    pub fn error_report(&self) -> Option<ErrorReport> {
        self.layer_err.report()
    }

    /// The layer prediction error's median alone (`error_report().median_rel`), cheaply:
    /// `scratch` is reused between calls.
    pub fn layer_error_median(&self, scratch: &mut Vec<f64>) -> Option<f64> {
        self.layer_err.median_abs(scratch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::ModelShape;

    /// Calibration with exact synthetic timings must land within 2% (ridge bias only).
    const CALIB_TOL: f64 = 0.02;

    #[test]
    fn calibration_pulls_a_wrong_prior_to_the_truth() {
        let shape = ModelShape::preset("qwen3-30b-a3b:q4_k_m").unwrap();
        let work = shape.expert_work();
        let truth = MachineProfile::build_box();
        let mut prior = truth.clone();
        prior.cpu = DeviceCosts::from_rates(1e-6, 40e9, 1e-12);
        let mut m = CostModel::new(prior);
        let t = CostModel::new(truth);
        for &q in &[QuantType::Q4_K, QuantType::Q6_K] {
            for n in [1u32, 2, 8, 32, 128, 512] {
                for bytes in [500_000u64, 1_000_000, 4_000_000] {
                    let w = ExpertWork {
                        parts: vec![(q, bytes)],
                    };
                    let s = device_time(&t.profile.cpu, &w.parts, n, 0.0);
                    m.observe_cpu(q, bytes, n, s);
                }
            }
        }
        for n in [1u32, 512] {
            m.observe_cpu_expert(&work, n as f64, t.t_cpu(&work, n));
        }
        m.refit();
        for n in [1u32, 16, 512] {
            let (got, want) = (m.t_cpu(&work, n), t.t_cpu(&work, n));
            assert!(
                ((got - want) / want).abs() < CALIB_TOL,
                "n={n}: {got} vs {want}"
            );
        }
    }

    /// Prefill layers give no single-expert samples: the engine observes a share's time
    /// over its size at the share's mean token count. Such samples of mixed groups must
    /// teach the per-token term that decode's one-token samples cannot.
    #[test]
    fn mean_samples_of_mixed_groups_teach_the_per_token_cost() {
        let shape = ModelShape::preset("qwen3-30b-a3b:q4_k_m").unwrap();
        let work = shape.expert_work();
        let truth = CostModel::new(MachineProfile::h100_box());
        let mut prior = MachineProfile::h100_box();
        // The prior's GPU thinks every token costs three times what it does.
        let g = prior.gpu.as_mut().expect("a GPU box");
        for (_, c) in g.coeffs.iter_mut() {
            c.per_mb_token_s *= 3.0;
        }
        let mut m = CostModel::new(prior);
        let groups: [&[u32]; 3] = [&[1, 1, 1, 1, 1, 1, 1, 1], &[3, 40, 90, 7], &[200, 17, 64]];
        for _ in 0..200 {
            for g in groups {
                let total: f64 = g.iter().map(|&n| truth.t_gpu(&work, n)).sum();
                let mean = g.iter().map(|&n| n as f64).sum::<f64>() / g.len() as f64;
                m.observe_gpu_expert(&work, mean, total / g.len() as f64);
            }
        }
        m.refit();
        for n in [1u32, 32, 256] {
            let (got, want) = (m.t_gpu(&work, n), truth.t_gpu(&work, n));
            assert!(
                ((got - want) / want).abs() < CALIB_TOL,
                "n={n}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn link_fit_and_error_report() {
        let mut m = CostModel::new(MachineProfile::h100_box());
        for mb in [1u64, 2, 5, 10] {
            m.observe_pcie(mb * 1_000_000, 10e-6 + mb as f64 * 1e6 / 25e9);
        }
        let t = m.t_pcie(5_000_000);
        m.refit();
        let t2 = m.t_pcie(5_000_000);
        assert!(t2 > t * 1.5, "slower link must be learned: {t} -> {t2}");
        assert!(m.error_report().is_none());
        for (p, me) in [(1.0, 1.0), (1.1, 1.0), (0.8, 1.0)] {
            m.observe_layer(p, me);
        }
        let r = m.error_report().unwrap();
        assert!((r.median_rel - 0.1).abs() < 1e-9);
        assert_eq!(r.samples, 3);
    }

    #[test]
    fn median_by_selection_matches_the_sorted_report() {
        let mut t = ErrorTracker::default();
        let mut scratch = Vec::new();
        assert_eq!(t.median_abs(&mut scratch), None);
        // Odd and even counts, ties, signs, and a wrapped window.
        let mut x = 0.37f64;
        for n in 1..(ERROR_WINDOW + 300) {
            x = (x * 7.13 + 0.11).fract();
            t.record(1.0 + (x - 0.5) * (n % 5) as f64, 1.0);
            if n % 97 == 0 || !(6..=ERROR_WINDOW + 290).contains(&n) {
                let want = t.report().map(|r| r.median_rel);
                assert_eq!(t.median_abs(&mut scratch), want, "after {n} samples");
            }
        }
    }

    #[test]
    fn no_gpu_means_infinite_gpu_costs() {
        let mut m = CostModel::new(MachineProfile::build_box());
        let shape = ModelShape::preset("qwen3-30b-a3b:q8_0").unwrap();
        let c = m.expert_costs(&shape.expert_work());
        assert!(!c.has_gpu());
        assert!(c.cpu(1) > 0.0 && c.cpu(512) > c.cpu(1));
        assert_eq!(c.hit_saving(1), 0.0);
    }

    /// Relative error allowed for the dense fit after many exact samples: the ridge
    /// toward the prior keeps a small bias.
    const DENSE_FIT_TOL: f64 = 0.05;

    #[test]
    fn dense_fit_learns_fixed_and_per_token_parts() {
        let mut c = CostModel::new(MachineProfile::build_box());
        c.set_layers(48);
        // A machine whose dense part is 10 ms + 0.2 ms per token.
        for i in 0..400 {
            let n = if i % 4 == 0 { 512 } else { 1 };
            c.observe_dense_step(n, 10e-3 + 0.2e-3 * n as f64);
        }
        for n in [1u32, 512] {
            let want = 10e-3 + 0.2e-3 * n as f64;
            let got = c.dense_step_s(n);
            assert!(
                (got - want).abs() / want < DENSE_FIT_TOL,
                "n={n}: {got} vs {want}"
            );
        }
        // Non-finite or non-positive samples are ignored.
        let before = c.dense_step_s(1);
        c.observe_dense_step(1, f64::NAN);
        c.observe_dense_step(1, -1.0);
        assert_eq!(c.dense_step_s(1), before);
    }

    #[test]
    fn sync_average_follows_the_join_and_ignores_stalls() {
        let mut c = CostModel::new(MachineProfile::h100_box());
        for _ in 0..500 {
            c.observe_sync(80e-6, false);
        }
        let s = c.profile().sync_s;
        assert!((s - 80e-6).abs() < 2e-6, "{s}");
        // One 1-second stall moves the average by at most SYNC_EWMA x SYNC_MAX_S.
        c.observe_sync(1.0, false);
        let after = c.profile().sync_s;
        assert!(after - s <= SYNC_EWMA * SYNC_MAX_S + 1e-12);
    }

    #[test]
    fn split_cost_is_the_split_layers_overhead_beyond_the_gpu_only_layers() {
        let mut c = CostModel::new(MachineProfile::h100_box());
        assert_eq!(c.profile().split_s, 0.0);
        // Split layers cost 37 us beyond the busier side, GPU-only layers 15 us.
        for _ in 0..800 {
            c.observe_sync(37e-6, true);
            c.observe_sync(15e-6, false);
        }
        let p = c.profile();
        assert!((p.sync_s - 15e-6).abs() < 1e-6, "{}", p.sync_s);
        assert!((p.split_s - 22e-6).abs() < 1e-6, "{}", p.split_s);
        // Splits as cheap as GPU-only layers: no extra cost (never negative).
        for _ in 0..800 {
            c.observe_sync(10e-6, true);
        }
        assert_eq!(c.profile().split_s, 0.0);
    }
}
