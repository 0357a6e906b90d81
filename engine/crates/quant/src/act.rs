//! Activation formats for the dot products (ggml's `vec_dot_type`): Q8_0 blocks for
//! Q8_0 weights, Q8_K super-blocks (with 16-element sums) for the k-quants, bf16
//! for BF16 weights, plain f32 for F32/F16 weights. Activations are quantised once
//! per layer into an [`ActBuf`] that every expert then shares.

use crate::kquant_search::nearest_int;
use crate::{GgmlDType, QuantError, QK8_0, QK_K};
use half::bf16;
use std::marker::PhantomData;

/// The activation format a weight type's dot product consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActFormat {
    /// Plain f32 (F32 and F16 weights).
    F32,
    /// bfloat16 (BF16 weights; the AVX-512 BF16 dot takes bf16 pairs).
    BF16,
    /// 32-element blocks, f32 scale, i8 values in -127..=127 (Q8_0 weights).
    Q8_0,
    /// 256-element blocks, f32 scale, i8 values, i16 sums of each 16 (k-quant weights).
    Q8K,
}

impl ActFormat {
    /// The format that weights of `dtype` are multiplied with.
    pub fn for_weights(dtype: GgmlDType) -> Result<Self, QuantError> {
        Ok(match dtype {
            GgmlDType::F32 | GgmlDType::F16 => Self::F32,
            GgmlDType::BF16 => Self::BF16,
            GgmlDType::Q8_0 => Self::Q8_0,
            GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K => Self::Q8K,
            other => return Err(QuantError::Unsupported(other)),
        })
    }

    /// Elements per block (1 for the float formats).
    pub fn block(self) -> usize {
        match self {
            Self::F32 | Self::BF16 => 1,
            Self::Q8_0 => QK8_0,
            Self::Q8K => QK_K,
        }
    }
}

/// One quantised activation row, borrowed from an [`ActBuf`].
#[derive(Debug, Clone, Copy)]
pub enum ActRow<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// bf16 bit patterns.
    BF16(&'a [u16]),
    /// Q8_0: `qs.len() == 32 * d.len()`.
    Q8_0 {
        /// Quantised values.
        qs: &'a [i8],
        /// One scale per 32 values.
        d: &'a [f32],
    },
    /// Q8_K: `qs.len() == 256 * d.len() == 16 * bsums.len() == 32 * bsums32.len()`.
    Q8K {
        /// Quantised values.
        qs: &'a [i8],
        /// One scale per 256 values.
        d: &'a [f32],
        /// Sum of each 16 consecutive values.
        bsums: &'a [i16],
        /// Sum of each 32 consecutive values (the min terms of Q4_K/Q5_K, precomputed
        /// once per activation instead of once per weight row).
        bsums32: &'a [i16],
    },
}

impl ActRow<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::BF16(v) => v.len(),
            Self::Q8_0 { qs, .. } | Self::Q8K { qs, .. } => qs.len(),
        }
    }

    /// Whether the row is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The row's format.
    pub fn format(&self) -> ActFormat {
        match self {
            Self::F32(_) => ActFormat::F32,
            Self::BF16(_) => ActFormat::BF16,
            Self::Q8_0 { .. } => ActFormat::Q8_0,
            Self::Q8K { .. } => ActFormat::Q8K,
        }
    }
}

/// A reusable buffer of `rows` activation rows of `cols` elements in one format.
/// Growing it allocates; re-preparing it at the same or a smaller size does not.
#[derive(Debug, Clone)]
pub struct ActBuf {
    format: ActFormat,
    rows: usize,
    cols: usize,
    f: Vec<f32>,
    h: Vec<u16>,
    qs: Vec<i8>,
    d: Vec<f32>,
    bsums: Vec<i16>,
    bsums32: Vec<i16>,
}

impl ActBuf {
    /// An empty buffer for `format`.
    pub fn new(format: ActFormat) -> Self {
        ActBuf {
            format,
            rows: 0,
            cols: 0,
            f: Vec::new(),
            h: Vec::new(),
            qs: Vec::new(),
            d: Vec::new(),
            bsums: Vec::new(),
            bsums32: Vec::new(),
        }
    }

