//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use hmoe_engine::{Engine, EngineOptions, FinishReason, GenerationEvent, Prompt, SamplingParams};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The committed reference fixtures.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Reads a little-endian float32 C-order `.npy` file: (shape, data).
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{} is not .npy", path.display());
    let (hlen, hstart) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[hstart..hstart + hlen]).expect("npy header");
    assert!(
        header.contains("'<f4'") && header.contains("False"),
        "{header}"
    );
    let shape_s = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("shape");
    let shape: Vec<usize> = shape_s
        .split(',')
        .filter_map(|d| d.trim().parse().ok())
        .collect();
    let data = bytes[hstart + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (shape, data)
}

/// A reference prompt and its greedy continuation.
pub struct Greedy {
    pub prompt: Vec<u32>,
    pub generated: Vec<u32>,
}

pub fn read_greedy(path: &Path) -> Greedy {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("greedy json")).expect("json");
    let ids = |k: &str| -> Vec<u32> {
        v[k].as_array()
            .expect(k)
            .iter()
            .map(|x| x.as_u64().expect("id") as u32)
            .collect()
    };
    Greedy {
        prompt: ids("prompt"),
        generated: ids("generated"),
    }
}

pub fn load(model: &Path, opts: EngineOptions) -> Engine {
    Engine::load_blocking(model, opts, Arc::new(|_| {}))
        .unwrap_or_else(|e| panic!("{}: {e}", model.display()))
}

/// Greedy continuation of `prompt` for `n` tokens through the generation API.
pub fn greedy(engine: &Engine, prompt: &[u32], n: usize) -> (Vec<u32>, FinishReason) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: n,
        ..Default::default()
    };
    let mut gen = engine
        .generate(
            Prompt::Tokens {
                ids: prompt.to_vec(),
            },
            params,
        )
        .expect("generate");
    rt.block_on(async {
        let mut ids = Vec::new();
        while let Some(ev) = gen.events.recv().await {
            match ev {
                GenerationEvent::Text { tokens, .. } => ids.extend(tokens),
                GenerationEvent::Error { message } => panic!("generation failed: {message}"),
                GenerationEvent::Done { finish_reason, .. } => return (ids, finish_reason),
            }
        }
        panic!("stream ended without Done")
    })
}

/// Relative L2 error of every row: ||a - b|| / ||b||.
pub fn row_rel_l2(a: &[f32], b: &[f32], width: usize) -> Vec<f64> {
    a.chunks_exact(width)
        .zip(b.chunks_exact(width))
        .map(|(x, y)| {
            let num: f64 = x.iter().zip(y).map(|(p, q)| ((p - q) as f64).powi(2)).sum();
            let den: f64 = y.iter().map(|q| (*q as f64).powi(2)).sum();
            (num / den.max(1e-30)).sqrt()
        })
        .collect()
}

pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}
