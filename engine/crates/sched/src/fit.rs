//! Online least squares toward a prior: the cost model's refinement from measured timings.
//!
//! Parameters are written relative to the prior, `θ_i = prior_i (1 + δ_i)`, so one ridge
//! weight fits parameters of very different units. Samples are weighted by `1/y²`
//! (relative error), and old samples decay geometrically so the model follows a machine
//! whose speed drifts (thermal limits, other load).

/// Ridge regression of `y ≈ Σ θ_i x_i` toward a prior, accumulated sample by sample.
#[derive(Debug, Clone)]
pub struct PriorLeastSquares {
    prior: Vec<f64>,
    ata: Vec<f64>,
    atb: Vec<f64>,
    /// Bit `i`: feature `i` was ever nonzero (fits of up to 64 features; larger ones
    /// take the dense loops). Every other row and column of `ata` and entry of `atb` is
    /// an exact zero, which the decay leaves zero, so only these are decayed (5 of the
    /// cost model's 15 device features: a ninth of the matrix).
    active: u64,
    samples: f64,
    decay: f64,
    ridge: f64,
}

impl PriorLeastSquares {
    /// `decay` multiplies the old statistics at each sample (1.0: never forget);
    /// `ridge` is how many samples' worth of weight the prior keeps.
    pub fn new(prior: Vec<f64>, decay: f64, ridge: f64) -> Self {
        let n = prior.len();
        Self {
            prior,
            ata: vec![0.0; n * n],
            atb: vec![0.0; n],
            active: 0,
            samples: 0.0,
            decay,
            ridge,
        }
    }

    /// Effective number of samples (after decay).
    pub fn samples(&self) -> f64 {
        self.samples
    }

    /// The prior parameters.
    pub fn prior(&self) -> &[f64] {
        &self.prior
    }

    /// Adds one measurement `y` (seconds, > 0) with raw features `x`.
    pub fn observe(&mut self, x: &[f64], y: f64) {
        let n = self.prior.len();
        if x.len() != n || !(y.is_finite() && y > 0.0) {
            return;
        }
        let w = 1.0 / (y * y);
        if n > 64 {
            self.observe_dense(x, y, w);
            return;
        }
        let nz = x
            .iter()
            .enumerate()
            .fold(0u64, |m, (i, &v)| if v != 0.0 { m | 1 << i } else { m });
        let decay = self.decay;
        self.samples = self.samples * decay + 1.0;
        // Only features ever nonzero are decayed: every other entry is an exact zero,
        // which decaying leaves zero. A zero feature's terms are exact zeros, and adding a
        // zero of either sign leaves these sums unchanged (they start at +0 and never
        // reach −0): skipping them is exact, and the cost model's features are mostly
        // zeros (one quant type of seven). Each entry gets `v · decay + term`, the dense
        // loops' two steps in their order; `w · x_i` is the same product there.
        if nz == self.active {
            // The steady state (one expert shape): decay and add in one pass.
            let mut rows = nz;
            while rows != 0 {
                let i = rows.trailing_zeros() as usize;
                rows &= rows - 1;
                let wx = w * x[i];
                self.atb[i] = self.atb[i] * decay + wx * y;
                let row = &mut self.ata[i * n..(i + 1) * n];
                let mut cols = nz;
                while cols != 0 {
                    let j = cols.trailing_zeros() as usize;
                    cols &= cols - 1;
                    row[j] = row[j] * decay + wx * x[j];
                }
            }
            return;
        }
        let mut rows = self.active;
        while rows != 0 {
            let i = rows.trailing_zeros() as usize;
            rows &= rows - 1;
            self.atb[i] *= decay;
            let row = &mut self.ata[i * n..(i + 1) * n];
            let mut cols = self.active;
            while cols != 0 {
                row[cols.trailing_zeros() as usize] *= decay;
                cols &= cols - 1;
            }
        }
        self.active |= nz;
        let mut rows = nz;
        while rows != 0 {
            let i = rows.trailing_zeros() as usize;
            rows &= rows - 1;
            let wx = w * x[i];
            self.atb[i] += wx * y;
            let row = &mut self.ata[i * n..(i + 1) * n];
            let mut cols = nz;
            while cols != 0 {
                let j = cols.trailing_zeros() as usize;
                cols &= cols - 1;
                row[j] += wx * x[j];
            }
        }
    }

