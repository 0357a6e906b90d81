//! Every SIMD kernel against the scalar reference, and the scalar reference against
//! f64 math on the dequantised operands.

use super::{DotKernel, Isa};
use crate::act::{ActBuf, ActFormat, ActRow};
use crate::testutil::{gaussian, Rng};
use crate::{dequantize, quantize, row_bytes, GgmlDType};

pub(super) const TYPES: [GgmlDType; 7] = [
    GgmlDType::F32,
    GgmlDType::F16,
    GgmlDType::BF16,
    GgmlDType::Q8_0,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

/// SIMD and scalar kernels compute the same exact integer (or exactly-representable
/// product) sums per block and differ only in the order of f32 additions: error
/// ≤ n·ε·Σ|terms| in the worst case; 1e-5 relative to Σ|w·a| covers rows of a few
/// thousand elements with margin (typical error is ~1e-7).
pub(super) const SIMD_VS_SCALAR_REL: f64 = 1e-5;
/// The scalar kernel against f64 math on the dequantised weights and activations:
/// only f32 rounding of block scales and sums, same bound.
const SCALAR_VS_F64_REL: f64 = 1e-5;

pub(super) fn dequant_act(row: &ActRow<'_>) -> Vec<f64> {
    match row {
        ActRow::F32(v) => v.iter().map(|&x| x as f64).collect(),
        ActRow::BF16(v) => v
            .iter()
            .map(|&h| f32::from_bits((h as u32) << 16) as f64)
            .collect(),
        ActRow::Q8_0 { qs, d } => qs
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f64 * d[i / 32] as f64)
            .collect(),
        ActRow::Q8K { qs, d, .. } => qs
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f64 * d[i / 256] as f64)
            .collect(),
    }
}

pub(super) fn random_weights(dtype: GgmlDType, n: usize, seed: u64) -> Vec<u8> {
    let x = gaussian(n, seed, 0.05);
    let mut w = vec![0u8; row_bytes(dtype, n).unwrap()];
    quantize(dtype, &x, &mut w).unwrap();
    w
}

/// Raw random bytes with sane f16 scales: exercises every bit pattern of the
/// packed values (including Q6_K scale -128 and Q8_0 value -128).
pub(super) fn random_blocks(dtype: GgmlDType, n: usize, rng: &mut Rng) -> Vec<u8> {
    let mut w: Vec<u8> = (0..row_bytes(dtype, n).unwrap())
        .map(|_| rng.next_u64() as u8)
        .collect();
    let f16_offsets: &[usize] = match dtype {
        GgmlDType::Q8_0 => &[0],
        GgmlDType::Q4K | GgmlDType::Q5K => &[0, 2],
        GgmlDType::Q6K => &[208],
        _ => return random_weights(dtype, n, rng.next_u64()),
    };
    let bs = dtype.type_size();
    for b in w.chunks_exact_mut(bs) {
        for &o in f16_offsets {
            let v = half::f16::from_f32((rng.uniform() as f32 - 0.5) * 0.01);
            b[o..o + 2].copy_from_slice(&v.to_bits().to_le_bytes());
        }
    }
    w
}

pub(super) fn available() -> Vec<Isa> {
    let isas: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.is_available()).collect();
    for i in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        eprintln!(
            "note: {} kernels not tested: this CPU lacks the instructions",
            i.name()
        );
    }
    isas
}

pub(super) fn abs_sum(w: &[u8], dtype: GgmlDType, a: &[f64]) -> f64 {
    let mut wf = vec![0f32; a.len()];
    dequantize(dtype, w, &mut wf).unwrap();
    wf.iter()
        .zip(a)
        .map(|(&x, &y)| (x as f64 * y).abs())
        .sum::<f64>()
        .max(1e-30)
}

