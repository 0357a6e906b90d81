//! Tests of `dispatch`.

use super::*;
use crate::backend::cpu::CpuExecutor;
use crate::moe::routing::Routing;
use hmoe_sched::synth::{generate, SynthParams};
use hmoe_sched::ModelShape;
use std::sync::Mutex;

#[test]
fn copied_items_equal_the_picked_ones_and_reuse_the_lists_buffers() {
    let item = |expert: u16, n: u32| WorkItem {
        expert,
        rows: (0..n).collect(),
        weights: vec![expert as f32; n as usize],
    };
    let items: Vec<WorkItem> = (0..6).map(|e| item(e, 1 + e as u32)).collect();
    let mut dst = vec![item(9, 8), item(9, 8), item(9, 8)];
    let buffers: Vec<*const u32> = dst.iter().map(|d| d.rows.as_ptr()).collect();
    copy_items(&mut dst, &items, [4, 1].into_iter());
    assert_eq!(dst, [items[4].clone(), items[1].clone()]);
    // Shorter rows than the buffers held: the same allocations.
    assert_eq!(dst[0].rows.as_ptr(), buffers[0]);
    assert_eq!(dst[1].rows.as_ptr(), buffers[1]);
    copy_items(&mut dst, &items, [0, 2, 3, 5].into_iter());
    assert_eq!(dst, [0, 2, 3, 5].map(|i| items[i].clone()));
    copy_items(&mut dst, &items, std::iter::empty());
    assert!(dst.is_empty());
}

#[test]
fn the_place_delay_is_a_positive_number_of_microseconds_or_nothing() {
    let parse = |v| delay_from(PLACE_DELAY_ENV, v);
    assert_eq!(parse(None), None);
    assert_eq!(parse(Some("0")), None);
    assert_eq!(parse(Some(" 2.5 ")), Some(Duration::from_nanos(2500)));
    for bad in ["", "-3", "abc", "NaN", "inf", "1e9"] {
        assert_eq!(parse(Some(bad)), None, "{bad}");
    }
}

fn dispatch() -> MoeDispatch {
    let pool = CpuExecutor::pool(1).expect("pool");
    MoeDispatch::new(Arc::new(CpuExecutor::new(pool)), None, Box::new(CpuOnly))
}

fn routing(rows: usize) -> Routing {
    Routing {
        top_k: 2,
        ids: (0..rows * 2).map(|i| (i % 8) as u16).collect(),
        weights: vec![0.5; rows * 2],
    }
}

/// Runs what it is given on the CPU and records the experts.
struct Recording(Mutex<Vec<u16>>);

impl ExpertExecutor for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }
    fn execute(
        &self,
        _experts: &LayerExperts<'_>,
        _x: &[f32],
        _hidden: usize,
        items: &[WorkItem],
        _out: &mut [f32],
    ) -> Result<()> {
        if let Ok(mut v) = self.0.lock() {
            v.extend(items.iter().map(|it| it.expert));
        }
        Ok(())
    }
}

/// Records which entry point ran each share: `true` for `execute_beside`.
struct Entry(Mutex<Vec<bool>>);

impl ExpertExecutor for Entry {
    fn name(&self) -> &'static str {
        "entry"
    }
    fn execute(
        &self,
        _: &LayerExperts<'_>,
        _: &[f32],
        _: usize,
        _: &[WorkItem],
        _: &mut [f32],
    ) -> Result<()> {
        self.0.lock().expect("lock").push(false);
        Ok(())
    }
    fn execute_beside(
        &self,
        _: &LayerExperts<'_>,
        _: &[f32],
        _: usize,
        _: &[WorkItem],
        _: &mut [f32],
        beside: &mut dyn FnMut(),
    ) -> Result<()> {
        beside();
        self.0.lock().expect("lock").push(true);
        Ok(())
    }
}

/// A prefill layer issues its GPU share beside the CPU share; a decode layer issues
/// it first (its µs submission would count in the CPU time the cost model fits).
#[test]
fn prefill_layers_run_the_cpu_share_beside_the_submission_and_decode_layers_do_not() {
    use crate::model::dense_exec::testing::tiny_model;
    let dir = tempfile::tempdir().expect("tempdir");
    let model = tiny_model(dir.path(), "q8_0");
    let entry = Arc::new(Entry(Mutex::new(Vec::new())));
    let mut d = MoeDispatch::new(entry.clone(), None, Box::new(CpuOnly));
    let h = model.cfg.hidden;
    let experts = model.layer_experts(0);
    for rows in [1, SUBMIT_BESIDE_MIN_ROWS - 1, SUBMIT_BESIDE_MIN_ROWS, 64] {
        let items = [WorkItem {
            expert: 1,
            rows: (0..rows as u32).collect(),
            weights: vec![0.5; rows],
        }];
        let (x, mut out) = (vec![0.5f32; rows * h], vec![0f32; rows * h]);
        d.begin_step(rows);
        d.run_layer(
            &experts,
            None,
            &x,
            h,
            &items,
            &[],
            DeviceLink::default(),
            &mut out,
        )
        .expect("layer");
        d.end_step();
    }
    assert_eq!(
        *entry.0.lock().expect("lock"),
        vec![false, false, true, true]
    );
}

