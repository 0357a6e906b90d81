//! Plain f64 references of the dense-path kernels (dense.cu), for the emulator test and
//! `hmoe-cuda-check`. Obviously-right loops, no speed.

use crate::dense_model::{positions, validate_spans, DenseLayer, DenseMatrix, DenseShape, SeqSpan};
use crate::dtype::KernelType;
use crate::error::{CudaError, Result};

/// `y[t][r] = W_r · x[t]`, `W` `[rows, cols]` of raw blocks of type `t`.
pub fn linear(t: KernelType, w: &[u8], rows: usize, cols: usize, x: &[f32]) -> Result<Vec<f32>> {
    let mut wd = vec![0f32; rows * cols];
    hmoe_quant::dequantize(t.ggml(), w, &mut wd)
        .map_err(|e| CudaError::InvalidBatch(format!("linear reference: {e}")))?;
    let n = x.len() / cols.max(1);
    Ok((0..n * rows)
        .map(|i| {
            let (tk, r) = (i / rows, i % rows);
            let xr = &x[tk * cols..][..cols];
            let wr = &wd[r * cols..][..cols];
            wr.iter()
                .zip(xr)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>() as f32
        })
        .collect())
}

/// When the GPU dense path takes the int8 mma kernels (`HMOE_CUDA_DENSE_MMA`): a linear
/// call of at least `min_tokens` tokens on a matrix of at least `min_rows` rows of a type
/// with such a kernel (Q8_0, Q4_K, Q6_K) quantises its f32 inputs to 8 bits first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int8Linear {
    /// Tokens from which a call takes the tiled kernel.
    pub min_tokens: usize,
    /// Weight rows from which a call takes the mma kernel.
    pub min_rows: usize,
}

/// `x` (rows of `cols`) as the mma kernels quantise it for weights of type `t`: per block
/// of 32 values (Q8_0) or 256 (k-quants), d = amax / 127 and each value rint(v / d) * d
/// (gemm_mma.cu `mma_load_x`). `None` for a type without an mma kernel.
pub fn int8_rounded(t: KernelType, x: &[f32], cols: usize) -> Option<Vec<f32>> {
    let block = match t {
        KernelType::Q8_0 => 32,
        KernelType::Q4K | KernelType::Q6K => 256,
        _ => return None,
    };
    let mut out = x.to_vec();
    for row in out.chunks_mut(cols.max(1)) {
        for b in row.chunks_mut(block) {
            let am = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = am / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            // The kernel rounds v * id with one fmaf: exact in f64, then ties to even.
            b.iter_mut()
                .for_each(|v| *v = (*v as f64 * id as f64).round_ties_even() as f32 * d);
        }
    }
    Some(out)
}

/// [`linear`] as the GPU dense path runs it under `int8` (see [`Int8Linear`]).
pub fn linear_as(
    int8: Option<Int8Linear>,
    t: KernelType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
) -> Result<Vec<f32>> {
    let n = x.len() / cols.max(1);
    let q = int8
        .filter(|r| n >= r.min_tokens && rows >= r.min_rows)
        .and_then(|_| int8_rounded(t, x, cols));
    linear(t, w, rows, cols, q.as_deref().unwrap_or(x))
}

/// RMSNorm of each `w.len()`-wide row.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let c = w.len().max(1);
    x.chunks(c)
        .flat_map(|r| {
            let ms = r.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / c as f64;
            let s = 1.0 / (ms + eps as f64).sqrt();
            r.iter()
                .zip(w)
                .map(move |(&v, &g)| (v as f64 * s * g as f64) as f32)
        })
        .collect()
}

