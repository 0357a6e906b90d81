//! Telemetry: what every layer of every step did, and running totals. Plain serde types,
//! cheap to build; the engine owns the channel that carries them.

use serde::{Deserialize, Serialize};

use crate::sched::{LayerPlan, Placement};
use crate::shape::ExpertKey;
use crate::solve::PlanTiming;

/// One routed expert and where it ran.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ExpertEvent {
    /// Expert index.
    pub expert: u16,
    /// Placement.
    pub placement: Placement,
    /// Tokens served.
    pub n_tokens: u32,
}

/// One layer of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerTelemetry {
    /// Layer index.
    pub layer: u16,
    /// Routed experts with placement.
    pub experts: Vec<ExpertEvent>,
    /// Predicted times.
    pub predicted: PlanTiming,
    /// Measured MoE time of the layer, if the engine timed it (issue to both outputs).
    pub measured_s: Option<f64>,
    /// Measured CPU share time.
    #[serde(default)]
    pub measured_cpu_s: Option<f64>,
    /// Measured GPU share time (CUDA events: upload, waits for copies, kernels, download).
    #[serde(default)]
    pub measured_gpu_s: Option<f64>,
    /// Measured copy-stream time of the layer's demand fetches (CUDA events).
    #[serde(default)]
    pub measured_copy_s: Option<f64>,
    /// Demand-fetch bytes.
    pub bytes_fetched: u64,
    /// Background (prefetch/admission) bytes.
    pub bytes_prefetched: u64,
    /// Residents evicted.
    pub evictions: u32,
    /// Background loads issued.
    pub prefetches: u32,
    /// Routed experts found resident (cache hits).
    pub hits: u32,
    /// Routed experts found resident thanks to a background load.
    pub prefetch_hits: u32,
    /// Residents evicted in this layer's plan (for cache maps; may name other layers).
    #[serde(default)]
    pub evicted: Vec<ExpertKey>,
    /// Background loads issued (prefetches of the next layer, admissions).
    #[serde(default)]
    pub loaded: Vec<ExpertKey>,
}

impl LayerTelemetry {
    /// From a plan (`expert_bytes`: bytes per expert copy).
    pub fn from_plan(plan: &LayerPlan, expert_bytes: u64) -> Self {
        let mut experts =
            Vec::with_capacity(plan.gpu_hit.len() + plan.gpu_fetch.len() + plan.cpu.len());
        for (v, p) in [
            (&plan.gpu_hit, Placement::GpuHit),
            (&plan.gpu_fetch, Placement::GpuFetch),
            (&plan.cpu, Placement::Cpu),
        ] {
            experts.extend(v.iter().map(|e| ExpertEvent {
                expert: e.expert,
                placement: p,
                n_tokens: e.n_tokens,
            }));
        }
        Self {
            layer: plan.layer,
            experts,
            predicted: plan.predicted,
            measured_s: None,
            measured_cpu_s: None,
            measured_gpu_s: None,
            measured_copy_s: None,
            bytes_fetched: plan.gpu_fetch.len() as u64 * expert_bytes,
            bytes_prefetched: plan.prefetch.len() as u64 * expert_bytes,
            evictions: plan.evict.len() as u32,
            prefetches: plan.prefetch.len() as u32,
            hits: plan.hits,
            prefetch_hits: plan.prefetch_hits,
            evicted: plan.evict.clone(),
            loaded: plan.prefetch.iter().map(|l| l.key).collect(),
        }
    }
}

/// One step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepTelemetry {
    /// Step index.
    pub step: u64,
    /// Tokens in the step.
    pub n_tokens: u32,
    /// Per layer.
    pub layers: Vec<LayerTelemetry>,
    /// Predicted step time (dense + MoE + fixed).
    pub predicted_s: f64,
    /// Measured step time, if timed.
    pub measured_s: Option<f64>,
}

/// Running totals.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct TelemetryTotals {
    /// Steps.
    pub steps: u64,
    /// Tokens.
    pub tokens: u64,
    /// Routed (layer, expert) uses.
    pub accesses: u64,
    /// Of which resident in VRAM when planned (cache hits).
    pub hits: u64,
    /// Of which run on the GPU from the cache.
    pub gpu_hits: u64,
    /// Of which copied then run on the GPU.
    pub fetches: u64,
    /// Of which run on the CPU.
    pub cpu_runs: u64,
    /// Bytes over PCIe (demand + background).
    pub pcie_bytes: u64,
    /// Evictions.
    pub evictions: u64,
    /// Background loads.
    pub prefetches: u64,
    /// Hits on background-loaded experts.
    pub prefetch_hits: u64,
    /// CPU busy seconds (measured where available, else predicted).
    pub cpu_busy_s: f64,
    /// GPU busy seconds (predicted: compute and copy waits).
    pub gpu_busy_s: f64,
    /// Copy-stream busy seconds (demand fetches).
    pub pcie_busy_s: f64,
    /// Step seconds (measured where available, else predicted).
    pub wall_s: f64,
}