    /// The buffer's format.
    pub fn format(&self) -> ActFormat {
        self.format
    }

    /// Rows currently held.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Elements per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Sizes the buffer for `rows × cols` (contents unspecified until written).
    pub fn prepare(&mut self, rows: usize, cols: usize) -> Result<(), QuantError> {
        let block = self.format.block();
        if !cols.is_multiple_of(block) {
            return Err(QuantError::Length {
                what: "activation row length (multiple of the block)",
                expected: block,
                got: cols,
            });
        }
        let n = rows.checked_mul(cols).ok_or(QuantError::Overflow(cols))?;
        self.rows = rows;
        self.cols = cols;
        match self.format {
            ActFormat::F32 => self.f.resize(n, 0.0),
            ActFormat::BF16 => self.h.resize(n, 0),
            ActFormat::Q8_0 => {
                self.qs.resize(n, 0);
                self.d.resize(n / QK8_0, 0.0);
            }
            ActFormat::Q8K => {
                self.qs.resize(n, 0);
                self.d.resize(n / QK_K, 0.0);
                self.bsums.resize(n / 16, 0);
                self.bsums32.resize(n / 32, 0);
            }
        }
        Ok(())
    }

    /// Prepares for `x.len() / cols` rows and quantises all of them.
    pub fn quantize(&mut self, x: &[f32], cols: usize) -> Result<(), QuantError> {
        if cols == 0 || !x.len().is_multiple_of(cols) {
            return Err(QuantError::Length {
                what: "activation matrix (rows × cols)",
                expected: cols,
                got: x.len(),
            });
        }
        self.prepare(x.len() / cols, cols)?;
        let w = self.writer();
        for (r, row) in x.chunks_exact(cols).enumerate() {
            // SAFETY: rows are written one at a time by this thread only.
            unsafe { w.quantize_row(r, row)? };
        }
        Ok(())
    }

    /// Row `r`; `None` past the end.
    pub fn row(&self, r: usize) -> Option<ActRow<'_>> {
        if r >= self.rows {
            return None;
        }
        let (c, o) = (self.cols, r * self.cols);
        Some(match self.format {
            ActFormat::F32 => ActRow::F32(&self.f[o..o + c]),
            ActFormat::BF16 => ActRow::BF16(&self.h[o..o + c]),
            ActFormat::Q8_0 => ActRow::Q8_0 {
                qs: &self.qs[o..o + c],
                d: &self.d[o / QK8_0..(o + c) / QK8_0],
            },
            ActFormat::Q8K => ActRow::Q8K {
                qs: &self.qs[o..o + c],
                d: &self.d[o / QK_K..(o + c) / QK_K],
                bsums: &self.bsums[o / 16..(o + c) / 16],
                bsums32: &self.bsums32[o / 32..(o + c) / 32],
            },
        })
    }

    /// A handle through which several threads may quantise distinct rows at once.
    pub fn writer(&mut self) -> ActWriter<'_> {
        ActWriter {
            format: self.format,
            rows: self.rows,
            cols: self.cols,
            f: self.f.as_mut_ptr(),
            h: self.h.as_mut_ptr(),
            qs: self.qs.as_mut_ptr(),
            d: self.d.as_mut_ptr(),
            bsums: self.bsums.as_mut_ptr(),
            bsums32: self.bsums32.as_mut_ptr(),
            _buf: PhantomData,
        }
    }
}

/// Shared write access to the rows of an [`ActBuf`] (see [`ActBuf::writer`]).
pub struct ActWriter<'a> {
    format: ActFormat,
    rows: usize,
    cols: usize,
    f: *mut f32,
    h: *mut u16,
    qs: *mut i8,
    d: *mut f32,
    bsums: *mut i16,
    bsums32: *mut i16,
    _buf: PhantomData<&'a mut ActBuf>,
}

// SAFETY: the writer only hands out disjoint per-row regions; callers of
// `quantize_row` promise not to write the same row from two threads at once.
unsafe impl Sync for ActWriter<'_> {}
unsafe impl Send for ActWriter<'_> {}

