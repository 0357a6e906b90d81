//! The AMX-INT8 Q8_0 GEMM kernel (layout in `amx.rs`), generic over the tile unit so
//! that tests run it on the emulation in `amx_tiles` where the CPU lacks AMX.

use super::amx_tiles::{TileConfig, TileUnit, A0, A1, B0, B1, C0, C1, C2, C3, TK, TM, TN};
use crate::act::ActRow;
use core::arch::x86_64::*;
use core::mem::MaybeUninit;

/// Q8_0 blocks of K per packed slab: 64 blocks (2048 values) make the packed weights
/// 32 KB + 4 KB of scales and the staged activations 32 KB, on the stack and mostly
/// L1/L2-resident; longer rows are done in several slabs that add into the output.
pub(super) const SLAB: usize = 64;
/// Bytes of one Q8_0 weight block (f16 scale + 32 int8).
const BLOCK: usize = 34;

/// One slab of packed weights: B tiles and the f32 scales of 16 weight rows.
#[repr(C, align(64))]
pub(super) struct Packed {
    pub(super) b: [[u8; TK / 4 * 4 * TN]; SLAB],
    pub(super) dw: [[f32; TN]; SLAB],
}

/// One slab of staged activations: 16 token rows of `ns * 32` bytes.
#[repr(C, align(64))]
pub(super) struct Staged([u8; TM * SLAB * TK]);

/// The reference packer (tests check [`pack_weights`] against it): packs blocks
/// `s0..s0 + ns` of weight rows `0..nr` (`nr ≤ 16`, row stride `rb`) into B tiles:
/// `b[blk][k * 64 + 4n + j] = q_n[4k + j]`, `dw[blk][n] = d_n`; columns `n ≥ nr` get
/// zeros. Writes every byte of the first `ns` tiles and scale rows.
///
/// # Safety
/// `w` points at `nr` rows of `rb` bytes holding at least `s0 + ns` Q8_0 blocks;
/// `ns ≤ SLAB`.
#[cfg(test)]
pub(super) unsafe fn pack_weights_scalar(
    w: *const u8,
    rb: usize,
    nr: usize,
    s0: usize,
    ns: usize,
    p: *mut Packed,
) {
    for blk in 0..ns {
        // SAFETY: blk < ns ≤ SLAB; field pointers of a live Packed.
        let (bt, dw) = unsafe {
            (
                (&raw mut (*p).b[blk]) as *mut u8,
                (&raw mut (*p).dw[blk]) as *mut f32,
            )
        };
        for n in 0..TN {
            if n < nr {
                // SAFETY: row n < nr, block s0 + blk inside the row (caller).
                unsafe {
                    let src = w.add(n * rb + (s0 + blk) * BLOCK);
                    let d = half::f16::from_bits(u16::from_le_bytes([*src, *src.add(1)]));
                    dw.add(n).write(d.to_f32());
                    for k in 0..TK / 4 {
                        let v = (src.add(2 + 4 * k) as *const u32).read_unaligned();
                        (bt.add(k * 4 * TN + 4 * n) as *mut u32).write_unaligned(v);
                    }
                }
            } else {
                // SAFETY: inside the tile and scale row.
                unsafe {
                    dw.add(n).write(0.0);
                    for k in 0..TK / 4 {
                        (bt.add(k * 4 * TN + 4 * n) as *mut u32).write_unaligned(0);
                    }
                }
            }
        }
    }
}

/// `vpermt2d` indices of the 16 × 8 → 8 × 16 dword transpose in [`pack_weights`]:
/// three stages of eight two-source permutes. Lane layouts (`n` = weight row,
/// `k` = dword of the block's 32 values):
/// - input `z[i]` (rows 2i, 2i+1): lane l = (n 2i + l/8, k l%8);
/// - stage 1, rows 4j..4j+3, half h: lane l = (n 4j + l%4, k 4h + l/4);
/// - stage 2, rows 8m..8m+7, k pair p of half h: lane l = (n 8m + l%8, k 4h + 2p + l/8);
/// - stage 3, dword k: lane l = (n l, k).
///
/// Entry `[stage][output]` for the first source `a` and the second `b` (lanes 16..31).
const fn transpose_idx() -> [[[u32; 16]; 2]; 3] {
    let mut idx = [[[0u32; 16]; 2]; 3];
    let mut l = 0;
    while l < 16 {
        // Stage 1: a = z[2j] (rows 4j, 4j+1), b = z[2j+1] (rows 4j+2, 4j+3).
        let mut h = 0;
        while h < 2 {
            let (q, k) = (l % 4, 4 * h + l / 4);
            idx[0][h][l] = if q < 2 {
                (q * 8 + k) as u32
            } else {
                (16 + (q - 2) * 8 + k) as u32
            };
            h += 1;
        }
        // Stage 2: a = stage-1 rows 8m..8m+3, b = rows 8m+4..8m+7 (same half).
        let mut p = 0;
        while p < 2 {
            let (q, kk) = (l % 8, 2 * p + l / 8);
            idx[1][p][l] = if q < 4 {
                (kk * 4 + q) as u32
            } else {
                (16 + kk * 4 + q - 4) as u32
            };
            p += 1;
        }
        // Stage 3: a = stage-2 rows 0..7, b = rows 8..15 (same k pair); output s.
        let mut s = 0;
        while s < 2 {
            idx[2][s][l] = if l < 8 {
                (s * 8 + l) as u32
            } else {
                (16 + s * 8 + l - 8) as u32
            };
            s += 1;
        }
        l += 1;
    }
    idx
}

