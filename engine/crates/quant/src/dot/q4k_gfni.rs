//! Q4_K × Q8_K for the decode shapes (1–4 tokens, 1–2 weight rows per call) with
//! AVX-512 VNNI + GFNI, built to use fewer 512-bit uops (Sapphire Rapids issues them
//! on two ports) than `avx512q::affine_k`, which per 64 weights spends and, shift,
//! and, one 256-bit insert (activation halves to match the nibble layout), maddubs,
//! vpdpwssd (split by LLVM into vpmaddwd + vpaddd) and one scale permute.
//!
//! Here each 32-byte chunk of packed nibbles is broadcast to both halves of a
//! register and one `vgf2p8affineqb` with a per-half bit matrix puts the low nibbles
//! in the low half and the high nibbles in the high half: 64 consecutive weights
//! (sub-blocks 2c, 2c+1), so the activation is one plain 64-byte load and the unpack
//! one instruction. Two forms of the products (`PACK`, chosen once at kernel
//! selection, `HMOE_Q4K_PACK=0` for the second):
//! - pack (default): `vpdpbusd` per chunk (i32 ≤ 4·15·128 fits i16), two chunks
//!   packed to i16 (`vpackssdw`) and scaled by one `vpdpwssd`: per 128 weights 2 gfni,
//!   2 vpdpbusd, 1 pack, 1 permute, 1 vpdpwssd (7 uops);
//! - maddubs: `vpmaddubsw` + `vpdpwssd` per chunk, one permute each (8 uops).
//!
//! `vpdpwssd` goes through `asm!` so that it stays one instruction; `d` and `dmin`
//! convert in one `vcvtph2ps`; the min term is a 128-bit madd per row and token.

// Register tiles are indexed [row][token] in several arrays at once.
#![allow(clippy::needless_range_loop)]

use super::avx512q::{dpwssd, q8k_rows};
use crate::act::ActRow;
use core::arch::x86_64::*;

/// Bytes per Q4_K super-block.
const BLOCK: usize = 144;

/// Bit matrices for `vgf2p8affineqb` (result bit i = parity(x & byte[7 - i])): the
/// low nibble of each byte, and the high nibble moved down; upper result bits zero.
const LO_NIBBLE: i64 = 0x0102_0408_0000_0000;
const HI_NIBBLE: i64 = 0x1020_4080_0000_0000;

/// `vpermb` indices that spread the 8 scale bytes (bytes 0–7 of [`scales_mins`]'s
/// result; its bytes 16.. are zero) into i16 lanes: word `k` takes scale `scale(k)`,
/// its high byte byte 16.
const fn scale_lanes(scale: [u8; 32]) -> [u8; 64] {
    let mut v = [16u8; 64];
    let mut k = 0;
    while k < 32 {
        v[2 * k] = scale[k];
        k += 1;
    }
    v
}

/// Word `k` of a packs(chunk 2p, chunk 2p+1) register: per 128-bit lane L, words 0–3
/// come from the first chunk, 4–7 from the second; lanes 0–1 hold low-nibble
/// sub-blocks (2·chunk), lanes 2–3 high-nibble ones (2·chunk + 1).
const fn pack_scales(p: usize) -> [u8; 64] {
    let mut w = [0u8; 32];
    let mut k = 0;
    while k < 32 {
        let (lane, word) = (k / 8, k % 8);
        let chunk = 2 * p + word / 4;
        w[k] = (2 * chunk + if lane >= 2 { 1 } else { 0 }) as u8;
        k += 1;
    }
    scale_lanes(w)
}

/// Word `k` of a maddubs(chunk c) register: words 0–15 sub-block 2c, 16–31 2c + 1.
const fn madd_scales(c: usize) -> [u8; 64] {
    let mut w = [0u8; 32];
    let mut k = 0;
    while k < 32 {
        w[k] = (2 * c + k / 16) as u8;
        k += 1;
    }
    scale_lanes(w)
}

const PACK_SCALES: [[u8; 64]; 2] = [pack_scales(0), pack_scales(1)];
const MADD_SCALES: [[u8; 64]; 4] = [
    madd_scales(0),
    madd_scales(1),
    madd_scales(2),
    madd_scales(3),
];

