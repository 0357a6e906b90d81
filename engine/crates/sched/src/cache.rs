//! The VRAM expert cache: fixed slots of the largest expert size, residency per
//! (layer, expert), pins, and lazy per-layer min-heaps over the policy's eviction
//! priorities. Optionally partitioned: each layer owns an equal share of the slots and
//! evicts only its own experts (per-layer caches, as llama.cpp's LRU PR and HybriMoE).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use serde::Serialize;

use crate::policy::{CachePolicy, Tick};
use crate::shape::{ExpertKey, ModelShape};

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Entry {
    prio: f64,
    flat: u32,
    version: u32,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    // Reversed: BinaryHeap is a max-heap and we pop the lowest priority.
    fn cmp(&self, o: &Self) -> Ordering {
        o.prio.total_cmp(&self.prio).then(o.flat.cmp(&self.flat))
    }
}

/// The cache's state of one expert.
#[derive(Debug, Clone, Copy)]
struct ExpertSlot {
    /// Its slot (`NONE`: not resident).
    slot: u32,
    /// Heap version (stale heap entries carry an older one).
    version: u32,
    /// Index in its layer's resident list (`NONE`: not resident).
    pos: u32,
    /// Pin count (in use by the layer being planned).
    pins: u16,
    /// Predicted for the next layer: not evicted.
    protected: bool,
    /// Background-loaded and not used since.
    background: bool,
}

impl Default for ExpertSlot {
    fn default() -> Self {
        Self {
            slot: NONE,
            version: 0,
            pos: NONE,
            pins: 0,
            protected: false,
            background: false,
        }
    }
}

/// Where a load landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SlotLoad {
    /// The expert loaded.
    pub key: ExpertKey,
    /// Its slot.
    pub slot: u32,
    /// The resident it replaced, if any (its slot is `slot`).
    pub evicted: Option<ExpertKey>,
}

/// Running counters of the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CacheCounters {
    /// Loads (demand and background).
    pub loads: u64,
    /// Evictions.
    pub evictions: u64,
}

/// VRAM expert cache.
pub struct ExpertCache {
    n_experts: usize,
    slot_bytes: u64,
    /// Per expert (flat index): slot, pins, flags, heap version, place in its layer's
    /// resident list, in one 16-byte record (a plan touches a line per routed expert).
    ex: Vec<ExpertSlot>,
    owner: Vec<u32>,
    protected_list: Vec<u32>,
    pinned_list: Vec<u32>,
    free: Vec<u32>,
    staging_base: u32,
    n_staging: u32,
    staging_next: u32,
    heaps: Vec<BinaryHeap<Entry>>,
    skipped: Vec<Entry>,
    /// Scratch of the victim scan (a layer's evictable residents).
    scan_buf: Vec<u32>,
    resident: usize,
    res_layer: Vec<u32>,
    layer_res: Vec<Vec<u32>>,
    quota: Option<Vec<u32>>,
    now: Tick,
    /// Partitioned with a time-varying policy value: victims by scan, no heap needed.
    scan_mode: bool,
    policy: Box<dyn CachePolicy>,
    counters: CacheCounters,
}

impl std::fmt::Debug for ExpertCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpertCache")
            .field("policy", &self.policy.name())
            .field("slots", &self.owner.len())
            .field("resident", &self.resident)
            .finish()
    }
}

impl ExpertCache {
    /// Slots that fit `budget_bytes` (slots of the model's expert size).
    pub fn slots_for_budget(shape: &ModelShape, budget_bytes: u64) -> usize {
        let slot = shape.expert_bytes().max(1);
        ((budget_bytes / slot) as usize).min(shape.total_experts())
    }

    /// A global cache of `n_slots` slots (0 if the policy uses no VRAM), preloaded with
    /// the policy's initial residents.
    pub fn new(shape: &ModelShape, n_slots: usize, policy: Box<dyn CachePolicy>) -> Self {
        Self::with_partition(shape, n_slots, policy, false)
    }