const TRANSPOSE_IDX: [[[u32; 16]; 2]; 3] = transpose_idx();

/// `pack_weights_scalar` (the tests' reference) with AVX-512: per block, 16 row loads, a three-stage
/// permute transpose into the eight B-tile rows, and the 16 scales through F16C.
///
/// # Safety
/// As for `pack_weights_scalar`; the CPU has AVX-512F.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
#[allow(clippy::needless_range_loop)] // the stage indices name lane layouts
pub(super) unsafe fn pack_weights(
    w: *const u8,
    rb: usize,
    nr: usize,
    s0: usize,
    ns: usize,
    p: *mut Packed,
) {
    let ld = |s: usize, o: usize| {
        // SAFETY: constant 64-byte index rows.
        unsafe { _mm512_loadu_si512(TRANSPOSE_IDX[s][o].as_ptr() as *const __m512i) }
    };
    let i1 = [ld(0, 0), ld(0, 1)];
    let i2 = [ld(1, 0), ld(1, 1)];
    let i3 = [ld(2, 0), ld(2, 1)];
    for blk in 0..ns {
        let off = (s0 + blk) * BLOCK;
        // Row n's 32 values (zeros past nr).
        let row = |n: usize| {
            if n < nr {
                // SAFETY: row n < nr, block s0 + blk inside it (caller).
                unsafe { _mm256_loadu_si256(w.add(n * rb + off + 2) as *const __m256i) }
            } else {
                _mm256_setzero_si256()
            }
        };
        let mut z = [_mm512_setzero_si512(); 8];
        for (i, zi) in z.iter_mut().enumerate() {
            *zi = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(row(2 * i)), row(2 * i + 1));
        }
        // Stage 1: s1[h][j] = rows 4j..4j+3, k in 4h..4h+3.
        let mut s1 = [[_mm512_setzero_si512(); 4]; 2];
        for j in 0..4 {
            for h in 0..2 {
                s1[h][j] = _mm512_permutex2var_epi32(z[2 * j], i1[h], z[2 * j + 1]);
            }
        }
        // Stage 2: s2[h][p][m] = rows 8m..8m+7, k in 4h+2p..4h+2p+1.
        let mut s2 = [[[_mm512_setzero_si512(); 2]; 2]; 2];
        for h in 0..2 {
            for p in 0..2 {
                for m in 0..2 {
                    s2[h][p][m] = _mm512_permutex2var_epi32(s1[h][2 * m], i2[p], s1[h][2 * m + 1]);
                }
            }
        }
        // SAFETY: blk < ns ≤ SLAB; field pointers of a live Packed.
        let bt = unsafe { (&raw mut (*p).b[blk]) as *mut __m512i };
        for h in 0..2 {
            for pp in 0..2 {
                for s in 0..2 {
                    let k = 4 * h + 2 * pp + s;
                    let v = _mm512_permutex2var_epi32(s2[h][pp][0], i3[s], s2[h][pp][1]);
                    // SAFETY: row k < 8 of the 512-byte tile.
                    unsafe { _mm512_storeu_si512(bt.add(k), v) };
                }
            }
        }
        let mut d = [0u16; TN];
        for (n, dn) in d.iter_mut().enumerate().take(nr) {
            // SAFETY: the f16 scale of block s0 + blk of row n < nr.
            *dn = unsafe { (w.add(n * rb + off) as *const u16).read_unaligned() };
        }
        // SAFETY: 16 u16 read from a local; 16 f32 written to scale row blk.
        unsafe {
            let h = _mm256_loadu_si256(d.as_ptr() as *const __m256i);
            _mm512_storeu_ps((&raw mut (*p).dw[blk]) as *mut f32, _mm512_cvtph_ps(h));
        }
    }
}