/// The 6-bit scales and mins of a Q4_K block from its first 16 bytes `x` (d, dmin,
/// scales[12]) as [sc0..sc7, m0..m7], with SSE ops (ggml's `utmp` unpacking per byte):
/// sc[j] = s[j] & 63, m[j] = s[j+4] & 63 (j < 4); sc[j] = (s[j+4] & 15) | (s[j-4] >> 6) << 4,
/// m[j] = (s[j+4] >> 4) | (s[j] >> 6) << 4 (j ≥ 4), with s = x[4..16].
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx2")]
fn scales_mins(x: __m128i) -> __m128i {
    // [s0-3, s8-11, s4-7, s8-11] and the sources of the two top bits of the j ≥ 4 values.
    let a = _mm_shuffle_epi8(
        x,
        _mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15),
    );
    let b = _mm_shuffle_epi8(
        x,
        _mm_setr_epi8(-1, -1, -1, -1, 4, 5, 6, 7, -1, -1, -1, -1, 8, 9, 10, 11),
    );
    let lo_mask = _mm_setr_epi32(0x3f3f_3f3f, 0x0f0f_0f0f, 0x3f3f_3f3f, 0);
    let hi_mask = _mm_setr_epi32(0, 0, 0, 0x0f0f_0f0f);
    let lo = _mm_and_si128(a, lo_mask);
    // (hi & mask) | lo; per-16-bit shifts: the masks drop what crosses bytes.
    let v = _mm_ternarylogic_epi32::<0xEA>(_mm_srli_epi16::<4>(a), hi_mask, lo);
    _mm_ternarylogic_epi32::<0xEA>(_mm_srli_epi16::<2>(b), _mm_set1_epi8(0x30), v)
}

/// Whether these kernels replace the `avx512q` Q4_K kernels: the CPU has GFNI (beyond
/// the AVX-512 level) and `HMOE_Q4K_GFNI` is not `off` (read once; lets a benchmark
/// compare both kernels in one build).
pub(super) fn available() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        is_x86_feature_detected!("gfni")
            && is_x86_feature_detected!("avx512vbmi")
            && std::env::var("HMOE_Q4K_GFNI").map_or(true, |v| v.trim() != "off")
    })
}

/// Whether the `PACK` form of [`q4k_rt`] is selected: `HMOE_Q4K_PACK` = `0` picks the
/// maddubs form (read once).
fn pack_mode() -> bool {
    static P: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *P.get_or_init(|| std::env::var("HMOE_Q4K_PACK").map_or(true, |v| v.trim() != "0"))
}

/// Rows ahead that the 1-token GEMM tiles (2 rows per call: the decode path of
/// `run_experts` when it uses the tiled GEMM for 1 token) prefetch by default: the
/// GEMM loop itself prefetches only the next 2 rows of a 16-row tile, too close for
/// DRAM (1 token, one core: 17.7–20.3 GB/s without, 22.4–23.6 with 8 rows of gate).
const TILE_PREFETCH_ROWS: usize = 8;

/// Bytes ahead of the current super-block (of each row) that the 1-token kernels
/// prefetch into L2: `HMOE_Q4K_PREFETCH` (bytes, read once; 0 = none) if set, else
/// [`TILE_PREFETCH_ROWS`] rows for the 2-row tiles and none for one row (the per-row
/// decode path, whose executor prefetches 4 rows ahead). Rows of a matrix are
/// contiguous, so this reaches into the next rows.
fn prefetch_ahead(rows: usize, rb: usize) -> usize {
    static P: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let set = P.get_or_init(|| {
        std::env::var("HMOE_Q4K_PREFETCH")
            .ok()
            .and_then(|v| v.trim().parse().ok())
    });
    match set {
        Some(b) => *b,
        None if rows >= 2 => TILE_PREFETCH_ROWS * rb,
        None => 0,
    }
}

