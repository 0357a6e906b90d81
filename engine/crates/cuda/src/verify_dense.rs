//! Checking the dense path: random small weights, a host reference with the same
//! interface as [`GpuDense`] ([`RefDense`], the f64 ops of [`crate::dense_ref`]), and a
//! scenario of batched prefill and decode steps (sequences joining and leaving) that both
//! run, so `hmoe-cuda-check` can compare them output by output.

use crate::dense_model::{
    DenseLayer, DenseMatrix, DenseSeq, DenseShape, DenseWeights, SeqRegistry, SeqSpan,
    KV_MIN_TOKENS,
};
use crate::dense_ref::{attention_block, head, Int8Linear, RefKv};
use crate::dtype::KernelType;
use crate::error::{CudaError, Result};
use crate::GpuDense;
use std::collections::HashMap;

/// What runs the dense path: the GPU, or the reference.
pub trait DenseRunner {
    /// A new sequence of at most `capacity` tokens.
    fn new_seq(&mut self, capacity: usize) -> DenseSeq;
    /// [`GpuDense::attention_block`].
    fn block(
        &mut self,
        layer: usize,
        seqs: &[SeqSpan],
        x: &mut [f32],
        hn: &mut [f32],
        router: &mut [f32],
        next_router: &mut [f32],
    ) -> Result<()>;
    /// [`GpuDense::head`].
    fn head(&mut self, x: &[f32]) -> Result<Vec<f32>>;
}

impl DenseRunner for GpuDense {
    fn new_seq(&mut self, capacity: usize) -> DenseSeq {
        GpuDense::new_seq(self, capacity)
    }
    fn block(
        &mut self,
        layer: usize,
        seqs: &[SeqSpan],
        x: &mut [f32],
        hn: &mut [f32],
        router: &mut [f32],
        next_router: &mut [f32],
    ) -> Result<()> {
        self.attention_block(layer, seqs, x, hn, router, next_router)
    }
    fn head(&mut self, x: &[f32]) -> Result<Vec<f32>> {
        GpuDense::head(self, x)
    }
}

/// The dense path on the host in f64 references, with [`GpuDense`]'s semantics
/// (per-sequence caches written by position, released when the handle drops).
pub struct RefDense {
    shape: DenseShape,
    weights: OwnedDense,
    seqs: SeqRegistry,
    caches: HashMap<u64, Vec<RefKv>>,
    int8: Option<Int8Linear>,
}

impl RefDense {
    /// A reference over `weights` (validated against `shape`).
    pub fn new(shape: &DenseShape, weights: OwnedDense) -> Result<Self> {
        weights.weights().validate(shape)?;
        Ok(Self {
            shape: shape.clone(),
            weights,
            seqs: SeqRegistry::default(),
            caches: HashMap::new(),
            int8: None,
        })
    }

    /// The projections as the GPU instance multiplies them: `GpuDense::int8_linear`
    /// (`None`, the default: f32 inputs throughout).
    pub fn with_int8_linear(mut self, int8: Option<Int8Linear>) -> Self {
        self.int8 = int8;
        self
    }

    /// Sequences holding a cache now.
    pub fn live_seqs(&mut self) -> usize {
        for id in self.seqs.take_released() {
            self.caches.remove(&id);
        }
        self.caches.len()
    }
}

impl DenseRunner for RefDense {
    fn new_seq(&mut self, capacity: usize) -> DenseSeq {
        self.seqs.new_seq(capacity)
    }

    fn block(
        &mut self,
        layer: usize,
        seqs: &[SeqSpan],
        x: &mut [f32],
        hn: &mut [f32],
        router: &mut [f32],
        next_router: &mut [f32],
    ) -> Result<()> {
        self.live_seqs();
        let nl = self.shape.n_layers;
        let weights = self.weights.weights();
        let w = weights
            .layers
            .get(layer)
            .ok_or_else(|| CudaError::InvalidBatch(format!("no layer {layer}")))?;
        let next = match next_router.is_empty() {
            true => None,
            false => weights.layers.get(layer + 1).map(|l| &l.router),
        };
        // Take the spans' caches out of the map for the call, put them back after.
        let mut taken: Vec<Vec<RefKv>> = seqs
            .iter()
            .map(|s| {
                self.caches
                    .remove(&s.seq)
                    .unwrap_or_else(|| vec![RefKv::default(); nl])
            })
            .collect();
        let out = {
            let mut refs: Vec<&mut RefKv> = taken.iter_mut().map(|c| &mut c[layer]).collect();
            attention_block(self.int8, &self.shape, w, next, &mut refs, seqs, x)
        };
        for (s, c) in seqs.iter().zip(taken) {
            self.caches.insert(s.seq, c);
        }
        let out = out?;
        if hn.len() != out.hn.len()
            || router.len() != out.router.len()
            || next_router.len() != out.next_router.len()
        {
            return Err(CudaError::InvalidBatch(format!(
                "reference block: output sizes {}/{}/{} for {}/{}/{}",
                hn.len(),
                router.len(),
                next_router.len(),
                out.hn.len(),
                out.router.len(),
                out.next_router.len()
            )));
        }
        hn.copy_from_slice(&out.hn);
        router.copy_from_slice(&out.router);
        next_router.copy_from_slice(&out.next_router);
        Ok(())
    }