    /// Like [`ExpertCache::new`]; `partitioned`: every layer gets an equal share of the
    /// slots and a load evicts only experts of its own layer (dynamic policies only).
    pub fn with_partition(
        shape: &ModelShape,
        n_slots: usize,
        policy: Box<dyn CachePolicy>,
        partitioned: bool,
    ) -> Self {
        let n_slots = if policy.uses_vram() {
            n_slots.min(shape.total_experts())
        } else {
            0
        };
        let total = shape.total_experts();
        // Staging slots stream experts that get no cache slot (every slot pinned, as in
        // prefill where a layer uses nearly all its experts; a static policy; a refused
        // admission). Reused round-robin within a layer: the GPU copies into a reused slot
        // after the launch group that read it, and with 2 × top_k slots it launches groups
        // of top_k, so the copies of one group overlap the compute of the one before
        // (double buffering; with top_k slots each group's copies would wait for the
        // previous group's kernels). Only when the cache holds several layers' worth.
        let top_k = shape.top_k as usize;
        let n_staging = if n_slots >= 8 * top_k {
            2 * top_k
        } else if n_slots >= 4 * top_k {
            top_k
        } else {
            0
        };
        let n_main = n_slots - n_staging;
        let mut c = Self {
            n_experts: shape.n_experts as usize,
            slot_bytes: shape.expert_bytes(),
            ex: vec![ExpertSlot::default(); total],
            owner: vec![NONE; n_slots],
            protected_list: Vec::new(),
            pinned_list: Vec::new(),
            free: (0..n_main as u32).rev().collect(),
            staging_base: n_main as u32,
            n_staging: n_staging as u32,
            staging_next: 0,
            heaps: (0..shape.n_layers).map(|_| BinaryHeap::new()).collect(),
            skipped: Vec::new(),
            scan_buf: Vec::with_capacity(shape.n_experts as usize),
            resident: 0,
            res_layer: vec![0; shape.n_layers as usize],
            // Full size up front: no reallocation while the cache fills (hot path).
            layer_res: (0..shape.n_layers)
                .map(|_| Vec::with_capacity(shape.n_experts as usize))
                .collect(),
            quota: None,
            now: 0.0,
            scan_mode: false,
            policy,
            counters: CacheCounters::default(),
        };
        c.policy.set_capacity(n_main);
        if partitioned && c.policy.dynamic() {
            c.scan_mode = c.policy.value_now(0, 0.0).is_some();
            let l = shape.n_layers.max(1) as usize;
            c.quota = Some(
                (0..l)
                    .map(|i| (n_main / l + usize::from(i < n_main % l)) as u32)
                    .collect(),
            );
        }
        for key in c.policy.initial_residents(shape, n_main) {
            if let Some(slot) = c.free.pop() {
                c.place(c.flat(key), slot);
            }
        }
        c
    }

    fn layer_of(&self, f: usize) -> usize {
        f / self.n_experts
    }

    /// Whether layer `l` may take a free slot without evicting.
    fn has_room(&self, l: usize) -> bool {
        !self.free.is_empty() && self.quota.as_ref().is_none_or(|q| self.res_layer[l] < q[l])
    }

    fn flat(&self, key: ExpertKey) -> usize {
        key.layer as usize * self.n_experts + key.expert as usize
    }

    fn key(&self, flat: usize) -> ExpertKey {
        ExpertKey::new(
            (flat / self.n_experts) as u16,
            (flat % self.n_experts) as u16,
        )
    }

    /// The policy.
    pub fn policy(&self) -> &dyn CachePolicy {
        self.policy.as_ref()
    }

    /// Slot count.
    pub fn n_slots(&self) -> usize {
        self.owner.len()
    }

    /// VRAM the slots take.
    pub fn bytes(&self) -> u64 {
        self.owner.len() as u64 * self.slot_bytes
    }

    /// Resident experts.
    pub fn resident_count(&self) -> usize {
        self.resident
    }

    /// Counters.
    pub fn counters(&self) -> CacheCounters {
        self.counters
    }

    /// Slot of a resident expert.
    pub fn slot_of(&self, key: ExpertKey) -> Option<u32> {
        let s = self.ex.get(self.flat(key))?.slot;
        (s != NONE).then_some(s)
    }

    /// Whether `key` is in VRAM.
    pub fn is_resident(&self, key: ExpertKey) -> bool {
        self.slot_of(key).is_some()
    }