impl ActWriter<'_> {
    /// Rows of the underlying buffer.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Quantises `x` (exactly `cols` values) into row `r`.
    ///
    /// # Safety
    /// No other thread may write row `r` during this call (distinct rows are fine).
    pub unsafe fn quantize_row(&self, r: usize, x: &[f32]) -> Result<(), QuantError> {
        if r >= self.rows {
            return Err(QuantError::Length {
                what: "activation row index",
                expected: self.rows,
                got: r,
            });
        }
        if x.len() != self.cols {
            return Err(QuantError::Length {
                what: "activation row",
                expected: self.cols,
                got: x.len(),
            });
        }
        let (c, o) = (self.cols, r * self.cols);
        // SAFETY: `prepare` sized every array for `rows × cols`; row `r` is in range
        // and its region is disjoint from every other row's.
        unsafe {
            match self.format {
                ActFormat::F32 => {
                    std::slice::from_raw_parts_mut(self.f.add(o), c).copy_from_slice(x)
                }
                ActFormat::BF16 => {
                    let out = std::slice::from_raw_parts_mut(self.h.add(o), c);
                    for (h, &v) in out.iter_mut().zip(x) {
                        *h = bf16::from_f32(v).to_bits();
                    }
                }
                ActFormat::Q8_0 => quantize_q8_0(
                    x,
                    std::slice::from_raw_parts_mut(self.qs.add(o), c),
                    std::slice::from_raw_parts_mut(self.d.add(o / QK8_0), c / QK8_0),
                ),
                ActFormat::Q8K => quantize_q8k(
                    x,
                    std::slice::from_raw_parts_mut(self.qs.add(o), c),
                    std::slice::from_raw_parts_mut(self.d.add(o / QK_K), c / QK_K),
                    std::slice::from_raw_parts_mut(self.bsums.add(o / 16), c / 16),
                    std::slice::from_raw_parts_mut(self.bsums32.add(o / 32), c / 32),
                ),
            }
        }
        Ok(())
    }
}

/// Q8_0 activation blocks (SIMD where available; bit-identical to the scalar code).
fn quantize_q8_0(x: &[f32], qs: &mut [i8], d: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::Isa::Avx2.is_available() {
        // SAFETY: AVX2 is available; slices are whole blocks (checked by `prepare`).
        unsafe { crate::act_simd::quantize_q8_0_avx2(x, qs, d) };
        return;
    }
    quantize_q8_0_scalar(x, qs, d)
}

/// Q8_K activation blocks (SIMD where available; bit-identical to the scalar code).
fn quantize_q8k(x: &[f32], qs: &mut [i8], d: &mut [f32], bsums: &mut [i16], bsums32: &mut [i16]) {
    #[cfg(target_arch = "x86_64")]
    if crate::Isa::Avx2.is_available() {
        // SAFETY: AVX2 is available; slices are whole blocks (checked by `prepare`).
        unsafe { crate::act_simd::quantize_q8k_avx2(x, qs, d, bsums, bsums32) };
        return;
    }
    quantize_q8k_scalar(x, qs, d, bsums, bsums32)
}

/// Q8_0 activation blocks: d = amax / 127 kept in f32 (ggml rounds it to f16; the
/// f32 scale is slightly more precise and costs nothing here).
pub(crate) fn quantize_q8_0_scalar(x: &[f32], qs: &mut [i8], d: &mut [f32]) {
    for ((xb, qb), db) in x
        .chunks_exact(QK8_0)
        .zip(qs.chunks_exact_mut(QK8_0))
        .zip(d.iter_mut())
    {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = amax / 127.0;
        let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        *db = scale;
        for (q, &v) in qb.iter_mut().zip(xb) {
            *q = nearest_int(v * id).clamp(-127, 127) as i8;
        }
    }
}

