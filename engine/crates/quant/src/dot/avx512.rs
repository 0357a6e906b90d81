//! AVX-512 float kernels (F32, F16, BF16 via FMA, and `vdpbf16ps` where AVX512_BF16
//! is present). The quantised kernels live in `avx512q`.

use super::act;
use crate::act::ActRow;
use crate::GgmlDType;
use core::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load(p: *const u8) -> __m512i {
    unsafe { _mm512_loadu_si512(p as *const __m512i) }
}

pub(super) fn select(dtype: GgmlDType) -> Option<super::RawDot> {
    Some(match dtype {
        GgmlDType::F32 => f32_,
        GgmlDType::F16 => f16_,
        GgmlDType::BF16 => bf16_fma,
        GgmlDType::Q8_0 => super::avx512q::q8_0_1,
        GgmlDType::Q4K => super::avx512q::q4k_1,
        GgmlDType::Q5K => super::avx512q::q5k_1,
        GgmlDType::Q6K => super::avx512q::q6k_1,
        _ => return None,
    })
}

#[target_feature(enable = "avx512f")]
unsafe fn f32_(w: &[u8], a: &ActRow<'_>) -> f32 {
    let a = act!(a, F32);
    let n = a.len();
    let (wp, ap) = (w.as_ptr() as *const f32, a.as_ptr());
    let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    unsafe {
        while i + 32 <= n {
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(wp.add(i)), _mm512_loadu_ps(ap.add(i)), s0);
            s1 = _mm512_fmadd_ps(
                _mm512_loadu_ps(wp.add(i + 16)),
                _mm512_loadu_ps(ap.add(i + 16)),
                s1,
            );
            i += 32;
        }
    }
    let acc = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
    acc + super::scalar::f32_f32(&w[4 * i..], &a[i..])
}

#[target_feature(enable = "avx512f")]
unsafe fn f16_(w: &[u8], a: &ActRow<'_>) -> f32 {
    let a = act!(a, F32);
    let n = a.len();
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let mut s = _mm512_setzero_ps();
    let mut i = 0;
    unsafe {
        while i + 16 <= n {
            let wv = _mm512_cvtph_ps(_mm256_loadu_si256(wp.add(2 * i) as *const __m256i));
            s = _mm512_fmadd_ps(wv, _mm512_loadu_ps(ap.add(i)), s);
            i += 16;
        }
    }
    let acc = _mm512_reduce_add_ps(s);
    acc + super::scalar::f16_f32(&w[2 * i..], &a[i..])
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn bf16x16(p: *const u8) -> __m512 {
    unsafe {
        _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i)),
            16,
        ))
    }
}

fn bf16_tail(w: &[u8], a: &[u16], from: usize) -> f32 {
    super::scalar::bf16_bf16(&w[2 * from..], &a[from..])
}

#[target_feature(enable = "avx512f")]
unsafe fn bf16_fma(w: &[u8], a: &ActRow<'_>) -> f32 {
    let a = act!(a, BF16);
    let n = a.len();
    let (wp, ap) = (w.as_ptr(), a.as_ptr() as *const u8);
    let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    unsafe {
        while i + 32 <= n {
            s0 = _mm512_fmadd_ps(bf16x16(wp.add(2 * i)), bf16x16(ap.add(2 * i)), s0);
            s1 = _mm512_fmadd_ps(bf16x16(wp.add(2 * i + 32)), bf16x16(ap.add(2 * i + 32)), s1);
            i += 32;
        }
    }
    _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) + bf16_tail(w, a, i)
}

/// BF16 × BF16 with `vdpbf16ps` (pairs multiplied exactly, accumulated in f32).
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn bf16_dp(w: &[u8], a: &ActRow<'_>) -> f32 {
    let a = act!(a, BF16);
    let n = a.len();
    let (wp, ap) = (w.as_ptr(), a.as_ptr() as *const u8);
    let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    unsafe {
        while i + 64 <= n {
            let (w0, a0) = (load(wp.add(2 * i)), load(ap.add(2 * i)));
            let (w1, a1) = (load(wp.add(2 * i + 64)), load(ap.add(2 * i + 64)));
            s0 = _mm512_dpbf16_ps(
                s0,
                core::mem::transmute::<__m512i, __m512bh>(w0),
                core::mem::transmute::<__m512i, __m512bh>(a0),
            );
            s1 = _mm512_dpbf16_ps(
                s1,
                core::mem::transmute::<__m512i, __m512bh>(w1),
                core::mem::transmute::<__m512i, __m512bh>(a1),
            );
            i += 64;
        }
    }
    _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) + bf16_tail(w, a, i)
}
