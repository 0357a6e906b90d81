//! The AMX-INT8 Q8_0 GEMM kernel (layout in `amx.rs`), generic over the tile unit so
//! that tests run it on the emulation in `amx_tiles` where the CPU lacks AMX.

use super::amx_tiles::{TileConfig, TileUnit, A0, A1, B0, B1, C0, C1, TK, TM, TN};
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

/// Packs blocks `s0..s0 + ns` of weight rows `0..nr` (`nr ≤ 16`, row stride `rb`)
/// into B tiles: `b[blk][k * 64 + 4n + j] = q_n[4k + j]`, `dw[blk][n] = d_n`; columns
/// `n ≥ nr` get zeros. Writes every byte of the first `ns` tiles and scale rows.
///
/// # Safety
/// `w` points at `nr` rows of `rb` bytes holding at least `s0 + ns` Q8_0 blocks;
/// `ns ≤ SLAB`.
pub(super) unsafe fn pack_weights(
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

/// `acc[t] += cvt(C[t]) · d_w · d_x[t]` for the first `mt` tokens of one block.
#[inline]
#[target_feature(enable = "avx512f")]
fn post(acc: &mut [__m512; TM], c: &[i32; TM * TN], dw: &[f32; TN], dx: &[f32; TM], mt: usize) {
    // SAFETY: the loads read 16 values inside `dw` and row t < mt ≤ 16 of `c`.
    let dwv = unsafe { _mm512_loadu_ps(dw.as_ptr()) };
    for t in 0..mt {
        let ci = unsafe { _mm512_loadu_si512(c.as_ptr().add(t * TN) as *const __m512i) };
        let s = _mm512_mul_ps(dwv, _mm512_set1_ps(dx[t]));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ci), s, acc[t]);
    }
}

#[repr(C, align(64))]
struct CBuf([i32; TM * TN]);

/// The AMX Q8_0 GEMM: `out[r * rs + t * ts] = w_r · acts[t]`, on tile unit `u` (the
/// hardware, or the emulation in tests).
///
/// # Safety
/// As for [`DotKernel::gemm_unchecked`] with Q8_0 weights and activations; the CPU has
/// AVX-512F; `u` is usable (for [`Amx`]: AMX-INT8 usable by this process).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
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
    // blocks, every activation row nb × 32 values, out covers every r·rs + t·ts.
    // `pack_weights` writes every byte of the tiles and scales read below and
    // `a_source` every staged byte (or points into the activation rows).
    unsafe {
        u.config(&cfg);
        for r0 in (0..rows).step_by(TN) {
            let nr = TN.min(rows - r0);
            for s0 in (0..nb).step_by(SLAB) {
                let ns = SLAB.min(nb - s0);
                pack_weights(w.as_ptr().add(r0 * rb), rb, nr, s0, ns, pp);
                // Only blocks < ns are written: reach them through raw pointers.
                let btile = |blk: usize| (&raw const (*pp).b[blk]) as *const u8;
                let dwrow = |blk: usize| &(*pp).dw[blk];
                for t0 in (0..acts.len()).step_by(TM) {
                    let group = &acts[t0..acts.len().min(t0 + TM)];
                    let mt = group.len();
                    let (abase, astride) = a_source(group, s0, ns, sp);
                    let mut acc = [_mm512_setzero_ps(); TM];
                    let mut dx = [[0f32; TM]; 2];
                    let mut blk = 0;
                    while blk < ns {
                        let two = blk + 1 < ns;
                        u.zero::<C0>();
                        u.load::<A0>(abase.add(blk * TK), astride);
                        u.load::<B0>(btile(blk), 4 * TN);
                        u.dpbssd::<C0, A0, B0>();
                        if two {
                            u.zero::<C1>();
                            u.load::<A1>(abase.add((blk + 1) * TK), astride);
                            u.load::<B1>(btile(blk + 1), 4 * TN);
                            u.dpbssd::<C1, A1, B1>();
                        }
                        for (t, a) in group.iter().enumerate() {
                            let d = q8_parts(a).1;
                            dx[0][t] = *d.get_unchecked(s0 + blk);
                            if two {
                                dx[1][t] = *d.get_unchecked(s0 + blk + 1);
                            }
                        }
                        u.store::<C0>(cb[0].0.as_mut_ptr() as *mut u8, 4 * TN);
                        if mt == TM {
                            post(&mut acc, &cb[0].0, dwrow(blk), &dx[0], TM);
                        } else {
                            post(&mut acc, &cb[0].0, dwrow(blk), &dx[0], mt);
                        }
                        if two {
                            u.store::<C1>(cb[1].0.as_mut_ptr() as *mut u8, 4 * TN);
                            post(&mut acc, &cb[1].0, dwrow(blk + 1), &dx[1], mt);
                        }
                        blk += 2;
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
