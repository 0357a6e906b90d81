//! The per-layer scheduler: routed experts + cache + cost model → a [`LayerPlan`].

use serde::{Deserialize, Serialize};

use crate::cache::{ExpertCache, SlotLoad};
use crate::cost::{CostModel, ExpertCosts};
use crate::profile::MachineProfile;
use crate::shape::{ExpertKey, ModelShape};
use crate::solve::{evaluate_split, solve_exact_split, Greedy, Job, PlanTiming, Solution};

/// One routed expert of a layer in this step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RoutedExpert {
    /// Expert index.
    pub expert: u16,
    /// Tokens of this step routed to it.
    pub n_tokens: u32,
    /// Router weight (summed over its tokens for prefill).
    pub weight: f32,
}

/// The next layer's router applied to the current hidden state: an expert and the
/// probability that it will be selected.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PredictedExpert {
    /// Expert index in the next layer.
    pub expert: u16,
    /// Probability of selection (0..1).
    pub prob: f32,
}

/// Where an expert runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placement {
    /// On the GPU from the cache.
    GpuHit,
    /// Copied, then on the GPU.
    GpuFetch,
    /// On the CPU.
    Cpu,
}

/// A placed expert.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PlacedExpert {
    /// Expert index.
    pub expert: u16,
    /// Tokens it serves.
    pub n_tokens: u32,
    /// Router weight.
    pub weight: f32,
    /// VRAM slot (GPU placements).
    pub slot: Option<u32>,
}

/// What to do for one layer. The engine executes evictions (slot reuse) implicitly by
/// copying into `slot`; fetches in `gpu_fetch` order on the copy stream, GPU compute of a
/// fetched expert after its copy's event; `prefetch` after the demand fetches.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct LayerPlan {
    /// Layer index.
    pub layer: u16,
    /// Resident experts run on the GPU.
    pub gpu_hit: Vec<PlacedExpert>,
    /// Experts copied then run on the GPU, in copy order.
    pub gpu_fetch: Vec<PlacedExpert>,
    /// Experts run on the CPU.
    pub cpu: Vec<PlacedExpert>,
    /// Residents evicted (by demand fetches and by background loads).
    pub evict: Vec<ExpertKey>,
    /// Background loads after the demand fetches: next-layer prefetches and admissions of
    /// this layer's CPU-run experts, each into its slot.
    pub prefetch: Vec<SlotLoad>,
    /// Predicted times of the MoE part of this layer.
    pub predicted: PlanTiming,
    /// Routed experts resident at planning time (cache hits, whichever side runs them).
    pub hits: u32,
    /// Copies the cache could take for this layer when planned (free + evictable slots).
    pub fetch_capacity: u32,
    /// Routed experts that were resident thanks to an earlier background load.
    pub prefetch_hits: u32,
}

impl LayerPlan {
    /// Placement of a routed expert.
    pub fn placement_of(&self, expert: u16) -> Option<Placement> {
        let has = |v: &[PlacedExpert]| v.iter().any(|p| p.expert == expert);
        if has(&self.gpu_hit) {
            Some(Placement::GpuHit)
        } else if has(&self.gpu_fetch) {
            Some(Placement::GpuFetch)
        } else if has(&self.cpu) {
            Some(Placement::Cpu)
        } else {
            None
        }
    }
}

/// Which solver places experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SolverKind {
    /// The greedy (production).
    Greedy,
    /// Enumeration (≤ 20 experts, else greedy): for checks.
    Exact,
}

/// Scheduler options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SchedConfig {
    /// Solver.
    pub solver: SolverKind,
    /// Prefetch predicted next-layer experts while the link is idle.
    pub prefetch: bool,
    /// Copy this layer's CPU-run experts into the cache while the link is idle (if the
    /// policy admits them).
    pub background_admit: bool,
    /// Smallest probability worth a prefetch.
    pub prefetch_min_prob: f32,
    /// Probability that a just-used expert is used again soon (brief: 45% repeat at the
    /// next token), used to rank admissions against prefetches.
    pub reuse_prob: f32,
}

