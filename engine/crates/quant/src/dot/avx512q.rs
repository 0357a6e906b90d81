//! AVX-512 (F, BW, VL, VNNI) kernels for the quantised types, for 1 to 4 activation
//! rows at once: each weight block is loaded, unpacked and its scales decoded once
//! and then multiplied with every row (the register-blocked prefill path; with one
//! row it is the decode kernel). Two 32-value chunks per 512-bit register;
//! `maddubs` + `vpdpwssd` for the k-quants (scale multiply fused into the i32
//! accumulate), `vpdpbusd` for Q8_0.
//!
//! Callers guarantee: `acts.len() == N == out.len()`, every row of the kernel's
//! format and of `n` elements, and `w` exactly `n` elements of the weight type.

use crate::act::ActRow;
use core::arch::x86_64::*;

/// Little-endian f16 at `p` via F16C (the `half` crate's portable path costs more
/// than the rest of a Q8_0 block).
#[inline]
#[target_feature(enable = "f16c")]
pub(super) unsafe fn f16c(p: *const u8) -> f32 {
    unsafe {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            (p as *const u16).read_unaligned() as i32,
        )))
    }
}

/// The 6-bit scales and mins of a Q4_K/Q5_K block as 8 bytes each (ggml's utmp trick).
#[inline(always)]
pub(super) unsafe fn unpack_k4(p: *const u8) -> (u64, u64) {
    const K1: u32 = 0x3f3f_3f3f;
    const K2: u32 = 0x0f0f_0f0f;
    const K3: u32 = 0x0303_0303;
    let r = |o: usize| unsafe { (p.add(o) as *const u32).read_unaligned() };
    let (u0, u1, u2) = (r(0), r(4), r(8));
    let sc_lo = u0 & K1;
    let sc_hi = (u2 & K2) | (((u0 >> 6) & K3) << 4);
    let m_lo = u1 & K1;
    let m_hi = ((u2 >> 4) & K2) | (((u1 >> 6) & K3) << 4);
    (
        sc_lo as u64 | ((sc_hi as u64) << 32),
        m_lo as u64 | ((m_hi as u64) << 32),
    )
}

/// `acc + Σ pairs a·b` (vpdpwssd) as one instruction: LLVM otherwise splits it into
/// vpmaddwd + vpaddd (a reassociation meant to shorten chains), one more uop on the
/// two 512-bit ports per 64 weights.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
pub(super) fn dpwssd(mut acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    // SAFETY: register-only instruction of the enabled features.
    unsafe {
        core::arch::asm!(
            "vpdpwssd {acc}, {a}, {b}",
            acc = inout(zmm_reg) acc,
            a = in(zmm_reg) a,
            b = in(zmm_reg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn load(p: *const u8) -> __m512i {
    unsafe { _mm512_loadu_si512(p as *const __m512i) }
}

#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn load2x256(p0: *const u8, p1: *const u8) -> __m512i {
    unsafe {
        let lo = _mm256_loadu_si256(p0 as *const __m256i);
        let hi = _mm256_loadu_si256(p1 as *const __m256i);
        _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
    }
}

/// i16 lane indices: lanes 0–15 take `a`, lanes 16–31 take `b`.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn idx_halves(a: i16, b: i16) -> __m512i {
    _mm512_inserti64x4(_mm512_set1_epi16(a), _mm256_set1_epi16(b), 1)
}

/// i16 lane indices: four groups of 8 lanes taking `a`, `a+1`, `a+2`, `a+3`.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn idx_quads(a: i16) -> __m512i {
    let lo = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_set1_epi16(a)),
        _mm_set1_epi16(a + 1),
        1,
    );
    let hi = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_set1_epi16(a + 2)),
        _mm_set1_epi16(a + 3),
        1,
    );
    _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
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
pub(super) fn q8k_rows<const N: usize>(
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
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub(super) unsafe fn $name(w: &[u8], a: &ActRow<'_>) -> f32 {
            let mut o = [0f32];
            unsafe { $multi::<1>(w, core::slice::from_ref(a), &mut o) };
            o[0]
        }
    };
}
/// One Q4_K row × one Q8_K row: the GFNI kernel where the CPU has it.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn q4k_1(w: &[u8], a: &ActRow<'_>) -> f32 {
    if super::q4k_gfni::available() {
        // SAFETY: GFNI checked; the rest is this function's contract.
        return unsafe { super::q4k_gfni::q4k_1(w, a) };
    }
    let mut o = [0f32];
    unsafe { q4k_n::<1>(w, core::slice::from_ref(a), &mut o) };
    o[0]
}
single!(q5k_1, q5k_n);
/// One Q6_K row × one Q8_K row: the GFNI kernel where the CPU has it.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn q6k_1(w: &[u8], a: &ActRow<'_>) -> f32 {
    let mut o = [0f32];
    if super::q4k_gfni_q6k::available() {
        // SAFETY: GFNI and VBMI checked; the rest is this function's contract.
        unsafe { super::q4k_gfni_q6k::q6k_n::<1>(w, core::slice::from_ref(a), &mut o) };
    } else {
        unsafe { q6k_n::<1>(w, core::slice::from_ref(a), &mut o) };
    }
    o[0]
}
single!(q8_0_1, q8_0_n);

