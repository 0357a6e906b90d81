//! Causal grouped-query attention of one sequence's new tokens over its KV cache.
//!
//! Flash-style: a work unit is (KV head, block of query tokens). It takes the query
//! heads that share the KV head, for all its tokens, as one block of rows, so each key
//! and value row is read once per group rather than once per head, and walks the keys
//! in tiles with an online softmax (running max and sum per row), so no score buffer
//! grows with the sequence. Scores are computed transposed (`[key][row]`): the rows are
//! the SIMD lanes, so the max, `exp` and sums of the softmax are all lane-wise.

mod lanes;

use super::kv_cache::LayerKv;
use hmoe_cpu::CpuPool;
#[cfg(target_arch = "x86_64")]
use lanes::{Avx2, Avx512};
use lanes::{Lanes, Scalar};
use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Shape of the attention heads.
#[derive(Debug, Clone, Copy)]
pub struct HeadShape {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

/// Query rows (tokens × heads of one group) per work unit: with 128-wide heads the
/// unit's transposed Q (32 KB), its output rows (32 KB) and a score tile (16 KB) stay
/// in L2 while the keys stream past. Qwen3-30B-A3B (group 8): 8 tokens per unit.
const UNIT_ROWS: usize = 64;
/// Keys per tile of the online softmax.
const KEY_TILE: usize = 64;

/// Instruction set of the attention kernels (runtime-detected; see [`AttnIsa::best`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnIsa {
    /// Portable `f32` loops.
    Scalar,
    /// 8 lanes, AVX2 + FMA.
    Avx2,
    /// 16 lanes, AVX-512F.
    Avx512,
}

impl AttnIsa {
    /// The widest level this CPU runs.
    pub fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return AttnIsa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return AttnIsa::Avx2;
            }
        }
        AttnIsa::Scalar
    }

    /// Every level this CPU runs, narrowest first.
    pub fn available() -> Vec<Self> {
        let best = Self::best();
        [AttnIsa::Scalar, AttnIsa::Avx2, AttnIsa::Avx512]
            .into_iter()
            .filter(|&l| l as u8 <= best as u8)
            .collect()
    }

    fn lanes(self) -> usize {
        match self {
            AttnIsa::Scalar => 1,
            AttnIsa::Avx2 => 8,
            AttnIsa::Avx512 => 16,
        }
    }

    /// This level, or the widest narrower one whose vector width divides `head_dim`
    /// (the value tiles are whole vectors).
    fn for_head_dim(self, head_dim: usize) -> Self {
        let mut isa = self;
        while !head_dim.is_multiple_of(isa.lanes()) {
            isa = match isa {
                AttnIsa::Avx512 => AttnIsa::Avx2,
                _ => AttnIsa::Scalar,
            };
        }
        isa
    }
}

/// Computes attention for `n` new query tokens at positions `start..start + n`.
///
/// `q` is `[n, n_heads * head_dim]`; `kv` already holds the keys and values of all
/// `start + n` tokens. Query token `i` sees cache positions `0..=start + i`.
/// Returns `[n, n_heads * head_dim]`.
pub fn attend(q: &[f32], kv: &LayerKv, start: usize, shape: HeadShape) -> Vec<f32> {
    let mut out = vec![0f32; q.len()];
    attend_with(AttnIsa::best(), q, kv, start, shape, &mut out);
    out
}

/// [`attend`] into a caller's buffer (`out.len() == q.len()`), on the best kernels and
/// the threads of `pool`.
pub fn attend_into(
    pool: &CpuPool,
    q: &[f32],
    kv: &LayerKv,
    start: usize,
    shape: HeadShape,
    out: &mut [f32],
) {
    attend_units(Some(pool), AttnIsa::best(), q, kv, start, shape, out);
}

/// [`attend_into`] on the kernels of `isa` (or narrower, see [`AttnIsa::best`]).
///
/// # Panics
/// If `isa` is wider than [`AttnIsa::best`], if the head counts do not divide, or if
/// `out`, `q` or the cache are shorter than the shape says (internal invariants of the
/// forward pass, not user input).
pub fn attend_with(
    isa: AttnIsa,
    q: &[f32],
    kv: &LayerKv,
    start: usize,
    shape: HeadShape,
    out: &mut [f32],
) {
    attend_units(None, isa, q, kv, start, shape, out);
}