impl Default for SchedConfig {
    fn default() -> Self {
        Self {
            solver: SolverKind::Greedy,
            prefetch: false,
            background_admit: true,
            prefetch_min_prob: 0.3,
            reuse_prob: 0.45,
        }
    }
}

/// The scheduler: holds the per-expert costs and reusable buffers.
#[derive(Debug, Clone)]
pub struct Scheduler {
    shape: ModelShape,
    costs: ExpertCosts,
    sync_s: f64,
    split_s: f64,
    dense_s: f64,
    dense_per_token_s: f64,
    config: SchedConfig,
    greedy: Greedy,
    jobs: Vec<Job>,
    keys: Vec<ExpertKey>,
    /// A layer's accesses the policy has not learned yet (its tick, and the routed
    /// experts' weights in `keys` order): see [`Scheduler::plan_demand_into`].
    access_due: Option<f64>,
    access_weights: Vec<f32>,
    carried: Vec<ExpertKey>,
    cand: Vec<(f64, ExpertKey)>,
    slots: Vec<Option<u32>>,
    sol: Solution,
}

impl Scheduler {
    /// A scheduler for `shape` with costs from `cost`.
    pub fn new(shape: &ModelShape, cost: &mut CostModel, config: SchedConfig) -> Self {
        let costs = cost.expert_costs(&shape.expert_work());
        let p: &MachineProfile = cost.profile();
        Self {
            shape: shape.clone(),
            costs,
            sync_s: p.sync_s,
            split_s: p.split_s,
            dense_s: p.dense_layer_s,
            dense_per_token_s: p.dense_layer_per_token_s,
            config,
            greedy: Greedy::default(),
            jobs: Vec::new(),
            keys: Vec::new(),
            access_due: None,
            access_weights: Vec::new(),
            carried: Vec::new(),
            cand: Vec::new(),
            slots: Vec::new(),
            sol: Solution::default(),
        }
    }

    /// Re-reads the costs after the model was refined.
    pub fn update_costs(&mut self, cost: &mut CostModel) {
        self.costs = cost.expert_costs(&self.shape.expert_work());
        let p = cost.profile();
        self.sync_s = p.sync_s;
        self.split_s = p.split_s;
        self.dense_s = p.dense_layer_s;
        self.dense_per_token_s = p.dense_layer_per_token_s;
    }

    /// The per-expert costs in use.
    pub fn costs(&self) -> &ExpertCosts {
        &self.costs
    }

    /// The configuration.
    pub fn config(&self) -> &SchedConfig {
        &self.config
    }

    /// Predicted dense (non-MoE) time of a layer for `n_tokens`.
    pub fn dense_time(&self, n_tokens: u32) -> f64 {
        self.dense_s + self.dense_per_token_s * n_tokens as f64
    }

    /// Plans one layer. `routed`: this layer's experts (each once); `next_pred`: the next
    /// layer's predicted experts (may be empty); `link_ready_s`: when the copy stream
    /// frees up, relative to the start of this layer's MoE part. Pins the experts it
    /// places on the GPU: call [`Scheduler::finish_layer`] when the layer is done.
    pub fn plan_layer(
        &mut self,
        step: u64,
        layer: u16,
        routed: &[RoutedExpert],
        next_pred: &[PredictedExpert],
        cache: &mut ExpertCache,
        link_ready_s: f64,
    ) -> LayerPlan {
        let mut plan = LayerPlan::default();
        self.plan_layer_into(
            step,
            layer,
            routed,
            next_pred,
            cache,
            link_ready_s,
            &mut plan,
        );
        plan
    }

    /// [`Scheduler::plan_layer`] into a reused plan (no allocation once warm): the
    /// engine's hot path. [`Scheduler::plan_demand_into`], then
    /// [`Scheduler::plan_background_into`].
    #[allow(clippy::too_many_arguments)]
    pub fn plan_layer_into(
        &mut self,
        step: u64,
        layer: u16,
        routed: &[RoutedExpert],
        next_pred: &[PredictedExpert],
        cache: &mut ExpertCache,
        link_ready_s: f64,
        plan: &mut LayerPlan,
    ) {
        self.plan_demand_into(step, layer, routed, next_pred, cache, link_ready_s, plan);
        self.plan_background_into(next_pred, cache, link_ready_s, plan);
    }

