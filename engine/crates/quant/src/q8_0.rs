//! Q8_0: 32 elements per block; `{ f16 d; i8 qs[32] }` (34 bytes); x = d * q.

use crate::float::{f16_at, put_f16};
use crate::QK8_0;

/// Bytes per Q8_0 block.
pub(crate) const BLOCK_BYTES: usize = 2 + QK8_0;

pub(crate) fn dequant(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK8_0))
    {
        let d = f16_at(b, 0);
        for (o, &q) in y.iter_mut().zip(&b[2..]) {
            *o = d * (q as i8) as f32;
        }
    }
}

pub(crate) fn quant(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src
        .chunks_exact(QK8_0)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        quant_block(x, b);
    }
}

/// One block, as ggml's `quantize_row_q8_0_ref`: d = amax / 127, q = round(x / d).
pub(crate) fn quant_block(x: &[f32], b: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(b, 0, d);
    for (o, &v) in b[2..].iter_mut().zip(x) {
        *o = ((v * id).round() as i32).clamp(-128, 127) as i8 as u8;
    }
}
