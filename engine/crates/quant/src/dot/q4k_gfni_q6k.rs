//! Q6_K × Q8_K for 1–4 tokens and the 1–2 × 1–4 GEMM tiles with AVX-512 VNNI + GFNI +
//! VBMI: the down projection of Q4_K_M models (the same construction as `q4k_gfni`'s
//! pack form).
//!
//! Per 128 weights (half a super-block: `ql[64]` low nibbles, `qh[32]` 2-bit highs
//! broadcast to both register halves): the low register (weights 0–63) is
//! `(ql & 15) | gfni(qh)` — one `vgf2p8affineqb` moves qh bits 0–1 (low half) or 2–3
//! (high half) to bits 4–5, one `vpternlogd` merges; the high register (weights 64–127)
//! is `gfni(ql) | gfni(qh)` (high nibble down; qh bits 4–5 / 6–7 to 4–5). The unsigned
//! 6-bit values go into `vpdpbusd` (4·63·128 fits i16), two chunks are packed to i16
//! and scaled by one `vpdpwssd` with the signed scales spread by one `vpermb`; the −32
//! offset is `32 · Σ scale·bsum16` per super-block (one 256-bit madd).
//! Against `avx512q::q6k_n` (2 variable shifts, 2 and, 2 shifts, 2 or, nibble split, 2
//! permutes, 4 maddubs + 4 vpdpwssd per 128 weights) about half the 512-bit uops.

// Register tiles are indexed [row][token] in several arrays at once.
#![allow(clippy::needless_range_loop)]

use super::avx512q::{dpwssd, q8k_rows};
use crate::act::ActRow;
use core::arch::x86_64::*;

/// Bytes per Q6_K super-block.
const BLOCK: usize = 210;

/// `vgf2p8affineqb` matrices (result bit i = parity(x & byte[7 - i])): source bits
/// (s, s+1) to result bits 4–5, i.e. byte 3 = 1 << s, byte 2 = 1 << (s + 1).
const fn high_bits(s: u32) -> i64 {
    ((1i64 << s) << 24) | ((1i64 << (s + 1)) << 16)
}

/// High nibble to the low nibble (as `q4k_gfni`).
const HI_NIBBLE: i64 = 0x1020_4080_0000_0000;

/// `vpermb` indices spreading the 16 sign-extended i16 scales (32 bytes) over a
/// packs(chunk weights 0–63, chunk weights 64–127) register of half `h`: per 128-bit
/// lane L, words 0–3 are sub-block 8h + L, words 4–7 sub-block 8h + 4 + L.
const fn scale_idx(h: usize) -> [u8; 64] {
    let mut v = [0u8; 64];
    let mut k = 0;
    while k < 32 {
        let (lane, word) = (k / 8, k % 8);
        let j = 8 * h + lane + if word >= 4 { 4 } else { 0 };
        v[2 * k] = (2 * j) as u8;
        v[2 * k + 1] = (2 * j + 1) as u8;
        k += 1;
    }
    v
}

const SCALE_IDX: [[u8; 64]; 2] = [scale_idx(0), scale_idx(1)];

/// Whether these kernels replace `avx512q::q6k_n`: GFNI and VBMI present and
/// `HMOE_Q6K_GFNI` not `off` (read once; for A/B runs in one build).
pub(super) fn available() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        is_x86_feature_detected!("gfni")
            && is_x86_feature_detected!("avx512vbmi")
            && std::env::var("HMOE_Q6K_GFNI").map_or(true, |v| v.trim() != "off")
    })
}

