//! The arena's slot table: which expert each VRAM slot holds, kept in step with the
//! scheduler's `ExpertCache` when the plan names slots, and self-managed (least recently
//! used) when it does not. Pure logic: the GPU side only executes the actions it returns.
//!
//! Only the first [`SlotTable::limit`] slots are used: the scheduler's cache may be
//! smaller than the arena (a budget changed after load, the benchmarks' sweep), and a
//! slot outside it would be VRAM the plan does not count, holding experts the routed pass
//! would run.
//!
//! A batch may name one slot for several of its misses (the scheduler streams a prefill
//! layer's uncached experts through a few staging slots round-robin): [`stream_groups`]
//! cuts such a batch into launch groups so that every reuse copies only after the group
//! that read the slot before it has computed.

use crate::error::{CudaError, Result};
use std::collections::HashMap;

/// An expert: (layer, expert index), as the scheduler's `ExpertKey`.
pub type Key = (u16, u16);

/// What to do for one item of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotAction {
    /// The slot the item computes from.
    pub slot: u32,
    /// The weights must be copied into the slot first.
    pub copy: bool,
    /// The expert the slot held before (its residency ends).
    pub evicted: Option<Key>,
}

/// Slot ownership and recency.
#[derive(Debug, Clone)]
pub struct SlotTable {
    owner: Vec<Option<Key>>,
    last_use: Vec<u64>,
    slot_of: HashMap<Key, u32>,
    tick: u64,
    /// Per slot: taken by the batch being planned. All false between calls: a batch
    /// clears the entries it set (zeroing a 24k-slot map per decode layer cost ~2 us).
    used: Vec<bool>,
    /// Slots in use: `0..limit`.
    limit: usize,
}

impl SlotTable {
    /// A table of `n_slots` empty slots.
    pub fn new(n_slots: usize) -> Self {
        Self {
            owner: vec![None; n_slots],
            last_use: vec![0; n_slots],
            slot_of: HashMap::new(),
            tick: 0,
            used: vec![false; n_slots],
            limit: n_slots,
        }
    }

    /// Slots.
    pub fn n_slots(&self) -> usize {
        self.owner.len()
    }

    /// Slots in use (`0..limit`): hints outside are ignored, victims come from inside.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Empties the table and uses only slots `0..limit` from now on (clamped to the
    /// arena; `None`: all of it).
    pub fn reset(&mut self, limit: Option<usize>) {
        self.clear();
        self.limit = limit.map_or(self.owner.len(), |l| l.min(self.owner.len()));
    }

    /// The slot holding `key`.
    pub fn slot_of(&self, key: Key) -> Option<u32> {
        self.slot_of.get(&key).copied()
    }

    /// The expert in `slot`.
    pub fn owner(&self, slot: u32) -> Option<Key> {
        self.owner.get(slot as usize).copied().flatten()
    }

    /// Experts resident.
    pub fn resident(&self) -> usize {
        self.slot_of.len()
    }

    fn check(&self, slot: u32) -> Result<()> {
        if (slot as usize) < self.owner.len() {
            Ok(())
        } else {
            Err(CudaError::BadSlot {
                slot,
                n_slots: self.owner.len(),
            })
        }
    }

    /// Records that `key` now lives in `slot` (a copy was issued). Returns the evicted
    /// previous owner. A key that lived elsewhere leaves its old slot empty.
    pub fn assign(&mut self, key: Key, slot: u32) -> Result<Option<Key>> {
        self.check(slot)?;
        if let Some(old) = self.slot_of.remove(&key) {
            self.owner[old as usize] = None;
        }
        let evicted = self.owner[slot as usize].take();
        if let Some(e) = evicted {
            self.slot_of.remove(&e);
        }
        self.owner[slot as usize] = Some(key);
        self.slot_of.insert(key, slot);
        self.tick += 1;
        self.last_use[slot as usize] = self.tick;
        Ok(evicted)
    }

    /// Marks `slot` used now (recency for self-managed eviction).
    pub fn touch(&mut self, slot: u32) {
        self.tick += 1;
        if let Some(t) = self.last_use.get_mut(slot as usize) {
            *t = self.tick;
        }
    }

    /// Drops every residency (e.g. after a device error: slot contents are unknown).
    pub fn clear(&mut self) {
        self.owner.iter_mut().for_each(|o| *o = None);
        self.slot_of.clear();
    }

