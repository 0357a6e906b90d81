//! Every public `DotKernel` entry point (`dot`, `dot_unchecked`, `dot_rows` with 1–9
//! rows, `gemm` with 1–5 weight rows × 1–9 tokens in both output layouts) of the
//! best kernel this CPU has (with the default environment: the GFNI Q4_K pack form
//! and the GFNI Q6_K kernels where the CPU has GFNI + VBMI) against the scalar
//! kernel, on `quantize()`d weights with realistic scales and mins and
//! `ActBuf`-quantised activations, the types' calls interleaved in one thread (Q4_K
//! gate/up then Q6_K down, as a Q4_K_M layer does).
//!
//! `HMOE_KERNEL_CHECK_GGUF=<model.gguf>` also checks every Q4_K/Q5_K/Q6_K matrix of
//! a model file (up to [`MODEL_ROWS`] rows each; see `model_tensors_match_scalar`).

use hmoe_gguf::GgufFile;
use hmoe_quant::{
    dequantize, quantize, row_bytes, ActBuf, ActFormat, ActRow, DotKernel, GgmlDType, Isa,
};

/// The SIMD kernels compute each super-block's integer sums exactly (every partial
/// sum fits its lanes: unsigned 4–6-bit weights × |a| ≤ 127, 4 products per i32 lane,
/// ≤ 4·63·127 < 2^15 before the i16 pack) and differ from the scalar kernel only in
/// the order of the f32 block-scale multiply-adds and the final 16-lane reduction:
/// a few ε (6e-8) relative to Σ|w·a| over ≤ 16 super-blocks. Measured ≤ 1.1e-7; a
/// wrong scale, min, sub-block or saturated sum is ≥ 1e-3.
const REL_TOL: f64 = 1e-6;

/// Rows per model tensor that `model_tensors_match_scalar` checks (spread evenly).
const MODEL_ROWS: usize = 64;

const TYPES: [GgmlDType; 3] = [GgmlDType::Q4K, GgmlDType::Q6K, GgmlDType::Q5K];

/// xorshift64* with Box–Muller normals (no dev-dependencies).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

/// `rows × n` weights as a trained matrix looks: per-row scale and offset (so the
/// Q4_K/Q5_K mins are non-zero and the per-block `d`/`dmin` vary), a few outlier
/// columns (sub-block scales near 63 next to small ones).
fn weights(dtype: GgmlDType, rows: usize, n: usize, rng: &mut Rng) -> Vec<u8> {
    let outliers: Vec<usize> = (0..n / 64).map(|_| rng.next_u64() as usize % n).collect();
    let mut x = Vec::with_capacity(rows * n);
    for _ in 0..rows {
        let scale = 0.01 + 0.1 * rng.uniform() as f32;
        let offset = 0.02 * rng.normal();
        let start = x.len();
        x.extend((0..n).map(|_| offset + scale * rng.normal()));
        for &c in &outliers {
            x[start + c] *= 8.0;
        }
    }
    let mut w = vec![0u8; row_bytes(dtype, rows * n).unwrap()];
    quantize(dtype, &x, &mut w).unwrap();
    w
}

/// `tokens` activation rows: normal values with heavy outlier channels (as the
/// residual stream has) and one all-zero super-block in the first row (d = 0).
fn activations(tokens: usize, n: usize, rng: &mut Rng) -> ActBuf {
    let mut x: Vec<f32> = (0..tokens * n).map(|_| rng.normal()).collect();
    for t in 0..tokens {
        x[t * n + (7 * t) % n] *= 30.0;
    }
    if n >= 512 {
        x[256..512].fill(0.0);
    }
    let mut a = ActBuf::new(ActFormat::Q8K);
    a.quantize(&x, n).unwrap();
    a
}

/// Σ|w·a| of one weight row and one activation row (the error scale).
fn abs_sum(deq: &[f32], a: &ActRow<'_>) -> f64 {
    let ActRow::Q8K { qs, d, .. } = a else {
        panic!("not a Q8_K row");
    };
    deq.iter()
        .enumerate()
        .map(|(i, &w)| (w as f64 * qs[i] as f64 * d[i / 256] as f64).abs())
        .sum()
}

