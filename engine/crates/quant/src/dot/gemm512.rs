//! AVX-512 VNNI tile kernels for many activation rows (prefill): a tile of R weight
//! rows × T activation rows is computed with R·T accumulators in registers, so each
//! weight block is loaded and decoded once per T tokens and each activation chunk is
//! loaded once per R weight rows (the 1×N kernels of `avx512q` reload the activations
//! for every weight row).
//!
//! Callers guarantee: `acts.len() == T`, every row of the kernel's format with `n`
//! elements, `w` points at R rows of `rb = row_bytes(dtype, n)` bytes each, and
//! `out[r * rs + t * ts]` is writable for `r < R`, `t < T`.

// Register tiles are indexed [row][token] in several arrays at once.
#![allow(clippy::needless_range_loop)]

use super::avx512q::{f16c, idx_halves, idx_quads, load, load2x256, q8k_rows, unpack_k4};
use crate::act::ActRow;
use core::arch::x86_64::*;

/// One R × T tile: `(w, rb, acts, out, rs, ts)`.
pub(super) type RawTile = unsafe fn(*const u8, usize, &[ActRow<'_>], *mut f32, usize, usize);

/// Weight rows per tile.
pub(super) const TILE_R: usize = 2;
/// Activation rows per tile.
pub(super) const TILE_T: usize = 4;

/// `v` in 128-bit lane `t` (0..4) of `acc`.
#[inline]
#[target_feature(enable = "avx512f")]
fn put_lane_i(acc: __m512i, v: __m128i, t: usize) -> __m512i {
    match t {
        0 => _mm512_inserti32x4::<0>(acc, v),
        1 => _mm512_inserti32x4::<1>(acc, v),
        2 => _mm512_inserti32x4::<2>(acc, v),
        _ => _mm512_inserti32x4::<3>(acc, v),
    }
}

/// `v` in 128-bit lane `t` (0..4) of `acc`.
#[inline]
#[target_feature(enable = "avx512f")]
fn put_lane_f(acc: __m512, v: __m128, t: usize) -> __m512 {
    match t {
        0 => _mm512_insertf32x4::<0>(acc, v),
        1 => _mm512_insertf32x4::<1>(acc, v),
        2 => _mm512_insertf32x4::<2>(acc, v),
        _ => _mm512_insertf32x4::<3>(acc, v),
    }
}

/// Affine k-quant tile shared by Q4_K (`HIGH = false`) and Q5_K (`HIGH = true`).
/// The min term of all T tokens is one 512-bit `madd` per weight row and block:
/// token t's eight 32-value sums sit in 128-bit lane t.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn affine_tile<const R: usize, const T: usize, const HIGH: bool>(
    w: *const u8,
    rb: usize,
    acts: &[ActRow<'_>],
    out: *mut f32,
    rs: usize,
    ts: usize,
) {
    let Some((qs, ds, _, bs32)) = q8k_rows::<T>(acts) else {
        return;
    };
    let bsz = if HIGH { 176 } else { 144 };
    let qoff = if HIGH { 48 } else { 16 };
    let nb = rb / bsz;
    unsafe {
        let m4 = _mm512_set1_epi8(0xF);
        let b16 = _mm512_set1_epi8(0x10);
        let idx = [
            idx_halves(0, 2),
            idx_halves(1, 3),
            idx_halves(4, 6),
            idx_halves(5, 7),
        ];
        let bit = |c: usize| 1i8 << (2 * c);
        let hm = [
            _mm512_inserti64x4(_mm512_set1_epi8(bit(0)), _mm256_set1_epi8(bit(1)), 1),
            _mm512_inserti64x4(_mm512_set1_epi8(bit(2)), _mm256_set1_epi8(bit(3)), 1),
        ];
        let mut accf = [[_mm512_setzero_ps(); T]; R];
        let mut minf = [_mm512_setzero_ps(); R];
        for i in 0..nb {
            let mut bsv = _mm512_setzero_si512();
            let mut dav = _mm512_setzero_ps();
            for t in 0..T {
                let b = _mm_loadu_si128(bs32[t].add(8 * i) as *const __m128i);
                bsv = put_lane_i(bsv, b, t);
                dav = put_lane_f(dav, _mm_set1_ps(*ds[t].add(i)), t);
            }
            let mut sc16 = [_mm512_setzero_si512(); R];
            let mut dr = [0f32; R];
            for r in 0..R {
                let b = w.add(r * rb + bsz * i);
                let (d, dmin) = (f16c(b), f16c(b.add(2)));
                let (sc8, m8) = unpack_k4(b.add(4));
                sc16[r] = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc8 as i64)));
                let m16 = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(m8 as i64)));
                let mt = _mm512_madd_epi16(m16, bsv);
                minf[r] = _mm512_fmadd_ps(
                    _mm512_mul_ps(_mm512_set1_ps(dmin), dav),
                    _mm512_cvtepi32_ps(mt),
                    minf[r],
                );
                dr[r] = d;
            }
            let mut acc = [[_mm512_setzero_si512(); T]; R];
            for p in 0..2 {
                let mut lo = [m4; R];
                let mut hi = [m4; R];
                let mut slo = [m4; R];
                let mut shi = [m4; R];
                for r in 0..R {
                    let b = w.add(r * rb + bsz * i);
                    let q = load(b.add(qoff + 64 * p));
                    lo[r] = _mm512_and_si512(q, m4);
                    hi[r] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
                    if HIGH {
                        let qh =
                            _mm512_broadcast_i64x4(_mm256_loadu_si256(b.add(16) as *const __m256i));
                        let mhi = _mm512_add_epi8(hm[p], hm[p]);
                        lo[r] = _mm512_or_si512(
                            lo[r],
                            _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(qh, hm[p]), b16),
                        );
                        hi[r] = _mm512_or_si512(
                            hi[r],
                            _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(qh, mhi), b16),
                        );
                    }
                    slo[r] = _mm512_permutexvar_epi16(idx[2 * p], sc16[r]);
                    shi[r] = _mm512_permutexvar_epi16(idx[2 * p + 1], sc16[r]);
                }
                for t in 0..T {
                    let qa = qs[t].add(256 * i + 128 * p) as *const u8;
                    let alo = load2x256(qa, qa.add(64));
                    let ahi = load2x256(qa.add(32), qa.add(96));
                    for r in 0..R {
                        acc[r][t] = _mm512_dpwssd_epi32(
                            acc[r][t],
                            _mm512_maddubs_epi16(lo[r], alo),
                            slo[r],
                        );
                        acc[r][t] = _mm512_dpwssd_epi32(
                            acc[r][t],
                            _mm512_maddubs_epi16(hi[r], ahi),
                            shi[r],
                        );
                    }
                }
            }
            for r in 0..R {
                let dv = _mm512_set1_ps(dr[r]);
                for t in 0..T {
                    let s = _mm512_mul_ps(dv, _mm512_set1_ps(*ds[t].add(i)));
                    accf[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][t]), s, accf[r][t]);
                }
            }
        }
        for r in 0..R {
            let mut m = [0f32; 16];
            _mm512_storeu_ps(m.as_mut_ptr(), minf[r]);
            for t in 0..T {
                let mn = (m[4 * t] + m[4 * t + 1]) + (m[4 * t + 2] + m[4 * t + 3]);
                *out.add(r * rs + t * ts) = _mm512_reduce_add_ps(accf[r][t]) - mn;
            }
        }
    }
}