    fn head(&mut self, x: &[f32]) -> Result<Vec<f32>> {
        let w = self.weights.weights();
        head(self.int8, w.output_norm, &w.output, x, self.shape.rms_eps)
    }
}

/// Deterministic values in [-1, 1).
pub fn vals(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

#[derive(Debug, Clone)]
struct OwnedLayer {
    norms: [Vec<f32>; 4],
    mats: [(KernelType, Vec<u8>); 5],
}

/// Dense weights owned on the host: random ones for checks, or a copy of a model's.
#[derive(Debug, Clone)]
pub struct OwnedDense {
    shape: DenseShape,
    layers: Vec<OwnedLayer>,
    output_norm: Vec<f32>,
    output: (KernelType, Vec<u8>),
}

fn quantized(t: KernelType, rows: usize, cols: usize, seed: u64) -> Result<Vec<u8>> {
    let scale = 1.0 / (cols as f32).sqrt();
    let wf: Vec<f32> = vals(rows * cols, seed).iter().map(|v| v * scale).collect();
    let mut out = vec![0u8; t.row_bytes(cols)? * rows];
    hmoe_quant::quantize(t.ggml(), &wf, &mut out)
        .map_err(|e| CudaError::InvalidBatch(format!("quantising random weights: {e}")))?;
    Ok(out)
}

fn norm(len: usize, seed: u64) -> Vec<f32> {
    vals(len, seed).iter().map(|v| 1.0 + 0.2 * v).collect()
}

impl OwnedDense {
    /// A copy of `w` (of `shape`).
    pub fn copy_of(shape: &DenseShape, w: &DenseWeights<'_>) -> Self {
        let own = |m: &DenseMatrix<'_>| (m.t, m.data.to_vec());
        Self {
            shape: shape.clone(),
            layers: w
                .layers
                .iter()
                .map(|l| OwnedLayer {
                    norms: [l.attn_norm, l.q_norm, l.k_norm, l.ffn_norm].map(<[f32]>::to_vec),
                    mats: [
                        own(&l.wq),
                        own(&l.wk),
                        own(&l.wv),
                        own(&l.wo),
                        own(&l.router),
                    ],
                })
                .collect(),
            output_norm: w.output_norm.to_vec(),
            output: own(&w.output),
        }
    }

    /// Random weights of `shape` (norm weights near 1, matrices scaled so activations
    /// stay O(1)), every matrix of type `t`.
    pub fn random(shape: &DenseShape, t: KernelType, seed: u64) -> Result<Self> {
        let (h, q, kv, hd) = (shape.hidden, shape.q_dim(), shape.kv_dim(), shape.head_dim);
        let mut layers = Vec::new();
        for l in 0..shape.n_layers as u64 {
            let s = seed + 100 * l;
            layers.push(OwnedLayer {
                norms: [norm(h, s), norm(hd, s + 1), norm(hd, s + 2), norm(h, s + 3)],
                mats: [
                    (t, quantized(t, q, h, s + 4)?),
                    (t, quantized(t, kv, h, s + 5)?),
                    (t, quantized(t, kv, h, s + 6)?),
                    (t, quantized(t, h, q, s + 7)?),
                    (t, quantized(t, shape.n_experts, h, s + 8)?),
                ],
            });
        }
        Ok(Self {
            shape: shape.clone(),
            layers,
            output_norm: norm(h, seed + 1),
            output: (t, quantized(t, shape.vocab, h, seed + 2)?),
        })
    }

    /// The borrowed view [`GpuDense::new`] takes.
    pub fn weights(&self) -> DenseWeights<'_> {
        let s = &self.shape;
        let (h, q, kv) = (s.hidden, s.q_dim(), s.kv_dim());
        fn m(td: &(KernelType, Vec<u8>), rows: usize, cols: usize) -> DenseMatrix<'_> {
            DenseMatrix {
                t: td.0,
                rows,
                cols,
                data: &td.1,
            }
        }
        DenseWeights {
            layers: self
                .layers
                .iter()
                .map(|l| DenseLayer {
                    attn_norm: &l.norms[0],
                    q_norm: &l.norms[1],
                    k_norm: &l.norms[2],
                    ffn_norm: &l.norms[3],
                    wq: m(&l.mats[0], q, h),
                    wk: m(&l.mats[1], kv, h),
                    wv: m(&l.mats[2], kv, h),
                    wo: m(&l.mats[3], h, q),
                    router: m(&l.mats[4], s.n_experts, h),
                })
                .collect(),
            output_norm: &self.output_norm,
            output: m(&self.output, s.vocab, h),
        }
    }
}

