//! Runtime options (policy, VRAM budget, prefetch, CPU threads) change without reloading,
//! from the next generation on; the scheduler snapshot shows what is in force.

mod common;

use hmoe_engine::moe::stats::Residency;
use hmoe_engine::synth::{preset, write_synthetic, Recipe, SynthOptions};
use hmoe_engine::{
    Engine, EngineError, EngineOptions, GenerationEvent, Prompt, RuntimeOptions, SamplingParams,
};
use std::path::PathBuf;

fn tiny(dir: &std::path::Path) -> PathBuf {
    let p = dir.join("tiny.gguf");
    let opts = SynthOptions {
        preset: preset("tiny").expect("preset"),
        recipe: Recipe::Q8_0,
        seed: 5,
        layers: Some(2),
    };
    write_synthetic(&opts, &p, |_, _| {}).expect("synth");
    p
}

fn params(n: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.9,
        seed: 3,
        max_tokens: n,
        ..Default::default()
    }
}

fn prompt() -> Prompt {
    Prompt::Text {
        text: "The experts of this layer".into(),
    }
}

/// Runs to the end; returns the number of text events.
fn drain(rt: &tokio::runtime::Runtime, g: &mut hmoe_engine::Generation) -> usize {
    rt.block_on(async {
        let mut n = 0;
        while let Some(ev) = g.events.recv().await {
            match ev {
                GenerationEvent::Text { .. } => n += 1,
                GenerationEvent::Done { .. } => break,
                GenerationEvent::Error { message } => panic!("{message}"),
            }
        }
        n
    })
}

#[test]
fn options_apply_at_the_next_generation_and_the_snapshot_shows_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let e: Engine = common::load(&tiny(dir.path()), EngineOptions::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let s0 = e.scheduler_snapshot().expect("snapshot");
    assert_eq!((s0.n_layers, s0.n_experts, s0.top_k), (2, 16, 4));
    assert_eq!(s0.gpu, None, "this build has no GPU backend");
    assert_eq!(s0.applied.policy, "value");
    assert_eq!(s0.cache_slots, 0);
    assert_eq!(s0.stats.uses.len(), 32);

    // A long generation is running when the options change: it keeps the old ones.
    let mut g = e.generate(prompt(), params(100_000)).expect("generate");
    rt.block_on(async {
        while let Some(ev) = g.events.recv().await {
            if matches!(ev, GenerationEvent::Text { .. }) {
                break;
            }
        }
    });
    let new = RuntimeOptions {
        threads: 1,
        policy: "lru".into(),
        vram_budget_bytes: Some(1 << 30),
        prefetch: false,
    };
    e.set_runtime_options(new.clone()).expect("set");
    assert_eq!(
        e.runtime_options(),
        new,
        "requested options are stored at once"
    );
    let mid = e.scheduler_snapshot().expect("snapshot");
    assert_eq!(
        mid.applied.policy, "value",
        "a running generation keeps its settings"
    );
    g.cancel();
    drain(&rt, &mut g);

    // Idle now: the next snapshot (and generation) runs under the new settings.
    let s1 = e.scheduler_snapshot().expect("snapshot");
    assert_eq!(s1.applied.policy, "lru");
    assert_eq!(s1.applied.threads, 1);
    assert!(!s1.applied.prefetch);
    assert_eq!(s1.applied.vram_budget_bytes, Some(1 << 30));
    assert_eq!(
        s1.cache_slots, 0,
        "no GPU: the budget leaves the cache empty"
    );
    let mut g = e.generate(prompt(), params(6)).expect("generate");
    assert!(drain(&rt, &mut g) > 0);
    let s2 = e.scheduler_snapshot().expect("snapshot");
    assert!(s2.steps > s1.steps);
    assert!(s2.residency.iter().all(|&r| r == Residency::Absent as u8));

    // Per-expert statistics add up to the telemetry totals; without a GPU every use ran
    // on the CPU and none hit.
    let totals = e.telemetry_totals();
    let uses: u64 = s2.stats.uses.iter().map(|&u| u as u64).sum();
    let cpu: u64 = s2.stats.cpu_runs.iter().map(|&u| u as u64).sum();
    assert_eq!(uses, totals.accesses);
    assert_eq!(cpu, uses);
    assert!(s2.stats.hits.iter().all(|&h| h == 0));
    let last = s2.stats.last_use.iter().copied().max().expect("experts");
    assert_eq!(last, s2.steps as i64 - 1);
    assert_eq!(s2.score.len(), 32);

    // Idle: settings apply before the next job, so a snapshot right after sees them.
    e.set_runtime_options(RuntimeOptions {
        policy: "mrs".into(),
        ..new
    })
    .expect("set");
    assert_eq!(e.scheduler_snapshot().expect("snap").applied.policy, "mrs");

    // Back to the default thread count: generation still works.
    e.set_runtime_options(RuntimeOptions::default())
        .expect("set");
    let mut g = e.generate(prompt(), params(3)).expect("generate");
    assert!(drain(&rt, &mut g) > 0);
    assert_eq!(
        e.scheduler_snapshot().expect("snap").applied.policy,
        "value"
    );
}

#[test]
fn bad_options_are_refused_and_keep_the_old_ones() {
    let dir = tempfile::tempdir().expect("tmp");
    let e = common::load(&tiny(dir.path()), EngineOptions::default());
    let err = e
        .set_runtime_options(RuntimeOptions {
            policy: "random".into(),
            ..Default::default()
        })
        .expect_err("unknown policy");
    assert!(matches!(err, EngineError::InvalidRequest(ref m) if m.contains("random")));
    assert!(e
        .set_runtime_options(RuntimeOptions {
            threads: 1 << 20,
            ..Default::default()
        })
        .is_err());
    assert_eq!(e.runtime_options().policy, "value");
    let t = e.trace().expect("trace");
    assert!(t.steps.is_empty());
    assert_eq!(e.model_shape().n_experts, 16);
}
