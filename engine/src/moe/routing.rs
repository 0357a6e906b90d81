//! Router: softmax over experts → top-k → optional renormalisation, then grouping of
//! the selected (token, expert) pairs into per-expert work items.

use super::WorkItem;
use crate::model::ops::softmax;

/// The top-k selection of every token row.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    /// Experts per row.
    pub top_k: usize,
    /// `[n_rows * top_k]` expert ids, best first.
    pub ids: Vec<u16>,
    /// `[n_rows * top_k]` weights.
    pub weights: Vec<f32>,
}

impl Routing {
    /// Token rows routed.
    pub fn n_rows(&self) -> usize {
        self.ids.len() / self.top_k.max(1)
    }

    /// Groups the selections by expert, in ascending expert order.
    pub fn work_items(&self, n_experts: usize) -> Vec<WorkItem> {
        let mut items: Vec<WorkItem> = (0..n_experts)
            .map(|e| WorkItem {
                expert: e as u16,
                rows: Vec::new(),
                weights: Vec::new(),
            })
            .collect();
        for (slot, (&e, &w)) in self.ids.iter().zip(&self.weights).enumerate() {
            let item = &mut items[e as usize];
            item.rows.push((slot / self.top_k) as u32);
            item.weights.push(w);
        }
        items.retain(|it| !it.rows.is_empty());
        items
    }
}

/// Routes every row of `logits` (`[n_rows, n_experts]`).
pub fn route(logits: &[f32], n_experts: usize, top_k: usize, renormalise: bool) -> Routing {
    let n_rows = logits.len() / n_experts;
    let mut ids = Vec::with_capacity(n_rows * top_k);
    let mut weights = Vec::with_capacity(n_rows * top_k);
    let mut probs = vec![0f32; n_experts];
    let mut order: Vec<usize> = Vec::with_capacity(n_experts);
    for row in logits.chunks_exact(n_experts) {
        probs.copy_from_slice(row);
        softmax(&mut probs);
        order.clear();
        order.extend(0..n_experts);
        // Best first, ties to the lower index (like torch.topk on CPU in practice). A strict
        // total order, so selecting the top k and sorting only them gives what sorting all
        // would: a full sort per row made routing 4 ms of every 512-row prefill layer.
        let better = |a: &usize, b: &usize| probs[*b].total_cmp(&probs[*a]).then(a.cmp(b));
        let k = top_k.min(n_experts);
        if k > 0 && k < n_experts {
            order.select_nth_unstable_by(k - 1, better);
        }
        order[..k].sort_by(better);
        let chosen = &order[..k];
        let sum: f32 = chosen.iter().map(|&e| probs[e]).sum();
        for &e in chosen {
            ids.push(e as u16);
            weights.push(if renormalise {
                probs[e] / sum
            } else {
                probs[e]
            });
        }
    }
    Routing {
        top_k,
        ids,
        weights,
    }
}

/// A next-layer prediction: the next layer's router applied to this layer's MoE input
/// (HybriMoE's observation: consecutive layers' hidden states are close). For every
/// expert that some row's top-k picks, the share of rows that pick it.
pub fn predict_next(logits: &[f32], n_experts: usize, top_k: usize) -> Vec<(u16, f32)> {
    let r = route(logits, n_experts, top_k, false);
    let rows = r.n_rows().max(1) as f32;
    let mut counts = vec![0u32; n_experts];
    for &e in &r.ids {
        counts[e as usize] += 1;
    }
    counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(e, &c)| (e as u16, c as f32 / rows))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_top_k_and_renormalises() {
        let logits = [0.0, 2.0, 1.0, -1.0];
        let r = route(&logits, 4, 2, true);
        assert_eq!(r.ids, vec![1, 2]);
        assert!((r.weights.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let e = std::f32::consts::E;
        assert!((r.weights[0] - e / (e + 1.0)).abs() < 1e-6);
        let raw = route(&logits, 4, 2, false);
        assert!(raw.weights.iter().sum::<f32>() < 1.0);
    }

    /// The top-k selection equals a full stable sort's first k, ties included.
    #[test]
    fn selection_matches_a_full_sort() {
        let mut seed = 7u64;
        for case in 0..200 {
            let n = 1 + case % 130;
            let logits: Vec<f32> = (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // Few distinct values: many ties.
                    ((seed >> 40) % 5) as f32 * 0.5
                })
                .collect();
            for k in [1, 2, 8].into_iter().filter(|&k| k <= n) {
                let r = route(&logits, n, k, true);
                let mut probs = logits.clone();
                softmax(&mut probs);
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
                let want: Vec<u16> = order[..k].iter().map(|&e| e as u16).collect();
                assert_eq!(r.ids, want, "n {n} k {k}");
            }
        }
    }

    #[test]
    fn prediction_gives_selection_shares() {
        // Two rows: expert 0 chosen by both, experts 1 and 2 by one each (top-2).
        let logits = [3.0, 1.0, 0.0, 3.0, 0.0, 1.0];
        let p = predict_next(&logits, 3, 2);
        assert_eq!(p, vec![(0, 1.0), (1, 0.5), (2, 0.5)]);
    }

    #[test]
    fn work_items_cover_every_selection_once() {
        let logits = [3.0, 1.0, 0.0, 0.0, 0.0, 3.0, 1.0, 0.0];
        let r = route(&logits, 4, 2, true);
        let items = r.work_items(4);
        let total: usize = items.iter().map(|i| i.rows.len()).sum();
        assert_eq!(total, 4);
        assert_eq!(items[0].expert, 0);
        assert_eq!(
            items.iter().find(|i| i.expert == 1).map(|i| i.rows.clone()),
            Some(vec![0, 1])
        );
    }
}