    /// Whether `key` is pinned.
    pub fn is_pinned(&self, key: ExpertKey) -> bool {
        self.ex[self.flat(key)].pins > 0
    }

    /// The expert in `slot`.
    pub fn owner(&self, slot: u32) -> Option<ExpertKey> {
        let f = *self.owner.get(slot as usize)?;
        (f != NONE).then(|| self.key(f as usize))
    }

    /// Tells the policy about an access and re-keys the expert in the heap.
    pub fn access(&mut self, key: ExpertKey, weight: f32, tick: Tick) {
        let f = self.flat(key);
        self.now = tick;
        self.policy.on_access(f, weight, tick);
        if self.ex[f].slot != NONE {
            self.push(f);
        }
    }

    /// Pins `key` (in use: never evicted until unpinned). Pins nest.
    pub fn pin(&mut self, key: ExpertKey) {
        let f = self.flat(key);
        if self.ex[f].pins == 0 {
            self.pinned_list.push(f as u32);
        }
        self.ex[f].pins = self.ex[f].pins.saturating_add(1);
    }

    /// Releases one pin.
    pub fn unpin(&mut self, key: ExpertKey) {
        let f = self.flat(key);
        if self.ex[f].pins == 1 {
            if let Some(i) = self.pinned_list.iter().position(|&p| p == f as u32) {
                self.pinned_list.swap_remove(i);
            }
        }
        self.ex[f].pins = self.ex[f].pins.saturating_sub(1);
    }

    /// Releases every pin and every staging slot (end of a layer).
    pub fn unpin_all(&mut self) {
        for f in self.pinned_list.drain(..) {
            self.ex[f as usize].pins = 0;
        }
        self.staging_next = 0;
    }

    /// Staging slots (bypass buffers).
    pub fn n_staging(&self) -> usize {
        self.n_staging as usize
    }

    /// Protects `key` from eviction until [`ExpertCache::clear_protection`] (predicted use).
    pub fn protect(&mut self, key: ExpertKey) {
        let f = self.flat(key);
        if !self.ex[f].protected {
            self.ex[f].protected = true;
            self.protected_list.push(f as u32);
        }
    }

    /// Drops every protection.
    pub fn clear_protection(&mut self) {
        for f in self.protected_list.drain(..) {
            self.ex[f as usize].protected = false;
        }
    }

    /// Copies a demand load for `layer` could place now: unbounded with staging slots
    /// (they stream), else free slots (within the layer's share if partitioned) plus
    /// residents the policy may replace (neither pinned nor protected; of that layer if
    /// partitioned).
    pub fn loadable_slots(&self, layer: u16) -> usize {
        if self.n_staging > 0 {
            // Staging slots stream any number of copies (round-robin).
            return usize::MAX / 2;
        }
        let l = layer as usize;
        let free = match &self.quota {
            Some(q) => (q
                .get(l)
                .copied()
                .unwrap_or(0)
                .saturating_sub(self.res_layer.get(l).copied().unwrap_or(0))
                as usize)
                .min(self.free.len()),
            None => self.free.len(),
        };
        if !self.policy.dynamic() {
            return free;
        }
        let part = self.quota.is_some();
        let counts =
            |f: u32| self.ex[f as usize].slot != NONE && (!part || self.layer_of(f as usize) == l);
        let pinned = self.pinned_list.iter().filter(|&&f| counts(f)).count();
        let protected = self
            .protected_list
            .iter()
            .filter(|&&f| counts(f) && self.ex[f as usize].pins == 0)
            .count();
        let resident = if part {
            self.res_layer.get(l).copied().unwrap_or(0) as usize
        } else {
            self.resident
        };
        free + resident - pinned - protected
    }

    fn push(&mut self, f: usize) {
        self.ex[f].version = self.ex[f].version.wrapping_add(1);
        if self.scan_mode {
            return;
        }
        let l = self.layer_of(f);
        self.heaps[l].push(Entry {
            prio: self.policy.priority(f),
            flat: f as u32,
            version: self.ex[f].version,
        });
        if self.heaps[l].len() > 4 * self.res_layer[l] as usize + 64 {
            self.compact(l);
        }
    }

