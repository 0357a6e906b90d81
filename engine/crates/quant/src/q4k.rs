//! Q4_K: 256-element super-blocks of 8 sub-blocks of 32;
//! `{ f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }` (144 bytes);
//! x = d * sc[j] * q - dmin * m[j], with 6-bit sc/m packed in `scales`.

use crate::float::{f16_at, put_f16};
use crate::kquant_search::{make_qkx2_quants, nearest_int};
use crate::QK_K;

/// Bytes per Q4_K block.
pub(crate) const BLOCK_BYTES: usize = 144;

/// Unpacks the 6-bit (scale, min) pair of sub-block `j` (ggml's `get_scale_min_k4`).
#[inline]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Packs eight 6-bit scales and mins into the 12-byte k4 layout.
pub(crate) fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8], out: &mut [u8]) {
    out[..12].fill(0);
    for j in 0..8 {
        if j < 4 {
            out[j] = ls[j];
            out[j + 4] = lm[j];
        } else {
            out[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            out[j - 4] |= (ls[j] >> 4) << 6;
            out[j] |= (lm[j] >> 4) << 6;
        }
    }
}

pub(crate) fn dequant(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let scales = &b[4..16];
        let qs = &b[16..144];
        for c in 0..4 {
            let q = &qs[32 * c..32 * c + 32];
            let (s0, m0) = scale_min_k4(2 * c, scales);
            let (s1, m1) = scale_min_k4(2 * c + 1, scales);
            let (d0, n0) = (d * s0 as f32, dmin * m0 as f32);
            let (d1, n1) = (d * s1 as f32, dmin * m1 as f32);
            let out = &mut y[64 * c..64 * c + 64];
            for l in 0..32 {
                out[l] = d0 * (q[l] & 0xF) as f32 - n0;
                out[l + 32] = d1 * (q[l] >> 4) as f32 - n1;
            }
        }
    }
}

/// Chooses the 6-bit sub-block scales/mins for an affine k-quant super-block
/// (shared by Q4_K and Q5_K) and returns `(d, dmin, ls, lm)` as stored, having
/// written the f16 `d`/`dmin` into `head[0..4]`.
pub(crate) fn choose_affine_scales(
    x: &[f32],
    nmax: i32,
    head: &mut [u8],
) -> (f32, f32, [u8; 8], [u8; 8]) {
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut l = [0u8; 32];
    let mut weights = [0f32; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        // ggml weights each element by the block's RMS plus its own magnitude.
        let av_x = (xs.iter().map(|v| v * v).sum::<f32>() / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(xs, &weights, nmax, &mut l, -1.0, 0.1, 20);
        scales[j] = s;
        mins[j] = m;
    }
    let max_scale = scales.iter().fold(0f32, |a, &b| a.max(b));
    let max_min = mins.iter().fold(0f32, |a, &b| a.max(b));
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        ls[j] = nearest_int(inv_scale * scales[j]).clamp(0, 63) as u8;
        lm[j] = nearest_int(inv_min * mins[j]).clamp(0, 63) as u8;
    }
    let d = put_f16(head, 0, max_scale / 63.0);
    let dmin = put_f16(head, 2, max_min / 63.0);
    (d, dmin, ls, lm)
}

/// Final levels of one sub-block given its stored scale/min.
pub(crate) fn affine_levels(x: &[f32], d: f32, dm: f32, nmax: i32, l: &mut [u8]) {
    if d == 0.0 {
        l.fill(0);
        return;
    }
    for (o, &v) in l.iter_mut().zip(x) {
        *o = nearest_int((v + dm) / d).clamp(0, nmax) as u8;
    }
}

pub(crate) fn quant(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let (d, dmin, ls, lm) = choose_affine_scales(x, 15, &mut b[0..4]);
        pack_scale_min_k4(&ls, &lm, &mut b[4..16]);
        let mut l = [0u8; QK_K];
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &b[4..16]);
            affine_levels(
                &x[32 * j..32 * j + 32],
                d * sc as f32,
                dmin * m as f32,
                15,
                &mut l[32 * j..32 * j + 32],
            );
        }
        let qs = &mut b[16..144];
        for c in 0..4 {
            for i in 0..32 {
                qs[32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
            }
        }
    }
}
