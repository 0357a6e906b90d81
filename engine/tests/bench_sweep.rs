//! `hmoe bench --sweep`: one load measured under every setting, model routing and the
//! replayed calibrated trace.

mod common;

use hmoe_engine::bench_sweep::{sweep, SweepOptions};
use hmoe_engine::synth::{preset, write_synthetic, Recipe, SynthOptions};
use hmoe_engine::{Engine, EngineOptions};

/// The tiny synthetic Q8_0 model of `layers` layers, loaded (its directory lives as long
/// as the returned guard).
fn tiny_engine(layers: usize) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tiny.gguf");
    let opts = SynthOptions {
        preset: preset("tiny").expect("preset"),
        recipe: Recipe::Q8_0,
        seed: 9,
        layers: Some(layers),
    };
    write_synthetic(&opts, &path, |_, _| {}).expect("synth");
    let engine = common::load(&path, EngineOptions::default());
    (dir, engine)
}

#[test]
fn sweep_measures_every_setting_and_replays_the_trace() {
    let (_dir, engine) = tiny_engine(2);
    let sweep_opts = SweepOptions {
        policies: vec!["cpu-only".into(), "lru".into()],
        budgets: vec![Some(1 << 20), None],
        prefetch: vec![false, true],
        replay: vec![false, true],
        prompt_len: 20,
        gen: 6,
        threads: 0,
        warmup: 3,
    };
    let mut seen = 0;
    let rows = sweep(&engine, &sweep_opts, |_| seen += 1).expect("sweep");
    // Per routing: cpu-only once, lru × 2 budgets × 2 prefetch settings.
    assert_eq!(rows.len(), 2 * (1 + 4));
    assert_eq!(seen, rows.len());
    for r in &rows {
        assert!(r.decode_tok_s > 0.0 && r.decode_tok_s.is_finite(), "{r:?}");
        assert!((0.0..=1.0).contains(&r.hit_rate), "{r:?}");
        // No GPU here: every expert runs on the CPU, whatever the policy.
        assert_eq!(r.gpu_share, 0.0, "{r:?}");
        // ... and no layer is routed on a device.
        assert_eq!(r.device_routed, 0.0, "{r:?}");
        assert!(
            r.moe_ms_per_token > 0.0 && r.dense_ms_per_token >= 0.0,
            "{r:?}"
        );
        assert!(r.sched_share > 0.0 && r.sched_share < 1.0, "{r:?}");
        assert!(
            r.place_share > 0.0 && r.place_share <= r.sched_share,
            "{r:?}"
        );
        match r.routing {
            "model" => {
                assert!(r.prefill_tok_s > 0.0 && r.cold_prefill_tok_s > 0.0, "{r:?}");
                // The MoE layers' time is the timed prompt's alone (the cold prompt's
                // steps come first and are left out): within that prompt's wall time.
                let prefill_s = sweep_opts.prompt_len as f64 / r.prefill_tok_s;
                assert!(
                    r.prefill_moe_s[0] > 0.0 && r.prefill_moe_s[0] <= prefill_s,
                    "{r:?}"
                );
                // Every expert ran on the CPU: its prediction is paired with a measurement
                // (no GPU share to pair).
                assert!(
                    r.prefill_pred[0].is_finite() && r.prefill_pred[0] >= 0.0,
                    "{r:?}"
                );
                assert!(
                    r.prefill_pred[1] > 0.0 && r.prefill_pred[2].is_nan(),
                    "{r:?}"
                );
            }
            "replay" => {
                assert_eq!(r.prefill_tok_s, 0.0, "{r:?}");
                assert_eq!(r.cold_prefill_tok_s, 0.0, "{r:?}");
            }
            other => panic!("routing {other}"),
        }
    }
    // The settings in force afterwards are the engine's own again.
    assert_eq!(
        engine.runtime_options().policy,
        EngineOptions::default().runtime.policy
    );
}

/// Regression: a row of more steps than the telemetry channel keeps
/// (`TELEMETRY_BUFFER`) read nothing (the first receive reported the lag and ended the
/// loop), so its decode columns were empty.
#[test]
fn a_row_longer_than_the_telemetry_buffer_still_has_decode_columns() {
    let (_dir, engine) = tiny_engine(1);
    let gen = hmoe_engine::moe::placer::TELEMETRY_BUFFER + 40;
    let sweep_opts = SweepOptions {
        policies: vec!["cpu-only".into()],
        budgets: vec![None],
        prefetch: vec![false],
        replay: vec![false],
        prompt_len: 4,
        gen,
        threads: 1,
        warmup: 0,
    };
    let rows = sweep(&engine, &sweep_opts, |_| {}).expect("sweep");
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert!(r.moe_ms_per_token > 0.0, "{r:?}");
    assert!(
        r.sched_share > 0.0 && r.layer_pred_err_median.is_finite(),
        "{r:?}"
    );
}