    /// Rebuilds layer `l`'s heap from its residents (drops stale entries).
    fn compact(&mut self, l: usize) {
        let base = l * self.n_experts;
        let v: Vec<Entry> = (base..base + self.n_experts)
            .filter(|&f| self.ex[f].slot != NONE)
            .map(|f| Entry {
                prio: self.policy.priority(f),
                flat: f as u32,
                version: self.ex[f].version,
            })
            .collect();
        self.heaps[l] = BinaryHeap::from(v);
    }

    fn place(&mut self, f: usize, slot: u32) {
        self.ex[f].slot = slot;
        self.owner[slot as usize] = f as u32;
        self.resident += 1;
        let l = self.layer_of(f);
        self.res_layer[l] += 1;
        self.ex[f].pos = self.layer_res[l].len() as u32;
        self.layer_res[l].push(f as u32);
        self.counters.loads += 1;
        self.push(f);
    }

    /// Lowest-priority evictable resident of layer `l` (not pinned or protected).
    fn layer_victim(&mut self, l: usize) -> Option<Entry> {
        if self.quota.is_some() {
            if let Some(e) = self.scan_victim(l) {
                return e;
            }
        }
        let mut found = None;
        let heap = &mut self.heaps[l];
        while let Some(e) = heap.pop() {
            let f = e.flat as usize;
            if self.ex[f].slot == NONE || self.ex[f].version != e.version {
                continue; // stale
            }
            if self.ex[f].pins > 0 || self.ex[f].protected {
                self.skipped.push(e);
                continue;
            }
            found = Some(e);
            break;
        }
        for e in self.skipped.drain(..) {
            heap.push(e);
        }
        if let Some(e) = found {
            heap.push(e);
        }
        found
    }

    /// For policies with a time-varying value: the layer's evictable resident of lowest
    /// value (`None`: the policy has no such value).
    fn scan_victim(&mut self, l: usize) -> Option<Option<Entry>> {
        let base = l * self.n_experts;
        self.policy.value_now(base, self.now)?;
        // The evictable residents in list order, then the policy's first lowest value
        // among them (one loop in the policy instead of a virtual call per resident).
        let mut cand = std::mem::take(&mut self.scan_buf);
        cand.clear();
        cand.extend(
            self.layer_res[l]
                .iter()
                .copied()
                .filter(|&f| self.ex[f as usize].pins == 0 && !self.ex[f as usize].protected),
        );
        let best = self
            .policy
            .min_value_now(&cand, self.now)
            .map(|(i, v)| Entry {
                prio: v,
                flat: cand[i],
                version: self.ex[cand[i] as usize].version,
            });
        self.scan_buf = cand;
        Some(best)
    }

    /// The resident a load for layer `l` would evict now: from layer `l` if
    /// partitioned, else the lowest over all layers.
    fn find_victim(&mut self, l: usize) -> Option<Entry> {
        if self.quota.is_some() {
            return self.layer_victim(l);
        }
        let mut best: Option<Entry> = None;
        for i in 0..self.heaps.len() {
            if let Some(e) = self.layer_victim(i) {
                if best.is_none_or(|b| e.prio < b.prio) {
                    best = Some(e);
                }
            }
        }
        best
    }

    fn evict_into(&mut self, victim: Entry, f: usize) -> SlotLoad {
        let v = victim.flat as usize;
        let slot = self.ex[v].slot;
        self.ex[v].slot = NONE;
        let lv = self.layer_of(v);
        self.res_layer[lv] -= 1;
        let p = self.ex[v].pos as usize;
        self.layer_res[lv].swap_remove(p);
        if let Some(&moved) = self.layer_res[lv].get(p) {
            self.ex[moved as usize].pos = p as u32;
        }
        self.ex[v].pos = NONE;
        self.ex[v].background = false;
        self.ex[v].version = self.ex[v].version.wrapping_add(1);
        self.resident -= 1;
        self.counters.evictions += 1;
        self.place(f, slot);
        SlotLoad {
            key: self.key(f),
            slot,
            evicted: Some(self.key(v)),
        }
    }

