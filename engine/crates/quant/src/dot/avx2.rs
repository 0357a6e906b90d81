//! AVX2 + FMA + F16C kernels. Integer work in `maddubs` (u8 × i8 → i16 pairs, which
//! cannot saturate: weights ≤ 63 or |w| ≤ 128, activations |a| ≤ 127) and `madd`
//! (i16 × scale → i32); one f32 FMA per block.

use super::act;
use crate::act::ActRow;
use crate::q4k::scale_min_k4;
use crate::GgmlDType;
use core::arch::x86_64::*;
use half::f16;

#[inline(always)]
fn h(b: &[u8], off: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load(p: *const u8) -> __m256i {
    unsafe { _mm256_loadu_si256(p as *const __m256i) }
}

pub(super) fn select(dtype: GgmlDType) -> Option<super::RawDot> {
    Some(match dtype {
        GgmlDType::F32 => f32_,
        GgmlDType::F16 => f16_,
        GgmlDType::BF16 => bf16_,
        GgmlDType::Q8_0 => q8_0_,
        GgmlDType::Q4K => q4k_,
        GgmlDType::Q5K => q5k_,
        GgmlDType::Q6K => q6k_,
        _ => return None,
    })
}

#[target_feature(enable = "avx2,fma")]
unsafe fn f32_(w: &[u8], a: &ActRow<'_>) -> f32 {
    let a = act!(a, F32);
    let n = a.len();
    let (wp, ap) = (w.as_ptr() as *const f32, a.as_ptr());
    let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    unsafe {
        while i + 16 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(wp.add(i)), _mm256_loadu_ps(ap.add(i)), s0);
            s1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(wp.add(i + 8)),
                _mm256_loadu_ps(ap.add(i + 8)),
                s1,
            );
            i += 16;
        }
    }
    let acc = hsum_ps(_mm256_add_ps(s0, s1));
    acc + super::scalar::f32_f32(&w[4 * i..], &a[i..])
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_(w: &[u8], a: &ActRow<'_>) -> f32 {
    let a = act!(a, F32);
    let n = a.len();
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let mut s = _mm256_setzero_ps();
    let mut i = 0;
    unsafe {
        while i + 8 <= n {
            let wv = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(2 * i) as *const __m128i));
            s = _mm256_fmadd_ps(wv, _mm256_loadu_ps(ap.add(i)), s);
            i += 8;
        }
    }
    let acc = hsum_ps(s);
    acc + super::scalar::f16_f32(&w[2 * i..], &a[i..])
}

/// bf16 → f32 is a 16-bit left shift of the bit pattern.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bf16x8(p: *const u8) -> __m256 {
    unsafe {
        _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)),
            16,
        ))
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn bf16_(w: &[u8], a: &ActRow<'_>) -> f32 {
    let a = act!(a, BF16);
    let n = a.len();
    let (wp, ap) = (w.as_ptr(), a.as_ptr() as *const u8);
    let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    unsafe {
        while i + 16 <= n {
            s0 = _mm256_fmadd_ps(bf16x8(wp.add(2 * i)), bf16x8(ap.add(2 * i)), s0);
            s1 = _mm256_fmadd_ps(bf16x8(wp.add(2 * i + 16)), bf16x8(ap.add(2 * i + 16)), s1);
            i += 16;
        }
    }
    hsum_ps(_mm256_add_ps(s0, s1)) + super::scalar::bf16_bf16(&w[2 * i..], &a[i..])
}

/// Σ of signed i8 × signed i8 over 32 lanes as 8 i32 (sign moved onto `a`).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn dot_i8x32(w: __m256i, a: __m256i) -> __m256i {
    let p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
    _mm256_madd_epi16(p, _mm256_set1_epi16(1))
}

#[target_feature(enable = "avx2,fma")]
unsafe fn q8_0_(w: &[u8], a: &ActRow<'_>) -> f32 {
    let (qs, d) = act!(a, Q8_0);
    let mut acc = _mm256_setzero_ps();
    for (i, &da) in d.iter().enumerate() {
        let b = &w[34 * i..34 * i + 34];
        // SAFETY: block i has 32 value bytes at offset 2; `qs` has 32 per block.
        let (wv, av) = unsafe {
            (
                load(b.as_ptr().add(2)),
                load(qs.as_ptr().add(32 * i) as *const u8),
            )
        };
        let s = _mm256_cvtepi32_ps(dot_i8x32(wv, av));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h(b, 0) * da), s, acc);
    }
    hsum_ps(acc)
}

