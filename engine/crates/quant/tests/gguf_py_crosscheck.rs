//! Independent check of the ggml bit layouts: random blocks dequantised by gguf-py
//! (llama.cpp's own Python package, numpy code) must match ours. Fixtures are made
//! by `fixtures/make_fixtures.py`.

use hmoe_quant::{dequantize, quantize, row_bytes, GgmlDType};
use std::path::PathBuf;

// No tolerance: both sides compute `(d * scale) * q - (dmin * min)` in f32 in the
// same order, so every value must be bit-identical.

fn fixture(name: &str, ext: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.{ext}"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading fixture {}: {e}", p.display()))
}

fn check(name: &str, dtype: GgmlDType) {
    let blocks = fixture(name, "blocks");
    let expected: Vec<f32> = fixture(name, "f32")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert!(!expected.is_empty(), "{name}: empty fixture");
    let mut got = vec![0f32; expected.len()];
    dequantize(dtype, &blocks, &mut got).unwrap();
    for (i, (&e, &g)) in expected.iter().zip(&got).enumerate() {
        assert!(e.is_finite(), "{name}[{i}]: fixture value not finite");
        assert_eq!(
            e.to_bits(),
            g.to_bits(),
            "{name}[{i}]: gguf-py {e}, ours {g}"
        );
    }
}

fn check_quantize(name: &str, dtype: GgmlDType) {
    let x: Vec<f32> = fixture(&format!("{name}_quant"), "input")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let expected = fixture(&format!("{name}_quant"), "blocks");
    let mut got = vec![0u8; row_bytes(dtype, x.len()).unwrap()];
    quantize(dtype, &x, &mut got).unwrap();
    assert_eq!(got.len(), expected.len(), "{name}: encoded size");
    let diff = got.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(diff, None, "{name}: first differing byte");
}

#[test]
fn quantizers_match_gguf_py() {
    check_quantize("q8_0", GgmlDType::Q8_0);
    check_quantize("f16", GgmlDType::F16);
    check_quantize("bf16", GgmlDType::BF16);
}

#[test]
fn q8_0_matches_gguf_py() {
    check("q8_0", GgmlDType::Q8_0);
}

#[test]
fn q4_k_matches_gguf_py() {
    check("q4_k", GgmlDType::Q4K);
}

#[test]
fn q5_k_matches_gguf_py() {
    check("q5_k", GgmlDType::Q5K);
}

#[test]
fn q6_k_matches_gguf_py() {
    check("q6_k", GgmlDType::Q6K);
}

#[test]
fn float_types_match_gguf_py() {
    check("f32", GgmlDType::F32);
    check("f16", GgmlDType::F16);
    check("bf16", GgmlDType::BF16);
}