/// Per layer fed back: the experts measured on the CPU and on the GPU.
type Seen = Arc<Mutex<Vec<(Vec<u16>, Vec<u16>)>>>;

/// Puts everything on the CPU and records what each layer's feedback says ran where.
struct Observer(Seen);

impl Placer for Observer {
    fn place(
        &mut self,
        l: usize,
        items: &[WorkItem],
        n: &[(u16, f32)],
        g: bool,
        out: &mut LayerPlacement,
    ) {
        CpuOnly.place(l, items, n, g, out);
    }
    fn observe(&mut self, _layer: usize, m: &LayerMeasure<'_>) {
        let ids = |v: &[WorkItem]| v.iter().map(|it| it.expert).collect::<Vec<_>>();
        if let Ok(mut o) = self.0.lock() {
            o.push((ids(m.cpu_items), ids(m.gpu_items)));
        }
    }
}

/// Records which placer calls a layer made: `place`, `demand`, `background`.
struct Calls(Arc<Mutex<Vec<&'static str>>>);

impl Placer for Calls {
    fn place(
        &mut self,
        l: usize,
        items: &[WorkItem],
        n: &[(u16, f32)],
        g: bool,
        out: &mut LayerPlacement,
    ) {
        self.0.lock().expect("lock").push("place");
        CpuOnly.place(l, items, n, g, out);
    }
    fn place_demand(
        &mut self,
        l: usize,
        items: &[WorkItem],
        n: &[(u16, f32)],
        g: bool,
        out: &mut LayerPlacement,
    ) {
        self.0.lock().expect("lock").push("demand");
        CpuOnly.place(l, items, n, g, out);
    }
    fn place_background(&mut self, _loads: &mut Vec<(u16, u16, u32)>) {
        self.0.lock().expect("lock").push("background");
    }
    fn publish(&mut self) {
        self.0.lock().expect("lock").push("publish");
    }
}

#[test]
fn only_a_step_that_ran_hooks_leaves_its_publication_for_later() {
    use crate::model::dense_exec::testing::tiny_model;
    let dir = tempfile::tempdir().expect("tempdir");
    let model = tiny_model(dir.path(), "q8_0");
    let calls = Arc::new(Mutex::new(Vec::new()));
    let mut d = dispatch();
    d.set_placer(Box::new(Calls(calls.clone())));
    let h = model.cfg.hidden;
    let l0 = model.layer_experts(0);
    let step = |d: &mut MoeDispatch, rows: usize, hooked: bool| {
        let items = [WorkItem {
            expert: 1,
            rows: (0..rows as u32).collect(),
            weights: vec![0.5; rows],
        }];
        let (x, mut out) = (vec![0.5f32; rows * h], vec![0f32; rows * h]);
        d.begin_step(rows);
        if hooked {
            d.while_gpu_busy();
        }
        d.run_layer(
            &l0,
            None,
            &x,
            h,
            &items,
            &[],
            DeviceLink::default(),
            &mut out,
        )
        .expect("layer");
        d.end_step();
    };
    // A prompt chunk: published when it starts (what waits) and when it ends.
    step(&mut d, 4, false);
    assert_eq!(
        *calls.lock().expect("lock"),
        ["publish", "place", "publish"]
    );
    calls.lock().expect("lock").clear();
    // A decode step whose dense call ran a hook (here without device routing, so its
    // start publishes too): the hook publishes, its end leaves itself for later.
    step(&mut d, 1, true);
    assert_eq!(
        *calls.lock().expect("lock"),
        ["publish", "publish", "place"]
    );
}

#[test]
fn a_layer_run_before_a_hooked_call_plans_its_background_loads_in_the_hook_once() {
    use crate::model::dense_exec::testing::tiny_model;
    let dir = tempfile::tempdir().expect("tempdir");
    let model = tiny_model(dir.path(), "q8_0");
    let calls = Arc::new(Mutex::new(Vec::new()));
    let mut d = dispatch();
    d.set_placer(Box::new(Calls(calls.clone())));
    let items = [WorkItem {
        expert: 1,
        rows: vec![0],
        weights: vec![0.5],
    }];
    let h = model.cfg.hidden;
    let (x, mut out) = (vec![0.5f32; h], vec![0f32; h]);
    let (l0, l1) = (model.layer_experts(0), model.layer_experts(1));
    let later = DeviceLink {
        background_later: true,
        ..DeviceLink::default()
    };
    d.begin_step(1);
    d.run_layer(&l0, None, &x, h, &items, &[], later, &mut out)
        .expect("layer");
    // The hook of another layer's call, then this one's: once, for its own layer.
    d.background_loads(&l1, &l0);
    d.background_loads(&l0, &l1);
    d.background_loads(&l0, &l1);
    // A hook that never came: the next layer plans whole, nothing is asked late.
    d.run_layer(&l0, None, &x, h, &items, &[], later, &mut out)
        .expect("layer");
    d.run_layer(
        &l1,
        None,
        &x,
        h,
        &items,
        &[],
        DeviceLink::default(),
        &mut out,
    )
    .expect("layer");
    d.background_loads(&l0, &l1);
    d.end_step();
    assert_eq!(
        *calls.lock().expect("lock"),
        [
            "publish",
            "demand",
            "background",
            "demand",
            "place",
            "publish"
        ]
    );
}

/// Regression test of device routing: the experts the routed pass already ran are
/// placed with the rest (the plan sees every access) but never run again, and the
/// feedback counts them as the layer's GPU work.
#[test]
fn experts_the_routed_pass_ran_are_not_run_again() {
    use crate::model::dense_exec::testing::tiny_model;
    let dir = tempfile::tempdir().expect("tempdir");
    let model = tiny_model(dir.path(), "q8_0");
    let rec = Arc::new(Recording(Mutex::new(Vec::new())));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut d = MoeDispatch::new(rec.clone(), None, Box::new(Observer(seen.clone())));
    let item = |e: u16| WorkItem {
        expert: e,
        rows: vec![0],
        weights: vec![0.25],
    };
    let items = [item(1), item(2), item(3)];
    let h = model.cfg.hidden;
    let (x, mut out) = (vec![0.5f32; h], vec![0f32; h]);
    d.begin_step(1);
    d.routing.ran = Some((vec![3, 1], 7));
    let experts = model.layer_experts(0);
    let link = DeviceLink::default();
    d.run_layer(&experts, None, &x, h, &items, &[], link, &mut out)
        .expect("layer");
    // The next layer, routed on the host: everything runs.
    d.run_layer(&experts, None, &x, h, &items, &[], link, &mut out)
        .expect("layer");
    d.end_step();
    assert_eq!(*rec.0.lock().expect("lock"), vec![2, 1, 2, 3]);
    let seen = seen.lock().expect("lock");
    assert_eq!(seen[0], (vec![2], vec![1, 3]));
    assert_eq!(seen[1], (vec![1, 2, 3], vec![]));
    assert_eq!((d.summary().cpu_items, d.summary().gpu_items), (4, 2));
}

#[test]
fn replay_rewrites_decode_steps_only_and_follows_the_trace() {
    let trace = generate(&ModelShape::tiny(2, 8, 2), &SynthParams::uniform(), 4, 1);
    let mut d = dispatch();
    // Not replaying: the router's choice stays.
    d.begin_step(1);
    let mut r = routing(1);
    assert!(d.replay_routing(0, &mut r).is_none());
    assert_eq!(r, routing(1));
    d.end_step();
    d.set_routing_replay(Some(trace.clone()));
    for step in 0..6 {
        // A prefill step (several tokens) keeps the router's choice.
        d.begin_step(3);
        assert!(!d.replaying());
        let mut r = routing(3);
        assert!(d.replay_routing(1, &mut r).is_none());
        assert_eq!(r, routing(3));
        d.end_step();
        // A decode step takes trace step `step mod len`, weights unchanged.
        d.begin_step(1);
        assert!(d.replaying());
        for layer in 0..2 {
            let mut r = routing(1);
            let pred = d.replay_routing(layer, &mut r).expect("replayed");
            let want = &trace.steps[step % trace.steps.len()].layers[layer];
            assert_eq!(&r.ids[..], &want.e[..2], "step {step} layer {layer}");
            assert_eq!(r.weights, routing(1).weights);
            assert_eq!(pred, want.pred);
        }
        d.end_step();
    }
}