/// NeoX RoPE as the engine's CPU path computes it (f32 angle, f64 cos/sin).
pub fn rope(x: &[f32], pos: &[u32], inv_freq: &[f32], n_heads: usize, head_dim: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let mut out = x.to_vec();
    for (t, &p) in pos.iter().enumerate() {
        for h in 0..n_heads {
            let head = &mut out[(t * n_heads + h) * head_dim..][..head_dim];
            for i in 0..half {
                let a = (p as f32 * inv_freq[i]) as f64;
                let (c, s) = (a.cos() as f32, a.sin() as f32);
                let (x0, x1) = (head[i], head[i + half]);
                head[i] = x0 * c - x1 * s;
                head[i + half] = x1 * c + x0 * s;
            }
        }
    }
    out
}

/// Causal GQA attention of the `q` tokens placed after `start` cached positions.
pub fn attend(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    start: usize,
    n_heads: usize,
    n_kv: usize,
    head_dim: usize,
) -> Vec<f32> {
    let n = q.len() / (n_heads * head_dim).max(1);
    let scale = 1.0 / (head_dim as f64).sqrt();
    let mut out = vec![0f32; q.len()];
    for i in 0..n {
        for h in 0..n_heads {
            let kvh = h / (n_heads / n_kv).max(1);
            let qh = &q[(i * n_heads + h) * head_dim..][..head_dim];
            let s: Vec<f64> = (0..start + i + 1)
                .map(|t| {
                    let kt = &k[(t * n_kv + kvh) * head_dim..][..head_dim];
                    qh.iter()
                        .zip(kt)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let m = s.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
            // Each position's probability once (not once per output element: the exps
            // dominated `hmoe-cuda-check`'s host time), summed over positions in order.
            let mut o = vec![0f64; head_dim];
            for (t, sv) in s.iter().enumerate() {
                let p = (sv - m).exp() / z;
                let vt = &v[(t * n_kv + kvh) * head_dim..][..head_dim];
                o.iter_mut().zip(vt).for_each(|(a, &b)| *a += p * b as f64);
            }
            let dst = &mut out[(i * n_heads + h) * head_dim..][..head_dim];
            dst.iter_mut().zip(&o).for_each(|(d, &a)| *d = a as f32);
        }
    }
    out
}

/// One sequence's keys and values of one layer in the reference, rows of `kv_dim` floats
/// by position (grown as written).
#[derive(Debug, Clone, Default)]
pub struct RefKv {
    /// Keys.
    pub k: Vec<f32>,
    /// Values.
    pub v: Vec<f32>,
}

/// The outputs of [`attention_block`].
#[derive(Debug, Clone, Default)]
pub struct BlockOut {
    /// Pre-MoE normed hidden state `[n, hidden]`.
    pub hn: Vec<f32>,
    /// Router logits `[n, n_experts]`.
    pub router: Vec<f32>,
    /// The next layer's router on `hn` (empty without one).
    pub next_router: Vec<f32>,
}

/// What [`crate::GpuDense::attention_block`] computes, from the references above: norm,
/// Q/K/V, per-head Q/K norm, NeoX RoPE at each row's position, K/V written at the
/// positions of its sequence (`caches[i]` belongs to `spans[i]`), causal attention, output
/// projection and residual add into `x`, then the pre-MoE norm and the router(s); the
/// projections as [`linear_as`] under `int8`.
#[allow(clippy::too_many_arguments)]
pub fn attention_block(
    int8: Option<Int8Linear>,
    shape: &DenseShape,
    w: &DenseLayer<'_>,
    next_router: Option<&DenseMatrix<'_>>,
    caches: &mut [&mut RefKv],
    spans: &[SeqSpan],
    x: &mut [f32],
) -> Result<BlockOut> {
    let (h, hd, kvw) = (shape.hidden, shape.head_dim, shape.kv_dim());
    let n = x.len() / h.max(1);
    validate_spans(spans, n)?;
    if caches.len() != spans.len() {
        return Err(CudaError::InvalidBatch(format!(
            "{} caches for {} spans",
            caches.len(),
            spans.len()
        )));
    }
    let lin = |m: &DenseMatrix<'_>, a: &[f32]| linear_as(int8, m.t, m.data, m.rows, m.cols, a);
    let hn0 = rms_norm(x, w.attn_norm, shape.rms_eps);
    let (q, k, v) = (lin(&w.wq, &hn0)?, lin(&w.wk, &hn0)?, lin(&w.wv, &hn0)?);
    let (q, k) = (
        rms_norm(&q, w.q_norm, shape.rms_eps),
        rms_norm(&k, w.k_norm, shape.rms_eps),
    );
    let (pos, inv) = (positions(spans), shape.inv_freq());
    let q = rope(&q, &pos, &inv, shape.n_heads, hd);
    let k = rope(&k, &pos, &inv, shape.n_kv_heads, hd);
    let qw = shape.q_dim();
    let mut attn = vec![0f32; n * qw];
    let mut row = 0;
    for (s, kv) in spans.iter().zip(caches.iter_mut()) {
        let used = (s.start + s.n) * kvw;
        kv.k.resize(kv.k.len().max(used), 0.0);
        kv.v.resize(kv.v.len().max(used), 0.0);
        kv.k[s.start * kvw..used].copy_from_slice(&k[row * kvw..(row + s.n) * kvw]);
        kv.v[s.start * kvw..used].copy_from_slice(&v[row * kvw..(row + s.n) * kvw]);
        let rows = row * qw..(row + s.n) * qw;
        attn[rows.clone()].copy_from_slice(&attend(
            &q[rows],
            &kv.k[..used],
            &kv.v[..used],
            s.start,
            shape.n_heads,
            shape.n_kv_heads,
            hd,
        ));
        row += s.n;
    }
    let o = lin(&w.wo, &attn)?;
    x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
    let hn = rms_norm(x, w.ffn_norm, shape.rms_eps);
    let router = lin(&w.router, &hn)?;
    let next_router = match next_router {
        Some(m) => lin(m, &hn)?,
        None => Vec::new(),
    };
    Ok(BlockOut {
        hn,
        router,
        next_router,
    })
}

/// What [`crate::GpuDense::head`] computes: final norm, then the output head (as
/// [`linear_as`] under `int8`).
pub fn head(
    int8: Option<Int8Linear>,
    norm: &[f32],
    output: &DenseMatrix<'_>,
    x: &[f32],
    eps: f32,
) -> Result<Vec<f32>> {
    let hn = rms_norm(x, norm, eps);
    linear_as(int8, output.t, output.data, output.rows, output.cols, &hn)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 8-bit rounding per block: the block's largest magnitude maps to ±127 d exactly,
    /// every value lands within d / 2 of itself on the grid of d, a zero block stays zero,
    /// and Q8_0 blocks (32 values) take their own scales where k-quant blocks (256) share.
    #[test]
    fn int8_rounding_follows_the_mma_blocks() {
        let mut x: Vec<f32> = (0..512)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        x[3] = 20.0; // the first 256-block's largest magnitude
        x[300..332].iter_mut().for_each(|v| *v = 0.0);
        for (t, block) in [(KernelType::Q4K, 256), (KernelType::Q8_0, 32)] {
            let q = int8_rounded(t, &x, 512).expect("an mma type");
            for (xb, qb) in x.chunks(block).zip(q.chunks(block)) {
                let d = xb.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
                for (&v, &r) in xb.iter().zip(qb) {
                    assert!((v - r).abs() <= d * 0.5 + 1e-6, "{t:?}: {v} -> {r} (d {d})");
                    let steps = r / d.max(f32::MIN_POSITIVE);
                    assert!((steps - steps.round()).abs() < 1e-3 && steps.abs() <= 127.001);
                }
            }
            assert_eq!(q[3], 20.0, "{t:?}: the largest value keeps its magnitude");
            assert!(q[300..332].iter().all(|&v| v == 0.0));
        }
        assert!(int8_rounded(KernelType::Bf16, &x, 512).is_none());
    }

    /// `linear_as` rounds the inputs only for calls the mma kernel takes: enough tokens, a
    /// matrix of enough rows, a type with such a kernel.
    #[test]
    fn linear_as_rounds_only_the_calls_the_mma_kernel_takes() {
        let (rows, cols) = (4usize, 256usize);
        let wf: Vec<f32> = (0..rows * cols)
            .map(|i| ((i % 13) as f32 - 6.0) / 9.0)
            .collect();
        let enc = |t: KernelType| {
            let mut w = vec![0u8; hmoe_quant::row_bytes(t.ggml(), rows * cols).expect("size")];
            hmoe_quant::quantize(t.ggml(), &wf, &mut w).expect("quantize");
            w
        };
        let (f16, q8) = (enc(KernelType::F16), enc(KernelType::Q8_0));
        let x: Vec<f32> = (0..3 * cols)
            .map(|i| ((i * 29 % 61) as f32 - 30.0) / 11.0)
            .collect();
        let rule = Some(Int8Linear {
            min_tokens: 3,
            min_rows: 4,
        });
        // F16 has no mma kernel: unchanged under the rule.
        let f16_out = linear(KernelType::F16, &f16, rows, cols, &x).expect("f16");
        let got = linear_as(rule, KernelType::F16, &f16, rows, cols, &x).expect("f16");
        assert_eq!(got, f16_out);
        let plain = linear(KernelType::Q8_0, &q8, rows, cols, &x).expect("q8_0");
        let xq = int8_rounded(KernelType::Q8_0, &x, cols).expect("q8_0");
        let rounded = linear(KernelType::Q8_0, &q8, rows, cols, &xq).expect("q8_0");
        assert_ne!(plain, rounded, "the rounding must show in the products");
        let got = linear_as(rule, KernelType::Q8_0, &q8, rows, cols, &x).expect("q8_0");
        assert_eq!(got, rounded);
        let fewer_tokens = Int8Linear {
            min_tokens: 4,
            min_rows: 4,
        };
        let more_rows = Int8Linear {
            min_tokens: 3,
            min_rows: 5,
        };
        for r in [Some(fewer_tokens), Some(more_rows), None] {
            let got = linear_as(r, KernelType::Q8_0, &q8, rows, cols, &x).expect("q8_0");
            assert_eq!(got, plain, "{r:?}");
        }
    }

    /// One visible position gives its value row; two positions with equal keys give the
    /// mean of their values; with a key aligned to the query, that position's value
    /// dominates (head size 2, one KV head shared by two query heads).
    #[test]
    fn attend_weights_values_by_softmax_of_scores() {
        let (nh, nkv, hd) = (2usize, 1usize, 2usize);
        let q = [1.0f32, 0.0, 0.0, 1.0];
        // First row alone: its value whatever the score.
        let k = [3.0f32, -1.0];
        let v = [0.5f32, -2.0];
        assert_eq!(
            attend(&q, &k, &v, 0, nh, nkv, hd),
            vec![0.5, -2.0, 0.5, -2.0]
        );
        // Equal keys: the mean of the two values for both heads.
        let k2 = [1.0f32, 1.0, 1.0, 1.0];
        let v2 = [1.0f32, 2.0, 3.0, 6.0];
        let out = attend(&q, &k2, &v2, 1, nh, nkv, hd);
        assert_eq!(out, vec![2.0, 4.0, 2.0, 4.0]);
        // A large key along head 0's query: head 0 takes the second value, head 1 (its
        // query orthogonal to both keys' difference) the mean.
        let k3 = [0.0f32, 0.0, 40.0, 0.0];
        let out = attend(&q, &k3, &v2, 1, nh, nkv, hd);
        assert!(
            (out[0] - 3.0).abs() < 1e-6 && (out[1] - 6.0).abs() < 1e-6,
            "{out:?}"
        );
        assert_eq!(&out[2..], &[2.0, 4.0]);
    }
}
