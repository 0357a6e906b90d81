//! Token sampling: repetition penalty, greedy, temperature, top-k, top-p, min-p,
//! with a seeded generator so the same seed gives the same text.

use crate::api::SamplingParams;
use crate::error::{EngineError, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Upper bound on temperature; higher values make the distribution uniform anyway.
const MAX_TEMPERATURE: f32 = 100.0;

/// Checks a request's sampling fields, naming the bad one.
pub fn validate(p: &SamplingParams) -> Result<()> {
    let bad = |field: &str, v: String| {
        Err(EngineError::InvalidRequest(format!(
            "`{field}` = {v} is out of range"
        )))
    };
    if !(p.temperature.is_finite() && (0.0..=MAX_TEMPERATURE).contains(&p.temperature)) {
        return bad("temperature", p.temperature.to_string());
    }
    if !(p.top_p.is_finite() && p.top_p > 0.0 && p.top_p <= 1.0) {
        return bad("top_p", p.top_p.to_string());
    }
    if !(p.min_p.is_finite() && (0.0..=1.0).contains(&p.min_p)) {
        return bad("min_p", p.min_p.to_string());
    }
    if !(p.repetition_penalty.is_finite()
        && p.repetition_penalty > 0.0
        && p.repetition_penalty <= 10.0)
    {
        return bad("repetition_penalty", p.repetition_penalty.to_string());
    }
    if p.max_tokens == 0 {
        return bad("max_tokens", "0".into());
    }
    Ok(())
}

/// Samples tokens for one sequence.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    scratch: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler seeded from `params.seed`.
    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Self {
            params,
            rng,
            scratch: Vec::new(),
        }
    }

    /// Picks the next token from `logits` given the tokens so far.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let window = &history[history.len().saturating_sub(p.repetition_window)..];
            let mut seen: Vec<u32> = window.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    // Hugging Face's rule: shrink positive logits, push negative ones down.
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.temperature == 0.0 {
            return argmax(logits);
        }
        let cands = &mut self.scratch;
        cands.clear();
        cands.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| l.is_finite())
                .map(|(i, &l)| (i as u32, l)),
        );
        if cands.is_empty() {
            return argmax(logits);
        }
        cands.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if p.top_k > 0 && p.top_k < cands.len() {
            cands.truncate(p.top_k);
        }
        let max = cands[0].1;
        let mut sum = 0f32;
        for c in cands.iter_mut() {
            c.1 = ((c.1 - max) / p.temperature).exp();
            sum += c.1;
        }
        for c in cands.iter_mut() {
            c.1 /= sum;
        }
        if p.min_p > 0.0 {
            let floor = cands[0].1 * p.min_p;
            cands.retain(|c| c.1 >= floor);
        }
        if p.top_p < 1.0 {
            let mut acc = 0f32;
            let mut keep = cands.len();
            for (i, c) in cands.iter().enumerate() {
                acc += c.1;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            cands.truncate(keep);
        }
        let total: f32 = cands.iter().map(|c| c.1).sum();
        let mut r = self.rng.random::<f32>() * total;
        for c in cands.iter() {
            r -= c.1;
            if r <= 0.0 {
                return c.0;
            }
        }
        cands[cands.len() - 1].0
    }
}

/// Index of the largest logit (lowest index on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k: 0,
            top_p: 1.0,
            seed,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_takes_argmax() {
        let mut s = Sampler::new(params(0.0, 1));
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0], &[]), 1);
    }

    #[test]
    fn same_seed_same_sequence_and_different_seed_differs() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.7).sin()).collect();
        let draw = |seed| {
            let mut s = Sampler::new(params(1.0, seed));
            (0..40)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut p = params(1.0, 3);
        p.top_k = 1;
        let mut s = Sampler::new(p);
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.0, 0.5, 0.4], &[]), 1);
        }
    }

    #[test]
    fn min_p_and_top_p_cut_the_tail() {
        let mut p = params(1.0, 5);
        p.min_p = 0.5;
        let mut s = Sampler::new(p);
        // exp(-5) relative to the max is far below 0.5: only tokens 0 and 1 survive.
        for _ in 0..50 {
            assert!(s.sample(&mut [5.0, 4.9, 0.0, 0.0], &[]) < 2);
        }
        let mut p = params(1.0, 5);
        p.top_p = 0.5;
        let mut s = Sampler::new(p);
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [5.0, 1.0, 0.0], &[]), 0);
        }
    }

    #[test]
    fn repetition_penalty_discourages_seen_tokens() {
        let mut p = params(0.0, 0);
        p.repetition_penalty = 2.0;
        let mut s = Sampler::new(p);
        assert_eq!(s.sample(&mut [1.0, 0.9], &[0]), 1);
    }

    #[test]
    fn validation_names_the_field() {
        let p = SamplingParams {
            top_p: 0.0,
            ..Default::default()
        };
        let e = validate(&p).unwrap_err().to_string();
        assert!(e.contains("top_p"), "{e}");
        let p = SamplingParams {
            temperature: f32::NAN,
            ..Default::default()
        };
        assert!(validate(&p)
            .unwrap_err()
            .to_string()
            .contains("temperature"));
    }
}
