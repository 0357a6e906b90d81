//! Portable dot products: the reference every SIMD kernel is tested against, and the
//! fallback on CPUs without AVX2. Integer sums are exact; each block's sum is scaled
//! in f32, as the SIMD kernels do (only the order of the f32 additions differs).
//!
//! Callers guarantee the lengths (checked once in `DotKernel::dot`).

use crate::float::f16_at;
use crate::q4k::scale_min_k4;
use half::{bf16, f16};

pub(crate) fn f32_f32(w: &[u8], a: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (c, &x) in w.chunks_exact(4).zip(a) {
        acc += f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * x;
    }
    acc
}

pub(crate) fn f16_f32(w: &[u8], a: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (c, &x) in w.chunks_exact(2).zip(a) {
        acc += f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32() * x;
    }
    acc
}

pub(crate) fn bf16_bf16(w: &[u8], a: &[u16]) -> f32 {
    let mut acc = 0f32;
    for (c, &x) in w.chunks_exact(2).zip(a) {
        acc += bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()
            * bf16::from_bits(x).to_f32();
    }
    acc
}

pub(crate) fn q8_0(w: &[u8], qs: &[i8], d: &[f32]) -> f32 {
    let mut acc = 0f32;
    for ((b, qa), &da) in w.chunks_exact(34).zip(qs.chunks_exact(32)).zip(d) {
        let isum: i32 = b[2..]
            .iter()
            .zip(qa)
            .map(|(&q, &a)| (q as i8) as i32 * a as i32)
            .sum();
        acc += f16_at(b, 0) * da * isum as f32;
    }
    acc
}

pub(crate) fn q4k(w: &[u8], qs: &[i8], d: &[f32], bsums: &[i16]) -> f32 {
    let mut acc = 0f32;
    for (i, b) in w.chunks_exact(144).enumerate() {
        let qa = &qs[256 * i..256 * i + 256];
        let (mut isum, mut msum) = (0i32, 0i32);
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &b[4..16]);
            let q = &b[16 + 32 * (j / 2)..16 + 32 * (j / 2) + 32];
            let a = &qa[32 * j..32 * j + 32];
            let shift = 4 * (j % 2);
            let s: i32 = q
                .iter()
                .zip(a)
                .map(|(&q, &a)| ((q >> shift) & 0xF) as i32 * a as i32)
                .sum();
            isum += sc as i32 * s;
            msum += m as i32 * (bsums[16 * i + 2 * j] as i32 + bsums[16 * i + 2 * j + 1] as i32);
        }
        acc += d[i] * (f16_at(b, 0) * isum as f32 - f16_at(b, 2) * msum as f32);
    }
    acc
}

pub(crate) fn q5k(w: &[u8], qs: &[i8], d: &[f32], bsums: &[i16]) -> f32 {
    let mut acc = 0f32;
    for (i, b) in w.chunks_exact(176).enumerate() {
        let qa = &qs[256 * i..256 * i + 256];
        let qh = &b[16..48];
        let (mut isum, mut msum) = (0i32, 0i32);
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &b[4..16]);
            let q = &b[48 + 32 * (j / 2)..48 + 32 * (j / 2) + 32];
            let a = &qa[32 * j..32 * j + 32];
            let shift = 4 * (j % 2);
            let mut s = 0i32;
            for l in 0..32 {
                let v = ((q[l] >> shift) & 0xF) | (((qh[l] >> j) & 1) << 4);
                s += v as i32 * a[l] as i32;
            }
            isum += sc as i32 * s;
            msum += m as i32 * (bsums[16 * i + 2 * j] as i32 + bsums[16 * i + 2 * j + 1] as i32);
        }
        acc += d[i] * (f16_at(b, 0) * isum as f32 - f16_at(b, 2) * msum as f32);
    }
    acc
}

pub(crate) fn q6k(w: &[u8], qs: &[i8], d: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (i, b) in w.chunks_exact(210).enumerate() {
        let qa = &qs[256 * i..256 * i + 256];
        let mut isum = 0i32;
        for h in 0..2 {
            let ql = &b[64 * h..64 * h + 64];
            let qh = &b[128 + 32 * h..128 + 32 * h + 32];
            for k in 0..4 {
                for l in 0..32 {
                    let lo = (ql[l + 32 * (k & 1)] >> (4 * (k / 2))) & 0xF;
                    let v = (lo | (((qh[l] >> (2 * k)) & 3) << 4)) as i32 - 32;
                    let e = 128 * h + 32 * k + l;
                    let sc = b[192 + e / 16] as i8 as i32;
                    isum += sc * v * qa[e] as i32;
                }
            }
        }
        acc += d[i] * f16_at(b, 208) * isum as f32;
    }
    acc
}
