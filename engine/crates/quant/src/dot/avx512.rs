//! AVX-512 (F, BW, VL, VNNI) kernels: two 32-value chunks per 512-bit register,
//! `maddubs` + `vpdpwssd` for the k-quants (scale multiply fused into the i32
//! accumulate), `vpdpbusd` for Q8_0, and `vdpbf16ps` for BF16 where present.

use super::act;
use super::avx2::{mins_dot, q6k_offset};
use crate::act::ActRow;
use crate::GgmlDType;
use core::arch::x86_64::*;
use half::f16;

#[inline(always)]
fn h(b: &[u8], off: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load(p: *const u8) -> __m512i {
    unsafe { _mm512_loadu_si512(p as *const __m512i) }
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load2x256(p0: *const u8, p1: *const u8) -> __m512i {
    unsafe {
        let lo = _mm256_loadu_si256(p0 as *const __m256i);
        let hi = _mm256_loadu_si256(p1 as *const __m256i);
        _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
    }
}

/// i16 pairs (both halves of each i32 lane) holding `x` in the low 256 bits, `y` above.
#[inline]
#[target_feature(enable = "avx512f")]
fn pair_scales(x: i16, y: i16) -> __m512i {
    let px = (x as u16 as u32 | ((x as u16 as u32) << 16)) as i32;
    let py = (y as u16 as u32 | ((y as u16 as u32) << 16)) as i32;
    _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_set1_epi32(px)),
        _mm256_set1_epi32(py),
        1,
    )
}

pub(super) fn select(dtype: GgmlDType) -> Option<super::RawDot> {
    Some(match dtype {
        GgmlDType::F32 => f32_,
        GgmlDType::F16 => f16_,
        GgmlDType::BF16 => bf16_fma,
        GgmlDType::Q8_0 => q8_0_,
        GgmlDType::Q4K => q4k_,
        GgmlDType::Q5K => q5k_,
        GgmlDType::Q6K => q6k_,
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

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn q8_0_(w: &[u8], a: &ActRow<'_>) -> f32 {
    let (qs, d) = act!(a, Q8_0);
    let nb = d.len();
    let zero = _mm512_setzero_si512();
    let mut acc = _mm512_setzero_ps();
    let mut i = 0;
    while i + 2 <= nb {
        // SAFETY: blocks i and i+1 exist (34 bytes each); 64 activations from 32i.
        let (wv, av) = unsafe {
            (
                load2x256(w.as_ptr().add(34 * i + 2), w.as_ptr().add(34 * i + 36)),
                load(qs.as_ptr().add(32 * i) as *const u8),
            )
        };
        // |w| as u8 times a with w's sign: vpdpbusd needs an unsigned operand.
        let neg = _mm512_movepi8_mask(wv);
        let sa = _mm512_mask_sub_epi8(av, neg, zero, av);
        let dot = _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(wv), sa);
        let s0 = h(w, 34 * i) * d[i];
        let s1 = h(w, 34 * i + 34) * d[i + 1];
        let sc = _mm512_insertf32x8(_mm512_set1_ps(s0), _mm256_set1_ps(s1), 1);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, acc);
        i += 2;
    }
    let mut total = _mm512_reduce_add_ps(acc);
    if i < nb {
        // SAFETY: block i exists.
        let (wv, av) = unsafe {
            (
                _mm256_loadu_si256(w.as_ptr().add(34 * i + 2) as *const __m256i),
                _mm256_loadu_si256(qs.as_ptr().add(32 * i) as *const __m256i),
            )
        };
        let s = _mm256_cvtepi32_ps(super::avx2::dot_i8x32(wv, av));
        total += super::avx2::hsum_ps(s) * (h(w, 34 * i) * d[i]);
    }
    total
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn q4k_(w: &[u8], a: &ActRow<'_>) -> f32 {
    let (qs, d, bsums) = act!(a, Q8K);
    let m4 = _mm512_set1_epi8(0xF);
    let mut accf = _mm512_setzero_ps();
    let mut mins = 0f32;
    for (i, &da) in d.iter().enumerate() {
        let b = &w[144 * i..144 * i + 144];
        let (msum, sc) = mins_dot(&b[4..16], &bsums[16 * i..16 * i + 16]);
        mins += da * h(b, 2) * msum as f32;
        let mut acc = _mm512_setzero_si512();
        for p in 0..2 {
            // Chunks 2p and 2p+1: low nibbles are sub-blocks 4p and 4p+2, high 4p+1 and 4p+3.
            // SAFETY: 64 nibble bytes at 16 + 64p; activations 128p..128p+128 of block i.
            let (q, alo, ahi) = unsafe {
                let qa = qs.as_ptr().add(256 * i + 128 * p) as *const u8;
                (
                    load(b.as_ptr().add(16 + 64 * p)),
                    load2x256(qa, qa.add(64)),
                    load2x256(qa.add(32), qa.add(96)),
                )
            };
            let lo = _mm512_and_si512(q, m4);
            let hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
            let slo = pair_scales(sc[4 * p] as i16, sc[4 * p + 2] as i16);
            let shi = pair_scales(sc[4 * p + 1] as i16, sc[4 * p + 3] as i16);
            acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(lo, alo), slo);
            acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(hi, ahi), shi);
        }
        accf = _mm512_fmadd_ps(_mm512_set1_ps(da * h(b, 0)), _mm512_cvtepi32_ps(acc), accf);
    }
    _mm512_reduce_add_ps(accf) - mins
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn q5k_(w: &[u8], a: &ActRow<'_>) -> f32 {
    let (qs, d, bsums) = act!(a, Q8K);
    let m4 = _mm512_set1_epi8(0xF);
    let b16 = _mm512_set1_epi8(0x10);
    let mut accf = _mm512_setzero_ps();
    let mut mins = 0f32;
    for (i, &da) in d.iter().enumerate() {
        let b = &w[176 * i..176 * i + 176];
        let (msum, sc) = mins_dot(&b[4..16], &bsums[16 * i..16 * i + 16]);
        mins += da * h(b, 2) * msum as f32;
        // SAFETY: the 32 high-bit bytes at offset 16, copied into both halves.
        let qh = unsafe {
            _mm512_broadcast_i64x4(_mm256_loadu_si256(b.as_ptr().add(16) as *const __m256i))
        };
        let mut acc = _mm512_setzero_si512();
        for p in 0..2 {
            // SAFETY: 64 nibble bytes at 48 + 64p; activations 128p..128p+128 of block i.
            let (q, alo, ahi) = unsafe {
                let qa = qs.as_ptr().add(256 * i + 128 * p) as *const u8;
                (
                    load(b.as_ptr().add(48 + 64 * p)),
                    load2x256(qa, qa.add(64)),
                    load2x256(qa.add(32), qa.add(96)),
                )
            };
            // Chunk c's low nibbles take qh bit 2c, high nibbles bit 2c+1 (c = 2p, 2p+1).
            let bit = |c: usize| 1i8 << (2 * c);
            let mlo = _mm512_inserti64x4(
                _mm512_set1_epi8(bit(2 * p)),
                _mm256_set1_epi8(bit(2 * p + 1)),
                1,
            );
            let mhi = _mm512_add_epi8(mlo, mlo);
            let hlo = _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(qh, mlo), b16);
            let hhi = _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(qh, mhi), b16);
            let lo = _mm512_or_si512(_mm512_and_si512(q, m4), hlo);
            let hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(q, 4), m4), hhi);
            let slo = pair_scales(sc[4 * p] as i16, sc[4 * p + 2] as i16);
            let shi = pair_scales(sc[4 * p + 1] as i16, sc[4 * p + 3] as i16);
            acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(lo, alo), slo);
            acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(hi, ahi), shi);
        }
        accf = _mm512_fmadd_ps(_mm512_set1_ps(da * h(b, 0)), _mm512_cvtepi32_ps(acc), accf);
    }
    _mm512_reduce_add_ps(accf) - mins
}

