//! Belady's offline optimum for the expert cache: evict (or bypass) whatever is used
//! farthest in the future. Loads happen only at use (no prefetch), a layer's experts are
//! used together (none of them can be evicted for another), and a miss may bypass the
//! cache: farthest-in-future over the residents plus the incoming expert is then optimal,
//! so this hit rate bounds every policy that loads only what it uses.

use std::collections::BTreeSet;

use crate::trace::Trace;

/// Hits and accesses of Belady's policy with `n_slots` slots over `trace` (counting
/// accesses from step `from_step` on, as the simulator does after its warm-up).
pub fn belady_hits(trace: &Trace, n_slots: usize, from_step: usize) -> (u64, u64) {
    let shape = &trace.header.shape;
    let n = shape.n_experts as usize;
    let layers = shape.n_layers as usize;
    // Access list in time order: (tick, flat).
    let mut acc: Vec<(u64, u32)> = Vec::new();
    for (s, step) in trace.steps.iter().enumerate() {
        for (l, layer) in step.layers.iter().enumerate() {
            let tick = (s * layers + l) as u64;
            for &e in &layer.e {
                acc.push((tick, (l * n + e as usize) as u32));
            }
        }
    }
    let mut next_use = vec![u64::MAX; acc.len()];
    let mut seen = vec![u64::MAX; shape.total_experts()];
    for i in (0..acc.len()).rev() {
        let (t, f) = acc[i];
        next_use[i] = seen[f as usize];
        seen[f as usize] = t;
    }
    let mut resident_nu = vec![u64::MAX; shape.total_experts()];
    let mut is_res = vec![false; shape.total_experts()];
    let mut set: BTreeSet<(u64, u32)> = BTreeSet::new();
    let mut count = 0usize;
    let first_counted = (from_step * layers) as u64;
    let (mut hits, mut total) = (0u64, 0u64);
    let mut i = 0;
    let mut batch: Vec<u32> = Vec::new();
    while i < acc.len() {
        let tick = acc[i].0;
        let mut j = i;
        while j < acc.len() && acc[j].0 == tick {
            j += 1;
        }
        batch.clear();
        batch.extend(acc[i..j].iter().map(|a| a.1));
        // Hits first: they are in VRAM already and get their next use updated.
        for k in i..j {
            let f = acc[k].1 as usize;
            if tick >= first_counted {
                total += 1;
            }
            if is_res[f] {
                if tick >= first_counted {
                    hits += 1;
                }
                set.remove(&(resident_nu[f], f as u32));
                resident_nu[f] = next_use[k];
                set.insert((resident_nu[f], f as u32));
            }
        }
        for k in i..j {
            let f = acc[k].1 as usize;
            if is_res[f] || n_slots == 0 {
                continue;
            }
            let nu = next_use[k];
            if count < n_slots {
                if nu != u64::MAX {
                    is_res[f] = true;
                    resident_nu[f] = nu;
                    set.insert((nu, f as u32));
                    count += 1;
                }
                continue;
            }
            let victim = set.iter().rev().find(|(_, v)| !batch.contains(v)).copied();
            if let Some((vnu, v)) = victim {
                if vnu > nu {
                    set.remove(&(vnu, v));
                    is_res[v as usize] = false;
                    is_res[f] = true;
                    resident_nu[f] = nu;
                    set.insert((nu, f as u32));
                }
            }
        }
        i = j;
    }
    (hits, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::ModelShape;
    use crate::trace::{TraceHeader, TraceLayer, TraceStep};

    fn trace(seq: &[&[u16]]) -> Trace {
        let shape = ModelShape::tiny(1, 8, 2);
        Trace {
            header: TraceHeader::new(shape, "test"),
            steps: seq
                .iter()
                .enumerate()
                .map(|(s, e)| TraceStep {
                    step: s as u64,
                    tokens: 1,
                    layers: vec![TraceLayer {
                        e: e.to_vec(),
                        w: vec![0.5; e.len()],
                        ..Default::default()
                    }],
                })
                .collect(),
        }
    }

    #[test]
    fn hand_computed_sequence() {
        // 2 slots. [0,1] load both; [0,2]: 0 hit, 2 (next use step 3) vs 1 (step 4,
        // farther) → evict 1; [3,0]: 0 hit, 3 never again → bypass; [2,1]: 2 hit, 1 miss.
        let t = trace(&[&[0, 1], &[0, 2], &[3, 0], &[2, 1]]);
        assert_eq!(belady_hits(&t, 2, 0), (3, 8));
        assert_eq!(belady_hits(&t, 0, 0), (0, 8));
        // Everything fits: only cold misses (0,1,2,3 once each).
        assert_eq!(belady_hits(&t, 8, 0), (4, 8));
    }
}