    /// [`PriorLeastSquares::observe`] of a fit too wide for the feature masks.
    fn observe_dense(&mut self, x: &[f64], y: f64, w: f64) {
        let n = self.prior.len();
        for v in self.ata.iter_mut().chain(self.atb.iter_mut()) {
            *v *= self.decay;
        }
        self.samples = self.samples * self.decay + 1.0;
        for i in 0..n {
            if x[i] == 0.0 {
                continue;
            }
            self.atb[i] += w * x[i] * y;
            for j in 0..n {
                if x[j] != 0.0 {
                    self.ata[i * n + j] += w * x[i] * x[j];
                }
            }
        }
    }

    /// Current parameters (non-negative). The ridge pulls toward the current centre,
    /// which starts at the prior and moves to the previous solution for a few rounds:
    /// well-observed parameters reach the data's optimum even when the prior is far off,
    /// unobserved ones keep the prior.
    pub fn solve(&self) -> Vec<f64> {
        let n = self.prior.len();
        let mut c = self.prior.clone();
        for _ in 0..SOLVE_ROUNDS {
            // In relative coordinates z = x ∘ c: A = C XᵀWX C, b = C (XᵀWy − XᵀWX c).
            let mut a = vec![0.0; n * n];
            let mut b = vec![0.0; n];
            for i in 0..n {
                let xc: f64 = (0..n).map(|j| self.ata[i * n + j] * c[j]).sum();
                b[i] = c[i] * (self.atb[i] - xc);
                for j in 0..n {
                    a[i * n + j] = c[i] * self.ata[i * n + j] * c[j];
                }
                a[i * n + i] += self.ridge;
            }
            let delta = gauss_solve(&mut a, &mut b, n);
            for i in 0..n {
                // Keep every parameter positive so it can still move next round.
                c[i] = (c[i] * (1.0 + delta[i])).max(self.prior[i] * 1e-3);
            }
        }
        c
    }
}

/// Re-centring rounds of [`PriorLeastSquares::solve`]; each shrinks the ridge's pull
/// toward a far-off prior by about the ratio ridge / information.
const SOLVE_ROUNDS: usize = 6;