    /// Slots for one batch. `items[i] = (key, hint)`: the scheduler's slot for the item,
    /// if it named one. Resident experts are hits (in their current slot, even if the hint
    /// differs: the weights are already there); a miss follows its hint (inside the limit),
    /// even one an earlier item of the batch uses: the copy then waits for that item's
    /// launch group ([`stream_groups`]). A miss without a usable hint takes the least
    /// recently used slot inside the limit that the batch does not use; errors when none
    /// is left.
    pub fn plan_batch(&mut self, items: &[(Key, Option<u32>)]) -> Result<Vec<SlotAction>> {
        let mut used = std::mem::take(&mut self.used);
        used.resize(self.owner.len(), false);
        let mut taken = Vec::with_capacity(items.len());
        let r = self.plan_into(items, &mut used, &mut taken);
        for s in taken {
            used[s as usize] = false;
        }
        self.used = used;
        r
    }

    /// [`SlotTable::plan_batch`] with the batch's slots marked in `used` and listed in
    /// `taken` (which the caller clears).
    fn plan_into(
        &mut self,
        items: &[(Key, Option<u32>)],
        used: &mut [bool],
        taken: &mut Vec<u32>,
    ) -> Result<Vec<SlotAction>> {
        let mut actions: Vec<Option<SlotAction>> = vec![None; items.len()];
        // Hits first, so a miss never takes the slot of a hit later in the batch.
        for (i, &(key, _)) in items.iter().enumerate() {
            if let Some(s) = self.slot_of(key) {
                if !used[s as usize] {
                    used[s as usize] = true;
                    taken.push(s);
                    actions[i] = Some(SlotAction {
                        slot: s,
                        copy: false,
                        evicted: None,
                    });
                    self.touch(s);
                }
            }
        }
        for (i, &(key, hint)) in items.iter().enumerate() {
            if actions[i].is_some() {
                continue;
            }
            let slot = match hint.filter(|&h| (h as usize) < self.limit) {
                Some(h) => h,
                None => self.victim(used).ok_or_else(|| {
                    CudaError::InvalidBatch(format!(
                        "no free slot for the batch ({} items, {} slots in use)",
                        items.len(),
                        self.limit
                    ))
                })?,
            };
            used[slot as usize] = true;
            taken.push(slot);
            let evicted = self.assign(key, slot)?;
            actions[i] = Some(SlotAction {
                slot,
                copy: true,
                evicted,
            });
        }
        actions
            .into_iter()
            .map(|a| a.ok_or_else(|| CudaError::InvalidBatch("unplanned item".into())))
            .collect()
    }

    /// Least recently used slot inside the limit (empty slots first) not in `used`.
    fn victim(&self, used: &[bool]) -> Option<u32> {
        (0..self.limit)
            .filter(|&s| !used[s])
            .min_by_key(|&s| (self.owner[s].is_some(), self.last_use[s]))
            .map(|s| s as u32)
    }
}

/// Fetched items a launch group holds at most: compute starts once a group's copies have
/// landed instead of after the whole layer's (a 1024-row prefill layer streams ~70
/// experts at 8 GiB: ~4 ms of copies), while each launch keeps enough experts to fill
/// the GPU.
pub const STREAM_GROUP_MAX: usize = 16;

/// How a batch's items are launched: consecutive groups of the submission order (hits
/// first, then fetches), and for each item the group whose kernels must finish before its
/// copy may start (the group that read its slot last in this batch).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamPlan {
    /// `[lo, hi)` ranges of the submission order, in launch order.
    pub groups: Vec<(usize, usize)>,
    /// Per item: the group to wait for before copying into its slot.
    pub wait: Vec<Option<usize>>,
}

impl StreamPlan {
    /// Whether any copy waits for a group of the same batch.
    pub fn reuses_slots(&self) -> bool {
        self.wait.iter().any(Option::is_some)
    }
}