/// Affine k-quant body shared by Q4_K (`HIGH = false`) and Q5_K (`HIGH = true`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
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
        let m4 = _mm512_set1_epi8(0xF);
        let b16 = _mm512_set1_epi8(0x10);
        let idx = [
            idx_halves(0, 2),
            idx_halves(1, 3),
            idx_halves(4, 6),
            idx_halves(5, 7),
        ];
        // Q5_K high-bit masks: pair p covers chunks 2p (low half) and 2p+1 (high half);
        // chunk c's low nibbles take bit 2c, its high nibbles bit 2c+1.
        let bit = |c: usize| 1i8 << (2 * c);
        let hm = [
            _mm512_inserti64x4(_mm512_set1_epi8(bit(0)), _mm256_set1_epi8(bit(1)), 1),
            _mm512_inserti64x4(_mm512_set1_epi8(bit(2)), _mm256_set1_epi8(bit(3)), 1),
        ];
        let mut accf = [_mm512_setzero_ps(); N];
        let mut minf = [_mm_setzero_ps(); N];
        for i in 0..nb {
            let b = w.as_ptr().add(bsz * i);
            let (d, dmin) = (f16c(b), f16c(b.add(2)));
            let (sc8, m8) = unpack_k4(b.add(4));
            let sc16 = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc8 as i64)));
            let m16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(m8 as i64));
            let s = [
                _mm512_permutexvar_epi16(idx[0], sc16),
                _mm512_permutexvar_epi16(idx[1], sc16),
                _mm512_permutexvar_epi16(idx[2], sc16),
                _mm512_permutexvar_epi16(idx[3], sc16),
            ];
            let qh = if HIGH {
                _mm512_broadcast_i64x4(_mm256_loadu_si256(b.add(16) as *const __m256i))
            } else {
                m4
            };
            let mut acc = [_mm512_setzero_si512(); N];
            for p in 0..2 {
                let q = load(b.add(qoff + 64 * p));
                let mut lo = _mm512_and_si512(q, m4);
                let mut hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
                if HIGH {
                    let mhi = _mm512_add_epi8(hm[p], hm[p]);
                    lo = _mm512_or_si512(
                        lo,
                        _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(qh, hm[p]), b16),
                    );
                    hi = _mm512_or_si512(
                        hi,
                        _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(qh, mhi), b16),
                    );
                }
                for t in 0..N {
                    let qa = qs[t].add(256 * i + 128 * p) as *const u8;
                    let alo = load2x256(qa, qa.add(64));
                    let ahi = load2x256(qa.add(32), qa.add(96));
                    acc[t] = dpwssd(acc[t], _mm512_maddubs_epi16(lo, alo), s[2 * p]);
                    acc[t] = dpwssd(acc[t], _mm512_maddubs_epi16(hi, ahi), s[2 * p + 1]);
                }
            }
            for t in 0..N {
                let da = *ds[t].add(i);
                accf[t] =
                    _mm512_fmadd_ps(_mm512_set1_ps(d * da), _mm512_cvtepi32_ps(acc[t]), accf[t]);
                let mt = _mm_madd_epi16(m16, _mm_loadu_si128(bs32[t].add(8 * i) as *const __m128i));
                minf[t] = _mm_fmadd_ps(_mm_set1_ps(dmin * da), _mm_cvtepi32_ps(mt), minf[t]);
            }
        }
        for t in 0..N {
            out[t] = _mm512_reduce_add_ps(accf[t]) - hsum128(minf[t]);
        }
    }
}