/// Q4_K tile.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4k_tile<const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    acts: &[ActRow<'_>],
    out: *mut f32,
    rs: usize,
    ts: usize,
) {
    unsafe { affine_tile::<R, T, false>(w, rb, acts, out, rs, ts) }
}

/// Q5_K tile.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q5k_tile<const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    acts: &[ActRow<'_>],
    out: *mut f32,
    rs: usize,
    ts: usize,
) {
    unsafe { affine_tile::<R, T, true>(w, rb, acts, out, rs, ts) }
}

/// Q6_K tile. Values are used unsigned (0..63); each accumulator starts at the
/// −32 offset term `−32 · Σ_j scale_j · bsum_j` of its (row, token) pair.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q6k_tile<const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    acts: &[ActRow<'_>],
    out: *mut f32,
    rs: usize,
    ts: usize,
) {
    let Some((qs, ds, bs, _)) = q8k_rows::<T>(acts) else {
        return;
    };
    let nb = rb / 210;
    unsafe {
        let m4 = _mm512_set1_epi8(0xF);
        let m3 = _mm512_set1_epi8(3);
        let sh_lo = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
        let sh_hi = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
        let idx = [idx_quads(0), idx_quads(4), idx_quads(8), idx_quads(12)];
        let mut accf = [[_mm512_setzero_ps(); T]; R];
        for i in 0..nb {
            let mut sc256 = [_mm256_setzero_si256(); R];
            let mut dr = [0f32; R];
            let mut acc = [[_mm512_setzero_si512(); T]; R];
            for r in 0..R {
                let b = w.add(r * rb + 210 * i);
                dr[r] = f16c(b.add(208));
                sc256[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(192) as *const __m128i));
                for t in 0..T {
                    let off = _mm256_madd_epi16(
                        sc256[r],
                        _mm256_loadu_si256(bs[t].add(16 * i) as *const __m256i),
                    );
                    acc[r][t] = _mm512_zextsi256_si512(_mm256_sub_epi32(
                        _mm256_setzero_si256(),
                        _mm256_slli_epi32(off, 5),
                    ));
                }
            }
            for hf in 0..2 {
                let mut lo = [m4; R];
                let mut hi = [m4; R];
                let mut slo = [m4; R];
                let mut shi = [m4; R];
                for r in 0..R {
                    let b = w.add(r * rb + 210 * i);
                    let ql = load(b.add(64 * hf));
                    let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                        b.add(128 + 32 * hf) as *const __m256i
                    ));
                    let hlo =
                        _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh_lo), m3), 4);
                    let hhi =
                        _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh_hi), m3), 4);
                    lo[r] = _mm512_or_si512(_mm512_and_si512(ql, m4), hlo);
                    hi[r] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4), hhi);
                    let sc16 = _mm512_castsi256_si512(sc256[r]);
                    slo[r] = _mm512_permutexvar_epi16(idx[2 * hf], sc16);
                    shi[r] = _mm512_permutexvar_epi16(idx[2 * hf + 1], sc16);
                }
                for t in 0..T {
                    let qa = qs[t].add(256 * i + 128 * hf) as *const u8;
                    let a0 = load(qa);
                    let a1 = load(qa.add(64));
                    for r in 0..R {
                        acc[r][t] =
                            _mm512_dpwssd_epi32(acc[r][t], _mm512_maddubs_epi16(lo[r], a0), slo[r]);
                        acc[r][t] =
                            _mm512_dpwssd_epi32(acc[r][t], _mm512_maddubs_epi16(hi[r], a1), shi[r]);
                    }
                }
            }
            for r in 0..R {
                let dv = _mm512_set1_ps(dr[r]);
                for t in 0..T {
                    let s = _mm512_mul_ps(dv, _mm512_set1_ps(*ds[t].add(i)));
                    accf[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][t]), s, accf[r][t]);
                }
            }
        }
        for r in 0..R {
            for t in 0..T {
                *out.add(r * rs + t * ts) = _mm512_reduce_add_ps(accf[r][t]);
            }
        }
    }
}