/// The int8 values and block scales of one Q8_0 activation row.
#[inline(always)]
fn q8_parts<'a>(a: &ActRow<'a>) -> (&'a [i8], &'a [f32]) {
    match a {
        ActRow::Q8_0 { qs, d } => (qs, d),
        // Unreachable: callers check (or guarantee) the Q8_0 format; an empty row
        // would be caught by the shape contract before any pointer use.
        _ => (&[], &[]),
    }
}

/// Where the A tiles of one token group come from: `(base of block s0, stride)`.
/// Straight from the activation rows when the group is full and its rows lie at one
/// positive stride (the down projection's consecutive rows), else staged (with
/// every one of the 16 rows written: missing tokens repeat the last row).
///
/// # Safety
/// Every row in `group` holds at least `(s0 + ns) * 32` values; `ns ≤ SLAB`.
pub(super) unsafe fn a_source(
    group: &[ActRow<'_>],
    s0: usize,
    ns: usize,
    staged: *mut Staged,
) -> (*const u8, usize) {
    // Addresses as integers (exposing every row's provenance): the tile unit reads
    // all 16 rows through one base pointer and stride.
    let ptr = |t: usize| q8_parts(&group[t]).0.as_ptr() as usize;
    if group.len() == TM {
        let stride = ptr(1).wrapping_sub(ptr(0));
        if stride as isize > 0 && (2..TM).all(|t| ptr(t).wrapping_sub(ptr(t - 1)) == stride) {
            return ((ptr(0) + s0 * TK) as *const u8, stride);
        }
    }
    let row = ns * TK;
    let base = staged as *mut u8;
    for t in 0..TM {
        let src = q8_parts(&group[t.min(group.len() - 1)]).0;
        // SAFETY: src holds (s0 + ns) * 32 values (caller); row t of the staging
        // buffer holds ns * 32 ≤ SLAB * 32 bytes.
        unsafe {
            core::ptr::copy_nonoverlapping(
                src.as_ptr().add(s0 * TK) as *const u8,
                base.add(t * row),
                row,
            )
        };
    }
    (base as *const u8, row)
}

/// `acc[t] += cvt(C[t]) · d_w · d_x[t]` for the first `mt` tokens of block `blk`;
/// `dx[t]` points at token t's scales from the slab's first block.
///
/// # Safety
/// `dx[t].add(blk)` readable for `t < mt`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn post(
    acc: &mut [__m512; TM],
    c: &CBuf,
    dw: &[f32; TN],
    dx: &[*const f32; TM],
    blk: usize,
    mt: usize,
) {
    // SAFETY: 16 values of `dw`, row t < mt ≤ 16 of `c`, scales readable (caller).
    unsafe {
        let dwv = _mm512_loadu_ps(dw.as_ptr());
        for t in 0..mt {
            let ci = _mm512_load_si512(c.0.as_ptr().add(t * TN) as *const __m512i);
            let s = _mm512_mul_ps(dwv, _mm512_set1_ps(*dx[t].add(blk)));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ci), s, acc[t]);
        }
    }
}

/// A stored C tile (16 tokens × 16 int32).
#[repr(C, align(64))]
struct CBuf([i32; TM * TN]);

/// Bytes of one packed B tile.
const BTILE: usize = TK / 4 * 4 * TN;

/// Issues blocks `blk` (and `blk + 1` when `two`) of one token group into `CA` (`CB`):
/// zero, load A and B, `tdpbssd`.
///
/// # Safety
/// Configured unit; A rows at `a + blk·32 + i·sa` and B tiles at `b + blk·512`
/// readable for the issued blocks.
#[inline(always)]
unsafe fn issue<U: TileUnit, const CA: u8, const CB: u8>(
    u: &mut U,
    (a, sa, b): (*const u8, usize, *const u8),
    blk: usize,
    two: bool,
) {
    // SAFETY: see the function's contract.
    unsafe {
        u.zero::<CA>();
        u.load::<A0>(a.add(blk * TK), sa);
        u.load::<B0>(b.add(blk * BTILE), 4 * TN);
        u.dpbssd::<CA, A0, B0>();
        if two {
            u.zero::<CB>();
            u.load::<A1>(a.add((blk + 1) * TK), sa);
            u.load::<B1>(b.add((blk + 1) * BTILE), 4 * TN);
            u.dpbssd::<CB, A1, B1>();
        }
    }
}