/// [`attend_with`] on `pool`'s threads, or on rayon's without one.
fn attend_units(
    pool: Option<&CpuPool>,
    isa: AttnIsa,
    q: &[f32],
    kv: &LayerKv,
    start: usize,
    shape: HeadShape,
    out: &mut [f32],
) {
    let HeadShape {
        n_heads,
        n_kv_heads,
        head_dim,
    } = shape;
    assert!(isa as u8 <= AttnIsa::best() as u8, "{isa:?} not supported");
    assert!(n_kv_heads > 0 && head_dim > 0 && n_heads % n_kv_heads == 0);
    let q_w = n_heads * head_dim;
    let kv_w = n_kv_heads * head_dim;
    let n = q.len() / q_w;
    assert!(
        q.len() == n * q_w && out.len() == q.len(),
        "attention buffers"
    );
    let ctx = Ctx {
        q,
        k: &kv.k[..(start + n) * kv_w],
        v: &kv.v[..(start + n) * kv_w],
        start,
        q_w,
        kv_w,
        hd: head_dim,
        group: n_heads / n_kv_heads,
        scale: 1.0 / (head_dim as f32).sqrt(),
        out: OutPtr(out.as_mut_ptr()),
    };
    let isa = isa.for_head_dim(head_dim);
    let per_unit = (UNIT_ROWS / ctx.group).max(1);
    let blocks = n.div_ceil(per_unit);
    let units = blocks * n_kv_heads;
    match pool {
        // On the engine's pool: its workers are awake between the dense products, and
        // a second (rayon) pool spinning beside it cost decode ~30% on 16 cores.
        Some(pool) => {
            // Every thread takes the next unit until none is left.
            let next = AtomicUsize::new(0);
            let drain = || {
                let mut s = Scratch::default();
                loop {
                    let u = next.fetch_add(1, Ordering::Relaxed);
                    if u >= units {
                        break;
                    }
                    run_unit_at(&ctx, isa, blocks, per_unit, u, &mut s);
                }
            };
            // The pool refuses only a broadcast from inside one of its jobs; this thread
            // then finishes whatever is left.
            if pool.broadcast(|_, _| drain()).is_err() {
                drain();
            }
        }
        None => (0..units)
            .into_par_iter()
            .for_each_init(Scratch::default, |s, u| {
                run_unit_at(&ctx, isa, blocks, per_unit, u, s)
            }),
    }
}

/// Runs unit `u` of `blocks × n_kv_heads` (later token blocks first: they see more keys).
fn run_unit_at(
    ctx: &Ctx<'_>,
    isa: AttnIsa,
    blocks: usize,
    per_unit: usize,
    u: usize,
    s: &mut Scratch,
) {
    let n_kv_heads = ctx.kv_w / ctx.hd;
    let n = ctx.q.len() / ctx.q_w;
    let b = blocks - 1 - u / n_kv_heads;
    let unit = Unit {
        g: u % n_kv_heads,
        i0: b * per_unit,
        nt: per_unit.min(n - b * per_unit),
    };
    // SAFETY: the level is supported (asserted by the caller) and divides head_dim
    // (`for_head_dim`); `ctx` slices hold what the shape says (sliced by the caller);
    // units are distinct (KV head, token block) pairs, so their output rows
    // (tokens i0..i0+nt, heads g·group..(g+1)·group) are disjoint.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            AttnIsa::Avx512 => unit_avx512(ctx, unit, s),
            #[cfg(target_arch = "x86_64")]
            AttnIsa::Avx2 => unit_avx2(ctx, unit, s),
            _ => run_unit::<Scalar, 4, 4, 4, 4>(ctx, unit, s),
        }
    }
}

/// The output pointer shared by the units (each writes only its own rows).
struct OutPtr(*mut f32);
// SAFETY: units write disjoint elements (see `attend_with`).
unsafe impl Sync for OutPtr {}
impl OutPtr {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

struct Ctx<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    start: usize,
    q_w: usize,
    kv_w: usize,
    hd: usize,
    group: usize,
    scale: f32,
    out: OutPtr,
}

