//! The absolute values of a sliding window kept sorted, so that a quantile costs one
//! index: the engine publishes the prediction error's median every step, and selecting
//! it afresh in a 4096-sample window cost more than the rest of the step's bookkeeping.
//! Values entering and leaving are queued and merged in one pass when a quantile is
//! asked for (a copy of the window plus a binary search per change).

use std::cmp::Ordering;

/// Sorted |x| of a window whose entries the owner adds and removes.
#[derive(Debug, Clone, Default)]
pub struct SortedAbs {
    sorted: Vec<f64>,
    added: Vec<f64>,
    removed: Vec<f64>,
    scratch: Vec<f64>,
    /// Too many changes queued (or an inconsistency): rebuild from the window.
    stale: bool,
}

/// Queued changes beyond which a rebuild (one sort) is cheaper than keeping them.
const MAX_QUEUED: usize = 1024;

impl SortedAbs {
    /// `x` entered the window.
    pub fn add(&mut self, x: f64) {
        self.queue(x, true);
    }

    /// `x` left the window (it was added before).
    pub fn remove(&mut self, x: f64) {
        self.queue(x, false);
    }

    fn queue(&mut self, x: f64, add: bool) {
        if self.stale {
            return;
        }
        if self.added.len() + self.removed.len() >= MAX_QUEUED {
            self.stale = true;
            self.added.clear();
            self.removed.clear();
            return;
        }
        let v = if add {
            &mut self.added
        } else {
            &mut self.removed
        };
        v.push(x.abs());
    }

    /// The `q`-quantile of |x| over `window` (its current entries, which the queued
    /// changes must describe): the entry at rank `round((len − 1) q)` in total order.
    pub fn quantile(&mut self, window: &[f64], q: f64) -> Option<f64> {
        self.sync(window);
        if self.sorted.is_empty() {
            return None;
        }
        let i = ((self.sorted.len() - 1) as f64 * q).round() as usize;
        self.sorted.get(i).copied()
    }

    /// Applies the queued changes (or rebuilds).
    fn sync(&mut self, window: &[f64]) {
        if !self.stale && !self.merge() {
            self.stale = true;
        }
        if self.stale || self.sorted.len() != window.len() {
            self.sorted.clear();
            self.sorted.extend(window.iter().map(|x| x.abs()));
            self.sorted.sort_unstable_by(f64::total_cmp);
            self.added.clear();
            self.removed.clear();
            self.stale = false;
        }
    }

    /// Merges the queued changes into `sorted`; `false` if a removed value is missing.
    fn merge(&mut self) -> bool {
        if self.added.is_empty() && self.removed.is_empty() {
            return true;
        }
        self.added.sort_unstable_by(f64::total_cmp);
        self.removed.sort_unstable_by(f64::total_cmp);
        let (sorted, out) = (&self.sorted, &mut self.scratch);
        out.clear();
        let (mut pos, mut a, mut r) = (0, 0, 0);
        let mut found = true;
        // Changes in value order; each copies the untouched run before it.
        while a < self.added.len() || r < self.removed.len() {
            let removal = r < self.removed.len()
                && (a == self.added.len()
                    || self.removed[r].total_cmp(&self.added[a]) != Ordering::Greater);
            if removal {
                let v = self.removed[r];
                r += 1;
                let run = sorted[pos..].partition_point(|x| x.total_cmp(&v) == Ordering::Less);
                out.extend_from_slice(&sorted[pos..pos + run]);
                pos += run;
                if sorted
                    .get(pos)
                    .is_some_and(|x| x.total_cmp(&v) == Ordering::Equal)
                {
                    pos += 1;
                } else {
                    found = false;
                }
            } else {
                let v = self.added[a];
                a += 1;
                let run = sorted[pos..].partition_point(|x| x.total_cmp(&v) != Ordering::Greater);
                out.extend_from_slice(&sorted[pos..pos + run]);
                pos += run;
                out.push(v);
            }
        }
        out.extend_from_slice(&sorted[pos..]);
        std::mem::swap(&mut self.sorted, &mut self.scratch);
        self.added.clear();
        self.removed.clear();
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quantile by sorting a copy (the reference).
    fn sorted_quantile(window: &[f64], q: f64) -> Option<f64> {
        let mut v: Vec<f64> = window.iter().map(|x| x.abs()).collect();
        v.sort_by(f64::total_cmp);
        let i = ((v.len().checked_sub(1)?) as f64 * q).round() as usize;
        v.get(i).copied()
    }

    #[test]
    fn merged_window_equals_a_fresh_sort() {
        const WINDOW: usize = 300;
        let (mut ring, mut next) = (Vec::new(), 0);
        let mut s = SortedAbs::default();
        let mut x = 0.41f64;
        // Irregular gaps between queries: small batches, batches past MAX_QUEUED (a
        // rebuild) and past the window (values added and removed unseen).
        let mut query_at = 1;
        for n in 0..6000 {
            x = (x * 8.31 + 0.17).fract();
            // Repeats, signed zeros and signs: ties must merge as a multiset.
            let v = match n % 7 {
                0 => 0.25,
                1 => -0.25,
                2 => -0.0,
                3 => 0.0,
                _ => x - 0.5,
            };
            if ring.len() < WINDOW {
                ring.push(v);
            } else {
                s.remove(ring[next]);
                ring[next] = v;
            }
            s.add(v);
            next = (next + 1) % WINDOW;
            if n == query_at {
                for q in [0.5, 0.9, 0.0, 1.0] {
                    let got = s.quantile(&ring, q).map(f64::to_bits);
                    assert_eq!(got, sorted_quantile(&ring, q).map(f64::to_bits), "n={n}");
                }
                query_at += [1, 7, 40, 1500, 3][n % 5];
            }
        }
        assert_eq!(SortedAbs::default().quantile(&[], 0.5), None);
    }
}
