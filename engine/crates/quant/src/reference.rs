//! Public reference entry points: size checks and dispatch to the per-type code.

use crate::{float, q4k, q5k, q6k, q8_0, GgmlDType, QuantError};

/// Whether `dtype` has reference (de)quantisation here.
pub fn is_supported(dtype: GgmlDType) -> bool {
    matches!(
        dtype,
        GgmlDType::F32
            | GgmlDType::F16
            | GgmlDType::BF16
            | GgmlDType::Q8_0
            | GgmlDType::Q4K
            | GgmlDType::Q5K
            | GgmlDType::Q6K
    )
}

/// Bytes that `n_elements` elements of `dtype` occupy; an error when the type is
/// unsupported or `n_elements` is not a whole number of blocks.
pub fn row_bytes(dtype: GgmlDType, n_elements: usize) -> Result<usize, QuantError> {
    if !is_supported(dtype) {
        return Err(QuantError::Unsupported(dtype));
    }
    let block = dtype.block_size();
    if !n_elements.is_multiple_of(block) {
        return Err(QuantError::PartialBlock {
            dtype,
            n: n_elements,
            block,
        });
    }
    (n_elements / block)
        .checked_mul(dtype.type_size())
        .ok_or(QuantError::Overflow(n_elements))
}

fn check(dtype: GgmlDType, n: usize, bytes: usize) -> Result<(), QuantError> {
    let expected = row_bytes(dtype, n)?;
    if bytes != expected {
        return Err(QuantError::ByteLength {
            dtype,
            n,
            expected,
            got: bytes,
        });
    }
    Ok(())
}

/// Decodes `dst.len()` elements of `dtype` from `src` (exactly [`row_bytes`] bytes).
pub fn dequantize(dtype: GgmlDType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check(dtype, dst.len(), src.len())?;
    match dtype {
        GgmlDType::F32 => float::dequant_f32(src, dst),
        GgmlDType::F16 => float::dequant_f16(src, dst),
        GgmlDType::BF16 => float::dequant_bf16(src, dst),
        GgmlDType::Q8_0 => q8_0::dequant(src, dst),
        GgmlDType::Q4K => q4k::dequant(src, dst),
        GgmlDType::Q5K => q5k::dequant(src, dst),
        GgmlDType::Q6K => q6k::dequant(src, dst),
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(())
}

/// Encodes `src` as `dtype` into `dst` (exactly [`row_bytes`] bytes) with ggml's
/// reference quantisers (no importance matrix).
pub fn quantize(dtype: GgmlDType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    check(dtype, src.len(), dst.len())?;
    match dtype {
        GgmlDType::F32 => float::quant_f32(src, dst),
        GgmlDType::F16 => float::quant_f16(src, dst),
        GgmlDType::BF16 => float::quant_bf16(src, dst),
        GgmlDType::Q8_0 => q8_0::quant(src, dst),
        GgmlDType::Q4K => q4k::quant(src, dst),
        GgmlDType::Q5K => q5k::quant(src, dst),
        GgmlDType::Q6K => q6k::quant(src, dst),
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{gaussian, rel_rms};

    /// Relative RMS round-trip error bounds for N(0,1) data, ~5 % above what these
    /// (ggml-equivalent) reference quantisers reach. Each follows from the step size,
    /// rounding error ≈ step/√12: Q8_0 step amax/127 with amax ≈ 2.2σ over 32 values
    /// → 0.54 %; Q6_K 16-value sub-blocks, step ≈ amax/32 plus 8-bit scales → 1.77 %;
    /// Q5_K 32-value affine sub-blocks, step ≈ range/31 refined by the scale search →
    /// 3.6 %; Q4_K the same with range/15 → ~7 %. The float types are bounded by their
    /// mantissa: f16 2^-11, bf16 2^-8 relative rounding.
    const BOUNDS: [(GgmlDType, f64); 7] = [
        (GgmlDType::F32, 0.0),
        (GgmlDType::F16, 3e-4),
        (GgmlDType::BF16, 2.5e-3),
        (GgmlDType::Q8_0, 0.006),
        (GgmlDType::Q6K, 0.019),
        (GgmlDType::Q5K, 0.038),
        (GgmlDType::Q4K, 0.075),
    ];

    #[test]
    fn round_trip_error_within_bounds() {
        let n = 256 * 64;
        let x = gaussian(n, 7, 1.0);
        for (dtype, bound) in BOUNDS {
            let mut q = vec![0u8; row_bytes(dtype, n).unwrap()];
            quantize(dtype, &x, &mut q).unwrap();
            let mut y = vec![0f32; n];
            dequantize(dtype, &q, &mut y).unwrap();
            let e = rel_rms(&x, &y);
            eprintln!("{dtype}: relative RMS error {e:.5}");
            assert!(e <= bound, "{dtype}: relative RMS error {e} > {bound}");
        }
    }

    #[test]
    fn round_trip_handles_scaled_and_degenerate_blocks() {
        // Tiny, huge, all-zero and all-positive blocks must not produce NaN/Inf.
        let n = 256 * 4;
        let mut x = gaussian(n, 3, 1e-3);
        x[256..512].iter_mut().for_each(|v| *v *= 1e6);
        x[512..768].fill(0.0);
        x[768..].iter_mut().for_each(|v| *v = v.abs() + 1.0);
        for (dtype, _) in BOUNDS {
            let mut q = vec![0u8; row_bytes(dtype, n).unwrap()];
            quantize(dtype, &x, &mut q).unwrap();
            let mut y = vec![0f32; n];
            dequantize(dtype, &q, &mut y).unwrap();
            assert!(
                y.iter().all(|v| v.is_finite()),
                "{dtype}: non-finite output"
            );
            assert!(
                y[512..768].iter().all(|&v| v == 0.0),
                "{dtype}: zero block not zero"
            );
            for blk in [0usize, 1, 3] {
                let r = blk * 256..(blk + 1) * 256;
                let e = rel_rms(&x[r.clone()], &y[r]);
                assert!(e < 0.1, "{dtype}: block {blk} relative error {e}");
            }
        }
    }

    #[test]
    fn sizes_are_checked() {
        assert_eq!(row_bytes(GgmlDType::Q4K, 512), Ok(288));
        assert_eq!(row_bytes(GgmlDType::Q8_0, 64), Ok(68));
        assert!(matches!(
            row_bytes(GgmlDType::Q6K, 100),
            Err(QuantError::PartialBlock { .. })
        ));
        assert!(matches!(
            row_bytes(GgmlDType::Q4_0, 32),
            Err(QuantError::Unsupported(_))
        ));
        let mut y = vec![0f32; 256];
        assert!(matches!(
            dequantize(GgmlDType::Q5K, &[0u8; 175], &mut y),
            Err(QuantError::ByteLength {
                expected: 176,
                got: 175,
                ..
            })
        ));
        let mut q = vec![0u8; 33];
        assert!(quantize(GgmlDType::Q8_0, &[0.0; 32], &mut q).is_err());
    }
}
