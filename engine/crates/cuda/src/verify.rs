//! Random expert batches with the model's shapes and their CPU reference result: what the
//! emulator test and `hmoe-cuda-check` compare the kernels against.

use crate::batch::{pack, BatchItem, BatchLayout};
use crate::dtype::ExpertLayout;
use crate::error::{CudaError, Result};
use hmoe_cpu::{reference_experts, ExpertTask, MatView, RefActivations};
use hmoe_quant::quantize;
use serde::Serialize;

/// Pass bound on the relative L2 error of a GPU expert batch against the f64-accumulated
/// reference on the same quantised weights and the same activation rounding. The kernels
/// accumulate in f32 in another order (2048- and 768-term dots, error ~1e-6), and an
/// activation within that rounding of an 8-bit rounding boundary lands one step (≤ 1/127
/// of its block's largest value) from the reference's: measured on the H200 up to 1.7e-4
/// over 16 tokens × 62 experts. A decoding mistake gives O(1), activations not rounded
/// like the CPU's ~1e-2.
pub const KERNEL_REL_L2_TOL: f64 = 1e-3;
/// Pass bound on the largest element error relative to the largest reference magnitude
/// (catches a single wrong row that the L2 norm would average away).
pub const KERNEL_MAX_REL_TOL: f64 = 1e-3;

/// Distinct quantised blocks the random experts are assembled from.
const POOL_BLOCKS: usize = 2048;
/// Elements per pool block (a k-quant super-block; shapes must be multiples of it).
const POOL_BLOCK_ELEMS: usize = 256;

/// How far a result is from the reference.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Comparison {
    /// ‖got − want‖ / ‖want‖.
    pub rel_l2: f64,
    /// max |got − want| / max |want|.
    pub max_rel: f64,
    /// Both within their tolerances (and no NaN).
    pub pass: bool,
}

/// Compares `got` with `want` under [`KERNEL_REL_L2_TOL`] and [`KERNEL_MAX_REL_TOL`].
pub fn compare(got: &[f32], want: &[f32]) -> Comparison {
    let (mut num, mut den, mut max_err, mut max_ref) = (0f64, 0f64, 0f64, 0f64);
    let mut finite = got.len() == want.len();
    for (&g, &w) in got.iter().zip(want) {
        let (g, w) = (g as f64, w as f64);
        finite &= g.is_finite();
        num += (g - w) * (g - w);
        den += w * w;
        max_err = max_err.max((g - w).abs());
        max_ref = max_ref.max(w.abs());
    }
    let rel_l2 = (num / den.max(f64::MIN_POSITIVE)).sqrt();
    let max_rel = max_err / max_ref.max(f64::MIN_POSITIVE);
    Comparison {
        rel_l2,
        max_rel,
        pass: finite && rel_l2 <= KERNEL_REL_L2_TOL && max_rel <= KERNEL_MAX_REL_TOL,
    }
}

/// SplitMix64: seedable random numbers without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        let (u1, u2) = (self.uniform().max(1e-7), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }
}

/// A batch of random experts stored back to back (gate, up, down each), token rows,
/// router weights and the input.
#[derive(Debug, Clone)]
pub struct TestBatch {
    /// Types and shape.
    pub layout: ExpertLayout,
    /// All experts, `layout.expert_bytes()` each.
    pub weights: Vec<u8>,
    /// Token rows per item.
    pub rows: Vec<Vec<u32>>,
    /// Router weights per item.
    pub router: Vec<Vec<f32>>,
    /// Input `[n_tokens, hidden]`.
    pub x: Vec<f32>,
    /// Input rows.
    pub n_tokens: usize,
}