/// Q4_K weights × N Q8_K rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn q4k_n<const N: usize>(w: &[u8], acts: &[ActRow<'_>], out: &mut [f32]) {
    unsafe { affine_k::<N, false>(w, acts, out) }
}

/// Q5_K weights × N Q8_K rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn q5k_n<const N: usize>(w: &[u8], acts: &[ActRow<'_>], out: &mut [f32]) {
    unsafe { affine_k::<N, true>(w, acts, out) }
}

/// Q6_K weights × N Q8_K rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn q6k_n<const N: usize>(w: &[u8], acts: &[ActRow<'_>], out: &mut [f32]) {
    let Some((qs, ds, bs, _)) = q8k_rows::<N>(acts) else {
        return;
    };
    let nb = w.len() / 210;
    unsafe {
        let m4 = _mm512_set1_epi8(0xF);
        let m3 = _mm512_set1_epi8(3);
        // Per-i16 shift counts of the qh bits: k = 0,1 (low nibbles) and k = 2,3 (high).
        let sh_lo = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
        let sh_hi = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
        let idx = [idx_quads(0), idx_quads(4), idx_quads(8), idx_quads(12)];
        let mut accf = [_mm512_setzero_ps(); N];
        for i in 0..nb {
            let b = w.as_ptr().add(210 * i);
            let d = f16c(b.add(208));
            let sc256 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(192) as *const __m128i));
            let sc16 = _mm512_castsi256_si512(sc256);
            let mut acc = [_mm512_setzero_si512(); N];
            for hf in 0..2 {
                let ql = load(b.add(64 * hf));
                let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                    b.add(128 + 32 * hf) as *const __m256i
                ));
                let hlo = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh_lo), m3), 4);
                let hhi = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh_hi), m3), 4);
                let lo = _mm512_or_si512(_mm512_and_si512(ql, m4), hlo);
                let hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4), hhi);
                let slo = _mm512_permutexvar_epi16(idx[2 * hf], sc16);
                let shi = _mm512_permutexvar_epi16(idx[2 * hf + 1], sc16);
                for t in 0..N {
                    let qa = qs[t].add(256 * i + 128 * hf) as *const u8;
                    acc[t] = dpwssd(acc[t], _mm512_maddubs_epi16(lo, load(qa)), slo);
                    acc[t] = dpwssd(acc[t], _mm512_maddubs_epi16(hi, load(qa.add(64))), shi);
                }
            }
            for t in 0..N {
                // Values are stored +32: subtract 32 · Σ_j scale_j · bsum_j.
                let off = _mm256_madd_epi16(
                    sc256,
                    _mm256_loadu_si256(bs[t].add(16 * i) as *const __m256i),
                );
                let a = _mm512_sub_epi32(acc[t], _mm512_zextsi256_si512(_mm256_slli_epi32(off, 5)));
                accf[t] = _mm512_fmadd_ps(
                    _mm512_set1_ps(d * *ds[t].add(i)),
                    _mm512_cvtepi32_ps(a),
                    accf[t],
                );
            }
        }
        for t in 0..N {
            out[t] = _mm512_reduce_add_ps(accf[t]);
        }
    }
}