/// `R` weight rows (`rb` bytes apart) × `T` Q8_K rows; `out[r * rs + t * ts]`.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI, GFNI, F16C available; `acts.len() == T`, all Q8_K rows of
/// `n` values; `w` points at `R` rows of `rb = row_bytes(Q4_K, n)` bytes; the output
/// indices are writable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
pub(super) unsafe fn q4k_rt<const R: usize, const T: usize, const PACK: bool>(
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
    // maddubs form: two accumulation chains per (row, token) when there are too few
    // pairs to hide the vpdpwssd latency (the pack form has two short chains anyway).
    let split = !PACK && R * T == 1;
    let nb = rb / BLOCK;
    let pf = if T == 1 { prefetch_ahead(R, rb) } else { 0 };
    unsafe {
        let mat = _mm512_inserti64x4(
            _mm512_set1_epi64(LO_NIBBLE),
            _mm256_set1_epi64x(HI_NIBBLE),
            1,
        );
        let midx: [__m512i; 4] =
            core::array::from_fn(|c| _mm512_loadu_si512(MADD_SCALES[c].as_ptr() as *const __m512i));
        let pidx: [__m512i; 2] =
            core::array::from_fn(|p| _mm512_loadu_si512(PACK_SCALES[p].as_ptr() as *const __m512i));
        let zero = _mm512_setzero_si512();
        let mut accf = [[_mm512_setzero_ps(); T]; R];
        let mut minf = [[_mm_setzero_ps(); T]; R];
        for i in 0..nb {
            if pf != 0 {
                for r in 0..R {
                    // Prefetch never faults: the address may lie past the matrix.
                    let p = w.wrapping_add(r * rb + BLOCK * i + pf);
                    _mm_prefetch::<_MM_HINT_T1>(p as *const i8);
                    _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(64) as *const i8);
                    _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(128) as *const i8);
                }
            }
            let mut sc8 = [_mm512_setzero_si512(); R];
            let mut m16 = [_mm_setzero_si128(); R];
            let mut dd = [_mm_setzero_ps(); R];
            for r in 0..R {
                let b = w.add(r * rb + BLOCK * i);
                // [d, dmin] in lanes 0 and 1.
                let x = _mm_loadu_si128(b as *const __m128i);
                dd[r] = _mm_cvtph_ps(x);
                let sm = scales_mins(x);
                sc8[r] = _mm512_zextsi128_si512(sm);
                m16[r] = _mm_unpackhi_epi8(sm, _mm_setzero_si128());
            }
            let mut acc = [[[_mm512_setzero_si512(); 2]; T]; R];
            if PACK {
                // Chunk pairs: vpdpbusd per chunk (each i32 ≤ 4·15·128, fits i16), the
                // two packed to i16 and scaled by one vpdpwssd: half the scale permutes
                // and scale multiplies of the maddubs form.
                for p in 0..2 {
                    let mut wv = [[_mm512_setzero_si512(); 2]; R];
                    let mut s = [_mm512_setzero_si512(); R];
                    for r in 0..R {
                        let q = w.add(r * rb + BLOCK * i + 16 + 64 * p);
                        for h in 0..2 {
                            let qq = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                                q.add(32 * h) as *const __m256i
                            ));
                            wv[r][h] = _mm512_gf2p8affine_epi64_epi8::<0>(qq, mat);
                        }
                        s[r] = _mm512_permutexvar_epi8(pidx[p], sc8[r]);
                    }
                    for t in 0..T {
                        let qa = qs[t].add(256 * i + 128 * p);
                        let a0 = _mm512_loadu_si512(qa as *const __m512i);
                        let a1 = _mm512_loadu_si512(qa.add(64) as *const __m512i);
                        for r in 0..R {
                            let v0 = _mm512_dpbusd_epi32(zero, wv[r][0], a0);
                            let v1 = _mm512_dpbusd_epi32(zero, wv[r][1], a1);
                            acc[r][t][0] = dpwssd(acc[r][t][0], _mm512_packs_epi32(v0, v1), s[r]);
                        }
                    }
                }
            } else {
                for c in 0..4 {
                    let mut wv = [_mm512_setzero_si512(); R];
                    let mut s = [_mm512_setzero_si512(); R];
                    for r in 0..R {
                        let q = w.add(r * rb + BLOCK * i + 16 + 32 * c);
                        let qq = _mm512_broadcast_i64x4(_mm256_loadu_si256(q as *const __m256i));
                        wv[r] = _mm512_gf2p8affine_epi64_epi8::<0>(qq, mat);
                        s[r] = _mm512_permutexvar_epi8(midx[c], sc8[r]);
                    }
                    let k = if split { c & 1 } else { 0 };
                    for t in 0..T {
                        let a = _mm512_loadu_si512(qs[t].add(256 * i + 64 * c) as *const __m512i);
                        for r in 0..R {
                            acc[r][t][k] =
                                dpwssd(acc[r][t][k], _mm512_maddubs_epi16(wv[r], a), s[r]);
                        }
                    }
                }
            }
            for r in 0..R {
                for t in 0..T {
                    // [d·da, dmin·da] in one multiply.
                    let sd = _mm_mul_ps(dd[r], _mm_broadcast_ss(&*ds[t].add(i)));
                    let a = if split {
                        _mm512_add_epi32(acc[r][t][0], acc[r][t][1])
                    } else {
                        acc[r][t][0]
                    };
                    accf[r][t] = _mm512_fmadd_ps(
                        _mm512_cvtepi32_ps(a),
                        _mm512_broadcastss_ps(sd),
                        accf[r][t],
                    );
                    let mt = _mm_madd_epi16(
                        m16[r],
                        _mm_loadu_si128(bs32[t].add(8 * i) as *const __m128i),
                    );
                    minf[r][t] =
                        _mm_fmadd_ps(_mm_cvtepi32_ps(mt), _mm_permute_ps::<0x55>(sd), minf[r][t]);
                }
            }
        }
        for r in 0..R {
            for t in 0..T {
                let v = _mm512_sub_ps(accf[r][t], _mm512_zextps128_ps512(minf[r][t]));
                *out.add(r * rs + t * ts) = _mm512_reduce_add_ps(v);
            }
        }
    }
}