/// One matrix and one activation batch: every entry point of `best` against `scalar`.
/// Returns the worst relative error seen.
fn check_matrix(what: &str, dtype: GgmlDType, w: &[u8], rows: usize, acts: &[ActRow<'_>]) -> f64 {
    let n = acts[0].len();
    let rb = row_bytes(dtype, n).unwrap();
    let scalar = DotKernel::new(dtype, Isa::Scalar).unwrap();
    let best = DotKernel::best(dtype).unwrap();
    let mut deq = vec![0f32; rows * n];
    dequantize(dtype, w, &mut deq).unwrap();
    let mut want = vec![0f64; rows * acts.len()];
    let mut scale = vec![0f64; rows * acts.len()];
    for r in 0..rows {
        for (t, a) in acts.iter().enumerate() {
            want[r * acts.len() + t] = scalar.dot(&w[r * rb..(r + 1) * rb], a).unwrap() as f64;
            // Floor: an all-zero row pair has Σ|w·a| = 0 and must give exactly 0.
            scale[r * acts.len() + t] = abs_sum(&deq[r * n..(r + 1) * n], a).max(1e-30);
        }
    }
    let mut worst = 0f64;
    let mut check = |path: &str, r: usize, t: usize, got: f32| {
        let k = r * acts.len() + t;
        let rel = (got as f64 - want[k]).abs() / scale[k];
        assert!(
            rel <= REL_TOL,
            "{what} {dtype} n={n} {path} ({}): row {r} token {t}: {got} vs scalar {} \
             (rel to Σ|w·a| {rel:.2e})",
            best.isa().name(),
            want[k]
        );
        worst = worst.max(rel);
    };
    for r in 0..rows {
        let wr = &w[r * rb..(r + 1) * rb];
        for (t, a) in acts.iter().enumerate() {
            check("dot", r, t, best.dot(wr, a).unwrap());
            // SAFETY: shapes as checked by `dot` just above.
            check("dot_unchecked", r, t, unsafe { best.dot_unchecked(wr, a) });
        }
        for count in 1..=acts.len() {
            let mut out = vec![f32::NAN; count];
            best.dot_rows(wr, &acts[..count], &mut out).unwrap();
            for (t, &got) in out.iter().enumerate() {
                check(&format!("dot_rows x{count}"), r, t, got);
            }
        }
    }
    for nr in 1..=rows {
        for nt in 1..=acts.len() {
            let w = &w[..nr * rb];
            // Row-major (rs = tokens) and token-major (ts = rows) outputs.
            for (layout, rs, ts) in [("row-major", nt, 1), ("token-major", 1, nr)] {
                let mut out = vec![f32::NAN; nr * nt];
                best.gemm(w, nr, &acts[..nt], &mut out, rs, ts).unwrap();
                for r in 0..nr {
                    for t in 0..nt {
                        check(
                            &format!("gemm {nr}x{nt} {layout}"),
                            r,
                            t,
                            out[r * rs + t * ts],
                        );
                    }
                }
            }
        }
    }
    worst
}

#[test]
fn every_entry_point_matches_scalar_on_quantized_weights() {
    let mut rng = Rng(0x0005_EED0_F0D7);
    // 5 rows: two 2-row GEMM tiles and a 1-row remainder; 9 tokens: dot_rows calls of
    // 4 + 4 + 1 and GEMM token tiles of 4 + 4 + 1.
    let (rows, tokens) = (5, 9);
    for n in [256usize, 768, 2048] {
        let acts = activations(tokens, n, &mut rng);
        let acts: Vec<ActRow<'_>> = (0..tokens).map(|t| acts.row(t).unwrap()).collect();
        let mats: Vec<(GgmlDType, Vec<u8>)> = TYPES
            .iter()
            .map(|&d| (d, weights(d, rows, n, &mut rng)))
            .collect();
        // Twice over, types interleaved: a kernel must not depend on which ran before.
        for round in 0..2 {
            for (dtype, w) in &mats {
                let worst = check_matrix(&format!("round {round}"), *dtype, w, rows, &acts);
                eprintln!("{dtype} n={n} round {round}: worst rel {worst:.2e}");
            }
        }
    }
}

/// `HMOE_KERNEL_CHECK_GGUF=<file>`: every Q4_K/Q5_K/Q6_K matrix of a model (up to
/// [`MODEL_ROWS`] rows each, spread over the matrix) × 5 activation rows, all entry
/// points against the scalar kernel. Without the variable there is nothing to check.
#[test]
fn model_tensors_match_scalar() {
    let Some(path) = std::env::var_os("HMOE_KERNEL_CHECK_GGUF") else {
        eprintln!("note: set HMOE_KERNEL_CHECK_GGUF=<model.gguf> to check a model's tensors");
        return;
    };
    let file = GgufFile::open(std::path::Path::new(&path)).unwrap();
    let mut rng = Rng(77);
    let mut checked = 0;
    for info in file.tensors() {
        if !TYPES.contains(&info.dtype) || info.dims.len() < 2 {
            continue;
        }
        let n = info.dims[0] as usize;
        let total_rows = (info.n_elements() / info.dims[0]) as usize;
        let rb = row_bytes(info.dtype, n).unwrap();
        let data = file.tensor_data(info);
        let step = total_rows.div_ceil(MODEL_ROWS).max(1);
        let picked: Vec<u8> = (0..total_rows)
            .step_by(step)
            .flat_map(|r| data[r * rb..(r + 1) * rb].iter().copied())
            .collect();
        let rows = picked.len() / rb;
        let acts = activations(5, n, &mut rng);
        let acts: Vec<ActRow<'_>> = (0..5).map(|t| acts.row(t).unwrap()).collect();
        // The gemm shapes grow as rows²; check them on the first 5 rows, the rest
        // row by row.
        let head = rows.min(5);
        let mut worst = check_matrix(&info.name, info.dtype, &picked[..head * rb], head, &acts);
        for r in head..rows {
            let w = &picked[r * rb..(r + 1) * rb];
            worst = worst.max(check_matrix(&info.name, info.dtype, w, 1, &acts));
        }
        eprintln!(
            "{} {} [{n} x {total_rows}]: {rows} rows, worst rel {worst:.2e}",
            info.name, info.dtype
        );
        checked += 1;
    }
    eprintln!("{checked} tensors checked");
}
