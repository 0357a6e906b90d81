//! The VRAM expert cache: fixed slots of the largest expert size, residency per
//! (layer, expert), pins, and a lazy min-heap over the policy's eviction priorities.

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
    slot_of: Vec<u32>,
    owner: Vec<u32>,
    pins: Vec<u16>,
    protected: Vec<bool>,
    protected_list: Vec<u32>,
    pinned_list: Vec<u32>,
    version: Vec<u32>,
    background: Vec<bool>,
    free: Vec<u32>,
    heap: BinaryHeap<Entry>,
    skipped: Vec<Entry>,
    resident: usize,
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

    /// A cache of `n_slots` slots (0 if the policy uses no VRAM), preloaded with the
    /// policy's initial residents.
    pub fn new(shape: &ModelShape, n_slots: usize, policy: Box<dyn CachePolicy>) -> Self {
        let n_slots = if policy.uses_vram() { n_slots.min(shape.total_experts()) } else { 0 };
        let total = shape.total_experts();
        let mut c = Self {
            n_experts: shape.n_experts as usize,
            slot_bytes: shape.expert_bytes(),
            slot_of: vec![NONE; total],
            owner: vec![NONE; n_slots],
            pins: vec![0; total],
            protected: vec![false; total],
            protected_list: Vec::new(),
            pinned_list: Vec::new(),
            version: vec![0; total],
            background: vec![false; total],
            free: (0..n_slots as u32).rev().collect(),
            heap: BinaryHeap::with_capacity(n_slots * 2 + 16),
            skipped: Vec::new(),
            resident: 0,
            policy,
            counters: CacheCounters::default(),
        };
        for key in c.policy.initial_residents(shape, n_slots) {
            if let Some(slot) = c.free.pop() {
                c.place(c.flat(key), slot);
            }
        }
        c
    }

    fn flat(&self, key: ExpertKey) -> usize {
        key.layer as usize * self.n_experts + key.expert as usize
    }

    fn key(&self, flat: usize) -> ExpertKey {
        ExpertKey::new((flat / self.n_experts) as u16, (flat % self.n_experts) as u16)
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
        let s = *self.slot_of.get(self.flat(key))?;
        (s != NONE).then_some(s)
    }

    /// Whether `key` is in VRAM.
    pub fn is_resident(&self, key: ExpertKey) -> bool {
        self.slot_of(key).is_some()
    }

    /// Whether `key` is pinned.
    pub fn is_pinned(&self, key: ExpertKey) -> bool {
        self.pins[self.flat(key)] > 0
    }

    /// The expert in `slot`.
    pub fn owner(&self, slot: u32) -> Option<ExpertKey> {
        let f = *self.owner.get(slot as usize)?;
        (f != NONE).then(|| self.key(f as usize))
    }

    /// Tells the policy about an access and re-keys the expert in the heap.
    pub fn access(&mut self, key: ExpertKey, weight: f32, tick: Tick) {
        let f = self.flat(key);
        self.policy.on_access(f, weight, tick);
        if self.slot_of[f] != NONE {
            self.push(f);
        }
    }

    /// Pins `key` (in use: never evicted until unpinned). Pins nest.
    pub fn pin(&mut self, key: ExpertKey) {
        let f = self.flat(key);
        if self.pins[f] == 0 {
            self.pinned_list.push(f as u32);
        }
        self.pins[f] = self.pins[f].saturating_add(1);
    }

    /// Releases one pin.
    pub fn unpin(&mut self, key: ExpertKey) {
        let f = self.flat(key);
        if self.pins[f] == 1 {
            if let Some(i) = self.pinned_list.iter().position(|&p| p == f as u32) {
                self.pinned_list.swap_remove(i);
            }
        }
        self.pins[f] = self.pins[f].saturating_sub(1);
    }

    /// Releases every pin.
    pub fn unpin_all(&mut self) {
        for f in self.pinned_list.drain(..) {
            self.pins[f as usize] = 0;
        }
    }

    /// Protects `key` from eviction until [`ExpertCache::clear_protection`] (predicted use).
    pub fn protect(&mut self, key: ExpertKey) {
        let f = self.flat(key);
        if !self.protected[f] {
            self.protected[f] = true;
            self.protected_list.push(f as u32);
        }
    }

    /// Drops every protection.
    pub fn clear_protection(&mut self) {
        for f in self.protected_list.drain(..) {
            self.protected[f as usize] = false;
        }
    }

    /// Slots a demand load could use now: free ones, plus residents the policy may
    /// replace (neither pinned nor protected).
    pub fn loadable_slots(&self) -> usize {
        if !self.policy.dynamic() {
            return self.free.len();
        }
        let resident = |f: u32| self.slot_of[f as usize] != NONE;
        let pinned = self.pinned_list.iter().filter(|&&f| resident(f)).count();
        let protected = self
            .protected_list
            .iter()
            .filter(|&&f| resident(f) && self.pins[f as usize] == 0)
            .count();
        self.free.len() + self.resident - pinned - protected
    }

    fn push(&mut self, f: usize) {
        self.version[f] = self.version[f].wrapping_add(1);
        self.heap.push(Entry { prio: self.policy.priority(f), flat: f as u32, version: self.version[f] });
        if self.heap.len() > 4 * self.owner.len() + 64 {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let mut v: Vec<Entry> = Vec::with_capacity(self.owner.len());
        for &f in &self.owner {
            if f != NONE {
                let f = f as usize;
                v.push(Entry { prio: self.policy.priority(f), flat: f as u32, version: self.version[f] });
            }
        }
        self.heap = BinaryHeap::from(v);
    }

    fn place(&mut self, f: usize, slot: u32) {
        self.slot_of[f] = slot;
        self.owner[slot as usize] = f as u32;
        self.resident += 1;
        self.counters.loads += 1;
        self.push(f);
    }

    /// The resident a load would evict now (lowest priority, not pinned or protected).
    fn find_victim(&mut self) -> Option<Entry> {
        let mut found = None;
        while let Some(e) = self.heap.pop() {
            let f = e.flat as usize;
            if self.slot_of[f] == NONE || self.version[f] != e.version {
                continue; // stale
            }
            if self.pins[f] > 0 || self.protected[f] {
                self.skipped.push(e);
                continue;
            }
            found = Some(e);
            break;
        }
        for e in self.skipped.drain(..) {
            self.heap.push(e);
        }
        if let Some(e) = found {
            self.heap.push(e);
        }
        found
    }

    fn evict_into(&mut self, victim: Entry, f: usize) -> SlotLoad {
        let v = victim.flat as usize;
        let slot = self.slot_of[v];
        self.slot_of[v] = NONE;
        self.background[v] = false;
        self.version[v] = self.version[v].wrapping_add(1);
        self.resident -= 1;
        self.counters.evictions += 1;
        self.place(f, slot);
        SlotLoad { key: self.key(f), slot, evicted: Some(self.key(v)) }
    }

    /// Demand load of `key` (the scheduler decided to copy it): a free slot, else the
    /// policy's victim. `None` if every slot is pinned or protected, or the policy is
    /// static and no slot is free. Already resident: its slot, nothing evicted.
    pub fn load(&mut self, key: ExpertKey) -> Option<SlotLoad> {
        let f = self.flat(key);
        if self.slot_of[f] != NONE {
            return Some(SlotLoad { key, slot: self.slot_of[f], evicted: None });
        }
        if let Some(slot) = self.free.pop() {
            self.place(f, slot);
            return Some(SlotLoad { key, slot, evicted: None });
        }
        if !self.policy.dynamic() {
            return None;
        }
        let victim = self.find_victim()?;
        Some(self.evict_into(victim, f))
    }

    /// Background load (prefetch, admission of a CPU-run miss): like [`ExpertCache::load`]
    /// but only if the policy admits `key` over the victim.
    pub fn try_admit(&mut self, key: ExpertKey) -> Option<SlotLoad> {
        let f = self.flat(key);
        if self.slot_of[f] != NONE {
            return None;
        }
        if let Some(slot) = self.free.pop() {
            self.place(f, slot);
            self.background[f] = true;
            return Some(SlotLoad { key, slot, evicted: None });
        }
        if !self.policy.dynamic() {
            return None;
        }
        let victim = self.find_victim()?;
        if !self.policy.admit(f, victim.prio) {
            return None;
        }
        let l = self.evict_into(victim, f);
        self.background[f] = true;
        Some(l)
    }

    /// Whether `key` was background-loaded and not used since; clears the flag.
    pub fn take_background_flag(&mut self, key: ExpertKey) -> bool {
        let f = self.flat(key);
        std::mem::replace(&mut self.background[f], false)
    }

    /// Checks internal invariants (tests): slot/owner agreement and counts.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut resident = 0;
        for (slot, &f) in self.owner.iter().enumerate() {
            if f != NONE {
                resident += 1;
                if self.slot_of[f as usize] != slot as u32 {
                    return Err(format!("slot {slot} owner {f} disagrees"));
                }
            }
        }
        if resident != self.resident || resident + self.free.len() != self.owner.len() {
            return Err(format!("resident {resident} vs {} free {}", self.resident, self.free.len()));
        }
        Ok(())
    }
}
