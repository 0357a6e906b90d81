//! Synthetic decode traces whose locality is calibrated to the published Qwen3-30B-A3B
//! routing statistics (brief), plus the statistics themselves.
//!
//! Per layer and step, each of the `top_k` picks is, with probability `p_repeat`, an expert
//! of the previous step; with probability `p_window`, an expert of an older step (lag
//! ℓ ≥ 2 with weight `window_decay^(ℓ−2)`, up to `window` steps back); otherwise a draw
//! from a per-layer popularity `π_r ∝ exp(−r / pop_tau)` over a random permutation of the
//! experts (rank r): the mild global skew. An exponential in rank matches both published
//! skew numbers at once (top share ≈ 1/τ, 90% of routing within ≈ 2.3 τ experts), which a
//! Zipf law cannot. Picks repeat until distinct.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::shape::ModelShape;
use crate::trace::{Trace, TraceHeader, TraceLayer, TraceStep};

/// Generator parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SynthParams {
    /// Probability that a pick repeats an expert of the previous step.
    pub p_repeat: f64,
    /// Probability that a pick reuses an expert of an older step in the window.
    pub p_window: f64,
    /// Geometric decay of older lags.
    pub window_decay: f64,
    /// Steps of history.
    pub window: usize,
    /// Popularity decay length in experts (`f64::INFINITY`: uniform).
    pub pop_tau: f64,
    /// Share of the next layer's true experts the emitted prediction contains.
    pub pred_recall: f64,
}

impl SynthParams {
    /// Calibrated to the Qwen3-30B-A3B statistics (see docs/notes/sched.md, fitted by
    /// `sched-sim calibrate`).
    pub fn qwen3_calibrated() -> Self {
        Self {
            p_repeat: 0.43,
            p_window: 0.30,
            window_decay: 0.85,
            window: 32,
            pop_tau: 28.0,
            pred_recall: 0.8,
        }
    }

    /// Uniform random routing (random-weight models): no locality, no skew.
    pub fn uniform() -> Self {
        Self {
            p_repeat: 0.0,
            p_window: 0.0,
            window_decay: 0.0,
            window: 1,
            pop_tau: f64::INFINITY,
            pred_recall: 0.8,
        }
    }
}

fn pick_distinct(rng: &mut StdRng, chosen: &[u16], from: &[u16]) -> Option<u16> {
    if from.is_empty() {
        return None;
    }
    let e = from[rng.random_range(0..from.len())];
    (!chosen.contains(&e)).then_some(e)
}

