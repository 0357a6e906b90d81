//! AVX2 activation quantisers, bit-identical to the scalar ones in `act`: the same
//! scale arithmetic, and `vcvtps2dq` rounds half to even like `nearest_int` (the
//! scalar `round_ties_even` is a libm call on baseline x86-64, ~4 ns a value, which
//! cost ~7 % of a decode layer).

use core::arch::x86_64::*;

/// max |x| over `x` (a multiple of 8 values).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn amax8(x: &[f32]) -> f32 {
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_setzero_ps();
    for c in x.chunks_exact(8) {
        let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v));
    }
    let h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    _mm_cvtss_f32(h)
}

/// `round_half_even(x * scale)` clamped to -127..=127, 32 values into `q`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn round32(x: &[f32], scale: f32, q: &mut [i8]) {
    let s = _mm256_set1_ps(scale);
    unsafe {
        let r =
            |k: usize| _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(8 * k)), s));
        let ab = _mm256_packs_epi32(r(0), r(1));
        let cd = _mm256_packs_epi32(r(2), r(3));
        let abcd = _mm256_packs_epi16(ab, cd);
        let ordered = _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        let clamped = _mm256_max_epi8(ordered, _mm256_set1_epi8(-127));
        _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, clamped);
    }
}

/// See `act::quantize_q8_0_scalar`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn quantize_q8_0_avx2(x: &[f32], qs: &mut [i8], d: &mut [f32]) {
    for ((xb, qb), db) in x
        .chunks_exact(32)
        .zip(qs.chunks_exact_mut(32))
        .zip(d.iter_mut())
    {
        let amax = unsafe { amax8(xb) };
        let scale = amax / 127.0;
        let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        *db = scale;
        unsafe { round32(xb, id, qb) };
    }
}

/// See `act::quantize_q8k_scalar`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn quantize_q8k_avx2(
    x: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    bsums: &mut [i16],
    bsums32: &mut [i16],
) {
    for ((((xb, qb), db), sb), s32) in x
        .chunks_exact(256)
        .zip(qs.chunks_exact_mut(256))
        .zip(d.iter_mut())
        .zip(bsums.chunks_exact_mut(16))
        .zip(bsums32.chunks_exact_mut(8))
    {
        let amax = unsafe { amax8(xb) };
        if amax == 0.0 {
            *db = 0.0;
            qb.fill(0);
            sb.fill(0);
            s32.fill(0);
            continue;
        }
        // The signed value of the first element of largest magnitude, as the scalar scan.
        let max = xb.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
        let iscale = -127.0 / max;
        for (xc, qc) in xb.chunks_exact(32).zip(qb.chunks_exact_mut(32)) {
            unsafe { round32(xc, iscale, qc) };
        }
        for (s, q16) in sb.iter_mut().zip(qb.chunks_exact(16)) {
            *s = q16.iter().map(|&q| q as i16).sum();
        }
        for (s, pair) in s32.iter_mut().zip(sb.chunks_exact(2)) {
            *s = pair[0] + pair[1];
        }
        *db = 1.0 / iscale;
    }
}

#[cfg(test)]
mod tests {
    use crate::act::{quantize_q8_0_scalar, quantize_q8k_scalar};
    use crate::testutil::Rng;

    #[test]
    fn simd_quantisers_are_bit_identical_to_scalar() {
        if !crate::Isa::Avx2.is_available() {
            eprintln!("note: AVX2 activation quantisers not tested: this CPU lacks AVX2");
            return;
        }
        let mut rng = Rng::new(5);
        let n = 256 * 6;
        let mut x: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 3.0).collect();
        x[256..512].fill(0.0);
        // Ties: values that land exactly on .5 after scaling, and equal-magnitude signs.
        for (i, v) in x[512..768].iter_mut().enumerate() {
            *v = (i as f32 - 128.0) * 0.5;
        }
        x[768] = -7.0;
        x[769] = 7.0;
        let (mut q1, mut q2) = (vec![0i8; n], vec![0i8; n]);
        let (mut d1, mut d2) = (vec![0f32; n / 32], vec![0f32; n / 32]);
        quantize_q8_0_scalar(&x, &mut q1, &mut d1);
        // SAFETY: AVX2 checked above.
        unsafe { super::quantize_q8_0_avx2(&x, &mut q2, &mut d2) };
        assert_eq!(q1, q2, "Q8_0 values");
        assert_eq!(d1, d2, "Q8_0 scales");
        let (mut b1, mut b2) = (vec![0i16; n / 16], vec![0i16; n / 16]);
        let (mut c1, mut c2) = (vec![0i16; n / 32], vec![0i16; n / 32]);
        let (mut e1, mut e2) = (vec![0f32; n / 256], vec![0f32; n / 256]);
        quantize_q8k_scalar(&x, &mut q1, &mut e1, &mut b1, &mut c1);
        // SAFETY: AVX2 checked above.
        unsafe { super::quantize_q8k_avx2(&x, &mut q2, &mut e2, &mut b2, &mut c2) };
        assert_eq!(q1, q2, "Q8_K values");
        assert_eq!(e1, e2, "Q8_K scales");
        assert_eq!(b1, b2, "Q8_K 16-sums");
        assert_eq!(c1, c2, "Q8_K 32-sums");
    }
}