    /// Demand load of `key` (the scheduler decided to copy it): a free slot, else the
    /// policy's victim. `None` if every slot is pinned or protected, or the policy is
    /// static and no slot is free. Already resident: its slot, nothing evicted.
    pub fn load(&mut self, key: ExpertKey) -> Option<SlotLoad> {
        let f = self.flat(key);
        if self.ex[f].slot != NONE {
            return Some(SlotLoad {
                key,
                slot: self.ex[f].slot,
                evicted: None,
            });
        }
        let l = self.layer_of(f);
        if self.has_room(l) {
            if let Some(slot) = self.free.pop() {
                self.place(f, slot);
                return Some(SlotLoad {
                    key,
                    slot,
                    evicted: None,
                });
            }
        }
        if self.policy.dynamic() {
            if let Some(v) = self.find_victim(l) {
                if !self.policy.stages() || self.policy.admit(f, v.flat as usize, self.now) {
                    return Some(self.evict_into(v, f));
                }
            }
        }
        // Stream: run from a staging slot, keep the residents.
        if self.n_staging == 0 {
            return None;
        }
        let slot = self.staging_base + self.staging_next % self.n_staging;
        self.staging_next += 1;
        self.counters.loads += 1;
        Some(SlotLoad {
            key,
            slot,
            evicted: None,
        })
    }

    /// Background load (prefetch, admission of a CPU-run miss): like [`ExpertCache::load`]
    /// but only if the policy admits `key` over the victim.
    pub fn try_admit(&mut self, key: ExpertKey) -> Option<SlotLoad> {
        let f = self.flat(key);
        if self.ex[f].slot != NONE {
            return None;
        }
        let l = self.layer_of(f);
        if self.has_room(l) {
            if let Some(slot) = self.free.pop() {
                self.place(f, slot);
                self.ex[f].background = true;
                return Some(SlotLoad {
                    key,
                    slot,
                    evicted: None,
                });
            }
        }
        if !self.policy.dynamic() {
            return None;
        }
        let victim = self.find_victim(l)?;
        if !self.policy.admit(f, victim.flat as usize, self.now) {
            return None;
        }
        let l = self.evict_into(victim, f);
        self.ex[f].background = true;
        Some(l)
    }

    /// Whether `key` was background-loaded and not used since; clears the flag.
    pub fn take_background_flag(&mut self, key: ExpertKey) -> bool {
        let f = self.flat(key);
        std::mem::replace(&mut self.ex[f].background, false)
    }

