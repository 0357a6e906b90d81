//! Tests of `placer`.

use super::*;
use hmoe_cuda::LayerTimings;
use hmoe_sched::synth::{generate, SynthParams};

/// The refit must land within this share of the measured per-expert times (the
/// ridge toward the H100 prior keeps a bias; the prior is ~100x off here).
const REFIT_TOL: f64 = 0.5;

/// A one-token item of `expert` (also used by `host_time`).
pub(super) fn item(expert: u16) -> WorkItem {
    WorkItem {
        expert,
        rows: vec![0],
        weights: vec![0.5],
    }
}

/// Regression: the routing trace kept every step since the model was loaded.
#[test]
fn the_kept_trace_is_bounded_and_holds_the_newest_steps() {
    let shape = ModelShape::preset("qwen3-30b-a3b:q4_k_m").expect("shape");
    let mut trace = Trace {
        header: TraceHeader::new(shape, "test".to_string()),
        steps: Vec::new(),
    };
    let keep = 5;
    for i in 0..100u64 {
        let step = TraceStep {
            step: i,
            tokens: 1,
            layers: Vec::new(),
        };
        push_bounded(&mut trace, step, keep);
        let n = trace.steps.len();
        assert!(n <= 2 * keep, "{n} steps kept after {}", i + 1);
        assert!(n >= keep.min(i as usize + 1));
        assert_eq!(trace.steps.last().map(|s| s.step), Some(i));
        // In order, without gaps: the newest n.
        assert!(trace.steps.windows(2).all(|w| w[1].step == w[0].step + 1));
    }
}

#[test]
fn an_ended_steps_telemetry_waits_for_publish_or_the_next_step_end() {
    let shape = ModelShape::tiny(2, 8, 2);
    let hub = SchedPlacer::hub(&shape);
    let mut rx = hub.sender.subscribe();
    let mut p = SchedPlacer::new(
        shape.clone(),
        "lru",
        0,
        false,
        MachineProfile::h100_box(),
        hub.clone(),
    )
    .expect("placer");
    let mut out = LayerPlacement::default();
    let mut run_step = |p: &mut SchedPlacer| {
        p.begin_step(1);
        for l in 0..2 {
            p.place(l, &[item(l as u16)], &[], false, &mut out);
        }
        p.end_step(1e-3);
    };
    let steps = |hub: &TelemetryHub| hub.trace.lock().expect("trace").steps.len();
    run_step(&mut p);
    // Ended, not published: nothing sent, counted or traced yet.
    assert!(rx.try_recv().is_err());
    assert!(p.last_step.is_none());
    assert_eq!(steps(&hub), 0);
    assert_eq!(p.snapshot(1).stats.uses.iter().sum::<u32>(), 0);
    // The next step's end sends the waiting one (no GPU wait came between).
    run_step(&mut p);
    assert_eq!(rx.try_recv().expect("step 0").step, 0);
    assert_eq!(steps(&hub), 1);
    p.publish();
    assert_eq!(rx.try_recv().expect("step 1").step, 1);
    assert_eq!(steps(&hub), 2);
    assert_eq!(p.snapshot(1).stats.uses.iter().sum::<u32>(), 4);
    // Nothing waits: publishing again sends nothing.
    p.publish();
    assert!(rx.try_recv().is_err());
    // A reconfiguration publishes first (the step ran under the old settings).
    run_step(&mut p);
    p.reconfigure(PlacerOptions {
        policy: "value".into(),
        vram_budget_bytes: Some(0),
        prefetch: false,
    })
    .expect("reconfigure");
    assert_eq!(rx.try_recv().expect("step 2").step, 2);
}

#[test]
fn background_loads_planned_later_equal_the_ones_planned_at_once() {
    // Two placers on the same routing: one plans each layer whole, the other its
    // demand part first and its background loads before the next call (the engine's
    // decode with device routing). Plans, loads, cache and trace must not differ.
    let shape = ModelShape::preset("qwen3-30b-a3b:q4_k_m").expect("shape");
    let arena = shape.expert_bytes() * 300;
    let make = || {
        let mut p = SchedPlacer::new(
            shape.clone(),
            "value",
            arena,
            true,
            MachineProfile::h100_box(),
            SchedPlacer::hub(&shape),
        )
        .expect("placer");
        p.set_gpu("test GPU".into(), arena, Arc::new(SlotHints::default()))
            .expect("gpu");
        p
    };
    let (mut whole, mut split) = (make(), make());
    let trace = generate(&shape, &SynthParams::qwen3_calibrated(), 12, 3);
    let (mut a, mut b) = (LayerPlacement::default(), LayerPlacement::default());
    let mut loads = 0;
    for step in &trace.steps {
        whole.begin_step(1);
        split.begin_step(1);
        for (l, tl) in step.layers.iter().enumerate() {
            let items: Vec<WorkItem> = tl.routed().map(|r| item(r.expert)).collect();
            whole.place(l, &items, &tl.pred, true, &mut a);
            split.place_demand(l, &items, &tl.pred, true, &mut b);
            assert!(b.loads.is_empty());
            split.place_background(&mut b.loads);
            assert_eq!(
                (&a.cpu, &a.gpu, &a.loads),
                (&b.cpu, &b.gpu, &b.loads),
                "layer {l}"
            );
            assert_eq!(whole.plan, split.plan, "layer {l}");
            loads += a.loads.len();
        }
        whole.end_step(1e-3);
        split.end_step(1e-3);
    }
    assert!(loads > 0, "the run planned background loads");
    whole.publish();
    split.publish();
    let (ta, tb) = (
        whole.hub.trace.lock().expect("a"),
        split.hub.trace.lock().expect("b"),
    );
    assert_eq!(ta.steps, tb.steps);
    drop((ta, tb));
    assert_eq!(
        whole.snapshot(1).residency,
        split.snapshot(1).residency,
        "the same experts are resident"
    );
    // Not asked for before the next call: the layer plans no background loads, and
    // its record still goes in (the trace keeps every layer).
    split.begin_step(1);
    let tl = &trace.steps[0].layers;
    let items: Vec<WorkItem> = tl[0].routed().map(|r| item(r.expert)).collect();
    split.place_demand(0, &items, &tl[0].pred, true, &mut b);
    let evicted = split.plan.evict.len();
    let items1: Vec<WorkItem> = tl[1].routed().map(|r| item(r.expert)).collect();
    split.place(1, &items1, &tl[1].pred, true, &mut b);
    let mut late = Vec::new();
    split.place_background(&mut late);
    assert!(late.is_empty(), "a background plan asked for too late");
    split.end_step(1e-3);
    split.publish();
    let last = split.last_step.as_ref().expect("telemetry");
    assert_eq!(last.layers.len(), 2);
    assert_eq!(last.layers[0].evicted.len(), evicted);
    assert_eq!(last.layers[0].prefetches, 0);
}