/// Generates `steps` decode steps for `shape`.
pub fn generate(shape: &ModelShape, params: &SynthParams, steps: usize, seed: u64) -> Trace {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shape.n_experts as usize;
    let k = (shape.top_k as usize).min(n);
    let layers = shape.n_layers as usize;
    // Per-layer popularity: cumulative exponential-in-rank weights over a random permutation.
    let mut cum: Vec<Vec<(f64, u16)>> = Vec::with_capacity(layers);
    for _ in 0..layers {
        let mut perm: Vec<u16> = (0..n as u16).collect();
        for i in (1..n).rev() {
            perm.swap(i, rng.random_range(0..=i));
        }
        let mut acc = 0.0;
        cum.push(
            perm.iter()
                .enumerate()
                .map(|(r, &e)| {
                    acc += (-(r as f64) / params.pop_tau).exp();
                    (acc, e)
                })
                .collect(),
        );
    }
    let window = params.window.max(1);
    let lag_w: Vec<f64> = (2..=window.max(2))
        .map(|l| params.window_decay.powi(l as i32 - 2))
        .collect();
    let mut hist: Vec<Vec<Vec<u16>>> = vec![Vec::new(); layers]; // newest last
    let mut out: Vec<TraceStep> = Vec::with_capacity(steps);
    let draw_pop = |rng: &mut StdRng, c: &[(f64, u16)]| {
        let total = c.last().map_or(1.0, |x| x.0);
        let u = rng.random::<f64>() * total;
        let i = c.partition_point(|x| x.0 < u).min(c.len() - 1);
        c[i].1
    };
    for step in 0..steps {
        let mut ls = Vec::with_capacity(layers);
        for l in 0..layers {
            let h = &hist[l];
            let mut chosen: Vec<u16> = Vec::with_capacity(k);
            while chosen.len() < k {
                let mut got = None;
                for _ in 0..16 {
                    let u: f64 = rng.random();
                    let cand = if u < params.p_repeat && !h.is_empty() {
                        pick_distinct(&mut rng, &chosen, &h[h.len() - 1])
                    } else if u < params.p_repeat + params.p_window && h.len() >= 2 {
                        let max_lag = h.len().min(window);
                        let tot: f64 = lag_w[..max_lag - 1].iter().sum();
                        let mut x = rng.random::<f64>() * tot;
                        let mut lag = 2;
                        for (i, w) in lag_w[..max_lag - 1].iter().enumerate() {
                            lag = i + 2;
                            if x < *w {
                                break;
                            }
                            x -= w;
                        }
                        pick_distinct(&mut rng, &chosen, &h[h.len() - lag])
                    } else {
                        let e = draw_pop(&mut rng, &cum[l]);
                        (!chosen.contains(&e)).then_some(e)
                    };
                    if cand.is_some() {
                        got = cand;
                        break;
                    }
                }
                let e = match got {
                    Some(e) => e,
                    None => loop {
                        let e = rng.random_range(0..n as u16);
                        if !chosen.contains(&e) {
                            break e;
                        }
                    },
                };
                chosen.push(e);
            }
            // Router weights: normalised exponentials (norm_topk_prob), in pick order.
            let raw: Vec<f32> = (0..k)
                .map(|_| -(rng.random::<f32>().max(1e-9)).ln())
                .collect();
            let sum: f32 = raw.iter().sum();
            ls.push(TraceLayer {
                e: chosen.clone(),
                n: Vec::new(),
                w: raw.iter().map(|x| x / sum).collect(),
                pred: Vec::new(),
            });
            let hl = &mut hist[l];
            hl.push(chosen);
            if hl.len() > window {
                hl.remove(0);
            }
        }
        // Next-layer predictions: each true expert with probability `pred_recall`
        // (confident), padded with random distractors (less confident).
        for l in 0..layers.saturating_sub(1) {
            let truth = ls[l + 1].e.clone();
            let mut pred: Vec<(u16, f32)> = Vec::with_capacity(k);
            for &e in &truth {
                if rng.random_bool(params.pred_recall.clamp(0.0, 1.0)) {
                    pred.push((e, rng.random_range(0.5..0.95)));
                }
            }
            while pred.len() < k {
                let e = rng.random_range(0..n as u16);
                if !pred.iter().any(|p| p.0 == e) {
                    pred.push((e, rng.random_range(0.1..0.6)));
                }
            }
            ls[l].pred = pred;
        }
        out.push(TraceStep {
            step: step as u64,
            tokens: 1,
            layers: ls,
        });
    }
    let source = format!("synthetic {params:?} seed={seed}");
    Trace {
        header: TraceHeader::new(shape.clone(), source),
        steps: out,
    }
}

/// Prefill chunks: `chunks` steps of `tokens` tokens; in each layer every token picks
/// `top_k` distinct experts from the layer's popularity (as [`generate`]'s fresh draws), and
/// the step records each routed expert once with its token count and summed weight.
pub fn generate_prefill(
    shape: &ModelShape,
    params: &SynthParams,
    chunks: usize,
    tokens: u32,
    seed: u64,
) -> Trace {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shape.n_experts as usize;
    let k = (shape.top_k as usize).min(n);
    let cum: Vec<Vec<(f64, u16)>> = (0..shape.n_layers)
        .map(|_| {
            let mut perm: Vec<u16> = (0..n as u16).collect();
            for i in (1..n).rev() {
                perm.swap(i, rng.random_range(0..=i));
            }
            let mut acc = 0.0;
            perm.iter()
                .enumerate()
                .map(|(r, &e)| {
                    acc += (-(r as f64) / params.pop_tau).exp();
                    (acc, e)
                })
                .collect()
        })
        .collect();
    let mut steps = Vec::with_capacity(chunks);
    for step in 0..chunks {
        let mut layers = Vec::with_capacity(cum.len());
        for c in &cum {
            let total = c.last().map_or(1.0, |x| x.0);
            let mut count = vec![0u32; n];
            let mut weight = vec![0f32; n];
            let mut picked: Vec<u16> = Vec::with_capacity(k);
            for _ in 0..tokens {
                picked.clear();
                while picked.len() < k {
                    let u = rng.random::<f64>() * total;
                    let e = c[c.partition_point(|x| x.0 < u).min(c.len() - 1)].1;
                    if !picked.contains(&e) {
                        picked.push(e);
                    }
                }
                for &e in &picked {
                    count[e as usize] += 1;
                    weight[e as usize] += 1.0 / k as f32;
                }
            }
            let mut l = TraceLayer::default();
            for e in 0..n {
                if count[e] > 0 {
                    l.e.push(e as u16);
                    l.n.push(count[e]);
                    l.w.push(weight[e]);
                }
            }
            layers.push(l);
        }
        steps.push(TraceStep {
            step: step as u64,
            tokens,
            layers,
        });
    }
    let source = format!("synthetic prefill {chunks}x{tokens} tokens {params:?} seed={seed}");
    Trace {
        header: TraceHeader::new(shape.clone(), source),
        steps,
    }
}