    /// Checks internal invariants (tests): slot/owner agreement and counts.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut resident = 0;
        let n_main = self.owner.len() - self.n_staging();
        for (slot, &f) in self.owner.iter().enumerate() {
            if slot >= n_main && f != NONE {
                return Err(format!("staging slot {slot} holds a resident"));
            }
            if f != NONE {
                resident += 1;
                if self.ex[f as usize].slot != slot as u32 {
                    return Err(format!("slot {slot} owner {f} disagrees"));
                }
            }
        }
        if resident != self.resident || resident + self.free.len() != n_main {
            return Err(format!(
                "resident {resident} vs {} free {}",
                self.resident,
                self.free.len()
            ));
        }
        for (l, list) in self.layer_res.iter().enumerate() {
            if list.len() != self.res_layer[l] as usize {
                return Err(format!(
                    "layer {l} list {} vs count {}",
                    list.len(),
                    self.res_layer[l]
                ));
            }
            for (i, &f) in list.iter().enumerate() {
                if self.ex[f as usize].pos != i as u32 || self.ex[f as usize].slot == NONE {
                    return Err(format!("layer {l} list entry {f} inconsistent"));
                }
            }
        }
        if let Some(q) = &self.quota {
            for (l, (&r, &q)) in self.res_layer.iter().zip(q).enumerate() {
                if r > q {
                    return Err(format!("layer {l} holds {r} experts over its share {q}"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{make_policy, Lru, ValueParams};

    fn shape() -> ModelShape {
        ModelShape::tiny(2, 8, 2)
    }

    #[test]
    fn lru_evicts_least_recent_and_never_a_pinned_expert() {
        let s = shape();
        let mut c = ExpertCache::new(&s, 2, Box::new(Lru::new(s.total_experts())));
        let (a, b, d) = (
            ExpertKey::new(0, 1),
            ExpertKey::new(0, 2),
            ExpertKey::new(1, 3),
        );
        c.access(a, 0.5, 0.0);
        c.load(a).unwrap();
        c.access(b, 0.5, 1.0);
        c.load(b).unwrap();
        c.pin(a);
        c.access(d, 0.5, 2.0);
        let l = c.load(d).unwrap();
        assert_eq!(l.evicted, Some(b), "a is older but pinned");
        c.pin(d);
        assert_eq!(c.loadable_slots(0), 0);
        assert!(c.load(ExpertKey::new(1, 4)).is_none(), "all pinned");
        c.unpin_all();
        assert_eq!(c.loadable_slots(0), 2);
        c.check_invariants().unwrap();
        assert_eq!(c.counters().evictions, 1);
    }

    #[test]
    fn partitioned_layers_keep_their_share() {
        let s = shape();
        let mut c = ExpertCache::with_partition(&s, 4, Box::new(Lru::new(s.total_experts())), true);
        for e in 0..4 {
            let k = ExpertKey::new(0, e);
            c.access(k, 0.5, e as f64);
            let l = c.load(k).unwrap();
            // Layer 0's share is 2 slots: from the third load on, it evicts its own.
            assert_eq!(l.evicted.is_some(), e >= 2);
        }
        c.check_invariants().unwrap();
        assert_eq!(c.loadable_slots(1), 2);
        let k = ExpertKey::new(1, 0);
        c.access(k, 0.5, 9.0);
        assert_eq!(c.load(k).unwrap().evicted, None);
    }

    #[test]
    fn a_large_cache_keeps_two_groups_of_staging_slots() {
        let s = ModelShape::tiny(4, 64, 2);
        let pol = |n| {
            ExpertCache::with_partition(
                &s,
                n,
                make_policy("lru", &s, None, ValueParams::default(), &[]).unwrap(),
                true,
            )
        };
        assert_eq!(pol(7).n_staging(), 0);
        assert_eq!(pol(8).n_staging(), 2);
        assert_eq!(pol(16).n_staging(), 4);
        // Round-robin within a layer: the fifth stream reuses the first staging slot.
        let mut c = pol(16);
        let first = c.n_slots() - c.n_staging();
        for e in 0..12 {
            let k = ExpertKey::new(0, e);
            c.access(k, 0.1, 0.0);
            c.load(k);
            c.pin(k);
        }
        let streamed: Vec<u32> = (12..17)
            .map(|e| {
                let k = ExpertKey::new(0, e);
                c.access(k, 0.1, 0.0);
                c.load(k).unwrap().slot
            })
            .collect();
        assert!(
            streamed.iter().all(|&s| s as usize >= first),
            "{streamed:?}"
        );
        assert_eq!(streamed[4], streamed[0]);
        c.unpin_all();
        c.check_invariants().unwrap();
    }

    #[test]
    fn refused_demand_loads_run_from_staging_and_leave_residents() {
        let s = ModelShape::tiny(1, 64, 2);
        let v = ValueParams {
            admission: true,
            ..ValueParams::default()
        };
        let pol = make_policy("value", &s, None, v, &[]).unwrap();
        let mut c = ExpertCache::with_partition(&s, 10, pol, true);
        assert_eq!(c.n_staging(), 2);
        // Experts 0..8 used every step for 20 steps: a high learned value.
        for step in 0..20 {
            for e in 0..8 {
                let k = ExpertKey::new(0, e);
                c.access(k, 0.1, step as f64);
                c.load(k);
            }
        }
        // A never-seen expert: its value is the prior, below the regulars'.
        let k = ExpertKey::new(0, 40);
        c.access(k, 0.1, 20.0);
        let l = c.load(k).unwrap();
        assert_eq!(l.evicted, None);
        assert!(l.slot >= 8, "staging slot");
        assert!(!c.is_resident(k));
        c.unpin_all();
        assert_eq!(c.n_staging(), 2);
        c.check_invariants().unwrap();
    }
}
