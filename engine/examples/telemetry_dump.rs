//! Prints predicted vs measured layer times of a short generation (cost-model check).
use hmoe_engine::{Engine, EngineOptions, GenerationEvent, Prompt, SamplingParams};
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: telemetry_dump MODEL.gguf")?;
    let engine = Engine::load_blocking(path.as_ref(), EngineOptions::default(), Arc::new(|_| {}))?;
    let mut rx = engine.subscribe_telemetry();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let params = SamplingParams {
        max_tokens: 8,
        ..Default::default()
    };
    let mut g = engine.generate(
        Prompt::Text {
            text: "Hello there, how are you".into(),
        },
        params,
    )?;
    rt.block_on(async {
        while let Some(ev) = g.events.recv().await {
            if matches!(ev, GenerationEvent::Done { .. }) {
                break;
            }
        }
    });
    while let Ok(step) = rx.try_recv() {
        for l in step.layers.iter().take(2) {
            println!(
                "step {} tokens {} layer {}: experts {} predicted cpu {:.1} µs finish {:.1} µs measured {:.1} µs",
                step.step, step.n_tokens, l.layer, l.experts.len(),
                l.predicted.cpu_s * 1e6, l.predicted.finish_s * 1e6, l.measured_s.unwrap_or(0.0) * 1e6
            );
        }
    }
    println!("median error {:?}", engine.prediction_error());
    Ok(())
}