    /// The part of a layer's plan its experts need: where each runs, the demand fetches
    /// and their evictions (`plan.prefetch` empty). The background loads may follow later
    /// ([`Scheduler::plan_background_into`]), before the cache's next change: the engine
    /// plans them while the GPU runs the next layer's dense part, off the host's path.
    #[allow(clippy::too_many_arguments)]
    pub fn plan_demand_into(
        &mut self,
        step: u64,
        layer: u16,
        routed: &[RoutedExpert],
        next_pred: &[PredictedExpert],
        cache: &mut ExpertCache,
        link_ready_s: f64,
        plan: &mut LayerPlan,
    ) {
        let tick = step as f64 + layer as f64 / self.shape.n_layers.max(1) as f64;
        let has_gpu = self.gpu_usable(cache);
        let c = self.costs;

        cache.clear_protection();
        for k in self.carried.drain(..) {
            cache.protect(k);
        }
        let next_layer = layer + 1;
        if cache.policy().protects_predicted() && next_layer < self.shape.n_layers {
            for p in next_pred
                .iter()
                .filter(|p| p.prob >= self.config.prefetch_min_prob)
            {
                cache.protect(ExpertKey::new(next_layer, p.expert));
            }
        }

        self.jobs.clear();
        self.keys.clear();
        let mut prefetch_hits = 0;
        let mut hits = 0;
        for r in routed {
            let key = ExpertKey::new(layer, r.expert);
            let resident = cache.is_resident(key);
            if resident {
                hits += 1;
                cache.pin(key);
                if cache.take_background_flag(key) {
                    prefetch_hits += 1;
                }
            }
            self.keys.push(key);
            self.jobs.push(Job {
                cpu_s: c.cpu(r.n_tokens),
                gpu_s: c.gpu(r.n_tokens),
                fetch_s: c.fetch_s,
                resident,
            });
        }
        let cap = if has_gpu {
            cache.loadable_slots(layer)
        } else {
            0
        };
        let mut sol = std::mem::take(&mut self.sol);
        self.greedy.split_s = self.split_s;
        match self.config.solver {
            SolverKind::Greedy => {
                self.greedy
                    .solve_into(&self.jobs, link_ready_s, cap, has_gpu, &mut sol)
            }
            SolverKind::Exact => {
                match solve_exact_split(&self.jobs, link_ready_s, cap, has_gpu, self.split_s) {
                    Some(e) => sol = e,
                    None => {
                        self.greedy
                            .solve_into(&self.jobs, link_ready_s, cap, has_gpu, &mut sol)
                    }
                }
            }
        }

        // The policy learns of every access before loads, so admission sees it. A layer
        // without demand fetches lets it wait for `finish_accesses` (nothing reads the
        // policy before its background loads): off the host's path in the engine.
        self.access_weights.clear();
        self.access_weights.extend(routed.iter().map(|r| r.weight));
        self.access_due = Some(tick);
        if !sol.fetch_order.is_empty() {
            self.finish_accesses(cache);
        }
        plan.layer = layer;
        plan.hits = hits;
        plan.prefetch_hits = prefetch_hits;
        plan.fetch_capacity = cap.min(u32::MAX as usize) as u32;
        plan.gpu_hit.clear();
        plan.gpu_fetch.clear();
        plan.cpu.clear();
        plan.evict.clear();
        plan.prefetch.clear();
        let mut slots = std::mem::take(&mut self.slots);
        slots.clear();
        slots.resize(routed.len(), None);
        let mut refused = false;
        for &i in &sol.fetch_order {
            match cache.load(self.keys[i]) {
                Some(l) => {
                    cache.pin(self.keys[i]);
                    slots[i] = Some(l.slot);
                    plan.evict.extend(l.evicted);
                }
                None => {
                    // Cannot happen while `cap` is honest; fall back to the CPU.
                    sol.on_gpu[i] = false;
                    refused = true;
                }
            }
        }
        if refused {
            let mut order = Vec::new();
            sol.timing = evaluate_split(
                &self.jobs,
                &sol.on_gpu,
                link_ready_s,
                self.split_s,
                &mut order,
            );
            sol.fetch_order = order;
        }
        for (i, r) in routed.iter().enumerate() {
            let key = self.keys[i];
            if !sol.on_gpu[i] && self.jobs[i].resident {
                cache.unpin(key);
            }
            let placed = |slot| PlacedExpert {
                expert: r.expert,
                n_tokens: r.n_tokens,
                weight: r.weight,
                slot,
            };
            if !sol.on_gpu[i] {
                plan.cpu.push(placed(None));
            } else if self.jobs[i].resident {
                plan.gpu_hit.push(placed(cache.slot_of(key).or(slots[i])));
            }
        }
        for &i in &sol.fetch_order {
            let r = routed[i];
            plan.gpu_fetch.push(PlacedExpert {
                expert: r.expert,
                n_tokens: r.n_tokens,
                weight: r.weight,
                slot: slots[i],
            });
        }
        plan.predicted = sol.timing;
        plan.predicted.finish_s += self.sync_s;
        self.slots = slots;
        self.sol = sol;
    }