/// Locality statistics of a trace, averaged over layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceStats {
    /// Share of a layer's experts that were also selected at the previous step.
    pub repeat_next: f64,
    /// Share selected at least once in the previous 8 steps.
    pub within_8: f64,
    /// Per-layer LRU hit rate at (fraction of experts resident, hit rate).
    pub lru: Vec<(f64, f64)>,
    /// Largest single expert's share of a layer's routing.
    pub top_expert_share: f64,
    /// Experts needed to cover 90% of a layer's routing.
    pub experts_for_90: f64,
}

/// The brief's published numbers, in [`TraceStats`] form.
pub fn published_qwen3_stats() -> TraceStats {
    TraceStats {
        repeat_next: 0.45,
        within_8: 0.80,
        lru: vec![(0.06, 0.37), (0.19, 0.74), (0.38, 0.89), (0.63, 0.96)],
        top_expert_share: 0.06,
        experts_for_90: 60.0,
    }
}

/// Per-layer LRU of `slots` experts, accesses of a step in listed order, all admitted.
fn lru_layer_hits(steps: &[Vec<u16>], n: usize, slots: usize) -> (u64, u64) {
    let mut last = vec![u64::MAX; n];
    let mut resident: Vec<u16> = Vec::with_capacity(slots + 1);
    let (mut hits, mut total) = (0, 0);
    let mut t = 0u64;
    for s in steps {
        for &e in s {
            t += 1;
            total += 1;
            if let Some(p) = resident.iter().position(|&r| r == e) {
                hits += 1;
                resident.remove(p);
            } else if resident.len() >= slots && !resident.is_empty() {
                resident.remove(0);
            }
            if slots > 0 {
                resident.push(e);
            }
            last[e as usize] = t;
        }
    }
    (hits, total)
}

/// Computes [`TraceStats`] at the given resident fractions.
pub fn trace_stats(trace: &Trace, fractions: &[f64]) -> TraceStats {
    let shape = &trace.header.shape;
    let n = shape.n_experts as usize;
    let layers = shape.n_layers as usize;
    let (mut rep, mut w8, mut tot) = (0u64, 0u64, 0u64);
    let mut lru = vec![(0u64, 0u64); fractions.len()];
    let (mut top, mut cover) = (0.0, 0.0);
    for l in 0..layers {
        let seq: Vec<Vec<u16>> = trace.steps.iter().map(|s| s.layers[l].e.clone()).collect();
        let mut counts = vec![0u64; n];
        for (t, s) in seq.iter().enumerate() {
            for &e in s {
                counts[e as usize] += 1;
                if t >= 1 {
                    tot += 1;
                    if seq[t - 1].contains(&e) {
                        rep += 1;
                    }
                    if seq[t.saturating_sub(8)..t].iter().any(|p| p.contains(&e)) {
                        w8 += 1;
                    }
                }
            }
        }
        for (i, &f) in fractions.iter().enumerate() {
            let slots = (f * n as f64).round() as usize;
            let (h, t) = lru_layer_hits(&seq, n, slots);
            lru[i].0 += h;
            lru[i].1 += t;
        }
        let all: u64 = counts.iter().sum();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        top += counts[0] as f64 / all.max(1) as f64;
        let mut acc = 0;
        let mut need = n;
        for (i, c) in counts.iter().enumerate() {
            acc += c;
            if acc as f64 >= 0.9 * all as f64 {
                need = i + 1;
                break;
            }
        }
        cover += need as f64;
    }
    let lf = layers.max(1) as f64;
    TraceStats {
        repeat_next: rep as f64 / tot.max(1) as f64,
        within_8: w8 as f64 / tot.max(1) as f64,
        lru: fractions
            .iter()
            .zip(lru)
            .map(|(&f, (h, t))| (f, h as f64 / t.max(1) as f64))
            .collect(),
        top_expert_share: top / lf,
        experts_for_90: cover / lf,
    }
}