#[test]
fn simd_kernels_match_scalar_on_random_rows() {
    let mut rng = Rng::new(42);
    let isas = available();
    // Row lengths: one block, odd block counts, and the model's 768 / 2048.
    for &n in &[256usize, 768, 1280, 2048, 2304] {
        for dtype in TYPES {
            let format = ActFormat::for_weights(dtype).unwrap();
            let x = gaussian(n * 3, rng.next_u64(), 1.5);
            let mut acts = ActBuf::new(format);
            acts.quantize(&x, n).unwrap();
            let scalar = DotKernel::new(dtype, Isa::Scalar).unwrap();
            for trial in 0..4 {
                let w = if trial % 2 == 0 {
                    random_weights(dtype, n, rng.next_u64())
                } else {
                    random_blocks(dtype, n, &mut rng)
                };
                for r in 0..acts.rows() {
                    let a = acts.row(r).unwrap();
                    let reference = scalar.dot(&w, &a).unwrap() as f64;
                    let scale = abs_sum(&w, dtype, &dequant_act(&a));
                    for &isa in &isas {
                        let got = DotKernel::new(dtype, isa).unwrap().dot(&w, &a).unwrap() as f64;
                        let rel = (got - reference).abs() / scale;
                        assert!(
                            rel <= SIMD_VS_SCALAR_REL,
                            "{dtype} {} n={n}: {got} vs scalar {reference} (rel {rel:e})",
                            isa.name()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn scalar_kernels_match_f64_math() {
    let mut rng = Rng::new(7);
    for dtype in TYPES {
        let n = 1024;
        let w = random_blocks(dtype, n, &mut rng);
        let mut wf = vec![0f32; n];
        dequantize(dtype, &w, &mut wf).unwrap();
        let mut acts = ActBuf::new(ActFormat::for_weights(dtype).unwrap());
        acts.quantize(&gaussian(n, rng.next_u64(), 1.0), n).unwrap();
        let a = acts.row(0).unwrap();
        let af = dequant_act(&a);
        let exact: f64 = wf.iter().zip(&af).map(|(&x, &y)| x as f64 * y).sum();
        let got = DotKernel::new(dtype, Isa::Scalar)
            .unwrap()
            .dot(&w, &a)
            .unwrap() as f64;
        let rel = (got - exact).abs() / abs_sum(&w, dtype, &af);
        assert!(
            rel <= SCALAR_VS_F64_REL,
            "{dtype}: scalar {got} vs f64 {exact} (rel {rel:e})"
        );
    }
}

#[test]
fn mismatched_operands_are_errors() {
    let k = DotKernel::new(GgmlDType::Q4K, Isa::Scalar).unwrap();
    let mut acts = ActBuf::new(ActFormat::Q8K);
    acts.quantize(&[0.5; 512], 512).unwrap();
    let a = acts.row(0).unwrap();
    assert!(
        k.dot(&[0u8; 144], &a).is_err(),
        "one block of weights for two of activations"
    );
    let mut f = ActBuf::new(ActFormat::F32);
    f.quantize(&[0.5; 512], 512).unwrap();
    assert!(
        k.dot(&[0u8; 288], &f.row(0).unwrap()).is_err(),
        "f32 activations for Q4_K"
    );
    assert!(DotKernel::new(GgmlDType::Q4_0, Isa::Scalar).is_err());
}

#[test]
fn float_kernels_handle_ragged_lengths() {
    let mut rng = Rng::new(99);
    for dtype in [GgmlDType::F32, GgmlDType::F16, GgmlDType::BF16] {
        for n in [1usize, 7, 15, 17, 33, 63, 65, 1001] {
            let w = random_weights(dtype, n, rng.next_u64());
            let mut acts = ActBuf::new(ActFormat::for_weights(dtype).unwrap());
            acts.quantize(&gaussian(n, rng.next_u64(), 1.0), n).unwrap();
            let a = acts.row(0).unwrap();
            let reference = DotKernel::new(dtype, Isa::Scalar)
                .unwrap()
                .dot(&w, &a)
                .unwrap() as f64;
            let scale = abs_sum(&w, dtype, &dequant_act(&a));
            for isa in available() {
                let got = DotKernel::new(dtype, isa).unwrap().dot(&w, &a).unwrap() as f64;
                let rel = (got - reference).abs() / scale;
                assert!(
                    rel <= SIMD_VS_SCALAR_REL,
                    "{dtype} {} n={n}: {got} vs {reference}",
                    isa.name()
                );
            }
        }
    }
}

#[test]
fn blocked_multi_row_kernels_match_single_dots() {
    let mut rng = Rng::new(2024);
    let isas = available();
    for dtype in TYPES {
        let n = 768;
        let w = random_blocks(dtype, n, &mut rng);
        let mut acts = ActBuf::new(ActFormat::for_weights(dtype).unwrap());
        acts.quantize(&gaussian(9 * n, rng.next_u64(), 1.0), n)
            .unwrap();
        let rows: Vec<ActRow<'_>> = (0..9).map(|r| acts.row(r).unwrap()).collect();
        let scalar = DotKernel::new(dtype, Isa::Scalar).unwrap();
        for &isa in &isas {
            let k = DotKernel::new(dtype, isa).unwrap();
            // 1..=9 rows: every remainder of the 4-row blocking.
            for count in 1..=rows.len() {
                let mut out = vec![f32::NAN; count];
                k.dot_rows(&w, &rows[..count], &mut out).unwrap();
                for (r, &got) in out.iter().enumerate() {
                    let want = scalar.dot(&w, &rows[r]).unwrap() as f64;
                    let scale = abs_sum(&w, dtype, &dequant_act(&rows[r]));
                    let rel = (got as f64 - want).abs() / scale;
                    assert!(
                        rel <= SIMD_VS_SCALAR_REL,
                        "{dtype} {} {count} rows, row {r}: {got} vs {want}",
                        isa.name()
                    );
                }
            }
        }
    }
    // Mismatched rows are errors, not garbage.
    let k = DotKernel::new(GgmlDType::Q8_0, Isa::best()).unwrap();
    let mut a = ActBuf::new(ActFormat::Q8_0);
    a.quantize(&[0.25; 64], 32).unwrap();
    let mut b = ActBuf::new(ActFormat::Q8_0);
    b.quantize(&[0.25; 64], 64).unwrap();
    let mut out = [0f32; 2];
    assert!(k
        .dot_rows(
            &[0u8; 34],
            &[a.row(0).unwrap(), b.row(0).unwrap()],
            &mut out
        )
        .is_err());
    assert!(k
        .dot_rows(&[0u8; 34], &[a.row(0).unwrap()], &mut out)
        .is_err());
}

#[test]
fn q8_0_blocked_kernels_handle_odd_block_counts() {
    // 1, 3, 17 and 25 blocks: partial 16-block scale groups and an odd last block pair.
    let mut rng = Rng::new(96);
    let dtype = GgmlDType::Q8_0;
    let scalar = DotKernel::new(dtype, Isa::Scalar).unwrap();
    for n in [32usize, 96, 544, 800] {
        let w = random_blocks(dtype, n, &mut rng);
        let mut acts = ActBuf::new(ActFormat::Q8_0);
        acts.quantize(&gaussian(5 * n, rng.next_u64(), 1.0), n)
            .unwrap();
        let rows: Vec<ActRow<'_>> = (0..5).map(|r| acts.row(r).unwrap()).collect();
        for isa in available() {
            let k = DotKernel::new(dtype, isa).unwrap();
            for count in 1..=rows.len() {
                let mut out = vec![f32::NAN; count];
                k.dot_rows(&w, &rows[..count], &mut out).unwrap();
                for (r, &got) in out.iter().enumerate() {
                    let want = scalar.dot(&w, &rows[r]).unwrap() as f64;
                    let scale = abs_sum(&w, dtype, &dequant_act(&rows[r]));
                    let rel = (got as f64 - want).abs() / scale;
                    assert!(
                        rel <= SIMD_VS_SCALAR_REL,
                        "{} n={n} {count} rows, row {r}: {got} vs {want}",
                        isa.name()
                    );
                }
            }
        }
    }
}
