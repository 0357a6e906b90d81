//! AVX2 + FMA + F16C kernels. Integer work in `maddubs` (u8 × i8 → i16 pairs, which
//! cannot saturate: weights ≤ 63 or |w| ≤ 128, activations |a| ≤ 127) and `madd`
//! (i16 × scale → i32); one f32 FMA per block.

use super::act;
use super::avx512q::{f16c, unpack_k4};
use crate::act::ActRow;
use crate::GgmlDType;
use core::arch::x86_64::*;

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
        GgmlDType::Q8_0 => q8_0_1,
        GgmlDType::Q4K => q4k_1,
        GgmlDType::Q5K => q5k_1,
        GgmlDType::Q6K => q6k_1,
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

#[inline]
#[target_feature(enable = "sse3")]
fn hsum128(v: __m128) -> f32 {
    let s = _mm_add_ps(v, _mm_movehl_ps(v, v));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Extracts the Q8_K arrays of each row (`None` on a format mismatch).
#[inline(always)]
#[allow(clippy::type_complexity)]
fn q8k_rows<const N: usize>(
    acts: &[ActRow<'_>],
) -> Option<(
    [*const i8; N],
    [*const f32; N],
    [*const i16; N],
    [*const i16; N],
)> {
    let mut q = [core::ptr::null(); N];
    let mut d = [core::ptr::null(); N];
    let mut b = [core::ptr::null(); N];
    let mut b32 = [core::ptr::null(); N];
    for t in 0..N {
        let ActRow::Q8K {
            qs,
            d: ds,
            bsums,
            bsums32,
        } = acts.get(t)?
        else {
            return None;
        };
        q[t] = qs.as_ptr();
        d[t] = ds.as_ptr();
        b[t] = bsums.as_ptr();
        b32[t] = bsums32.as_ptr();
    }
    Some((q, d, b, b32))
}

macro_rules! single {
    ($name:ident, $multi:ident) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name(w: &[u8], a: &ActRow<'_>) -> f32 {
            let mut o = [0f32];
            unsafe { $multi::<1>(w, core::slice::from_ref(a), &mut o) };
            o[0]
        }
    };
}
single!(q4k_1, q4k_n);
single!(q5k_1, q5k_n);
single!(q6k_1, q6k_n);
single!(q8_0_1, q8_0_n);

/// Affine k-quant body shared by Q4_K (`HIGH = false`) and Q5_K (`HIGH = true`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn affine_k<const N: usize, const HIGH: bool>(
    w: &[u8],
    acts: &[ActRow<'_>],
    out: &mut [f32],
) {
    let Some((qs, ds, _, bs32)) = q8k_rows::<N>(acts) else {
        return;
    };
    let bsz = if HIGH { 176 } else { 144 };
    let qoff = if HIGH { 48 } else { 16 };
    let nb = w.len() / bsz;
    unsafe {
        let m4 = _mm256_set1_epi8(0xF);
        let b16 = _mm256_set1_epi8(0x10);
        let mut accf = [_mm256_setzero_ps(); N];
        let mut minf = [_mm_setzero_ps(); N];
        for i in 0..nb {
            let b = w.as_ptr().add(bsz * i);
            let (d, dmin) = (f16c(b), f16c(b.add(2)));
            let (sc8, m8) = unpack_k4(b.add(4));
            let m16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(m8 as i64));
            let qh = if HIGH { load(b.add(16)) } else { m4 };
            let mut acc = [_mm256_setzero_si256(); N];
            for c in 0..4 {
                let q = load(b.add(qoff + 32 * c));
                let mut lo = _mm256_and_si256(q, m4);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                if HIGH {
                    let m0 = _mm256_set1_epi8(1 << (2 * c));
                    let m1 = _mm256_set1_epi8((1u8 << (2 * c + 1)) as i8);
                    lo = _mm256_or_si256(
                        lo,
                        _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, m0), m0), b16),
                    );
                    hi = _mm256_or_si256(
                        hi,
                        _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, m1), m1), b16),
                    );
                }
                let s0 = _mm256_set1_epi16(((sc8 >> (16 * c)) & 0xFF) as i16);
                let s1 = _mm256_set1_epi16(((sc8 >> (16 * c + 8)) & 0xFF) as i16);
                for t in 0..N {
                    let qa = qs[t].add(256 * i + 64 * c) as *const u8;
                    let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load(qa)), s0);
                    let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load(qa.add(32))), s1);
                    acc[t] = _mm256_add_epi32(acc[t], _mm256_add_epi32(p0, p1));
                }
            }
            for t in 0..N {
                let da = *ds[t].add(i);
                accf[t] =
                    _mm256_fmadd_ps(_mm256_set1_ps(d * da), _mm256_cvtepi32_ps(acc[t]), accf[t]);
                let mt = _mm_madd_epi16(m16, _mm_loadu_si128(bs32[t].add(8 * i) as *const __m128i));
                minf[t] = _mm_fmadd_ps(_mm_set1_ps(dmin * da), _mm_cvtepi32_ps(mt), minf[t]);
            }
        }
        for t in 0..N {
            out[t] = hsum_ps(accf[t]) - hsum128(minf[t]);
        }
    }
}

