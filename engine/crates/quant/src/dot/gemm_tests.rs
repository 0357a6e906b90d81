//! The tiled GEMM path against the plain reference (dequantised weights × dequantised
//! activations in f64) and against the single-row kernels, at odd sizes.

use super::tests::{
    abs_sum, available, dequant_act, random_blocks, random_weights, SIMD_VS_SCALAR_REL, TYPES,
};
use super::{DotKernel, Isa, GEMM_TILE_ROWS, GEMM_TILE_TOKENS};
use crate::act::{ActBuf, ActFormat, ActRow};
use crate::testutil::{gaussian, Rng};
use crate::{dequantize, row_bytes, GgmlDType};

/// Tile kernels and the reference differ only in f32 rounding: the integer block sums
/// are exact in both, the block scales are the same f32 products, and only the order
/// of the f32 additions across blocks (and of the Q4_K/Q5_K min term) changes. Same
/// bound as SIMD vs scalar, relative to Σ|w·a|.
const GEMM_VS_REFERENCE_REL: f64 = SIMD_VS_SCALAR_REL;

/// `n` values per row: one block, odd block counts (a Q8_0 row of 96 has an odd last
/// block pair; 544 = 17 Q8_0 blocks crosses the 16-block scale group), the model's 768.
fn lengths(dtype: GgmlDType) -> &'static [usize] {
    match dtype {
        GgmlDType::Q8_0 => &[32, 96, 544, 768],
        _ => &[256, 768, 1280],
    }
}

/// Checks `gemm` for `rows × tokens` against f64 math on the dequantised operands,
/// writing through a strided output with a guard value around every used element.
fn check(dtype: GgmlDType, isa: Isa, n: usize, rows: usize, tokens: usize, rng: &mut Rng) {
    let rb = row_bytes(dtype, n).unwrap();
    let mut w = Vec::with_capacity(rows * rb);
    for r in 0..rows {
        if r % 2 == 0 {
            w.extend(random_weights(dtype, n, rng.next_u64()));
        } else {
            w.extend(random_blocks(dtype, n, rng));
        }
    }
    let mut acts = ActBuf::new(ActFormat::for_weights(dtype).unwrap());
    acts.quantize(&gaussian(tokens * n, rng.next_u64(), 1.3), n)
        .unwrap();
    let a: Vec<ActRow<'_>> = (0..tokens).map(|t| acts.row(t).unwrap()).collect();
    let af: Vec<Vec<f64>> = a.iter().map(dequant_act).collect();
    // Token-major output with a gap column: out[t * (rows + 1) + r].
    let (rs, ts) = (1, rows + 1);
    let mut out = vec![f32::NAN; tokens * ts];
    let k = DotKernel::new(dtype, isa).unwrap();
    k.gemm(&w, rows, &a, &mut out, rs, ts).unwrap();
    let mut wf = vec![0f32; n];
    for r in 0..rows {
        let wr = &w[r * rb..(r + 1) * rb];
        dequantize(dtype, wr, &mut wf).unwrap();
        for t in 0..tokens {
            let exact: f64 = wf.iter().zip(&af[t]).map(|(&x, &y)| x as f64 * y).sum();
            let got = out[r * rs + t * ts] as f64;
            let rel = (got - exact).abs() / abs_sum(wr, dtype, &af[t]);
            assert!(
                rel <= GEMM_VS_REFERENCE_REL,
                "{dtype} {} n={n} {rows}×{tokens}: row {r} token {t}: {got} vs {exact} (rel {rel:e})",
                isa.name()
            );
        }
    }
    for t in 0..tokens {
        assert!(out[t * ts + rows].is_nan(), "gemm wrote outside its tile");
    }
}

#[test]
fn gemm_matches_reference_at_odd_sizes() {
    let mut rng = Rng::new(77);
    for dtype in TYPES {
        for isa in available() {
            for &n in lengths(dtype) {
                // Every remainder of the row and token tiles, plus a few larger counts.
                for rows in 1..=2 * GEMM_TILE_ROWS + 1 {
                    for tokens in 1..=2 * GEMM_TILE_TOKENS + 1 {
                        check(dtype, isa, n, rows, tokens, &mut rng);
                    }
                }
                check(dtype, isa, n, 7, 33, &mut rng);
            }
        }
    }
}

#[test]
fn gemm_handles_512_tokens() {
    let mut rng = Rng::new(512);
    for dtype in [
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ] {
        for isa in available() {
            check(dtype, isa, 256, 3, 512, &mut rng);
        }
    }
}

#[test]
fn tiled_levels_are_reported() {
    for dtype in [
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ] {
        assert!(!DotKernel::new(dtype, Isa::Scalar).unwrap().has_gemm());
        for isa in [Isa::Avx512, Isa::Avx512Bf16] {
            if isa.is_available() {
                assert!(DotKernel::new(dtype, isa).unwrap().has_gemm(), "{dtype}");
            }
        }
    }
}

#[test]
fn gemm_rejects_bad_shapes() {
    let k = DotKernel::new(GgmlDType::Q4K, Isa::best()).unwrap();
    let mut acts = ActBuf::new(ActFormat::Q8K);
    acts.quantize(&[0.5; 512], 256).unwrap();
    let a = [acts.row(0).unwrap(), acts.row(1).unwrap()];
    let w = vec![0u8; 2 * 144];
    let mut out = [0f32; 4];
    assert!(k.gemm(&w, 2, &a, &mut out, 2, 1).is_ok());
    assert!(
        k.gemm(&w, 3, &a, &mut out, 2, 1).is_err(),
        "bytes for 2 rows, 3 claimed"
    );
    assert!(
        k.gemm(&w, 2, &a, &mut out[..3], 2, 1).is_err(),
        "output too short"
    );
    let mut f = ActBuf::new(ActFormat::F32);
    f.quantize(&[0.5; 256], 256).unwrap();
    assert!(k
        .gemm(&w[..144], 1, &[f.row(0).unwrap()], &mut out, 1, 1)
        .is_err());
}