/// Cuts a batch (`slots` in submission order; the first `n_hits` are hits, one group)
/// into launch groups. When misses reuse slots, a group holds at most half the shortest
/// reuse distance: the copy into a reused slot then waits for a group two or more groups
/// back, and the copy stream keeps busy while the group before it computes (double
/// buffering). No group holds a slot twice.
pub fn stream_groups(slots: &[u32], n_hits: usize) -> StreamPlan {
    let n_hits = n_hits.min(slots.len());
    // Distinct slots (every decode layer): no map needed.
    let mut sorted = slots.to_vec();
    sorted.sort_unstable();
    let reuses = sorted.windows(2).any(|w| w[0] == w[1]);
    let mut min_gap = usize::MAX;
    if reuses {
        let mut last_at: std::collections::HashMap<u32, usize> = Default::default();
        for (p, &s) in slots.iter().enumerate() {
            if let Some(q) = last_at.insert(s, p) {
                min_gap = min_gap.min(p - q);
            }
        }
    }
    let size = if min_gap == usize::MAX {
        STREAM_GROUP_MAX
    } else {
        (min_gap / 2).clamp(1, STREAM_GROUP_MAX)
    };
    let mut groups = Vec::new();
    if n_hits > 0 {
        groups.push((0, n_hits));
    }
    let mut lo = n_hits;
    while lo < slots.len() {
        let hi = (lo + size).min(slots.len());
        groups.push((lo, hi));
        lo = hi;
    }
    let mut wait = vec![None; slots.len()];
    if !reuses {
        return StreamPlan { groups, wait };
    }
    let mut last_group: std::collections::HashMap<u32, usize> = Default::default();
    for (g, &(lo, hi)) in groups.iter().enumerate() {
        for p in lo..hi {
            if let Some(prev) = last_group.insert(slots[p], g) {
                debug_assert!(prev < g, "a group holds slot {} twice", slots[p]);
                wait[p] = Some(prev);
            }
        }
    }
    StreamPlan { groups, wait }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_leaves_no_slot_marked_for_the_next() {
        let mut t = SlotTable::new(4);
        t.plan_batch(&[((0, 1), Some(0)), ((0, 2), Some(1))])
            .unwrap();
        // The next layer's experts hinted at the same slots get them: nothing of the first
        // batch is still marked taken.
        let b = t
            .plan_batch(&[((1, 1), Some(0)), ((1, 2), Some(1))])
            .unwrap();
        assert_eq!((b[0].slot, b[1].slot), (0, 1));
        assert!(b[0].copy && b[1].copy);
        // Two misses of a batch may name one slot (streaming): the second copy waits
        // for the first item's group.
        let c = t
            .plan_batch(&[((2, 1), Some(3)), ((2, 2), Some(3))])
            .unwrap();
        assert_eq!((c[0].slot, c[1].slot), (3, 3));
        assert_eq!(c[1].evicted, Some((2, 1)));
        assert_eq!(t.owner(3), Some((2, 2)));
    }

    #[test]
    fn hits_stay_misses_follow_the_hint_and_evict() {
        let mut t = SlotTable::new(4);
        let a = t
            .plan_batch(&[((0, 1), Some(2)), ((0, 2), Some(3))])
            .unwrap();
        assert_eq!(
            a[0],
            SlotAction {
                slot: 2,
                copy: true,
                evicted: None
            }
        );
        assert_eq!(
            a[1],
            SlotAction {
                slot: 3,
                copy: true,
                evicted: None
            }
        );
        // (0,1) is resident: a hit in slot 2 whatever the hint; (0,3) replaces (0,2).
        let b = t
            .plan_batch(&[((0, 1), Some(0)), ((0, 3), Some(3))])
            .unwrap();
        assert_eq!(
            b[0],
            SlotAction {
                slot: 2,
                copy: false,
                evicted: None
            }
        );
        assert_eq!(
            b[1],
            SlotAction {
                slot: 3,
                copy: true,
                evicted: Some((0, 2))
            }
        );
        assert_eq!(t.slot_of((0, 2)), None);
        assert_eq!(t.owner(3), Some((0, 3)));
    }

    #[test]
    fn unhinted_misses_never_take_a_slot_of_the_batch() {
        let mut t = SlotTable::new(3);
        t.assign((1, 0), 0).unwrap();
        // The hit (1,0) holds slot 0; the unhinted misses get the other two.
        let a = t
            .plan_batch(&[((1, 5), None), ((1, 0), None), ((1, 6), None)])
            .unwrap();
        assert_eq!(
            a[1],
            SlotAction {
                slot: 0,
                copy: false,
                evicted: None
            }
        );
        let mut slots: Vec<u32> = a.iter().map(|x| x.slot).collect();
        slots.sort();
        slots.dedup();
        assert_eq!(slots.len(), 3);
        let err = t.plan_batch(&[((2, 0), None); 4]).unwrap_err();
        assert!(err.to_string().contains("no free slot"), "{err}");
    }

    /// Regression test: the benchmarks' sweep runs an 8 GiB budget on a 70 GiB arena, and
    /// misses that could not follow their hint took empty slots beyond the scheduler's
    /// cache: VRAM the plan did not count, kept resident and run by the routed pass.
    #[test]
    fn the_limit_keeps_every_slot_inside_the_scheduler_cache() {
        let mut t = SlotTable::new(100);
        t.reset(Some(4));
        assert_eq!(t.limit(), 4);
        for layer in 0..20u16 {
            let items: Vec<(Key, Option<u32>)> = (0..3).map(|e| ((layer, e), None)).collect();
            for a in t.plan_batch(&items).unwrap() {
                assert!(a.slot < 4, "slot {} outside the limit", a.slot);
            }
        }
        // A hint outside the limit is ignored.
        let a = t.plan_batch(&[((99, 0), Some(50))]).unwrap();
        assert!(a[0].slot < 4);
        assert!(t.resident() <= 4);
        t.reset(None);
        assert_eq!((t.limit(), t.resident()), (100, 0));
        t.reset(Some(1000));
        assert_eq!(t.limit(), 100);
    }

    #[test]
    fn stream_groups_double_buffer_a_round_robin_of_staging_slots() {
        // 4 hits, then 40 misses streamed round-robin through 16 staging slots (100..116).
        let mut slots: Vec<u32> = (0..4).collect();
        slots.extend((0..40).map(|k| 100 + k % 16));
        let p = stream_groups(&slots, 4);
        assert_eq!(p.groups[0], (0, 4));
        // Reuse distance 16: groups of 8 fetches.
        assert_eq!(
            &p.groups[1..],
            &[(4, 12), (12, 20), (20, 28), (28, 36), (36, 44)]
        );
        assert!(p.reuses_slots());
        for (g, &(lo, hi)) in p.groups.iter().enumerate() {
            for i in lo..hi {
                match p.wait[i] {
                    // Every reuse waits for a group at least two back.
                    Some(w) => assert!(w + 2 <= g, "item {i} of group {g} waits for {w}"),
                    None => assert!(i < 4 + 16, "item {i} reuses a slot without a wait"),
                }
            }
            let mut s: Vec<u32> = slots[lo..hi].to_vec();
            s.sort();
            s.dedup();
            assert_eq!(s.len(), hi - lo, "group {g} holds a slot twice");
        }
    }

    #[test]
    fn stream_groups_without_reuse_and_with_a_slot_named_twice_in_a_row() {
        // Distinct slots: groups of STREAM_GROUP_MAX, nothing waits.
        let slots: Vec<u32> = (0..40).collect();
        let p = stream_groups(&slots, 0);
        assert_eq!(p.groups, vec![(0, 16), (16, 32), (32, 40)]);
        assert!(!p.reuses_slots());
        // One slot twice in a row: groups of one, the second waits for the first.
        let p = stream_groups(&[7, 3, 3], 1);
        assert_eq!(p.groups, vec![(0, 1), (1, 2), (2, 3)]);
        assert_eq!(p.wait, vec![None, None, Some(1)]);
        // A miss reusing a hit's slot waits for the hits' group.
        let p = stream_groups(&[5, 6, 5], 2);
        assert_eq!(p.wait[2], Some(0));
        assert_eq!(stream_groups(&[], 0), StreamPlan::default());
    }

    #[test]
    fn self_managed_eviction_is_lru_and_prefers_empty_slots() {
        let mut t = SlotTable::new(2);
        t.plan_batch(&[((0, 0), None)]).unwrap();
        t.plan_batch(&[((0, 1), None)]).unwrap();
        t.plan_batch(&[((0, 0), None)]).unwrap(); // (0,0) now most recent
        let a = t.plan_batch(&[((0, 2), None)]).unwrap();
        assert_eq!(a[0].evicted, Some((0, 1)));
        assert!(t.assign((0, 0), 9).is_err());
        t.clear();
        assert_eq!(t.resident(), 0);
    }

    #[test]
    fn moving_a_key_frees_its_old_slot() {
        let mut t = SlotTable::new(3);
        t.assign((0, 7), 0).unwrap();
        t.assign((0, 7), 2).unwrap();
        assert_eq!(t.owner(0), None);
        assert_eq!(t.slot_of((0, 7)), Some(2));
    }
}
