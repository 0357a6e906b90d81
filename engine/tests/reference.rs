//! The engine against Hugging Face transformers' `Qwen3MoeForCausalLM` on the committed
//! fixtures (see `tests/fixtures/README.md` for how they are made).

mod common;

use common::*;
use hmoe_engine::{EngineOptions, FinishReason};

/// F32 weights, f32 math on both sides: only summation order differs, so errors stay
/// at a few float32 ulps amplified through a few layers (measured ≈ 4e-7).
const F32_MAX_REL_L2: f64 = 1e-4;
/// Quantised weights in exact mode: the engine dequantises the same bytes to the same
/// f32 values as the reference did, so the F32 bound applies unchanged.
const EXACT_QUANT_MAX_REL_L2: f64 = 1e-4;
/// Fast mode quantises activations to 8 bits (Q8_0 / Q8_K) for the integer dot
/// products, ≈0.5% relative error per product. These random models have router
/// margins as small as 3.5e-4 (fixtures' meta files), so a few token positions route
/// to another expert and their logits move a lot. We bound the typical row error and
/// demand that nearly every position keeps its argmax.
const FAST_MEDIAN_REL_L2: f64 = 0.05;
const FAST_MIN_ARGMAX_AGREEMENT: f64 = 0.9;
/// The 300-token prompt is split into two prefill chunks, exercising the KV cache
/// across chunks.
const CHUNK: usize = 256;

fn opts(exact: bool) -> EngineOptions {
    EngineOptions {
        prefill_chunk: CHUNK,
        exact_math: exact,
        max_context: Some(512),
        ..Default::default()
    }
}

fn check_model(model: &str, tag: &str, exact: bool, max_rel: f64) {
    let dir = fixtures();
    let engine = load(&dir.join(format!("{model}.gguf")), opts(exact));
    let vocab = engine.info().config.vocab_size;
    for k in 0..4 {
        let g = read_greedy(&dir.join(format!("greedy_{tag}_{k}.json")));
        let (shape, want) = read_npy(&dir.join(format!("logits_{tag}_{k}.npy")));
        assert_eq!(shape, vec![g.prompt.len(), vocab], "{tag} prompt {k}");
        let got = engine.logits(g.prompt.clone(), CHUNK).expect("logits");
        let errs = row_rel_l2(&got, &want, vocab);
        let worst = errs.iter().cloned().fold(0.0, f64::max);
        assert!(
            worst <= max_rel,
            "{tag} prompt {k}: worst position rel L2 {worst:.3e} > {max_rel:e}"
        );
        let (ids, reason) = greedy(&engine, &g.prompt, g.generated.len());
        assert_eq!(reason, FinishReason::Length);
        assert_eq!(
            ids, g.generated,
            "{tag} prompt {k}: greedy continuation differs"
        );
    }
}

#[test]
fn f32_odd_head_dim_with_norm_topk_matches_transformers() {
    check_model("tiny-a", "tiny-a", false, F32_MAX_REL_L2);
}

#[test]
fn f32_without_norm_topk_matches_transformers() {
    check_model("tiny-b", "tiny-b", false, F32_MAX_REL_L2);
}

#[test]
fn q8_0_exact_matches_transformers_on_dequantised_weights() {
    check_model("small-q.q8_0", "small-q.q8_0", true, EXACT_QUANT_MAX_REL_L2);
}

#[test]
fn q4_k_exact_matches_transformers_on_dequantised_weights() {
    check_model("small-q.q4_k", "small-q.q4_k", true, EXACT_QUANT_MAX_REL_L2);
}

#[test]
fn q6_k_exact_matches_transformers_on_dequantised_weights() {
    check_model("small-q.q6_k", "small-q.q6_k", true, EXACT_QUANT_MAX_REL_L2);
}

#[test]
fn quantised_fast_path_stays_close_to_transformers() {
    let dir = fixtures();
    for tag in ["small-q.q8_0", "small-q.q4_k", "small-q.q6_k"] {
        let engine = load(&dir.join(format!("{tag}.gguf")), opts(false));
        let vocab = engine.info().config.vocab_size;
        let (mut errs, mut agree, mut total) = (Vec::new(), 0usize, 0usize);
        for k in 0..4 {
            let g = read_greedy(&dir.join(format!("greedy_{tag}_{k}.json")));
            let (_, want) = read_npy(&dir.join(format!("logits_{tag}_{k}.npy")));
            let got = engine.logits(g.prompt.clone(), CHUNK).expect("logits");
            errs.extend(row_rel_l2(&got, &want, vocab));
            for (a, b) in got.chunks_exact(vocab).zip(want.chunks_exact(vocab)) {
                agree += usize::from(argmax(a) == argmax(b));
                total += 1;
            }
        }
        errs.sort_by(f64::total_cmp);
        let median = errs[errs.len() / 2];
        let agreement = agree as f64 / total as f64;
        assert!(
            median <= FAST_MEDIAN_REL_L2,
            "{tag}: median rel L2 {median:.3e}"
        );
        assert!(
            agreement >= FAST_MIN_ARGMAX_AGREEMENT,
            "{tag}: argmax agreement {agreement:.3}"
        );
    }
}