/// One group of `n` ≤ 16 Q8_0 blocks starting at block `i` (`FULL`: exactly 16).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn q8_0_group<const R: usize, const T: usize, const FULL: bool>(
    w: *const u8,
    rb: usize,
    i: usize,
    n: usize,
    qs: &[*const i8; T],
    ds: &[*const f32; T],
    idx: &[__m512i; 8],
    accf: &mut [[__m512; T]; R],
) {
    let n = if FULL { 16 } else { n };
    unsafe {
        let zero = _mm512_setzero_si512();
        let x80 = _mm512_set1_epi8(-128);
        let mut sw = [_mm512_setzero_ps(); R];
        for r in 0..R {
            let mut h = [0u16; 16];
            for (k, v) in h.iter_mut().enumerate().take(n) {
                *v = (w.add(r * rb + 34 * (i + k)) as *const u16).read_unaligned();
            }
            sw[r] = _mm512_cvtph_ps(_mm256_loadu_si256(h.as_ptr() as *const __m256i));
        }
        let mut prod = [[_mm512_setzero_ps(); T]; R];
        for t in 0..T {
            // Masked so that a partial group reads no scale past the row's end.
            let sa = if FULL {
                _mm512_loadu_ps(ds[t].add(i))
            } else {
                _mm512_maskz_loadu_ps(((1u32 << n) - 1) as u16, ds[t].add(i))
            };
            for r in 0..R {
                prod[r][t] = _mm512_mul_ps(sw[r], sa);
            }
        }
        for (p, ix) in idx.iter().enumerate().take(n.div_ceil(2)) {
            // An odd last block fills the low half only (the high half stays 0).
            let pair = FULL || 2 * p + 1 < n;
            let mut wv = [zero; R];
            let mut nc = [zero; R];
            for r in 0..R {
                let b = w.add(r * rb + 34 * (i + 2 * p));
                wv[r] = if pair {
                    load2x256(b.add(2), b.add(36))
                } else {
                    _mm512_zextsi256_si512(_mm256_loadu_si256(b.add(2) as *const __m256i))
                };
                nc[r] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, x80, wv[r]));
            }
            for t in 0..T {
                let qa = qs[t].add(32 * (i + 2 * p)) as *const u8;
                let a = if pair {
                    load(qa)
                } else {
                    _mm512_zextsi256_si512(_mm256_loadu_si256(qa as *const __m256i))
                };
                let au = _mm512_xor_si512(a, x80);
                for r in 0..R {
                    let dot = _mm512_dpbusd_epi32(nc[r], au, wv[r]);
                    accf[r][t] = _mm512_fmadd_ps(
                        _mm512_cvtepi32_ps(dot),
                        _mm512_permutexvar_ps(*ix, prod[r][t]),
                        accf[r][t],
                    );
                }
            }
        }
    }
}