/// `R` Q6_K rows (`rb` bytes apart) × `T` Q8_K rows; `out[r * rs + t * ts]`.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI/VBMI, GFNI, F16C available; `acts.len() == T`, all Q8_K rows of
/// `n` values; `w` points at `R` rows of `rb = row_bytes(Q6_K, n)` bytes; the output
/// indices are writable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
unsafe fn q6k_rt<const R: usize, const T: usize>(
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
    let nb = rb / BLOCK;
    unsafe {
        let m4 = _mm512_set1_epi8(0xF);
        let mat_lo = _mm512_inserti64x4(
            _mm512_set1_epi64(high_bits(0)),
            _mm256_set1_epi64x(high_bits(2)),
            1,
        );
        let mat_hi = _mm512_inserti64x4(
            _mm512_set1_epi64(high_bits(4)),
            _mm256_set1_epi64x(high_bits(6)),
            1,
        );
        let nib = _mm512_set1_epi64(HI_NIBBLE);
        let sidx: [__m512i; 2] =
            core::array::from_fn(|h| _mm512_loadu_si512(SCALE_IDX[h].as_ptr() as *const __m512i));
        let zero = _mm512_setzero_si512();
        let mut accf = [[_mm512_setzero_ps(); T]; R];
        for i in 0..nb {
            let mut d = [0f32; R];
            let mut sc16 = [_mm256_setzero_si256(); R];
            for r in 0..R {
                let b = w.add(r * rb + BLOCK * i);
                d[r] = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
                    (b.add(208) as *const u16).read_unaligned() as i32,
                )));
                sc16[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(192) as *const __m128i));
            }
            let mut acc = [[zero; T]; R];
            for h in 0..2 {
                let mut lo = [zero; R];
                let mut hi = [zero; R];
                let mut s = [zero; R];
                for r in 0..R {
                    let b = w.add(r * rb + BLOCK * i);
                    let ql = _mm512_loadu_si512(b.add(64 * h) as *const __m512i);
                    let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                        b.add(128 + 32 * h) as *const __m256i
                    ));
                    // Weights 0-63 and 64-127 of this half, 6-bit unsigned.
                    lo[r] = _mm512_ternarylogic_epi32::<0xEA>(
                        ql,
                        m4,
                        _mm512_gf2p8affine_epi64_epi8::<0>(qh, mat_lo),
                    );
                    hi[r] = _mm512_or_si512(
                        _mm512_gf2p8affine_epi64_epi8::<0>(ql, nib),
                        _mm512_gf2p8affine_epi64_epi8::<0>(qh, mat_hi),
                    );
                    s[r] = _mm512_permutexvar_epi8(sidx[h], _mm512_zextsi256_si512(sc16[r]));
                }
                for t in 0..T {
                    let qa = qs[t].add(256 * i + 128 * h);
                    let a0 = _mm512_loadu_si512(qa as *const __m512i);
                    let a1 = _mm512_loadu_si512(qa.add(64) as *const __m512i);
                    for r in 0..R {
                        let v0 = _mm512_dpbusd_epi32(zero, lo[r], a0);
                        let v1 = _mm512_dpbusd_epi32(zero, hi[r], a1);
                        acc[r][t] = dpwssd(acc[r][t], _mm512_packs_epi32(v0, v1), s[r]);
                    }
                }
            }
            for t in 0..T {
                let bst = _mm256_loadu_si256(bs[t].add(16 * i) as *const __m256i);
                let da = *ds[t].add(i);
                for r in 0..R {
                    // Values are stored +32: subtract 32 · Σ_j scale_j · bsum_j.
                    let off = _mm256_madd_epi16(sc16[r], bst);
                    let a = _mm512_sub_epi32(
                        acc[r][t],
                        _mm512_zextsi256_si512(_mm256_slli_epi32(off, 5)),
                    );
                    accf[r][t] = _mm512_fmadd_ps(
                        _mm512_cvtepi32_ps(a),
                        _mm512_set1_ps(d[r] * da),
                        accf[r][t],
                    );
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

/// Q6_K weights × N Q8_K rows (the `RawDotN` shape).
///
/// # Safety
/// As [`q6k_rt`] with one row of `w.len()` bytes and `out.len() == N`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
pub(super) unsafe fn q6k_n<const N: usize>(w: &[u8], acts: &[ActRow<'_>], out: &mut [f32]) {
    unsafe { q6k_rt::<1, N>(w.as_ptr(), w.len(), acts, out.as_mut_ptr(), 0, 1) }
}

/// One `R × T` tile of the tiled GEMM (the `gemm512::RawTile` shape).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
unsafe fn q6k_tile<const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    acts: &[ActRow<'_>],
    out: *mut f32,
    rs: usize,
    ts: usize,
) {
    unsafe { q6k_rt::<R, T>(w, rb, acts, out, rs, ts) }
}

type Tiles = [[super::gemm512::RawTile; super::gemm512::TILE_T]; super::gemm512::TILE_R];

/// The Q6_K tile table (`[rows - 1][tokens - 1]`).
fn tiles() -> Tiles {
    [
        [
            q6k_tile::<1, 1>,
            q6k_tile::<1, 2>,
            q6k_tile::<1, 3>,
            q6k_tile::<1, 4>,
        ],
        [
            q6k_tile::<2, 1>,
            q6k_tile::<2, 2>,
            q6k_tile::<2, 3>,
            q6k_tile::<2, 4>,
        ],
    ]
}

/// The tile table for Q6_K when these kernels are on (`None` otherwise, or for other
/// types).
pub(super) fn select_tiles(dtype: hmoe_gguf::GgmlDType) -> Option<Tiles> {
    const _: () = assert!(super::gemm512::TILE_R == 2 && super::gemm512::TILE_T == 4);
    (dtype == hmoe_gguf::GgmlDType::Q6K && available()).then(tiles)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{abs_sum, dequant_act, random_blocks, SIMD_VS_SCALAR_REL};
    use super::super::{DotKernel, Isa};
    use crate::act::{ActBuf, ActFormat, ActRow};
    use crate::testutil::{gaussian, Rng};
    use crate::GgmlDType;

    /// 1–4 tokens and the 1–2 × 1–4 tiles against the scalar kernel, 1–9 super-blocks
    /// of raw random blocks (every bit pattern of ql/qh and scales, including −128).
    #[test]
    fn gfni_q6k_matches_scalar() {
        if !(Isa::Avx512.is_available()
            && is_x86_feature_detected!("gfni")
            && is_x86_feature_detected!("avx512vbmi"))
        {
            eprintln!("note: Q6_K GFNI kernels not tested: this CPU lacks the instructions");
            return;
        }
        let mut rng = Rng::new(6666);
        let scalar = DotKernel::new(GgmlDType::Q6K, Isa::Scalar).unwrap();
        for nb in 1..=9usize {
            let n = 256 * nb;
            let w = random_blocks(GgmlDType::Q6K, 2 * n, &mut rng);
            let mut acts = ActBuf::new(ActFormat::Q8K);
            acts.quantize(&gaussian(4 * n, rng.next_u64(), 1.0), n)
                .unwrap();
            let rows: Vec<ActRow<'_>> = (0..4).map(|r| acts.row(r).unwrap()).collect();
            type K = unsafe fn(&[u8], &[ActRow<'_>], &mut [f32]);
            let table: [K; 4] = [
                super::q6k_n::<1>,
                super::q6k_n::<2>,
                super::q6k_n::<3>,
                super::q6k_n::<4>,
            ];
            let rb = w.len() / 2;
            let check = |what: &str, r: usize, t: usize, got: f32| {
                let wr = &w[r * rb..(r + 1) * rb];
                let want = scalar.dot(wr, &rows[t]).unwrap() as f64;
                let scale = abs_sum(wr, GgmlDType::Q6K, &dequant_act(&rows[t]));
                let rel = (got as f64 - want).abs() / scale;
                assert!(
                    rel <= SIMD_VS_SCALAR_REL,
                    "{what} nb={nb} row {r} token {t}: {got} vs {want}"
                );
            };
            for count in 1..=4 {
                let mut out = vec![f32::NAN; count];
                // SAFETY: the features were checked above; shapes are consistent.
                unsafe { table[count - 1](&w[rb..], &rows[..count], &mut out) };
                for (t, &got) in out.iter().enumerate() {
                    check("n-row", 1, t, got);
                }
            }
            // Tiles: 1-2 rows x 1-4 tokens, out[r * 4 + t].
            let tab = super::tiles();
            for nr in 1..=2 {
                for nt in 1..=4 {
                    let mut out = [f32::NAN; 8];
                    // SAFETY: as above; 2 rows of rb bytes, 8 outputs.
                    unsafe {
                        tab[nr - 1][nt - 1](w.as_ptr(), rb, &rows[..nt], out.as_mut_ptr(), 4, 1)
                    };
                    for r in 0..nr {
                        for t in 0..nt {
                            check("tile", r, t, out[r * 4 + t]);
                        }
                    }
                }
            }
        }
    }
}