/// Squared distance between two stat sets (rates in points; coverage in experts / 10;
/// a top-expert share above the published ceiling counts four times).
pub fn stats_distance(a: &TraceStats, b: &TraceStats) -> f64 {
    let p = |x: f64, y: f64| ((x - y) * 100.0).powi(2);
    let mut d = p(a.repeat_next, b.repeat_next) + p(a.within_8, b.within_8);
    for ((_, x), (_, y)) in a.lru.iter().zip(&b.lru) {
        d += p(*x, *y);
    }
    d += ((a.experts_for_90 - b.experts_for_90) / 10.0).powi(2) * 100.0;
    if a.top_expert_share > b.top_expert_share {
        d += 4.0 * p(a.top_expert_share, b.top_expert_share);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points (percent) the generated statistics may differ from the published ones.
    /// LRU at 6% is the exception, see `LRU6_TOL`.
    const STAT_TOL: f64 = 5.0;
    /// LRU with 8 slots depends on the order of a step's accesses, which the publication
    /// does not state; listed order lands ~2-4 points below its 37%.
    const LRU6_TOL: f64 = 6.0;

    #[test]
    fn calibrated_trace_reproduces_published_locality() {
        let mut shape = ModelShape::preset("qwen3-30b-a3b:q4_k_m").unwrap();
        shape.n_layers = 6;
        let t = generate(&shape, &SynthParams::qwen3_calibrated(), 1500, 21);
        let s = trace_stats(&t, &[0.06, 0.19, 0.38, 0.63]);
        let p = published_qwen3_stats();
        let pts = |x: f64| x * 100.0;
        assert!(
            (pts(s.repeat_next) - pts(p.repeat_next)).abs() < STAT_TOL,
            "{s:?}"
        );
        assert!(
            (pts(s.within_8) - pts(p.within_8)).abs() < STAT_TOL,
            "{s:?}"
        );
        for (i, ((_, got), (_, want))) in s.lru.iter().zip(&p.lru).enumerate() {
            let tol = if i == 0 { LRU6_TOL } else { STAT_TOL };
            assert!((pts(*got) - pts(*want)).abs() < tol, "LRU point {i}: {s:?}");
        }
        assert!(s.top_expert_share <= p.top_expert_share, "{s:?}");
        assert!((s.experts_for_90 - p.experts_for_90).abs() < 8.0, "{s:?}");
    }

    #[test]
    fn prefill_chunks_count_every_token() {
        let shape = ModelShape::tiny(2, 16, 4);
        let t = generate_prefill(&shape, &SynthParams::qwen3_calibrated(), 2, 100, 1);
        for s in &t.steps {
            assert_eq!(s.tokens, 100);
            for l in &s.layers {
                assert_eq!(l.n.iter().sum::<u32>(), 400);
                assert!((l.w.iter().sum::<f32>() - 100.0).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn uniform_trace_has_no_locality() {
        let mut shape = ModelShape::preset("qwen3-30b-a3b:q4_k_m").unwrap();
        shape.n_layers = 4;
        let t = generate(&shape, &SynthParams::uniform(), 600, 3);
        let s = trace_stats(&t, &[0.19]);
        // Uniform: P(repeat) = 8/128 = 6.25%. LRU of 24 slots: the j-th access of a step
        // finds 24 − (j − 1) other experts cached, 20.5 on average → 20.5/128 = 16%.
        assert!((s.repeat_next - 0.0625).abs() < 0.01, "{s:?}");
        assert!((s.lru[0].1 - 20.5 / 128.0).abs() < 0.015, "{s:?}");
        assert!(s.experts_for_90 > 100.0);
    }
}
