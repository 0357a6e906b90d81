//! The arena's slot table: which expert each VRAM slot holds, kept in step with the
//! scheduler's `ExpertCache` when the plan names slots, and self-managed (least recently
//! used) when it does not. Pure logic: the GPU side only executes the actions it returns.
//!
//! One layer's GPU work is computed by batched launches after its copies, so two items of
//! a batch must never share a slot (a second copy would overwrite weights the first
//! item's kernel has not read yet): [`SlotTable::plan_batch`] guarantees distinct slots.

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
        }
    }

    /// Slots.
    pub fn n_slots(&self) -> usize {
        self.owner.len()
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
    /// differs: the weights are already there); a hint is followed for a miss unless another
    /// item of the batch already uses that slot; otherwise the least recently used slot not
    /// used by this batch is taken. Errors when the batch has more items than slots.
    pub fn plan_batch(&mut self, items: &[(Key, Option<u32>)]) -> Result<Vec<SlotAction>> {
        if items.len() > self.owner.len() {
            return Err(CudaError::InvalidBatch(format!(
                "{} GPU items but the arena has {} slots",
                items.len(),
                self.owner.len()
            )));
        }
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
            let hinted = hint.filter(|&h| (h as usize) < used.len() && !used[h as usize]);
            let slot = match hinted {
                Some(h) => h,
                None => self
                    .victim(used)
                    .ok_or_else(|| CudaError::InvalidBatch("no free slot for the batch".into()))?,
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

    /// Least recently used slot (empty slots first) not in `used`.
    fn victim(&self, used: &[bool]) -> Option<u32> {
        (0..self.owner.len())
            .filter(|&s| !used[s])
            .min_by_key(|&s| (self.owner[s].is_some(), self.last_use[s]))
            .map(|s| s as u32)
    }
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
        // Within a batch two items still never share a slot.
        let c = t
            .plan_batch(&[((2, 1), Some(3)), ((2, 2), Some(3))])
            .unwrap();
        assert_eq!(c[0].slot, 3);
        assert_ne!(c[1].slot, 3);
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
    fn a_batch_never_uses_a_slot_twice() {
        let mut t = SlotTable::new(3);
        t.assign((1, 0), 0).unwrap();
        // Both misses hint slot 0, which the hit (1,0) uses: they get other slots.
        let a = t
            .plan_batch(&[((1, 5), Some(0)), ((1, 0), None), ((1, 6), Some(0))])
            .unwrap();
        let mut slots: Vec<u32> = a.iter().map(|x| x.slot).collect();
        assert_eq!(
            a[1],
            SlotAction {
                slot: 0,
                copy: false,
                evicted: None
            }
        );
        slots.sort();
        slots.dedup();
        assert_eq!(slots.len(), 3);
        assert!(t.plan_batch(&[((2, 0), None); 4]).is_err());
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