#[derive(Clone, Copy)]
struct Unit {
    /// KV head.
    g: usize,
    /// First query token.
    i0: usize,
    /// Query tokens.
    nt: usize,
}

/// Per-thread buffers, grown to the largest unit and reused.
#[derive(Default)]
struct Scratch {
    /// Scaled queries transposed, `[head_dim][rows_padded]`.
    qt: Vec<f32>,
    /// Scores, then probabilities, of one key tile, `[key][rows_padded]`.
    st: Vec<f32>,
    /// Unnormalised outputs, `[rows][head_dim]`.
    o: Vec<f32>,
    /// Running max, running sum and this tile's rescale factor per row.
    m: Vec<f32>,
    l: Vec<f32>,
    alpha: Vec<f32>,
    /// Offset in `q` of each row.
    row_at: Vec<usize>,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn unit_avx512(ctx: &Ctx, u: Unit, s: &mut Scratch) {
    // 4 keys × 4 row vectors (16 accumulators) for scores; 4 rows × 64 columns for P·V.
    run_unit::<Avx512, 4, 4, 4, 4>(ctx, u, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn unit_avx2(ctx: &Ctx, u: Unit, s: &mut Scratch) {
    // 16 registers: 4 keys × 2 row vectors for scores; 2 rows × 32 columns for P·V.
    run_unit::<Avx2, 4, 2, 2, 4>(ctx, u, s)
}

/// One unit: `KB` keys × `RV` row vectors per score tile, `RB` rows × `CV` column
/// vectors per P·V tile.
///
/// # Safety
/// `L`'s CPU feature is present, `L::N` divides `head_dim`, `ctx`'s slices match its
/// shape, and no other unit writes the unit's output rows.
#[inline(always)]
unsafe fn run_unit<L: Lanes, const KB: usize, const RV: usize, const RB: usize, const CV: usize>(
    ctx: &Ctx,
    u: Unit,
    s: &mut Scratch,
) {
    let (hd, group, n_l) = (ctx.hd, ctx.group, L::N);
    let rows = u.nt * group;
    let rp = rows.next_multiple_of(n_l);
    let nv = rp / n_l;
    s.qt.clear();
    s.qt.resize(hd * rp, 0.0);
    s.st.resize(KEY_TILE * rp, 0.0);
    s.o.clear();
    s.o.resize(rows * hd, 0.0);
    s.m.clear();
    s.m.resize(rp, f32::NEG_INFINITY);
    s.l.clear();
    s.l.resize(rp, 0.0);
    s.alpha.resize(rp, 0.0);
    // Rows are token-major: row r is token i0 + r / group, head g·group + r % group, so
    // one token's rows are one contiguous slice of q (and of the output).
    s.row_at.clear();
    s.row_at
        .extend((0..rows).map(|r| (u.i0 + r / group) * ctx.q_w + (u.g * group + r % group) * hd));
    // Transposed with contiguous stores (strided stores were ~10 % of a unit's time).
    let q = ctx.q;
    for (d, dst) in s.qt.chunks_exact_mut(rp).enumerate() {
        for (o, &at) in dst.iter_mut().zip(&s.row_at) {
            *o = q[at + d] * ctx.scale;
        }
    }
    let (qt, st, o) = (s.qt.as_ptr(), s.st.as_mut_ptr(), s.o.as_mut_ptr());
    let (m, l, alpha) = (s.m.as_mut_ptr(), s.l.as_mut_ptr(), s.alpha.as_mut_ptr());
    // The unit's first token sees keys 0..=first; its last sees 0..keys.
    let first = ctx.start + u.i0;
    let keys = first + u.nt;
    let k0 = ctx.k.as_ptr().add(u.g * hd);
    let v0 = ctx.v.as_ptr().add(u.g * hd);
    for j0 in (0..keys).step_by(KEY_TILE) {
        let bk = KEY_TILE.min(keys - j0);
        let kt = k0.add(j0 * ctx.kv_w);
        let vt = v0.add(j0 * ctx.kv_w);
        // Scores of the tile: st[j][r] = (scale · q_r) · k_{j0+j}.
        let mut j = 0;
        if nv == 1 {
            // One row vector (decode: one token's group): 8 keys per tile keep enough
            // independent accumulators in flight to hide the FMA latency.
            while j + 8 <= bk {
                score_tile::<L, 8, 1>(qt, rp, kt.add(j * ctx.kv_w), ctx.kv_w, hd, st.add(j * rp));
                j += 8;
            }
        }
        while j + KB <= bk {
            score_keys::<L, KB, RV>(
                qt,
                rp,
                nv,
                kt.add(j * ctx.kv_w),
                ctx.kv_w,
                hd,
                st.add(j * rp),
            );
            j += KB;
        }
        while j < bk {
            score_keys::<L, 1, RV>(
                qt,
                rp,
                nv,
                kt.add(j * ctx.kv_w),
                ctx.kv_w,
                hd,
                st.add(j * rp),
            );
            j += 1;
        }
        // Causal mask: key j0 + j is hidden from the unit's tokens before it, a prefix
        // of the rows.
        for j in 0..bk {
            let hidden = (j0 + j).saturating_sub(first).min(u.nt) * group;
            for r in 0..hidden {
                *st.add(j * rp + r) = f32::NEG_INFINITY;
            }
        }
        // Online softmax, lane-wise over rows. Key 0 is visible to every row, so after
        // the first tile the running max is finite and `m_old - m_new` is never NaN.
        for x in 0..nv {
            let off = x * n_l;
            let m_old = L::load(m.add(off));
            let mut bm = L::load(st.add(off));
            for j in 1..bk {
                bm = bm.max(L::load(st.add(j * rp + off)));
            }
            let m_new = m_old.max(bm);
            let a = m_old.sub(m_new).exp();
            let mut sum = L::zero();
            for j in 0..bk {
                let p = L::load(st.add(j * rp + off)).sub(m_new).exp();
                p.store(st.add(j * rp + off));
                sum = sum.add(p);
            }
            m_new.store(m.add(off));
            L::load(l.add(off)).mul_add(a, sum).store(l.add(off));
            a.store(alpha.add(off));
        }
        for r in 0..rows {
            let a = *alpha.add(r);
            if a != 1.0 {
                let a = L::splat(a);
                for c in (0..hd).step_by(n_l) {
                    let p = o.add(r * hd + c);
                    L::load(p).mul(a).store(p);
                }
            }
        }
        // o[r] += Σ_j p[j][r] · v_{j0+j}.
        let mut r = 0;
        while r + RB <= rows {
            pv_rows::<L, RB, CV>(st.add(r), rp, bk, vt, ctx.kv_w, hd, o.add(r * hd));
            r += RB;
        }
        while r < rows {
            pv_rows::<L, 1, CV>(st.add(r), rp, bk, vt, ctx.kv_w, hd, o.add(r * hd));
            r += 1;
        }
    }
    let out = ctx.out.get();
    for r in 0..rows {
        let inv = 1.0 / *l.add(r);
        let dst = out.add((u.i0 + r / group) * ctx.q_w + (u.g * group + r % group) * hd);
        for c in 0..hd {
            *dst.add(c) = *o.add(r * hd + c) * inv;
        }
    }
}

/// Scores of `KB` consecutive keys (rows of `k`, `kv_w` apart) against every row:
/// `st[y·rp + r] = Σ_d qt[d·rp + r] · k[y·kv_w + d]`, `RV` row vectors at a time.
#[inline(always)]
unsafe fn score_keys<L: Lanes, const KB: usize, const RV: usize>(
    qt: *const f32,
    rp: usize,
    nv: usize,
    k: *const f32,
    kv_w: usize,
    hd: usize,
    st: *mut f32,
) {
    let mut x = 0;
    while x + RV <= nv {
        score_tile::<L, KB, RV>(qt.add(x * L::N), rp, k, kv_w, hd, st.add(x * L::N));
        x += RV;
    }
    while x < nv {
        score_tile::<L, KB, 1>(qt.add(x * L::N), rp, k, kv_w, hd, st.add(x * L::N));
        x += 1;
    }
}

#[inline(always)]
unsafe fn score_tile<L: Lanes, const KB: usize, const RV: usize>(
    qt: *const f32,
    rp: usize,
    k: *const f32,
    kv_w: usize,
    hd: usize,
    st: *mut f32,
) {
    let mut acc = [[L::zero(); RV]; KB];
    for d in 0..hd {
        let mut qv = [L::zero(); RV];
        for (x, q) in qv.iter_mut().enumerate() {
            *q = L::load(qt.add(d * rp + x * L::N));
        }
        for (y, row) in acc.iter_mut().enumerate() {
            let kk = L::splat(*k.add(y * kv_w + d));
            for (a, q) in row.iter_mut().zip(&qv) {
                *a = kk.mul_add(*q, *a);
            }
        }
    }
    for (y, row) in acc.iter().enumerate() {
        for (x, a) in row.iter().enumerate() {
            a.store(st.add(y * rp + x * L::N));
        }
    }
}

/// `o[y][c] += Σ_j p[j·rp + y] · v[j·kv_w + c]` for `RB` rows, `CV` column vectors at
/// a time.
#[inline(always)]
unsafe fn pv_rows<L: Lanes, const RB: usize, const CV: usize>(
    p: *const f32,
    rp: usize,
    bk: usize,
    v: *const f32,
    kv_w: usize,
    hd: usize,
    o: *mut f32,
) {
    let mut c = 0;
    while c + CV * L::N <= hd {
        pv_tile::<L, RB, CV>(p, rp, bk, v.add(c), kv_w, hd, o.add(c));
        c += CV * L::N;
    }
    while c < hd {
        pv_tile::<L, RB, 1>(p, rp, bk, v.add(c), kv_w, hd, o.add(c));
        c += L::N;
    }
}

#[inline(always)]
unsafe fn pv_tile<L: Lanes, const RB: usize, const CV: usize>(
    p: *const f32,
    rp: usize,
    bk: usize,
    v: *const f32,
    kv_w: usize,
    hd: usize,
    o: *mut f32,
) {
    let mut acc = [[L::zero(); CV]; RB];
    for (y, row) in acc.iter_mut().enumerate() {
        for (x, a) in row.iter_mut().enumerate() {
            *a = L::load(o.add(y * hd + x * L::N));
        }
    }
    for j in 0..bk {
        let mut vv = [L::zero(); CV];
        for (x, w) in vv.iter_mut().enumerate() {
            *w = L::load(v.add(j * kv_w + x * L::N));
        }
        for (y, row) in acc.iter_mut().enumerate() {
            let pj = L::splat(*p.add(j * rp + y));
            for (a, w) in row.iter_mut().zip(&vv) {
                *a = pj.mul_add(*w, *a);
            }
        }
    }
    for (y, row) in acc.iter().enumerate() {
        for (x, a) in row.iter().enumerate() {
            a.store(o.add(y * hd + x * L::N));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::{axpy, dot, softmax};

    /// The previous implementation, kept as the oracle: one (token, head) at a time,
    /// all scores materialised, exact `f32::exp` softmax, then `Σ p·v`.
    fn attend_reference(q: &[f32], kv: &LayerKv, start: usize, shape: HeadShape) -> Vec<f32> {
        let HeadShape {
            n_heads,
            n_kv_heads,
            head_dim,
        } = shape;
        let q_width = n_heads * head_dim;
        let kv_width = n_kv_heads * head_dim;
        let n = q.len() / q_width;
        let group = n_heads / n_kv_heads;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut out = vec![0f32; n * q_width];
        for (idx, o) in out.chunks_mut(head_dim).enumerate() {
            let (i, h) = (idx / n_heads, idx % n_heads);
            let kvh = h / group;
            let qh = &q[i * q_width + h * head_dim..][..head_dim];
            let mut scores: Vec<f32> = (0..start + i + 1)
                .map(|t| dot(qh, &kv.k[t * kv_width + kvh * head_dim..][..head_dim]) * scale)
                .collect();
            softmax(&mut scores);
            for (t, &p) in scores.iter().enumerate() {
                axpy(o, p, &kv.v[t * kv_width + kvh * head_dim..][..head_dim]);
            }
        }
        out
    }

    /// Largest |new − reference| over the outputs, for values in [-1, 1]. The outputs
    /// are convex combinations of value rows, so errors are absolute on the scale of
    /// |v| ≤ 1: the new kernels sum the 128-term dot products in another order (scores
    /// of a few units, f32 ε ≈ 6e-8 → ~1e-6 each), use a polynomial `exp` (≤ 2 ulp),
    /// rescale partial sums per key tile and divide once at the end (a few ulp each).
    /// Measured ≤ 4e-7 on these inputs; 5e-6 leaves headroom without hiding a wrong
    /// mask or a dropped tile (those move outputs by ≳ 1e-2).
    const ATTN_ABS_TOL: f32 = 5e-6;
    /// Polynomial `exp` vs `f32::exp`, relative: Cephes `expf` is within ~1 ulp
    /// (measured 1 ulp ≈ 6e-8); 2^-22 ≈ 4 ulp.
    const EXP_REL_TOL: f32 = 2.4e-7;

    fn values(n: usize, seed: u64, amp: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * amp
            })
            .collect()
    }

    fn check(shape: HeadShape, n: usize, start: usize, seed: u64) {
        let q_w = shape.n_heads * shape.head_dim;
        let kv_w = shape.n_kv_heads * shape.head_dim;
        // Queries up to ±3 so that some softmax rows are sharp (scores of several units).
        let q = values(n * q_w, seed, 3.0);
        let kv = LayerKv {
            k: values((start + n) * kv_w, seed + 1, 1.0),
            v: values((start + n) * kv_w, seed + 2, 1.0),
        };
        let want = attend_reference(&q, &kv, start, shape);
        for isa in AttnIsa::available() {
            let mut got = vec![f32::NAN; q.len()];
            attend_with(isa, &q, &kv, start, shape, &mut got);
            let err = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs())
                .fold(
                    0f32,
                    |a, e| if e.is_nan() { f32::INFINITY } else { a.max(e) },
                );
            assert!(
                err <= ATTN_ABS_TOL,
                "{isa:?} {shape:?} n={n} start={start}: max error {err}"
            );
        }
    }

    #[test]
    fn matches_reference_on_random_inputs() {
        let small = [
            // Group 1, group 8, a group of 2 with heads not a multiple of 8 or 16
            // (AVX-512 falls back to AVX2, AVX2 to scalar), and a 16-wide head.
            (3, 3, 8),
            (8, 1, 16),
            (4, 2, 6),
            (2, 1, 24),
        ];
        for (n_heads, n_kv_heads, head_dim) in small {
            let shape = HeadShape {
                n_heads,
                n_kv_heads,
                head_dim,
            };
            for start in [0, 37] {
                for n in 1..=70 {
                    check(shape, n, start, (n * 131 + start) as u64);
                }
            }
        }
        // Qwen3-30B-A3B: 32 query heads over 4 KV heads of 128; token counts around the
        // unit (8 tokens) and key tile (64) boundaries.
        let qwen = HeadShape {
            n_heads: 32,
            n_kv_heads: 4,
            head_dim: 128,
        };
        for start in [0, 37] {
            for n in [1, 2, 7, 8, 9, 27, 63, 64, 65, 70] {
                check(qwen, n, start, (n * 7 + start) as u64);
            }
        }
    }

    #[test]
    fn pool_threads_give_the_rayon_result_exactly() {
        // Same units, same kernels: only which thread runs a unit changes, and each unit
        // writes its own rows, so the outputs are bit-identical.
        let shape = HeadShape {
            n_heads: 32,
            n_kv_heads: 4,
            head_dim: 128,
        };
        for threads in [1, 3] {
            let pool = CpuPool::with_threads(threads).expect("pool");
            for (n, start) in [(1, 40), (9, 0), (70, 37)] {
                let q = values(n * 32 * 128, n as u64, 3.0);
                let kv = LayerKv {
                    k: values((start + n) * 512, 11, 1.0),
                    v: values((start + n) * 512, 12, 1.0),
                };
                let mut on_rayon = vec![f32::NAN; q.len()];
                attend_with(AttnIsa::best(), &q, &kv, start, shape, &mut on_rayon);
                let mut on_pool = vec![f32::NAN; q.len()];
                attend_into(&pool, &q, &kv, start, shape, &mut on_pool);
                assert!(
                    on_pool
                        .iter()
                        .zip(&on_rayon)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "threads {threads} n {n} start {start}"
                );
            }
        }
    }

    #[test]
    fn long_context_decode_matches_reference() {
        // One new token over 300 cached ones: several key tiles for a single row block.
        let shape = HeadShape {
            n_heads: 32,
            n_kv_heads: 4,
            head_dim: 128,
        };
        check(shape, 1, 300, 5);
        check(shape, 3, 300, 6);
    }

    #[test]
    fn vector_exp_matches_libm_and_flushes_below_range() {
        for isa in AttnIsa::available() {
            let xs: Vec<f32> = (0..=4000)
                .map(|i| -(i as f32) * 0.0219)
                .chain([
                    0.0,
                    -1e-7,
                    lanes::EXP_MIN,
                    -87.0,
                    -88.0,
                    -1e3,
                    f32::NEG_INFINITY,
                ])
                .collect();
            let got = exp_with(isa, &xs);
            for (&x, &g) in xs.iter().zip(&got) {
                if x < lanes::EXP_MIN {
                    assert_eq!(g, 0.0, "{isa:?} exp({x})");
                } else {
                    let w = x.exp();
                    assert!(
                        (g - w).abs() <= EXP_REL_TOL * w,
                        "{isa:?} exp({x}) = {g}, want {w}"
                    );
                }
            }
        }
    }

    fn exp_with(isa: AttnIsa, xs: &[f32]) -> Vec<f32> {
        #[inline(always)]
        unsafe fn run<L: Lanes>(xs: &[f32]) -> Vec<f32> {
            let mut out = vec![0f32; xs.len()];
            let mut buf = vec![0f32; L::N];
            for (x, o) in xs.iter().zip(out.iter_mut()) {
                buf[0] = *x;
                let e = L::load(buf.as_ptr()).exp();
                e.store(buf.as_mut_ptr());
                *o = buf[0];
            }
            out
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512(xs: &[f32]) -> Vec<f32> {
            run::<Avx512>(xs)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(xs: &[f32]) -> Vec<f32> {
            run::<Avx2>(xs)
        }
        // SAFETY: `isa` comes from `AttnIsa::available()`; `buf` holds L::N floats.
        unsafe {
            match isa {
                #[cfg(target_arch = "x86_64")]
                AttnIsa::Avx512 => avx512(xs),
                #[cfg(target_arch = "x86_64")]
                AttnIsa::Avx2 => avx2(xs),
                _ => run::<Scalar>(xs),
            }
        }
    }

    #[test]
    fn single_visible_token_returns_its_value() {
        let shape = HeadShape {
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 2,
        };
        let kv = LayerKv {
            k: vec![1.0, 0.0],
            v: vec![3.0, -2.0],
        };
        let out = attend(&[0.5, 0.5, -1.0, 2.0], &kv, 0, shape);
        assert_eq!(out, vec![3.0, -2.0, 3.0, -2.0]);
    }

    #[test]
    fn causal_mask_hides_later_tokens() {
        for isa in AttnIsa::available() {
            // 16-wide heads so every level runs its own kernels; keys all zero, so
            // visible values are averaged with equal weights.
            let shape = HeadShape {
                n_heads: 1,
                n_kv_heads: 1,
                head_dim: 16,
            };
            let kv = LayerKv {
                k: vec![0.0; 32],
                v: [vec![1.0; 16], vec![5.0; 16]].concat(),
            };
            // Two new tokens: the first sees only v[0]; the second averages both.
            let mut out = vec![0f32; 32];
            attend_with(isa, &[1.0; 32], &kv, 0, shape, &mut out);
            assert!(out[..16].iter().all(|&x| x == 1.0), "{isa:?} {out:?}");
            assert!(out[16..].iter().all(|&x| (x - 3.0).abs() < 1e-6), "{isa:?}");
        }
    }
}