/// Q8_K blocks as ggml's `quantize_row_q8_K_ref`: the element of largest magnitude
/// maps to ∓127, so every value fits -127..=127 (which keeps the unsigned×signed
/// SIMD products of the k-quant dots in range).
pub(crate) fn quantize_q8k_scalar(
    x: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    bsums: &mut [i16],
    bsums32: &mut [i16],
) {
    for ((((xb, qb), db), sb), s32) in x
        .chunks_exact(QK_K)
        .zip(qs.chunks_exact_mut(QK_K))
        .zip(d.iter_mut())
        .zip(bsums.chunks_exact_mut(16))
        .zip(bsums32.chunks_exact_mut(8))
    {
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            *db = 0.0;
            qb.fill(0);
            sb.fill(0);
            s32.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in qb.iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).clamp(-127, 127) as i8;
        }
        for (s, q16) in sb.iter_mut().zip(qb.chunks_exact(16)) {
            *s = q16.iter().map(|&q| q as i16).sum();
        }
        for (s, pair) in s32.iter_mut().zip(sb.chunks_exact(2)) {
            *s = pair[0] + pair[1];
        }
        *db = 1.0 / iscale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{gaussian, rel_rms};

    /// 8-bit activation quantisation of N(0,1) data: step ≈ amax/127 with amax ≈ 2.2σ
    /// (Q8_0, 32 values) or ≈ 3σ (Q8_K, 256 values) → error step/√12 ≈ 0.5–0.7 %.
    const Q8_ACT_REL_TOL: f64 = 0.009;
    /// bf16 keeps 8 mantissa bits: relative rounding ≤ 2^-9, RMS ≈ 0.17 %.
    const BF16_ACT_REL_TOL: f64 = 0.0025;

    fn dequant_row(row: ActRow<'_>) -> Vec<f32> {
        match row {
            ActRow::F32(v) => v.to_vec(),
            ActRow::BF16(v) => v.iter().map(|&h| bf16::from_bits(h).to_f32()).collect(),
            ActRow::Q8_0 { qs, d } => qs
                .iter()
                .enumerate()
                .map(|(i, &q)| q as f32 * d[i / 32])
                .collect(),
            ActRow::Q8K {
                qs,
                d,
                bsums,
                bsums32,
            } => {
                for (j, s) in bsums32.iter().enumerate() {
                    let want: i16 = qs[32 * j..32 * j + 32].iter().map(|&q| q as i16).sum();
                    assert_eq!(*s, want);
                }
                for (j, s) in bsums.iter().enumerate() {
                    assert_eq!(
                        *s,
                        qs[16 * j..16 * j + 16]
                            .iter()
                            .map(|&q| q as i16)
                            .sum::<i16>()
                    );
                }
                qs.iter()
                    .enumerate()
                    .map(|(i, &q)| q as f32 * d[i / 256])
                    .collect()
            }
        }
    }

    #[test]
    fn activation_formats_round_trip() {
        let (rows, cols) = (3, 512);
        let x = gaussian(rows * cols, 11, 2.0);
        for (format, tol) in [
            (ActFormat::F32, 0.0),
            (ActFormat::BF16, BF16_ACT_REL_TOL),
            (ActFormat::Q8_0, Q8_ACT_REL_TOL),
            (ActFormat::Q8K, Q8_ACT_REL_TOL),
        ] {
            let mut buf = ActBuf::new(format);
            buf.quantize(&x, cols).unwrap();
            assert_eq!(buf.rows(), rows);
            for r in 0..rows {
                let y = dequant_row(buf.row(r).unwrap());
                let e = rel_rms(&x[r * cols..(r + 1) * cols], &y);
                assert!(e <= tol, "{format:?} row {r}: error {e} > {tol}");
            }
            assert!(buf.row(rows).is_none());
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut buf = ActBuf::new(ActFormat::Q8K);
        assert!(buf.quantize(&[0.0; 300], 300).is_err());
        assert!(buf.quantize(&[0.0; 512], 0).is_err());
        assert!(buf.quantize(&[0.0; 500], 256).is_err());
        buf.prepare(1, 256).unwrap();
        let w = buf.writer();
        // SAFETY: single-threaded test.
        assert!(unsafe { w.quantize_row(1, &[0.0; 256]) }.is_err());
        assert!(unsafe { w.quantize_row(0, &[0.0; 255]) }.is_err());
    }
}