#[test]
fn a_deferred_layer_is_measured_against_its_own_plan() {
    // The GPU dense path observes layer l after planning layer l + 1: the
    // measurement and the prediction error must pair with layer l's plan.
    let shape = ModelShape::tiny(2, 8, 2);
    let hub = SchedPlacer::hub(&shape);
    let mut p = SchedPlacer::new(
        shape.clone(),
        "value",
        0,
        true,
        MachineProfile::h100_box(),
        hub,
    )
    .expect("placer");
    let mut reference = p.cost.clone();
    let mut out = LayerPlacement::default();
    p.begin_step(1);
    // Different work per layer: different predictions.
    p.place(0, &[item(0)], &[], false, &mut out);
    let pred0 = p.plan.predicted.finish_s;
    p.place(1, &[item(1), item(2)], &[], false, &mut out);
    let pred1 = p.plan.predicted.finish_s;
    assert_ne!(pred0, pred1);
    let measure = |wall_s| LayerMeasure {
        cpu_items: &[],
        cpu_s: 0.0,
        gpu_items: &[],
        gpu: None,
        wall_s,
    };
    p.observe(0, &measure(1e-4));
    p.observe(1, &measure(3e-4));
    p.end_step(5e-3);
    p.publish();
    let last = p.last_step.as_ref().expect("telemetry");
    assert_eq!(last.layers[0].measured_s, Some(1e-4));
    assert_eq!(last.layers[1].measured_s, Some(3e-4));
    reference.observe_layer(pred0, 1e-4);
    reference.observe_layer(pred1, 3e-4);
    assert_eq!(p.cost.error_report(), reference.error_report());
    // Both layers measured: the step refits the dense term.
    assert!(p.cost.step_error_report().is_some());
}

#[test]
fn gpu_and_copy_measurements_refit_the_cost_model() {
    let shape = ModelShape::tiny(2, 8, 2);
    let hub = SchedPlacer::hub(&shape);
    let mut p = SchedPlacer::new(
        shape.clone(),
        "value",
        0,
        true,
        MachineProfile::h100_box(),
        hub,
    )
    .expect("placer");
    p.set_gpu(
        "test GPU".into(),
        shape.expert_bytes() * 16,
        Arc::new(SlotHints::default()),
    )
    .expect("gpu");
    let work = shape.expert_work();
    let bytes = work.bytes();
    let (gpu0, link0) = (p.cost.t_gpu(&work, 1), p.cost.t_pcie(bytes));
    // A slow card and link: 1 ms per resident expert, 5 ms per copy.
    let items = [item(0), item(1)];
    let mut out = LayerPlacement::default();
    for _ in 0..300 {
        p.begin_step(1);
        p.place(0, &items, &[], true, &mut out);
        let resident = LayerTimings {
            hits: 2,
            gpu_ms: 2.0,
            wall_ms: 2.1,
            ..Default::default()
        };
        p.observe(
            0,
            &LayerMeasure {
                cpu_items: &[],
                cpu_s: 0.0,
                gpu_items: &items,
                gpu: Some(resident),
                wall_s: 2.1e-3,
            },
        );
        p.place(1, &items, &[], true, &mut out);
        let fetched = LayerTimings {
            fetches: 2,
            copied_bytes: 2 * bytes,
            copy_ms: 10.0,
            gpu_ms: 12.0,
            wall_ms: 12.1,
            ..Default::default()
        };
        p.observe(
            1,
            &LayerMeasure {
                cpu_items: &[],
                cpu_s: 0.0,
                gpu_items: &items,
                gpu: Some(fetched),
                wall_s: 12.1e-3,
            },
        );
        p.end_step(14.5e-3);
    }
    let (gpu1, link1) = (p.cost.t_gpu(&work, 1), p.cost.t_pcie(bytes));
    assert!(gpu1 > 10.0 * gpu0, "GPU time {gpu0} -> {gpu1}");
    assert!((gpu1 - 1e-3).abs() / 1e-3 < REFIT_TOL, "GPU time {gpu1}");
    assert!(link1 > 10.0 * link0, "copy time {link0} -> {link1}");
    assert!((link1 - 5e-3).abs() / 5e-3 < REFIT_TOL, "copy time {link1}");
    // The join cost learned from wall minus busy time (0.1 ms per layer).
    let sync = p.cost.profile().sync_s;
    assert!((sync - 1e-4).abs() < 3e-5, "join {sync}");
}