impl TestBatch {
    /// `n_items` random experts (weights N(0, 0.02²) quantised; x N(0, 1)); each token
    /// row picks `min(top_k, n_items)` distinct experts, like a router would.
    pub fn random(
        layout: ExpertLayout,
        n_items: usize,
        n_tokens: usize,
        top_k: usize,
        seed: u64,
    ) -> Result<Self> {
        // Matrices are assembled from a pool of genuinely quantised random blocks picked at
        // random (as the synthetic models are): every expert differs, so a wrong slot or
        // pointer shows, without quantising hundreds of millions of weights.
        let mut rng = Rng(seed);
        let mut pools: Vec<(crate::dtype::KernelType, Vec<u8>, usize)> = Vec::new();
        for t in [layout.gate_up, layout.down] {
            if pools.iter().any(|p| p.0 == t) {
                continue;
            }
            // A block of 256 elements for every type (k-quant super-block; 8 Q8_0 blocks).
            let bytes = t.row_bytes(POOL_BLOCK_ELEMS)?;
            let vals: Vec<f32> = (0..POOL_BLOCKS * POOL_BLOCK_ELEMS)
                .map(|_| rng.normal() * 0.02)
                .collect();
            let mut q = vec![0u8; bytes * POOL_BLOCKS];
            quantize(t.ggml(), &vals, &mut q)
                .map_err(|e| CudaError::InvalidBatch(format!("quantise: {e}")))?;
            pools.push((t, q, bytes));
        }
        let mut weights = Vec::with_capacity(n_items * layout.expert_bytes());
        let mut mat = |t: crate::dtype::KernelType, rows: usize, cols: usize, out: &mut Vec<u8>| {
            let (_, pool, bytes) = pools
                .iter()
                .find(|p| p.0 == t)
                .ok_or(CudaError::UnsupportedType(t.ggml()))?;
            if !cols.is_multiple_of(POOL_BLOCK_ELEMS) {
                return Err(CudaError::InvalidBatch(format!(
                    "{cols} columns: not whole pool blocks"
                )));
            }
            for _ in 0..rows * cols / POOL_BLOCK_ELEMS {
                let k = (rng.next() % POOL_BLOCKS as u64) as usize;
                out.extend_from_slice(&pool[k * bytes..(k + 1) * bytes]);
            }
            Ok::<(), CudaError>(())
        };
        for _ in 0..n_items {
            mat(layout.gate_up, layout.ffn, layout.hidden, &mut weights)?;
            mat(layout.gate_up, layout.ffn, layout.hidden, &mut weights)?;
            mat(layout.down, layout.hidden, layout.ffn, &mut weights)?;
        }
        let mut rng = Rng(seed ^ 0x5EED);
        let x = (0..n_tokens * layout.hidden)
            .map(|_| rng.normal())
            .collect();
        let (mut rows, mut router) = (vec![Vec::new(); n_items], vec![Vec::new(); n_items]);
        let k = top_k.min(n_items);
        for t in 0..n_tokens {
            let mut picked: Vec<usize> = Vec::with_capacity(k);
            while picked.len() < k {
                let e = (rng.next() % n_items as u64) as usize;
                if !picked.contains(&e) {
                    picked.push(e);
                }
            }
            for e in picked {
                rows[e].push(t as u32);
                router[e].push(0.05 + rng.uniform() * 0.2);
            }
        }
        Ok(Self {
            layout,
            weights,
            rows,
            router,
            x,
            n_tokens,
        })
    }

    /// Byte offset of item `i`'s gate, up and down matrices in [`TestBatch::weights`].
    pub fn offsets(&self, i: usize) -> [u64; 3] {
        let l = &self.layout;
        let base = (i * l.expert_bytes()) as u64;
        let g = l.gate_bytes() as u64;
        [base, base + g, base + 2 * g]
    }

    /// Packs the batch with every matrix address = `base(i) + offset`, where `base`
    /// gives where item `i`'s expert starts (a slot, or the start of `weights`).
    pub fn pack(&self, base: impl Fn(usize) -> u64, buf: &mut Vec<u8>) -> Result<BatchLayout> {
        let items: Vec<BatchItem<'_>> = (0..self.rows.len())
            .map(|i| {
                let (b, g) = (base(i), self.layout.gate_bytes() as u64);
                BatchItem {
                    gate: b,
                    up: b + g,
                    down: b + 2 * g,
                    rows: &self.rows[i],
                    weights: &self.router[i],
                    rank: i as u32,
                }
            })
            .collect();
        pack(&items, self.n_tokens, buf)
    }