    /// The background loads of the layer `plan` was planned for by
    /// [`Scheduler::plan_demand_into`] (with the same `next_pred` and `link_ready_s`, and
    /// no cache change between): appended to `plan.prefetch` and `plan.evict`.
    pub fn plan_background_into(
        &mut self,
        next_pred: &[PredictedExpert],
        cache: &mut ExpertCache,
        link_ready_s: f64,
        plan: &mut LayerPlan,
    ) {
        self.finish_accesses(cache);
        if !self.gpu_usable(cache) {
            return;
        }
        let n_tok = plan
            .gpu_hit
            .iter()
            .chain(&plan.gpu_fetch)
            .chain(&plan.cpu)
            .map(|r| r.n_tokens)
            .max()
            .unwrap_or(1);
        let idle = (plan.predicted.finish_s - link_ready_s - plan.predicted.pcie_s).max(0.0)
            + self.dense_time(n_tok);
        self.background_loads(plan.layer, next_pred, cache, idle, plan);
    }

    /// Fills the idle link window with the loads of highest expected saving; each must
    /// finish inside the window, so no demand fetch of the next layer waits for it.
    fn background_loads(
        &mut self,
        layer: u16,
        next_pred: &[PredictedExpert],
        cache: &mut ExpertCache,
        idle_s: f64,
        plan: &mut LayerPlan,
    ) {
        let c = self.costs;
        self.cand.clear();
        if self.config.prefetch && layer + 1 < self.shape.n_layers {
            for p in next_pred
                .iter()
                .filter(|p| p.prob >= self.config.prefetch_min_prob)
            {
                let key = ExpertKey::new(layer + 1, p.expert);
                if !cache.is_resident(key) {
                    self.cand.push((p.prob as f64 * c.hit_saving(1), key));
                }
            }
        }
        if self.config.background_admit {
            for e in &plan.cpu {
                let key = ExpertKey::new(layer, e.expert);
                self.cand
                    .push((self.config.reuse_prob as f64 * c.hit_saving(1), key));
            }
        }
        if self.cand.is_empty() {
            return;
        }
        self.cand.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut left = idle_s;
        for i in 0..self.cand.len() {
            let (gain, key) = self.cand[i];
            if gain <= 0.0 || c.fetch_s > left {
                break;
            }
            if let Some(l) = cache.try_admit(key) {
                left -= c.fetch_s;
                plan.evict.extend(l.evicted);
                plan.prefetch.push(l);
                if key.layer != layer {
                    self.carried.push(key);
                    cache.protect(key);
                }
            }
        }
    }