/// Q4_K weights × N Q8_K rows.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_n<const N: usize>(w: &[u8], acts: &[ActRow<'_>], out: &mut [f32]) {
    unsafe { affine_k::<N, false>(w, acts, out) }
}

/// Q5_K weights × N Q8_K rows.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5k_n<const N: usize>(w: &[u8], acts: &[ActRow<'_>], out: &mut [f32]) {
    unsafe { affine_k::<N, true>(w, acts, out) }
}

/// Q6_K weights × N Q8_K rows.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_n<const N: usize>(w: &[u8], acts: &[ActRow<'_>], out: &mut [f32]) {
    let Some((qs, ds, bs, _)) = q8k_rows::<N>(acts) else {
        return;
    };
    let nb = w.len() / 210;
    unsafe {
        let m4 = _mm256_set1_epi8(0xF);
        let m3 = _mm256_set1_epi8(3);
        let mut accf = [_mm256_setzero_ps(); N];
        for i in 0..nb {
            let b = w.as_ptr().add(210 * i);
            let d = f16c(b.add(208));
            let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(192) as *const __m128i));
            let mut acc = [_mm256_setzero_si256(); N];
            for hf in 0..2 {
                let (ql0, ql1, qh) = (
                    load(b.add(64 * hf)),
                    load(b.add(64 * hf + 32)),
                    load(b.add(128 + 32 * hf)),
                );
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
                    let sa = *b.add(192 + 8 * hf + 2 * k) as i8 as i16;
                    let sb = *b.add(192 + 8 * hf + 2 * k + 1) as i8 as i16;
                    let s = _mm256_set_m128i(_mm_set1_epi16(sb), _mm_set1_epi16(sa));
                    for t in 0..N {
                        let av = load(qs[t].add(256 * i + 128 * hf + 32 * k) as *const u8);
                        acc[t] = _mm256_add_epi32(
                            acc[t],
                            _mm256_madd_epi16(_mm256_maddubs_epi16(q, av), s),
                        );
                    }
                }
            }
            for t in 0..N {
                // Values are stored +32: subtract 32 · Σ_j scale_j · bsum_j.
                let off = _mm256_madd_epi16(
                    sc16,
                    _mm256_loadu_si256(bs[t].add(16 * i) as *const __m256i),
                );
                let a = _mm256_sub_epi32(acc[t], _mm256_slli_epi32(off, 5));
                accf[t] = _mm256_fmadd_ps(
                    _mm256_set1_ps(d * *ds[t].add(i)),
                    _mm256_cvtepi32_ps(a),
                    accf[t],
                );
            }
        }
        for t in 0..N {
            out[t] = hsum_ps(accf[t]);
        }
    }
}

/// Q8_0 weights × N Q8_0 rows.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_n<const N: usize>(w: &[u8], acts: &[ActRow<'_>], out: &mut [f32]) {
    let mut qs = [core::ptr::null::<i8>(); N];
    let mut ds = [core::ptr::null::<f32>(); N];
    for t in 0..N {
        let Some(ActRow::Q8_0 { qs: q, d }) = acts.get(t) else {
            return;
        };
        qs[t] = q.as_ptr();
        ds[t] = d.as_ptr();
    }
    let nb = w.len() / 34;
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut accf = [_mm256_setzero_ps(); N];
        for i in 0..nb {
            let b = w.as_ptr().add(34 * i);
            let wv = load(b.add(2));
            let aw = _mm256_sign_epi8(wv, wv);
            let dw = f16c(b);
            for t in 0..N {
                let av = load(qs[t].add(32 * i) as *const u8);
                let s = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(av, wv)), ones);
                accf[t] = _mm256_fmadd_ps(
                    _mm256_set1_ps(dw * *ds[t].add(i)),
                    _mm256_cvtepi32_ps(s),
                    accf[t],
                );
            }
        }
        for t in 0..N {
            out[t] = hsum_ps(accf[t]);
        }
    }
}

/// The N-row kernels for `dtype` (index `n - 1`).
pub(super) fn select_multi(dtype: GgmlDType) -> Option<[super::RawDotN; 4]> {
    Some(match dtype {
        GgmlDType::Q8_0 => [q8_0_n::<1>, q8_0_n::<2>, q8_0_n::<3>, q8_0_n::<4>],
        GgmlDType::Q4K => [q4k_n::<1>, q4k_n::<2>, q4k_n::<3>, q4k_n::<4>],
        GgmlDType::Q5K => [q5k_n::<1>, q5k_n::<2>, q5k_n::<3>, q5k_n::<4>],
        GgmlDType::Q6K => [q6k_n::<1>, q6k_n::<2>, q6k_n::<3>, q6k_n::<4>],
        _ => return None,
    })
}
