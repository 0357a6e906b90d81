//! Q5_K: like Q4_K plus one high bit per element;
//! `{ f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] }` (176 bytes).
//! Element `64c + i` (i < 32) takes bit `2c` of `qh[i]`, element `64c + 32 + i` bit `2c + 1`.

use crate::float::f16_at;
use crate::q4k::{affine_levels, choose_affine_scales, pack_scale_min_k4, scale_min_k4};
use crate::QK_K;

/// Bytes per Q5_K block.
pub(crate) const BLOCK_BYTES: usize = 176;

pub(crate) fn dequant(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let scales = &b[4..16];
        let qh = &b[16..48];
        let qs = &b[48..176];
        for c in 0..4 {
            let q = &qs[32 * c..32 * c + 32];
            let (s0, m0) = scale_min_k4(2 * c, scales);
            let (s1, m1) = scale_min_k4(2 * c + 1, scales);
            let (d0, n0) = (d * s0 as f32, dmin * m0 as f32);
            let (d1, n1) = (d * s1 as f32, dmin * m1 as f32);
            let out = &mut y[64 * c..64 * c + 64];
            for l in 0..32 {
                let h0 = ((qh[l] >> (2 * c)) & 1) << 4;
                let h1 = ((qh[l] >> (2 * c + 1)) & 1) << 4;
                out[l] = d0 * ((q[l] & 0xF) | h0) as f32 - n0;
                out[l + 32] = d1 * ((q[l] >> 4) | h1) as f32 - n1;
            }
        }
    }
}

pub(crate) fn quant(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let (d, dmin, ls, lm) = choose_affine_scales(x, 31, &mut b[0..4]);
        pack_scale_min_k4(&ls, &lm, &mut b[4..16]);
        let mut l = [0u8; QK_K];
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &b[4..16]);
            affine_levels(
                &x[32 * j..32 * j + 32],
                d * sc as f32,
                dmin * m as f32,
                31,
                &mut l[32 * j..32 * j + 32],
            );
        }
        let (head, rest) = b.split_at_mut(48);
        let qh = &mut head[16..48];
        qh.fill(0);
        for c in 0..4 {
            for i in 0..32 {
                let l0 = l[64 * c + i];
                let l1 = l[64 * c + 32 + i];
                qh[i] |= ((l0 >> 4) << (2 * c)) | ((l1 >> 4) << (2 * c + 1));
                rest[32 * c + i] = (l0 & 0xF) | ((l1 & 0xF) << 4);
            }
        }
    }
}
