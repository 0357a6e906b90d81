//! The placer's host time per decode layer, warm and with cold CPU caches (a timing tool,
//! ignored by default; docs/BENCHMARKS.md has its numbers). `HMOE_HOST_TIME=value,warm`
//! runs only the runs whose name (`value warm`, `lru cold`, ...) has every word.

use super::tests::item;
use super::*;
use crate::moe::WorkItem;
use hmoe_cuda::LayerTimings;

/// The placer's host time per decode layer on the Qwen3-30B-A3B shape (`value`, 16 GiB
/// of experts on a GPU, uniform top-8 routing): a timing, not a check. Run with
/// `cargo test --release -p hmoe-engine --lib placer_host_time -- --ignored --nocapture`.
#[test]
#[ignore]
fn placer_host_time() {
    use std::time::Instant;
    let shape = ModelShape::preset("qwen3-30b-a3b:q4_k_m").expect("preset");
    let (layers, experts, k) = (
        shape.n_layers as usize,
        shape.n_experts,
        shape.top_k as usize,
    );
    // Between layers the engine's kernels and copies sweep the CPU caches: "cold" runs
    // write a 64 MiB buffer before each call, as the real host path does.
    let mut sweep = vec![0u8; 64 << 20];
    let all = [
        ("lru", false),
        ("value", false),
        ("lru", true),
        ("value", true),
    ];
    // HMOE_HOST_TIME=value (or lru, cold, warm): only the runs whose name has it.
    let only = std::env::var("HMOE_HOST_TIME").unwrap_or_default();
    let runs = all.into_iter().filter(|(policy, cold)| {
        let name = format!("{policy} {}", if *cold { "cold" } else { "warm" });
        only.split(',').all(|w| name.contains(w.trim()))
    });
    for (policy, cold) in runs {
        let mut flush = |on: bool| {
            if on {
                for b in sweep.iter_mut().step_by(64) {
                    *b = b.wrapping_add(1);
                }
                std::hint::black_box(&sweep);
            }
        };
        let hub = SchedPlacer::hub(&shape);
        let budget = 16u64 << 30;
        let mut p = SchedPlacer::new(
            shape.clone(),
            policy,
            budget,
            true,
            MachineProfile::h100_box(),
            hub,
        )
        .expect("placer");
        p.set_gpu("test GPU".into(), budget, Arc::new(SlotHints::default()))
            .expect("gpu");
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next_u16 = |n: u16| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as u16
        };
        let mut out = LayerPlacement::default();
        // Per timed step: seconds in place, observe and end_step. Medians over steps:
        // the build machine's other work lands in a few steps and moves means by 50%.
        let (mut place, mut observe, mut end, mut publish, mut bg) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let steps = if cold { 120 } else { 1000 };
        let mut routing = Vec::new();
        for step in 0..steps {
            routing.clear();
            for _ in 0..layers {
                let mut chosen: Vec<u16> = Vec::with_capacity(k);
                while chosen.len() < k {
                    let e = next_u16(experts);
                    if !chosen.contains(&e) {
                        chosen.push(e);
                    }
                }
                routing.push(chosen);
            }
            p.begin_step(1);
            let (mut step_place, mut step_observe, mut step_background) = (0.0f64, 0.0f64, 0.0f64);
            for l in 0..layers {
                let items: Vec<WorkItem> = routing[l].iter().map(|&e| item(e)).collect();
                let next: Vec<(u16, f32)> = routing
                    .get(l + 1)
                    .map(|r| r.iter().map(|&e| (e, 0.125)).collect())
                    .unwrap_or_default();
                // As the engine's decode: the demand part on the path, the background
                // loads in the next dense call's hook.
                flush(cold);
                let t = Instant::now();
                p.place_demand(l, &items, &next, true, &mut out);
                let placed = t.elapsed().as_secs_f64();
                let t = Instant::now();
                p.place_background(&mut out.loads);
                let background = t.elapsed().as_secs_f64();
                let timings = LayerTimings {
                    hits: out.gpu.len() as u32,
                    gpu_ms: 0.03,
                    wall_ms: 0.04,
                    ..Default::default()
                };
                let gpu_items: Vec<WorkItem> = out.gpu.iter().map(|&i| items[i].clone()).collect();
                let cpu_items: Vec<WorkItem> = out.cpu.iter().map(|&i| items[i].clone()).collect();
                flush(cold);
                let t = Instant::now();
                p.observe(
                    l,
                    &LayerMeasure {
                        cpu_items: &cpu_items,
                        cpu_s: 1e-5 * cpu_items.len() as f64,
                        gpu_items: &gpu_items,
                        gpu: Some(timings),
                        wall_s: 4e-5,
                    },
                );
                let observed = t.elapsed().as_secs_f64();
                step_place += placed;
                step_background += background;
                step_observe += observed;
            }
            flush(cold);
            let t = Instant::now();
            p.end_step(5e-3);
            let ended = t.elapsed().as_secs_f64();
            // In the engine: inside the next step's first dense call, while the GPU runs.
            flush(cold);
            let t = Instant::now();
            p.publish();
            if step >= 50 {
                publish.push(t.elapsed().as_secs_f64());
                end.push(ended);
                place.push(step_place);
                bg.push(step_background);
                observe.push(step_observe);
            }
        }
        let per_layer = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2] / layers as f64 * 1e9
        };
        println!(
            "{policy}{}: ns per decode layer (median step): place_demand {:.0}, place_background {:.0}, observe {:.0}, end_step {:.0}, publish {:.0} (per layer share)",
            if cold { " (cold caches)" } else { "" },
            per_layer(place),
            per_layer(bg),
            per_layer(observe),
            per_layer(end),
            per_layer(publish)
        );
    }
}