/// Q8_0 tile, two blocks per 512-bit step. The activations are made unsigned
/// (`a + 128`) once per token for all R rows, so `vpdpbusd` takes the weights as
/// they are; each accumulator starts at `−128 · Σ w` of its weight row and block
/// (one `vpdpbusd` per row, shared by the T tokens). Scales are staged 16 blocks at a
/// time and multiplied once per (row, token) per 16 blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q8_0_tile<const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    acts: &[ActRow<'_>],
    out: *mut f32,
    rs: usize,
    ts: usize,
) {
    let mut qs = [core::ptr::null::<i8>(); T];
    let mut ds = [core::ptr::null::<f32>(); T];
    for t in 0..T {
        let Some(ActRow::Q8_0 { qs: q, d }) = acts.get(t) else {
            return;
        };
        qs[t] = q.as_ptr();
        ds[t] = d.as_ptr();
    }
    let nb = rb / 34;
    unsafe {
        let idx: [__m512i; 8] = core::array::from_fn(|p| {
            _mm512_inserti64x4(
                _mm512_set1_epi32(2 * p as i32),
                _mm256_set1_epi32(2 * p as i32 + 1),
                1,
            )
        });
        let mut accf = [[_mm512_setzero_ps(); T]; R];
        let mut i = 0;
        // Full groups get their own instance: runtime bounds and the odd-block branch
        // inside them cost a quarter of the speed (measured on the 1×N kernel).
        while i + 16 <= nb {
            q8_0_group::<R, T, true>(w, rb, i, 16, &qs, &ds, &idx, &mut accf);
            i += 16;
        }
        if i < nb {
            q8_0_group::<R, T, false>(w, rb, i, nb - i, &qs, &ds, &idx, &mut accf);
        }
        for r in 0..R {
            for t in 0..T {
                *out.add(r * rs + t * ts) = _mm512_reduce_add_ps(accf[r][t]);
            }
        }
    }
}

macro_rules! table {
    ($f:ident) => {
        [
            [$f::<1, 1>, $f::<1, 2>, $f::<1, 3>, $f::<1, 4>],
            [$f::<2, 1>, $f::<2, 2>, $f::<2, 3>, $f::<2, 4>],
        ]
    };
}

/// The tile kernels for `dtype` (`[rows - 1][tokens - 1]`), if this level has them.
pub(super) fn select_tiles(dtype: hmoe_gguf::GgmlDType) -> Option<[[RawTile; TILE_T]; TILE_R]> {
    use hmoe_gguf::GgmlDType as T;
    Some(match dtype {
        T::Q8_0 => table!(q8_0_tile),
        T::Q4K => table!(q4k_tile),
        T::Q5K => table!(q5k_tile),
        T::Q6K => table!(q6k_tile),
        _ => return None,
    })
}