/// Q8_0 weights × N Q8_0 rows, two blocks per 512-bit step. Block scales are
/// staged (up to) 16 at a time (plain loads into a stack array, one `vcvtph2ps`, one
/// multiply per row) so that each step needs only one permute for its scales:
/// per-block scalar conversions and broadcasts would saturate the shuffle port.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn q8_0_n<const N: usize>(w: &[u8], acts: &[ActRow<'_>], out: &mut [f32]) {
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
        let zero = _mm512_setzero_si512();
        // Lane indices selecting scales 2p (lanes 0-7) and 2p+1 (lanes 8-15).
        let idx: [__m512i; 8] = core::array::from_fn(|p| {
            _mm512_inserti64x4(
                _mm512_set1_epi32(2 * p as i32),
                _mm256_set1_epi32(2 * p as i32 + 1),
                1,
            )
        });
        let mut accf = [_mm512_setzero_ps(); N];
        let mut i = 0;
        while i + 16 <= nb {
            let mut h = [0u16; 16];
            for (k, v) in h.iter_mut().enumerate() {
                *v = (w.as_ptr().add(34 * (i + k)) as *const u16).read_unaligned();
            }
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(h.as_ptr() as *const __m256i));
            let sc: [__m512; N] =
                core::array::from_fn(|t| _mm512_mul_ps(dw, _mm512_loadu_ps(ds[t].add(i))));
            for (p, ix) in idx.iter().enumerate() {
                let b = w.as_ptr().add(34 * (i + 2 * p));
                let wv = load2x256(b.add(2), b.add(36));
                // |w| as u8 times a with w's sign: vpdpbusd needs an unsigned operand.
                let neg = _mm512_movepi8_mask(wv);
                let aw = _mm512_abs_epi8(wv);
                for t in 0..N {
                    let av = load(qs[t].add(32 * (i + 2 * p)) as *const u8);
                    let dot =
                        _mm512_dpbusd_epi32(zero, aw, _mm512_mask_sub_epi8(av, neg, zero, av));
                    accf[t] = _mm512_fmadd_ps(
                        _mm512_cvtepi32_ps(dot),
                        _mm512_permutexvar_ps(*ix, sc[t]),
                        accf[t],
                    );
                }
            }
            i += 16;
        }
        // A partial last group (768 = 24 blocks) loads only its scales (masked) and
        // zero-extends an odd last block, so it stays on the 512-bit path (an AVX2 tail
        // ran a third of a 768-wide row at half the speed). Kept out of the loop above:
        // the runtime bounds there cost a quarter of the full groups' speed.
        if i < nb {
            let n = nb - i;
            let mut h = [0u16; 16];
            for (k, v) in h.iter_mut().enumerate().take(n) {
                *v = (w.as_ptr().add(34 * (i + k)) as *const u16).read_unaligned();
            }
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(h.as_ptr() as *const __m256i));
            let mask = ((1u32 << n) - 1) as u16;
            let sc: [__m512; N] = core::array::from_fn(|t| {
                _mm512_mul_ps(dw, _mm512_maskz_loadu_ps(mask, ds[t].add(i)))
            });
            for (p, ix) in idx.iter().enumerate().take(n.div_ceil(2)) {
                let pair = 2 * p + 1 < n;
                let b = w.as_ptr().add(34 * (i + 2 * p));
                let wv = if pair {
                    load2x256(b.add(2), b.add(36))
                } else {
                    _mm512_zextsi256_si512(_mm256_loadu_si256(b.add(2) as *const __m256i))
                };
                let neg = _mm512_movepi8_mask(wv);
                let aw = _mm512_abs_epi8(wv);
                for t in 0..N {
                    let qa = qs[t].add(32 * (i + 2 * p)) as *const u8;
                    let av = if pair {
                        load(qa)
                    } else {
                        _mm512_zextsi256_si512(_mm256_loadu_si256(qa as *const __m256i))
                    };
                    let dot =
                        _mm512_dpbusd_epi32(zero, aw, _mm512_mask_sub_epi8(av, neg, zero, av));
                    accf[t] = _mm512_fmadd_ps(
                        _mm512_cvtepi32_ps(dot),
                        _mm512_permutexvar_ps(*ix, sc[t]),
                        accf[t],
                    );
                }
            }
        }
        for t in 0..N {
            out[t] = _mm512_reduce_add_ps(accf[t]);
        }
    }
}

/// The N-row kernels for `dtype` (index `n - 1`), if this level has them.
pub(super) fn select_multi(dtype: hmoe_gguf::GgmlDType) -> Option<[super::RawDotN; 4]> {
    use hmoe_gguf::GgmlDType as T;
    Some(match dtype {
        T::Q8_0 => [q8_0_n::<1>, q8_0_n::<2>, q8_0_n::<3>, q8_0_n::<4>],
        T::Q4K if super::q4k_gfni::available() => super::q4k_gfni::select_multi(),
        T::Q4K => [q4k_n::<1>, q4k_n::<2>, q4k_n::<3>, q4k_n::<4>],
        T::Q5K => [q5k_n::<1>, q5k_n::<2>, q5k_n::<3>, q5k_n::<4>],
        T::Q6K if super::q4k_gfni_q6k::available() => {
            use super::q4k_gfni_q6k::q6k_n as g;
            [g::<1>, g::<2>, g::<3>, g::<4>]
        }
        T::Q6K => [q6k_n::<1>, q6k_n::<2>, q6k_n::<3>, q6k_n::<4>],
        _ => return None,
    })
}