/// Solves `a x = b` in place by Gaussian elimination with partial pivoting;
/// singular directions come out as 0 (the ridge makes that rare).
fn gauss_solve(a: &mut [f64], b: &mut [f64], n: usize) -> Vec<f64> {
    for col in 0..n {
        let mut piv = col;
        for r in col + 1..n {
            if a[r * n + col].abs() > a[piv * n + col].abs() {
                piv = r;
            }
        }
        if a[piv * n + col].abs() < 1e-300 {
            continue;
        }
        if piv != col {
            for k in 0..n {
                a.swap(col * n + k, piv * n + k);
            }
            b.swap(col, piv);
        }
        for r in 0..n {
            if r == col {
                continue;
            }
            let f = a[r * n + col] / a[col * n + col];
            if f == 0.0 {
                continue;
            }
            for k in col..n {
                a[r * n + k] -= f * a[col * n + k];
            }
            b[r] -= f * b[col];
        }
    }
    (0..n)
        .map(|i| {
            let d = a[i * n + i];
            if d.abs() < 1e-300 {
                0.0
            } else {
                b[i] / d
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative tolerance for recovering exact linear data: only float round-off remains.
    const EXACT_FIT_TOL: f64 = 1e-3;

    #[test]
    fn recovers_true_parameters_from_exact_samples() {
        // Prior off by 2x; truth y = 3e-6 + 2e-5 * a + 4e-6 * a * n.
        let truth = [3e-6, 2e-5, 4e-6];
        let mut f = PriorLeastSquares::new(vec![6e-6, 1e-5, 8e-6], 1.0, 1e-6);
        for a in [0.5, 1.0, 3.0] {
            for n in [1.0, 4.0, 64.0, 512.0] {
                let x = [1.0, a, a * n];
                let y: f64 = x.iter().zip(truth).map(|(x, t)| x * t).sum();
                f.observe(&x, y);
            }
        }
        for (got, want) in f.solve().iter().zip(truth) {
            assert!(
                ((got - want) / want).abs() < EXACT_FIT_TOL,
                "{got} vs {want}"
            );
        }
    }

    #[test]
    fn skipping_zero_features_is_exact() {
        // The accumulation before zero features were skipped.
        fn dense(f: &mut PriorLeastSquares, x: &[f64], y: f64) {
            let n = f.prior.len();
            let w = 1.0 / (y * y);
            for v in f.ata.iter_mut().chain(f.atb.iter_mut()) {
                *v *= f.decay;
            }
            f.samples = f.samples * f.decay + 1.0;
            for i in 0..n {
                f.atb[i] += w * x[i] * y;
                for j in 0..n {
                    f.ata[i * n + j] += w * x[i] * x[j];
                }
            }
        }
        let prior = vec![1e-6, 2e-5, 3e-7, 4e-6, 5e-9];
        let (mut a, mut b) = (
            PriorLeastSquares::new(prior.clone(), 0.9995, 0.1),
            PriorLeastSquares::new(prior, 0.9995, 0.1),
        );
        let mut r = 0.618f64;
        for k in 0..500 {
            // Sparse features of both signs (zeros of both signs too), positive targets.
            let x: Vec<f64> = (0..5)
                .map(|i| {
                    r = (r * 9.77 + 0.31).fract();
                    match (k + i) % 4 {
                        0 => 0.0,
                        1 => -0.0,
                        2 => r * 3.0,
                        _ => -r,
                    }
                })
                .collect();
            let y = 1e-4 * (1.0 + r);
            a.observe(&x, y);
            dense(&mut b, &x, y);
        }
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.ata), bits(&b.ata));
        assert_eq!(bits(&a.atb), bits(&b.atb));
        assert_eq!(bits(&a.solve()), bits(&b.solve()));
    }

    #[test]
    fn decaying_only_the_active_features_is_exact() {
        // The cost model's case: 15 features, a fixed few nonzero (one expert's quant
        // types), then a new one appearing late; against the dense decay of everything.
        let prior: Vec<f64> = (1..=15).map(|i| i as f64 * 1e-6).collect();
        let (mut a, mut b) = (
            PriorLeastSquares::new(prior.clone(), 0.9995, 0.1),
            PriorLeastSquares::new(prior, 0.9995, 0.1),
        );
        let mut r = 0.377f64;
        for k in 0..600 {
            let mut x = [0.0f64; 15];
            r = (r * 7.31 + 0.13).fract();
            x[0] = 1.0;
            x[3] = 2.65 * (1.0 + r);
            // Now and then a feature of the active set is zero (the two-pass path).
            x[5] = if k % 7 == 0 { 0.0 } else { 0.44 };
            x[10] = 2.65 * (k % 3 + 1) as f64;
            if k > 400 {
                x[12] = r;
            }
            let y = 6e-5 * (1.0 + r);
            a.observe(&x, y);
            // Reference: every entry decayed.
            let n = b.prior.len();
            let w = 1.0 / (y * y);
            for v in b.ata.iter_mut().chain(b.atb.iter_mut()) {
                *v *= b.decay;
            }
            b.samples = b.samples * b.decay + 1.0;
            for i in 0..n {
                if x[i] == 0.0 {
                    continue;
                }
                b.atb[i] += w * x[i] * y;
                for j in 0..n {
                    if x[j] != 0.0 {
                        b.ata[i * n + j] += w * x[i] * x[j];
                    }
                }
            }
        }
        assert_eq!(a.active, 1 << 0 | 1 << 3 | 1 << 5 | 1 << 10 | 1 << 12);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.ata), bits(&b.ata));
        assert_eq!(bits(&a.atb), bits(&b.atb));
        assert_eq!(a.samples.to_bits(), b.samples.to_bits());
        assert_eq!(bits(&a.solve()), bits(&b.solve()));
    }

    #[test]
    fn unobserved_parameters_stay_at_prior() {
        let mut f = PriorLeastSquares::new(vec![1.0, 2.0], 1.0, 0.1);
        for _ in 0..50 {
            f.observe(&[1.0, 0.0], 1.5);
        }
        let p = f.solve();
        assert!((p[0] - 1.5).abs() < 0.02, "{p:?}");
        assert_eq!(p[1], 2.0);
        assert!(f.samples() > 49.0);
    }
}