/// A small shape with Qwen3's head size and grouping (2 KV heads of 128 for 4 query
/// heads), two layers, K-quant-compatible widths.
pub fn small_shape() -> DenseShape {
    DenseShape {
        hidden: 256,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 128,
        n_experts: 16,
        vocab: 300,
        n_layers: 2,
        rms_eps: 1e-6,
        rope_theta: 1e6,
    }
}

/// Runs the scenario: step 0 prefills sequences A (5 tokens), B (3) and D (200) together;
/// step 1 decodes A and B, prefills C (7) and extends D by 100 (past its first cache
/// allocation); B is dropped; step 2 decodes A, C and D. Every step's
/// rows go through every layer (each layer's `x` feeds the next) and the head.
/// Returns every output, labelled.
pub fn scenario(r: &mut dyn DenseRunner, shape: &DenseShape) -> Result<Vec<(String, Vec<f32>)>> {
    let (a, b) = (r.new_seq(64), r.new_seq(64));
    let c = r.new_seq(16);
    // D outgrows its first allocation (KV_MIN_TOKENS) in step 1: the cache is moved.
    let d = r.new_seq(4 * KV_MIN_TOKENS);
    let d0 = KV_MIN_TOKENS - 56;
    let mut out = Vec::new();
    step(
        r,
        shape,
        0,
        &[a.span(0, 5), b.span(0, 3), d.span(0, d0)],
        &mut out,
    )?;
    let s1 = [a.span(5, 1), b.span(3, 1), c.span(0, 7), d.span(d0, 100)];
    step(r, shape, 1, &s1, &mut out)?;
    drop(b);
    step(
        r,
        shape,
        2,
        &[a.span(6, 1), c.span(7, 1), d.span(d0 + 100, 1)],
        &mut out,
    )?;
    Ok(out)
}

/// The rows of each step of [`scenario`] (every layer of a step sees the same rows): the
/// attention kernel `GpuDense` takes for a step follows from them
/// ([`crate::attend_tiled::use_tiled`]).
pub fn scenario_step_rows(shape: &DenseShape) -> Result<Vec<usize>> {
    /// Runs nothing; records the rows of each layer-0 call.
    struct Rows {
        seqs: SeqRegistry,
        rows: Vec<usize>,
    }
    impl DenseRunner for Rows {
        fn new_seq(&mut self, capacity: usize) -> DenseSeq {
            self.seqs.new_seq(capacity)
        }
        fn block(
            &mut self,
            layer: usize,
            seqs: &[SeqSpan],
            _: &mut [f32],
            _: &mut [f32],
            _: &mut [f32],
            _: &mut [f32],
        ) -> Result<()> {
            if layer == 0 {
                self.rows.push(seqs.iter().map(|s| s.n).sum());
            }
            Ok(())
        }
        fn head(&mut self, _: &[f32]) -> Result<Vec<f32>> {
            Ok(Vec::new())
        }
    }
    let mut r = Rows {
        seqs: SeqRegistry::default(),
        rows: Vec::new(),
    };
    scenario(&mut r, shape)?;
    Ok(r.rows)
}