/// Stores `CA` (and `CB` when `two`) and accumulates them, scaled, into `acc`.
///
/// # Safety
/// `issue::<_, CA, CB>` ran for the same blocks; `dw.add(blk + 1)` readable when
/// `two`; the contract of [`post`].
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn drain<U: TileUnit, const CA: u8, const CB: u8>(
    u: &mut U,
    cb: &mut [CBuf; 2],
    acc: &mut [__m512; TM],
    dw: *const [f32; TN],
    dx: &[*const f32; TM],
    blk: usize,
    two: bool,
    mt: usize,
) {
    // SAFETY: see the function's contract.
    unsafe {
        u.store::<CA>(cb[0].0.as_mut_ptr() as *mut u8, 4 * TN);
        if two {
            u.store::<CB>(cb[1].0.as_mut_ptr() as *mut u8, 4 * TN);
        }
        post(acc, &cb[0], &*dw.add(blk), dx, blk, mt);
        if two {
            post(acc, &cb[1], &*dw.add(blk + 1), dx, blk + 1, mt);
        }
    }
}

/// The AMX Q8_0 GEMM: `out[r * rs + t * ts] = w_r · acts[t]`, on tile unit `u` (the
/// hardware, or the emulation in tests).
///
/// Per token group and slab, blocks go in pairs, double-buffered over two pairs of
/// C tiles: pair i+1 is issued to the tile unit before pair i is stored and scaled
/// with AVX-512, so the tile multiplications overlap the f32 work.
///
/// # Safety
/// As for `DotKernel::gemm_unchecked` with Q8_0 weights and activations; the CPU has
/// AVX-512F; `u` is usable (for `Amx`: AMX-INT8 usable by this process).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub(super) unsafe fn q8_0_gemm<U: TileUnit>(
    u: &mut U,
    w: &[u8],
    rows: usize,
    acts: &[ActRow<'_>],
    out: &mut [f32],
    rs: usize,
    ts: usize,
) {
    if rows == 0 || acts.is_empty() {
        return;
    }
    let rb = w.len() / rows;
    let nb = rb / BLOCK;
    if nb == 0 {
        return;
    }
    let mut packed = MaybeUninit::<Packed>::uninit();
    let mut staged = MaybeUninit::<Staged>::uninit();
    let (pp, sp) = (packed.as_mut_ptr(), staged.as_mut_ptr());
    let mut cb = [CBuf([0; TM * TN]), CBuf([0; TM * TN])];
    let cfg = TileConfig::q8_0();
    // SAFETY (whole block): the caller guarantees the shapes: w holds rows × nb
    // blocks, every activation row nb × 32 values and nb scales, out covers every
    // r·rs + t·ts. `pack_weights` writes every byte of the B tiles and scales read
    // below (blocks < ns) and `a_source` every staged byte (or points into the
    // activation rows). Only raw pointers reach the partly written buffers.
    unsafe {
        u.config(&cfg);
        let bbase = (&raw const (*pp).b) as *const u8;
        let dwbase = (&raw const (*pp).dw) as *const [f32; TN];
        for r0 in (0..rows).step_by(TN) {
            let nr = TN.min(rows - r0);
            for s0 in (0..nb).step_by(SLAB) {
                let ns = SLAB.min(nb - s0);
                pack_weights(w.as_ptr().add(r0 * rb), rb, nr, s0, ns, pp);
                for t0 in (0..acts.len()).step_by(TM) {
                    let group = &acts[t0..acts.len().min(t0 + TM)];
                    let mt = group.len();
                    let (abase, astride) = a_source(group, s0, ns, sp);
                    let src = (abase, astride, bbase);
                    let mut dx = [core::ptr::null::<f32>(); TM];
                    for (p, a) in dx.iter_mut().zip(group) {
                        *p = q8_parts(a).1.as_ptr().add(s0);
                    }
                    let mut acc = [_mm512_setzero_ps(); TM];
                    issue::<U, C0, C1>(u, src, 0, 1 < ns);
                    let (mut blk, mut even) = (0, true);
                    while blk < ns {
                        let (two, next) = (blk + 1 < ns, blk + 2);
                        if next < ns {
                            let two_next = next + 1 < ns;
                            if even {
                                issue::<U, C2, C3>(u, src, next, two_next);
                            } else {
                                issue::<U, C0, C1>(u, src, next, two_next);
                            }
                        }
                        let a = &mut acc;
                        if even {
                            drain::<U, C0, C1>(u, &mut cb, a, dwbase, &dx, blk, two, mt);
                        } else {
                            drain::<U, C2, C3>(u, &mut cb, a, dwbase, &dx, blk, two, mt);
                        }
                        (blk, even) = (next, !even);
                    }
                    let mut v = [0f32; TN];
                    for (t, a) in acc.iter().enumerate().take(mt) {
                        _mm512_storeu_ps(v.as_mut_ptr(), *a);
                        for (r, &x) in v.iter().enumerate().take(nr) {
                            let o = out.get_unchecked_mut((r0 + r) * rs + (t0 + t) * ts);
                            *o = if s0 == 0 { x } else { *o + x };
                        }
                    }
                }
            }
        }
        u.release();
    }
}