/// Scales of four consecutive 16-value sub-blocks as i16 pairs: 4 i32 lanes each.
#[inline]
#[target_feature(enable = "avx512f")]
fn quad_scales(s: &[u8]) -> __m512i {
    let p = |x: u8| {
        let v = x as i8 as i16 as u16 as u32;
        (v | (v << 16)) as i32
    };
    let (a, b, c, d) = (p(s[0]), p(s[1]), p(s[2]), p(s[3]));
    _mm512_setr_epi32(a, a, a, a, b, b, b, b, c, c, c, c, d, d, d, d)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn q6k_(w: &[u8], a: &ActRow<'_>) -> f32 {
    let (qs, d, bsums) = act!(a, Q8K);
    let m4 = _mm512_set1_epi8(0xF);
    let m3 = _mm512_set1_epi8(3);
    // Per-i16 shift counts of the qh bits: k = 0,1 (low nibbles) and k = 2,3 (high).
    let sh_lo = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    let sh_hi = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
    let mut accf = _mm512_setzero_ps();
    for (i, &da) in d.iter().enumerate() {
        let b = &w[210 * i..210 * i + 210];
        let offset = q6k_offset(&b[192..208], &bsums[16 * i..16 * i + 16]);
        let mut acc = _mm512_setzero_si512();
        for hf in 0..2 {
            // SAFETY: ql (64 bytes) at 64h, qh (32 bytes) at 128 + 32h; 128 activations.
            let (ql, qh, alo, ahi) = unsafe {
                let qa = qs.as_ptr().add(256 * i + 128 * hf) as *const u8;
                (
                    load(b.as_ptr().add(64 * hf)),
                    _mm512_broadcast_i64x4(_mm256_loadu_si256(
                        b.as_ptr().add(128 + 32 * hf) as *const __m256i
                    )),
                    load(qa),
                    load(qa.add(64)),
                )
            };
            let hlo = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh_lo), m3), 4);
            let hhi = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh_hi), m3), 4);
            let lo = _mm512_or_si512(_mm512_and_si512(ql, m4), hlo);
            let hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4), hhi);
            let s = &b[192 + 8 * hf..200 + 8 * hf];
            acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(lo, alo), quad_scales(&s[0..4]));
            acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(hi, ahi), quad_scales(&s[4..8]));
        }
        let acc = _mm512_sub_epi32(acc, _mm512_zextsi128_si512(_mm_cvtsi32_si128(offset)));
        accf = _mm512_fmadd_ps(
            _mm512_set1_ps(da * h(b, 208)),
            _mm512_cvtepi32_ps(acc),
            accf,
        );
    }
    _mm512_reduce_add_ps(accf)
}