fn step(
    r: &mut dyn DenseRunner,
    shape: &DenseShape,
    si: usize,
    spans: &[SeqSpan],
    out: &mut Vec<(String, Vec<f32>)>,
) -> Result<()> {
    let (h, e) = (shape.hidden, shape.n_experts);
    let n: usize = spans.iter().map(|s| s.n).sum();
    let mut x = vals(n * h, 1000 + si as u64);
    for l in 0..shape.n_layers {
        let mut hn = vec![0f32; n * h];
        let mut router = vec![0f32; n * e];
        let nn = if l + 1 < shape.n_layers { n * e } else { 0 };
        let mut next = vec![0f32; nn];
        r.block(l, spans, &mut x, &mut hn, &mut router, &mut next)?;
        out.push((format!("step {si} layer {l} residual"), x.clone()));
        out.push((format!("step {si} layer {l} ffn-normed"), hn));
        out.push((format!("step {si} layer {l} router"), router));
        if nn > 0 {
            out.push((format!("step {si} layer {l} next router"), next));
        }
    }
    out.push((format!("step {si} head"), r.head(&x)?));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::compare;

    /// Decoding token by token must give what one prefill of the same rows gives: the
    /// caches, positions and causal masks of the reference agree (f64 sums: the two
    /// orders differ only in f32 rounding of the stored activations).
    #[test]
    fn reference_decode_matches_its_prefill() {
        let shape = small_shape();
        let w = OwnedDense::random(&shape, KernelType::Q8_0, 5).unwrap();
        let (h, e) = (shape.hidden, shape.n_experts);
        let rows = 4;
        let x0 = vals(rows * h, 77);
        // Router logits of every row, calling the block with the rows in `chunks`.
        let run = |chunks: &[usize]| {
            let mut r = RefDense::new(&shape, w.clone()).unwrap();
            let s = r.new_seq(16);
            let mut all = Vec::new();
            let mut start = 0;
            for &m in chunks {
                let mut x = x0[start * h..(start + m) * h].to_vec();
                let mut router = vec![0f32; m * e];
                for l in 0..shape.n_layers {
                    let mut hn = vec![0f32; m * h];
                    r.block(
                        l,
                        &[s.span(start, m)],
                        &mut x,
                        &mut hn,
                        &mut router,
                        &mut [],
                    )
                    .unwrap();
                }
                all.extend(router);
                start += m;
            }
            all
        };
        let prefill = run(&[rows]);
        for chunks in [&[1usize, 1, 1, 1][..], &[3, 1], &[1, 3]] {
            let got = run(chunks);
            let c = compare(&got, &prefill);
            assert!(c.pass, "{chunks:?}: {c:?}");
        }
        // Causality: the first row alone is the first row of the prefill, exactly.
        assert_eq!(run(&[1])[..], prefill[..e]);
        // And it is not the second row (the rows differ, so the check can fail).
        assert_ne!(prefill[..e], prefill[e..2 * e]);
    }

    #[test]
    fn scenario_runs_on_the_reference_and_releases_dropped_sequences() {
        let shape = small_shape();
        let w = OwnedDense::random(&shape, KernelType::Q4K, 9).unwrap();
        let mut r = RefDense::new(&shape, w.clone()).unwrap();
        let out = scenario(&mut r, &shape).unwrap();
        // 3 steps × (2 layers × 3 or 4 outputs + head).
        assert_eq!(out.len(), 3 * (4 + 3 + 1));
        assert!(out.iter().all(|(_, v)| v.iter().all(|x| x.is_finite())));
        assert_eq!(r.live_seqs(), 0, "every handle was dropped");
        // Deterministic.
        let mut r2 = RefDense::new(&shape, w.clone()).unwrap();
        let again = scenario(&mut r2, &shape).unwrap();
        assert_eq!(out, again);
    }

    /// The scenario runs both attention paths of `GpuDense`: a prefill step with enough
    /// rows for the tiled kernel and a decode step on the split kernels (so the device
    /// check of the resident path covers both).
    #[test]
    fn scenario_takes_the_tiled_and_the_split_attention() {
        use crate::attend_tiled::use_tiled;
        let shape = small_shape();
        let rows = scenario_step_rows(&shape).unwrap();
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert!(
            rows.iter().any(|&n| use_tiled(n, shape.head_dim)),
            "{rows:?}"
        );
        assert!(
            rows.iter().any(|&n| !use_tiled(n, shape.head_dim)),
            "{rows:?}"
        );
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let shape = small_shape();
        let w = OwnedDense::random(&shape, KernelType::F16, 3).unwrap();
        let mut bad = w.clone();
        bad.layers.pop();
        assert!(RefDense::new(&shape, bad).is_err());
        let mut r = RefDense::new(&shape, w.clone()).unwrap();
        let s = r.new_seq(4);
        let mut x = vec![0.5f32; shape.hidden];
        let (mut hn, mut rt) = (vec![0f32; shape.hidden], vec![0f32; shape.n_experts]);
        // 5 positions in a 4-token sequence.
        assert!(r
            .block(0, &[s.span(4, 1)], &mut x, &mut hn, &mut rt, &mut [])
            .is_err());
    }
}