/// Σ over the 8 sub-blocks of the min term `m_j · Σa` of an affine k-quant block.
#[inline(always)]
pub(super) fn mins_dot(scales: &[u8], bsums: &[i16]) -> (i32, [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut msum = 0i32;
    for j in 0..8 {
        let (s, m) = scale_min_k4(j, scales);
        sc[j] = s;
        msum += m as i32 * (bsums[2 * j] as i32 + bsums[2 * j + 1] as i32);
    }
    (msum, sc)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn q4k_(w: &[u8], a: &ActRow<'_>) -> f32 {
    let (qs, d, bsums) = act!(a, Q8K);
    let m4 = _mm256_set1_epi8(0xF);
    let mut accf = _mm256_setzero_ps();
    let mut mins = 0f32;
    for (i, &da) in d.iter().enumerate() {
        let b = &w[144 * i..144 * i + 144];
        let (msum, sc) = mins_dot(&b[4..16], &bsums[16 * i..16 * i + 16]);
        mins += da * h(b, 2) * msum as f32;
        let mut acc = _mm256_setzero_si256();
        for c in 0..4 {
            // SAFETY: 32 nibble bytes per chunk at 16 + 32c; 64 activations per chunk.
            let (q, a0, a1) = unsafe {
                let qa = qs.as_ptr().add(256 * i + 64 * c) as *const u8;
                (
                    load(b.as_ptr().add(16 + 32 * c)),
                    load(qa),
                    load(qa.add(32)),
                )
            };
            let lo = _mm256_and_si256(q, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            let p0 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(lo, a0),
                _mm256_set1_epi16(sc[2 * c] as i16),
            );
            let p1 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(hi, a1),
                _mm256_set1_epi16(sc[2 * c + 1] as i16),
            );
            acc = _mm256_add_epi32(acc, _mm256_add_epi32(p0, p1));
        }
        accf = _mm256_fmadd_ps(_mm256_set1_ps(da * h(b, 0)), _mm256_cvtepi32_ps(acc), accf);
    }
    hsum_ps(accf) - mins
}

#[target_feature(enable = "avx2,fma")]
unsafe fn q5k_(w: &[u8], a: &ActRow<'_>) -> f32 {
    let (qs, d, bsums) = act!(a, Q8K);
    let m4 = _mm256_set1_epi8(0xF);
    let b16 = _mm256_set1_epi8(0x10);
    let mut accf = _mm256_setzero_ps();
    let mut mins = 0f32;
    for (i, &da) in d.iter().enumerate() {
        let b = &w[176 * i..176 * i + 176];
        let (msum, sc) = mins_dot(&b[4..16], &bsums[16 * i..16 * i + 16]);
        mins += da * h(b, 2) * msum as f32;
        // SAFETY: the 32 high-bit bytes sit at offset 16.
        let qh = unsafe { load(b.as_ptr().add(16)) };
        let mut acc = _mm256_setzero_si256();
        for c in 0..4 {
            // SAFETY: 32 nibble bytes per chunk at 48 + 32c; 64 activations per chunk.
            let (q, a0, a1) = unsafe {
                let qa = qs.as_ptr().add(256 * i + 64 * c) as *const u8;
                (
                    load(b.as_ptr().add(48 + 32 * c)),
                    load(qa),
                    load(qa.add(32)),
                )
            };
            let m0 = _mm256_set1_epi8(1 << (2 * c));
            let m1 = _mm256_set1_epi8(1 << (2 * c + 1));
            let h0 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, m0), m0), b16);
            let h1 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, m1), m1), b16);
            let lo = _mm256_or_si256(_mm256_and_si256(q, m4), h0);
            let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), h1);
            let p0 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(lo, a0),
                _mm256_set1_epi16(sc[2 * c] as i16),
            );
            let p1 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(hi, a1),
                _mm256_set1_epi16(sc[2 * c + 1] as i16),
            );
            acc = _mm256_add_epi32(acc, _mm256_add_epi32(p0, p1));
        }
        accf = _mm256_fmadd_ps(_mm256_set1_ps(da * h(b, 0)), _mm256_cvtepi32_ps(acc), accf);
    }
    hsum_ps(accf) - mins
}

/// Σ_j scale_j · bsum_j over the 16 sub-blocks: the `-32` offset of Q6_K values.
#[inline(always)]
pub(super) fn q6k_offset(scales: &[u8], bsums: &[i16]) -> i32 {
    scales
        .iter()
        .zip(bsums)
        .map(|(&s, &b)| (s as i8) as i32 * b as i32)
        .sum::<i32>()
        * 32
}

#[target_feature(enable = "avx2,fma")]
unsafe fn q6k_(w: &[u8], a: &ActRow<'_>) -> f32 {
    let (qs, d, bsums) = act!(a, Q8K);
    let m4 = _mm256_set1_epi8(0xF);
    let m3 = _mm256_set1_epi8(3);
    let mut accf = _mm256_setzero_ps();
    for (i, &da) in d.iter().enumerate() {
        let b = &w[210 * i..210 * i + 210];
        let offset = q6k_offset(&b[192..208], &bsums[16 * i..16 * i + 16]);
        let mut acc = _mm256_setzero_si256();
        for hf in 0..2 {
            // SAFETY: ql (64 bytes) at 64h, qh (32 bytes) at 128 + 32h; 128 activations.
            let (ql0, ql1, qh) = unsafe {
                (
                    load(b.as_ptr().add(64 * hf)),
                    load(b.as_ptr().add(64 * hf + 32)),
                    load(b.as_ptr().add(128 + 32 * hf)),
                )
            };
            for k in 0..4 {
                let ql = if k & 1 == 0 { ql0 } else { ql1 };
                let nib = if k < 2 {
                    _mm256_and_si256(ql, m4)
                } else {
                    _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4)
                };
                let hb =
                    _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k as i32)), m3);
                let q = _mm256_or_si256(nib, _mm256_slli_epi16(hb, 4));
                // SAFETY: activation elements 128h + 32k .. +32 are inside block i.
                let av = unsafe { load(qs.as_ptr().add(256 * i + 128 * hf + 32 * k) as *const u8) };
                let sa = b[192 + 8 * hf + 2 * k] as i8 as i16;
                let sb = b[192 + 8 * hf + 2 * k + 1] as i8 as i16;
                let s = _mm256_set_m128i(_mm_set1_epi16(sb), _mm_set1_epi16(sa));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(q, av), s));
            }
        }
        let acc = _mm256_sub_epi32(acc, _mm256_setr_epi32(offset, 0, 0, 0, 0, 0, 0, 0));
        accf = _mm256_fmadd_ps(
            _mm256_set1_ps(da * h(b, 208)),
            _mm256_cvtepi32_ps(acc),
            accf,
        );
    }
    hsum_ps(accf)
}
