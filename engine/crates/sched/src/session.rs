//! One object the engine holds per loaded model: cost model, scheduler, expert cache and
//! telemetry wired together, so the per-layer calls are `plan` then `finish_layer`.

use crate::cache::ExpertCache;
use crate::cost::CostModel;
use crate::error::Result;
use crate::policy::{make_policy, ValueParams};
use crate::profile::MachineProfile;
use crate::sched::{LayerPlan, PredictedExpert, RoutedExpert, SchedConfig, Scheduler};
use crate::shape::ModelShape;
use crate::telemetry::{LayerTelemetry, StepTelemetry, Telemetry};

/// Scheduler state of one model on one machine.
pub struct SchedSession {
    /// The model.
    pub shape: ModelShape,
    /// Cost model (feed it measured samples; save `cost.profile()` to cache calibration).
    pub cost: CostModel,
    /// Placement.
    pub sched: Scheduler,
    /// VRAM expert cache (slot indices in plans refer to it).
    pub cache: ExpertCache,
    /// Running totals.
    pub telemetry: Telemetry,
    plan: LayerPlan,
    layers: Vec<LayerTelemetry>,
}

impl std::fmt::Debug for SchedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedSession")
            .field("shape", &self.shape.name)
            .field("cache", &self.cache)
            .finish()
    }
}

impl SchedSession {
    /// `expert_vram_bytes`: VRAM for expert slots (the card's free memory after dense
    /// weights and KV cache; 0 without a GPU). `policy`: one of [`crate::POLICY_NAMES`];
    /// `static-hot` without a profile run behaves like an empty static set. Per-layer
    /// partitioned cache, as in the simulator.
    pub fn new(
        shape: ModelShape,
        profile: MachineProfile,
        expert_vram_bytes: u64,
        policy: &str,
        config: SchedConfig,
    ) -> Result<Self> {
        let mut cost = CostModel::new(profile);
        let sched = Scheduler::new(&shape, &mut cost, config);
        let saving = vec![
            sched.costs().hit_saving(1) / shape.expert_bytes().max(1) as f64;
            shape.n_layers as usize
        ];
        let pol = make_policy(policy, &shape, None, ValueParams::default(), &saving)?;
        let slots = ExpertCache::slots_for_budget(&shape, expert_vram_bytes);
        let cache = ExpertCache::with_partition(&shape, slots, pol, true);
        Ok(Self {
            shape,
            cost,
            sched,
            cache,
            telemetry: Telemetry::default(),
            plan: LayerPlan::default(),
            layers: Vec::new(),
        })
    }

    /// Plans one layer (see [`Scheduler::plan_layer_into`]); execute it, then call
    /// [`SchedSession::finish_layer`].
    pub fn plan(
        &mut self,
        step: u64,
        layer: u16,
        routed: &[RoutedExpert],
        next_pred: &[PredictedExpert],
        link_ready_s: f64,
    ) -> &LayerPlan {
        self.sched.plan_layer_into(
            step,
            layer,
            routed,
            next_pred,
            &mut self.cache,
            link_ready_s,
            &mut self.plan,
        );
        &self.plan
    }

    /// The layer ran: releases pins and staging, records the measured MoE time (if timed)
    /// for the prediction-error report, keeps the layer's telemetry for the step.
    pub fn finish_layer(&mut self, measured_s: Option<f64>) {
        self.sched.finish_layer(&mut self.cache);
        if let Some(m) = measured_s {
            self.cost.observe_layer(self.plan.predicted.finish_s, m);
        }
        let mut t = LayerTelemetry::from_plan(&self.plan, self.shape.expert_bytes());
        t.measured_s = measured_s;
        self.layers.push(t);
    }

    /// The step ended: returns its telemetry (for the engine's channel) and adds it to the
    /// totals. `measured_s`: wall time of the step if timed.
    pub fn finish_step(
        &mut self,
        step: u64,
        n_tokens: u32,
        measured_s: Option<f64>,
    ) -> StepTelemetry {
        let layers = std::mem::take(&mut self.layers);
        let predicted_s = self.sched.dense_time(n_tokens) * layers.len() as f64
            + layers.iter().map(|l| l.predicted.finish_s).sum::<f64>()
            + self.cost.profile().token_fixed_s;
        let s = StepTelemetry {
            step,
            n_tokens,
            layers,
            predicted_s,
            measured_s,
        };
        self.telemetry.record(&s);
        s
    }

    /// Re-reads the cost model into the scheduler (after calibration samples).
    pub fn refresh_costs(&mut self) {
        self.sched.update_costs(&mut self.cost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{generate, SynthParams};

    #[test]
    fn a_session_plans_a_trace_and_reports_telemetry() {
        let mut shape = ModelShape::preset("qwen3-30b-a3b:q4_k_m").unwrap();
        shape.n_layers = 4;
        let trace = generate(&shape, &SynthParams::qwen3_calibrated(), 30, 4);
        let budget = shape.expert_bytes() * 200;
        let mut s = SchedSession::new(
            shape,
            MachineProfile::h100_box(),
            budget,
            "value",
            SchedConfig::default(),
        )
        .unwrap();
        assert_eq!(s.cache.n_slots(), 200);
        for step in &trace.steps {
            for (l, layer) in step.layers.iter().enumerate() {
                let routed: Vec<RoutedExpert> = layer.routed().collect();
                let plan = s.plan(step.step, l as u16, &routed, &[], 0.0);
                assert_eq!(
                    plan.gpu_hit.len() + plan.gpu_fetch.len() + plan.cpu.len(),
                    routed.len()
                );
                let predicted = plan.predicted.finish_s;
                s.finish_layer(Some(predicted * 1.1));
            }
            let st = s.finish_step(step.step, 1, None);
            assert_eq!(st.layers.len(), 4);
        }
        let t = s.telemetry.totals();
        assert_eq!(t.steps, 30);
        assert_eq!(t.accesses, 30 * 4 * 8);
        assert!(t.hit_rate() > 0.3, "{}", t.hit_rate());
        // Measured = 1.1 × predicted: the model is 9% optimistic.
        let e = s.cost.error_report().unwrap();
        assert!((e.median_rel - 0.1 / 1.1).abs() < 1e-9, "{e:?}");
        assert!(e.median_bias < 0.0);
        assert!(SchedSession::new(
            ModelShape::tiny(1, 4, 1),
            MachineProfile::build_box(),
            0,
            "nope",
            SchedConfig::default()
        )
        .is_err());
    }
}