    /// Whether plans may put experts on the GPU: a GPU in the cost model and slots for it.
    fn gpu_usable(&self, cache: &ExpertCache) -> bool {
        self.costs.has_gpu() && cache.n_slots() > 0
    }

    /// Tells the policy of the last planned layer's accesses if
    /// [`Scheduler::plan_demand_into`] left them waiting (before any other use of `cache`:
    /// [`Scheduler::plan_background_into`] does it first).
    pub fn finish_accesses(&mut self, cache: &mut ExpertCache) {
        if let Some(tick) = self.access_due.take() {
            for (&key, &w) in self.keys.iter().zip(&self.access_weights) {
                cache.access(key, w, tick);
            }
        }
    }

    /// Releases the layer's pins.
    pub fn finish_layer(&mut self, cache: &mut ExpertCache) {
        cache.unpin_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Lru, ValueParams};

    fn setup(profile: MachineProfile, slots: usize) -> (ModelShape, Scheduler, ExpertCache) {
        let shape = ModelShape::preset("qwen3-30b-a3b:q4_k_m").unwrap();
        let mut cost = CostModel::new(profile);
        let sched = Scheduler::new(&shape, &mut cost, SchedConfig::default());
        let cache = ExpertCache::new(&shape, slots, Box::new(Lru::new(shape.total_experts())));
        (shape, sched, cache)
    }

    fn routed(experts: &[u16], n_tokens: u32) -> Vec<RoutedExpert> {
        experts
            .iter()
            .map(|&expert| RoutedExpert {
                expert,
                n_tokens,
                weight: 0.125,
            })
            .collect()
    }

    #[test]
    fn decode_runs_a_cold_expert_on_the_cpu() {
        // H100 box, Q4_K_M expert (3.06 MB): CPU 5 + 3.06 MB / 52 GB/s ≈ 64 us beats
        // copy 8 + 57 us then GPU ≈ 11.5 us.
        let (_, mut s, mut c) = setup(MachineProfile::h100_box(), 100);
        let costs = *s.costs();
        assert!((costs.cpu(1) - 63.8e-6).abs() < 1e-6, "{}", costs.cpu(1));
        let plan = s.plan_layer(0, 3, &routed(&[7], 1), &[], &mut c, 0.0);
        assert_eq!(plan.placement_of(7), Some(Placement::Cpu));
        assert!(plan.gpu_fetch.is_empty());
        assert!((plan.predicted.finish_s - (costs.cpu(1) + 15e-6)).abs() < 1e-12);
        // The idle link then admits it in the background.
        assert_eq!(plan.prefetch.len(), 1);
        s.finish_layer(&mut c);
        assert!(c.is_resident(ExpertKey::new(3, 7)));
    }

    #[test]
    fn prefill_fetches_a_cold_expert_and_a_hot_expert_stays() {
        let (_, mut s, mut c) = setup(MachineProfile::h100_box(), 100);
        let hot = ExpertKey::new(0, 1);
        c.load(hot).unwrap();
        let plan = s.plan_layer(0, 0, &routed(&[1, 2], 512), &[], &mut c, 0.0);
        assert_eq!(plan.placement_of(1), Some(Placement::GpuHit));
        assert_eq!(plan.placement_of(2), Some(Placement::GpuFetch));
        assert!(plan.gpu_fetch[0].slot.is_some());
        // 512 tokens on the CPU take milliseconds; GPU with the copy ~0.2 ms.
        assert!(s.costs().cpu(512) > 4e-3);
        assert!(plan.predicted.finish_s < 0.5e-3);
        s.finish_layer(&mut c);
        // Decode of the hot expert: a GPU hit.
        let plan = s.plan_layer(1, 0, &routed(&[1], 1), &[], &mut c, 0.0);
        assert_eq!(plan.placement_of(1), Some(Placement::GpuHit));
        assert_eq!(plan.hits, 1);
    }