impl TelemetryTotals {
    /// Hits ÷ routed uses.
    pub fn hit_rate(&self) -> f64 {
        self.hits as f64 / self.accesses.max(1) as f64
    }
    /// PCIe GB/s over the wall time.
    pub fn pcie_gbps(&self) -> f64 {
        if self.wall_s > 0.0 {
            self.pcie_bytes as f64 / self.wall_s / 1e9
        } else {
            0.0
        }
    }
    /// Tokens per second.
    pub fn tok_per_s(&self) -> f64 {
        if self.wall_s > 0.0 {
            self.tokens as f64 / self.wall_s
        } else {
            0.0
        }
    }
    /// Seconds per step.
    pub fn time_per_step(&self) -> f64 {
        self.wall_s / self.steps.max(1) as f64
    }
}

/// Aggregates steps into totals.
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    totals: TelemetryTotals,
}

impl Telemetry {
    /// Adds one step.
    pub fn record(&mut self, s: &StepTelemetry) {
        let t = &mut self.totals;
        t.steps += 1;
        t.tokens += s.n_tokens as u64;
        t.wall_s += s.measured_s.unwrap_or(s.predicted_s);
        for l in &s.layers {
            for e in &l.experts {
                t.accesses += 1;
                match e.placement {
                    Placement::GpuHit => t.gpu_hits += 1,
                    Placement::GpuFetch => t.fetches += 1,
                    Placement::Cpu => t.cpu_runs += 1,
                }
            }
            t.hits += l.hits as u64;
            t.pcie_bytes += l.bytes_fetched + l.bytes_prefetched;
            t.evictions += l.evictions as u64;
            t.prefetches += l.prefetches as u64;
            t.prefetch_hits += l.prefetch_hits as u64;
            t.cpu_busy_s += l.predicted.cpu_s;
            t.gpu_busy_s += l.predicted.gpu_s;
            t.pcie_busy_s += l.predicted.pcie_s;
        }
    }

    /// Totals so far.
    pub fn totals(&self) -> &TelemetryTotals {
        &self.totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::SlotLoad;
    use crate::sched::PlacedExpert;

    #[test]
    fn totals_add_up_from_plans() {
        let e = |expert| PlacedExpert {
            expert,
            n_tokens: 1,
            weight: 0.1,
            slot: Some(0),
        };
        let plan = LayerPlan {
            layer: 2,
            gpu_hit: vec![e(1), e(2)],
            gpu_fetch: vec![e(3)],
            cpu: vec![e(4)],
            evict: vec![ExpertKey::new(2, 9)],
            prefetch: vec![SlotLoad {
                key: ExpertKey::new(3, 5),
                slot: 7,
                evicted: None,
            }],
            predicted: PlanTiming {
                cpu_s: 1e-4,
                gpu_s: 2e-4,
                pcie_s: 1e-4,
                finish_s: 2.2e-4,
            },
            hits: 2,
            fetch_capacity: 4,
            prefetch_hits: 1,
        };
        let l = LayerTelemetry::from_plan(&plan, 1000);
        assert_eq!(l.experts.len(), 4);
        assert_eq!(
            (
                l.bytes_fetched,
                l.bytes_prefetched,
                l.evictions,
                l.prefetches
            ),
            (1000, 1000, 1, 1)
        );
        assert_eq!(l.evicted, vec![ExpertKey::new(2, 9)]);
        assert_eq!(l.loaded, vec![ExpertKey::new(3, 5)]);
        let step = StepTelemetry {
            step: 0,
            n_tokens: 1,
            layers: vec![l.clone(), l],
            predicted_s: 0.01,
            measured_s: Some(0.02),
        };
        let mut t = Telemetry::default();
        t.record(&step);
        t.record(&step);
        let s = t.totals();
        assert_eq!(
            (s.steps, s.tokens, s.accesses, s.hits, s.gpu_hits, s.fetches, s.cpu_runs),
            (2, 2, 16, 8, 8, 4, 4)
        );
        assert_eq!(s.pcie_bytes, 8000);
        assert!((s.hit_rate() - 0.5).abs() < 1e-12);
        // Measured time wins over predicted: 2 × 0.02 s.
        assert!((s.tok_per_s() - 50.0).abs() < 1e-9);
        assert!((s.pcie_gbps() - 8000.0 / 0.04 / 1e9).abs() < 1e-12);
        let json = serde_json::to_string(&step).unwrap();
        assert!(json.contains(r#""placement":"GpuFetch""#));
    }
}
