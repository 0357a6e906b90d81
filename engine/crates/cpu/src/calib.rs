//! Random experts and the CPU term of the scheduler's cost model: the measured time
//! of one expert for `n` tokens, per weight type.

use crate::{run_experts, CpuError, CpuPool, ExpertScratch, ExpertTask, MatView};
use hmoe_gguf::GgmlDType;
use hmoe_quant::{quantize, row_bytes};
use std::time::Instant;

/// SplitMix64 + Box–Muller: seedable random numbers without a dependency.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(crate) fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub(crate) fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }
    pub(crate) fn gaussian(&mut self, n: usize, sigma: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * sigma).collect()
    }
}

/// An expert with random N(0, σ²) weights quantised to one type.
#[derive(Debug, Clone)]
pub struct RandomExpert {
    /// Weight type of gate, up and down.
    pub dtype: GgmlDType,
    /// Model width.
    pub hidden: usize,
    /// Expert FFN width.
    pub ffn: usize,
    /// `ffn × hidden`.
    pub gate: Vec<u8>,
    /// `ffn × hidden`.
    pub up: Vec<u8>,
    /// `hidden × ffn`.
    pub down: Vec<u8>,
}

impl RandomExpert {
    /// Bytes of the three matrices.
    pub fn bytes(&self) -> usize {
        self.gate.len() + self.up.len() + self.down.len()
    }

    /// The task running this expert on `rows` with router `weights`.
    pub fn task<'a>(&'a self, rows: &'a [u32], weights: &'a [f32]) -> ExpertTask<'a> {
        let m = |data: &'a [u8], r, c| MatView {
            dtype: self.dtype,
            rows: r,
            cols: c,
            data,
        };
        ExpertTask {
            gate: m(&self.gate, self.ffn, self.hidden),
            up: m(&self.up, self.ffn, self.hidden),
            down: m(&self.down, self.hidden, self.ffn),
            token_rows: rows,
            weights,
        }
    }
}

/// Random weights (σ = 0.02, like an initialised transformer) quantised to `dtype`.
pub fn random_expert(
    dtype: GgmlDType,
    hidden: usize,
    ffn: usize,
    seed: u64,
) -> Result<RandomExpert, CpuError> {
    let mut rng = Rng::new(seed);
    let mut mat = |rows: usize, cols: usize| -> Result<Vec<u8>, CpuError> {
        let vals = rng.gaussian(rows * cols, 0.02);
        let mut q = vec![0u8; row_bytes(dtype, cols)? * rows];
        quantize(dtype, &vals, &mut q)?;
        Ok(q)
    };
    Ok(RandomExpert {
        dtype,
        hidden,
        ffn,
        gate: mat(ffn, hidden)?,
        up: mat(ffn, hidden)?,
        down: mat(hidden, ffn)?,
    })
}

/// Measured time of one expert for `n_tokens` tokens on the whole pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuTiming {
    /// Weight type.
    pub dtype: GgmlDType,
    /// Tokens routed to the expert.
    pub n_tokens: usize,
    /// Pool threads.
    pub threads: usize,
    /// Seconds per expert call (weights streamed from DRAM, not cache).
    pub seconds: f64,
    /// Weight bytes of the expert.
    pub weight_bytes: usize,
}

impl CpuTiming {
    /// Weight bytes streamed per second.
    pub fn weight_gbps(&self) -> f64 {
        self.weight_bytes as f64 / self.seconds / 1e9
    }
}

/// Times one expert of each type in `dtypes` for each count in `token_counts` on
/// `pool`. Copies of the expert are cycled until `working_set` bytes so that the
/// weights come from DRAM as they do in a real model (one copy would stay in cache).
/// `min_seconds` bounds the time spent per (type, tokens) point.
#[allow(clippy::too_many_arguments)]
pub fn calibrate_cpu(
    pool: &CpuPool,
    scratch: &mut ExpertScratch,
    dtypes: &[GgmlDType],
    token_counts: &[usize],
    hidden: usize,
    ffn: usize,
    working_set: usize,
    min_seconds: f64,
) -> Result<Vec<CpuTiming>, CpuError> {
    let mut out = Vec::new();
    let max_tokens = token_counts.iter().copied().max().unwrap_or(1).max(1);
    let mut rng = Rng::new(1234);
    let x = rng.gaussian(max_tokens * hidden, 1.0);
    let mut y = vec![0f32; max_tokens * hidden];
    let rows: Vec<u32> = (0..max_tokens as u32).collect();
    let weights = vec![0.125f32; max_tokens];
    for &dtype in dtypes {
        let base = random_expert(dtype, hidden, ffn, 99)?;
        let copies = (working_set / base.bytes().max(1)).max(2);
        let experts: Vec<RandomExpert> = (0..copies).map(|_| base.clone()).collect();
        for &n in token_counts {
            let n = n.max(1);
            let (xs, ys) = (&x[..n * hidden], &mut y[..n * hidden]);
            run_experts(
                pool,
                xs,
                hidden,
                &[experts[0].task(&rows[..n], &weights[..n])],
                ys,
                scratch,
            )?;
            let start = Instant::now();
            let mut calls = 0usize;
            while calls < 3 || start.elapsed().as_secs_f64() < min_seconds {
                let e = &experts[calls % copies];
                run_experts(
                    pool,
                    xs,
                    hidden,
                    &[e.task(&rows[..n], &weights[..n])],
                    ys,
                    scratch,
                )?;
                calls += 1;
            }
            out.push(CpuTiming {
                dtype,
                n_tokens: n,
                threads: pool.threads(),
                seconds: start.elapsed().as_secs_f64() / calls as f64,
                weight_bytes: base.bytes(),
            });
        }
    }
    Ok(out)
}