/// Q4_K weights × N Q8_K rows (the `RawDotN` shape).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
unsafe fn q4k_n<const N: usize, const PACK: bool>(w: &[u8], acts: &[ActRow<'_>], out: &mut [f32]) {
    unsafe { q4k_rt::<1, N, PACK>(w.as_ptr(), w.len(), acts, out.as_mut_ptr(), 0, 1) }
}

/// The N-row kernels (index `n - 1`) of the selected form.
pub(super) fn select_multi() -> [super::RawDotN; 4] {
    if pack_mode() {
        [
            q4k_n::<1, true>,
            q4k_n::<2, true>,
            q4k_n::<3, true>,
            q4k_n::<4, true>,
        ]
    } else {
        [
            q4k_n::<1, false>,
            q4k_n::<2, false>,
            q4k_n::<3, false>,
            q4k_n::<4, false>,
        ]
    }
}

/// One Q4_K row × one Q8_K row (the `RawDot` shape).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
pub(super) unsafe fn q4k_1(w: &[u8], a: &ActRow<'_>) -> f32 {
    let mut o = 0f32;
    let (p, a) = (w.as_ptr(), core::slice::from_ref(a));
    unsafe {
        if pack_mode() {
            q4k_rt::<1, 1, true>(p, w.len(), a, &mut o, 0, 1)
        } else {
            q4k_rt::<1, 1, false>(p, w.len(), a, &mut o, 0, 1)
        }
    };
    o
}

/// One `R × T` tile of the tiled GEMM (the `gemm512::RawTile` shape).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")]
unsafe fn q4k_tile<const R: usize, const T: usize, const PACK: bool>(
    w: *const u8,
    rb: usize,
    acts: &[ActRow<'_>],
    out: *mut f32,
    rs: usize,
    ts: usize,
) {
    unsafe { q4k_rt::<R, T, PACK>(w, rb, acts, out, rs, ts) }
}

/// The tile table (`[rows - 1][tokens - 1]`) of one form.
fn tiles<const PACK: bool>() -> Tiles {
    [
        [
            q4k_tile::<1, 1, PACK>,
            q4k_tile::<1, 2, PACK>,
            q4k_tile::<1, 3, PACK>,
            q4k_tile::<1, 4, PACK>,
        ],
        [
            q4k_tile::<2, 1, PACK>,
            q4k_tile::<2, 2, PACK>,
            q4k_tile::<2, 3, PACK>,
            q4k_tile::<2, 4, PACK>,
        ],
    ]
}

type Tiles = [[super::gemm512::RawTile; super::gemm512::TILE_T]; super::gemm512::TILE_R];

/// The tile table for Q4_K when these kernels are on (`None` otherwise, or for
/// other types).
pub(super) fn select_tiles(dtype: hmoe_gguf::GgmlDType) -> Option<Tiles> {
    const _: () = assert!(super::gemm512::TILE_R == 2 && super::gemm512::TILE_T == 4);
    if dtype != hmoe_gguf::GgmlDType::Q4K || !available() {
        return None;
    }
    Some(if pack_mode() {
        tiles::<true>()
    } else {
        tiles::<false>()
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{abs_sum, dequant_act, random_blocks, SIMD_VS_SCALAR_REL};
    use super::super::{DotKernel, Isa};
    use crate::act::{ActBuf, ActFormat, ActRow};
    use crate::testutil::{gaussian, Rng};
    use crate::GgmlDType;

    /// Both forms of the GFNI kernels (1–4 tokens; 1–2 rows × 1–4 tokens tiles) and the
    /// `avx512q` kernels they replace, against the scalar kernel: 1–9 super-blocks, raw
    /// random blocks (every bit pattern of scales, mins and nibbles).
    #[test]
    fn gfni_and_plain_kernels_match_scalar() {
        if !(Isa::Avx512.is_available()
            && is_x86_feature_detected!("gfni")
            && is_x86_feature_detected!("avx512vbmi"))
        {
            eprintln!("note: Q4_K GFNI kernels not tested: this CPU lacks the instructions");
            return;
        }
        let mut rng = Rng::new(4444);
        let scalar = DotKernel::new(GgmlDType::Q4K, Isa::Scalar).unwrap();
        for nb in 1..=9usize {
            let n = 256 * nb;
            let w = random_blocks(GgmlDType::Q4K, 2 * n, &mut rng);
            let rb = w.len() / 2;
            let mut acts = ActBuf::new(ActFormat::Q8K);
            acts.quantize(&gaussian(4 * n, rng.next_u64(), 1.0), n)
                .unwrap();
            let rows: Vec<ActRow<'_>> = (0..4).map(|r| acts.row(r).unwrap()).collect();
            let mut want = [[0f64; 4]; 2];
            let mut scale = [[0f64; 4]; 2];
            for r in 0..2 {
                for t in 0..4 {
                    let wr = &w[r * rb..(r + 1) * rb];
                    want[r][t] = scalar.dot(wr, &rows[t]).unwrap() as f64;
                    scale[r][t] = abs_sum(wr, GgmlDType::Q4K, &dequant_act(&rows[t]));
                }
            }
            let check = |what: &str, r: usize, t: usize, got: f32| {
                let rel = (got as f64 - want[r][t]).abs() / scale[r][t];
                assert!(
                    rel <= SIMD_VS_SCALAR_REL,
                    "{what} nb={nb} row {r} token {t}: {got} vs {}",
                    want[r][t]
                );
            };
            // SAFETY: the features were checked above; shapes are consistent.
            unsafe {
                check("q4k_1", 0, 0, super::q4k_1(&w[..rb], &rows[0]));
                type N = unsafe fn(&[u8], &[ActRow<'_>], &mut [f32]);
                use super::q4k_n as g;
                let pack: [N; 4] = [g::<1, true>, g::<2, true>, g::<3, true>, g::<4, true>];
                let madd: [N; 4] = [g::<1, false>, g::<2, false>, g::<3, false>, g::<4, false>];
                use super::super::avx512q::q4k_n as p;
                let plain: [N; 4] = [p::<1>, p::<2>, p::<3>, p::<4>];
                for (what, table) in [("pack", pack), ("maddubs", madd), ("plain", plain)] {
                    for count in 1..=4 {
                        let mut out = vec![f32::NAN; count];
                        table[count - 1](&w[rb..], &rows[..count], &mut out);
                        for (t, &got) in out.iter().enumerate() {
                            check(what, 1, t, got);
                        }
                    }
                }
                // Tiles: 1-2 rows x 1-4 tokens, out[r * 4 + t].
                for (what, tab) in [
                    ("pack tile", super::tiles::<true>()),
                    ("maddubs tile", super::tiles::<false>()),
                ] {
                    for nr in 1..=2 {
                        for nt in 1..=4 {
                            let mut out = [f32::NAN; 8];
                            tab[nr - 1][nt - 1](
                                w.as_ptr(),
                                rb,
                                &rows[..nt],
                                out.as_mut_ptr(),
                                4,
                                1,
                            );
                            for r in 0..nr {
                                for t in 0..nt {
                                    check(what, r, t, out[r * 4 + t]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