    /// The CPU reference: dequantised weights, f64 accumulation, activations rounded as
    /// the CPU kernels round them (the GPU rounds them the same way: `act_round`).
    pub fn reference(&self) -> Result<Vec<f32>> {
        let all: Vec<usize> = (0..self.rows.len()).collect();
        self.reference_of(&all)
    }

    /// [`TestBatch::reference`] of the items `keep` only (the others serve no rows), without
    /// a copy of the batch: `hmoe-cuda-check` checks a half-copied layer against it.
    pub fn reference_of(&self, keep: &[usize]) -> Result<Vec<f32>> {
        let l = &self.layout;
        if let Some(&i) = keep.iter().find(|&&i| i >= self.rows.len()) {
            return Err(CudaError::InvalidBatch(format!(
                "reference of item {i}: the batch has {}",
                self.rows.len()
            )));
        }
        let tasks: Vec<ExpertTask<'_>> = keep
            .iter()
            .map(|&i| {
                let o = self.offsets(i).map(|v| v as usize);
                let m = |t: crate::dtype::KernelType, at: usize, len: usize, rows, cols| MatView {
                    dtype: t.ggml(),
                    rows,
                    cols,
                    data: &self.weights[at..at + len],
                };
                ExpertTask {
                    gate: m(l.gate_up, o[0], l.gate_bytes(), l.ffn, l.hidden),
                    up: m(l.gate_up, o[1], l.gate_bytes(), l.ffn, l.hidden),
                    down: m(l.down, o[2], l.down_bytes(), l.hidden, l.ffn),
                    token_rows: &self.rows[i],
                    weights: &self.router[i],
                }
            })
            .collect();
        // Items split over the cores (the reference is plain loops; 128 tokens × 8
        // experts at full shape take seconds per thread); partial sums added in f64.
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(tasks.len().max(1));
        let per = tasks.len().div_ceil(threads).max(1);
        let n_out = self.n_tokens * l.hidden;
        let parts: Vec<Result<Vec<f32>>> = std::thread::scope(|sc| {
            let handles: Vec<_> = tasks
                .chunks(per)
                .map(|chunk| {
                    sc.spawn(move || {
                        let mut out = vec![0f32; n_out];
                        reference_experts(
                            &self.x,
                            l.hidden,
                            chunk,
                            &mut out,
                            RefActivations::AsKernels,
                        )
                        .map_err(|e| CudaError::InvalidBatch(format!("CPU reference: {e}")))?;
                        Ok(out)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(CudaError::InvalidBatch(
                            "CPU reference thread panicked".into(),
                        ))
                    })
                })
                .collect()
        });
        let mut sum = vec![0f64; n_out];
        for p in parts {
            for (s, v) in sum.iter_mut().zip(p?) {
                *s += v as f64;
            }
        }
        Ok(sum.into_iter().map(|v| v as f32).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_flags_wrong_and_nan_results() {
        let want = vec![1.0f32, -2.0, 0.5];
        assert!(compare(&want, &want).pass);
        assert!(!compare(&[1.0, -2.0, 0.6], &want).pass);
        assert!(!compare(&[1.0, f32::NAN, 0.5], &want).pass);
        assert!(!compare(&[1.0, -2.0], &want).pass);
    }

    /// The reference of two halves of the items adds up to the whole batch's (each token's
    /// output is a sum over its experts), and an item outside the batch is an error.
    #[test]
    fn reference_of_halves_adds_up_to_the_whole() {
        let q8 = hmoe_gguf::GgmlDType::Q8_0;
        let layout = ExpertLayout::new(q8, q8, q8, 256, 256).unwrap();
        let b = TestBatch::random(layout, 6, 5, 2, 3).unwrap();
        let (lo, hi): (Vec<usize>, Vec<usize>) = (0..6).partition(|&i| i < 3);
        let sum: Vec<f32> = b
            .reference_of(&lo)
            .unwrap()
            .iter()
            .zip(b.reference_of(&hi).unwrap())
            .map(|(a, c)| a + c)
            .collect();
        let whole = b.reference().unwrap();
        assert!(compare(&sum, &whole).pass, "{:?}", compare(&sum, &whole));
        assert_ne!(b.reference_of(&lo).unwrap(), whole);
        assert!(b.reference_of(&[6]).is_err());
    }
}
