//! Q6_K: 256-element super-blocks of 16 sub-blocks of 16;
//! `{ u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }` (210 bytes); x = d * sc * (q - 32).
//! In each half (128 elements) element `32k + l` (k < 4) keeps its low nibble in
//! `ql[l + 32 * (k & 1)]` (high nibble when k ≥ 2) and its two high bits at `2k` of `qh[l]`.

use crate::float::{f16_at, put_f16};
use crate::kquant_search::{make_qx_quants, nearest_int};
use crate::QK_K;

/// Bytes per Q6_K block.
pub(crate) const BLOCK_BYTES: usize = 210;

pub(crate) fn dequant(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f16_at(b, 208);
        for h in 0..2 {
            let ql = &b[64 * h..64 * h + 64];
            let qh = &b[128 + 32 * h..128 + 32 * h + 32];
            let sc = &b[192 + 8 * h..192 + 8 * h + 8];
            let out = &mut y[128 * h..128 * h + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                out[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                out[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                out[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                out[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
            }
        }
    }
}

pub(crate) fn quant(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let mut l = [0u8; QK_K];
        let mut scales = [0f32; 16];
        let mut max_scale = 0f32;
        let mut max_abs = 0f32;
        for ib in 0..16 {
            let s = make_qx_quants(&x[16 * ib..16 * ib + 16], 32, &mut l[16 * ib..16 * ib + 16]);
            scales[ib] = s;
            if s.abs() > max_abs {
                max_abs = s.abs();
                max_scale = s;
            }
        }
        if max_abs == 0.0 {
            b.fill(0);
            continue;
        }
        // The largest scale maps to -128 so the i8 range is used in full.
        let iscale = -128.0 / max_scale;
        let d = put_f16(b, 208, 1.0 / iscale);
        for ib in 0..16 {
            let q = nearest_int(iscale * scales[ib]).clamp(-128, 127) as i8;
            b[192 + ib] = q as u8;
            let ds = d * q as f32;
            for i in 16 * ib..16 * ib + 16 {
                l[i] = if ds == 0.0 {
                    32
                } else {
                    (nearest_int(x[i] / ds).clamp(-32, 31) + 32) as u8
                };
            }
        }
        for h in 0..2 {
            let lh = &l[128 * h..128 * h + 128];
            for i in 0..32 {
                b[64 * h + i] = (lh[i] & 0xF) | ((lh[i + 64] & 0xF) << 4);
                b[64 * h + 32 + i] = (lh[i + 32] & 0xF) | ((lh[i + 96] & 0xF) << 4);
                b[128 + 32 * h + i] = (lh[i] >> 4)
                    | ((lh[i + 32] >> 4) << 2)
                    | ((lh[i + 64] >> 4) << 4)
                    | ((lh[i + 96] >> 4) << 6);
            }
        }
    }
}