    #[test]
    fn decode_of_eight_misses_splits_cpu_and_link() {
        // k fetched: max((8-k)·63.8, 64.7k + 11.5) us → k = 4 (270 us) is optimal.
        let (_, mut s, mut c) = setup(MachineProfile::h100_box(), 100);
        let plan = s.plan_layer(
            0,
            0,
            &routed(&[0, 1, 2, 3, 4, 5, 6, 7], 1),
            &[],
            &mut c,
            0.0,
        );
        assert_eq!(plan.gpu_fetch.len(), 4);
        assert_eq!(plan.cpu.len(), 4);
        let k = s.costs();
        let want = (4.0 * k.cpu(1)).max(4.0 * k.fetch_s + k.gpu(1)) + 15e-6;
        assert!((plan.predicted.finish_s - want).abs() < 1e-12);
    }

    #[test]
    fn prefill_streams_through_staging_when_every_slot_is_pinned() {
        // 48 slots partitioned: one per layer (minus 8 staging slots → 40 / 48 layers:
        // layer 0 gets one). Its resident is routed (pinned); the cold expert streams.
        let shape = ModelShape::preset("qwen3-30b-a3b:q4_k_m").unwrap();
        let mut cost = CostModel::new(MachineProfile::h100_box());
        let mut s = Scheduler::new(&shape, &mut cost, SchedConfig::default());
        let mut c = ExpertCache::with_partition(
            &shape,
            48,
            Box::new(Lru::new(shape.total_experts())),
            true,
        );
        assert_eq!(c.n_staging(), 8);
        c.load(ExpertKey::new(0, 1)).unwrap();
        let plan = s.plan_layer(0, 0, &routed(&[1, 2, 3], 512), &[], &mut c, 0.0);
        assert_eq!(plan.placement_of(1), Some(Placement::GpuHit));
        assert_eq!(plan.placement_of(2), Some(Placement::GpuFetch));
        assert_eq!(plan.placement_of(3), Some(Placement::GpuFetch));
        assert!(plan.gpu_fetch.iter().all(|p| p.slot.unwrap() >= 40));
        assert!(plan.evict.is_empty());
        s.finish_layer(&mut c);
        assert!(!c.is_resident(ExpertKey::new(0, 2)), "streamed, not cached");
        c.check_invariants().unwrap();
    }

    #[test]
    fn without_a_gpu_every_expert_runs_on_the_cpu() {
        let (_, mut s, mut c) = setup(MachineProfile::build_box(), 100);
        let plan = s.plan_layer(0, 0, &routed(&[0, 1, 2], 512), &[], &mut c, 0.0);
        assert_eq!(plan.cpu.len(), 3);
        assert!(plan.gpu_fetch.is_empty() && plan.prefetch.is_empty());
    }

    #[test]
    fn prefetch_loads_predicted_next_layer_experts_into_idle_link_time() {
        let shape = ModelShape::preset("qwen3-30b-a3b:q4_k_m").unwrap();
        let mut cost = CostModel::new(MachineProfile::h100_box());
        let cfg = SchedConfig {
            prefetch: true,
            background_admit: false,
            ..SchedConfig::default()
        };
        let mut s = Scheduler::new(&shape, &mut cost, cfg);
        let pol =
            crate::policy::make_policy("value", &shape, None, ValueParams::default(), &[]).unwrap();
        let mut c = ExpertCache::new(&shape, 100, pol);
        let pred = [
            PredictedExpert {
                expert: 9,
                prob: 0.9,
            },
            PredictedExpert {
                expert: 10,
                prob: 0.05,
            },
        ];
        let plan = s.plan_layer(0, 0, &routed(&[1], 1), &pred, &mut c, 0.0);
        // Window: CPU 64 us + sync 15 + dense 45 ≈ 124 us → one 65 us copy fits.
        assert_eq!(plan.prefetch.len(), 1);
        assert_eq!(plan.prefetch[0].key, ExpertKey::new(1, 9));
        s.finish_layer(&mut c);
        let plan = s.plan_layer(0, 1, &routed(&[9], 1), &[], &mut c, 0.0);
        assert_eq!(plan.prefetch_hits, 1);
        assert_eq!(plan.placement_of(9), Some(Placement::GpuHit));
    }
}
