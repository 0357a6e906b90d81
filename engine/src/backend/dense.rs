//! Dense matrix products on the CPU with the same quantised kernels and the same
//! thread pool as the experts: weights stay in the memory-mapped file (no copy), the
//! activations are quantised once per product, and every pool thread streams its own
//! share of the weight rows. Many tokens (prefill) go through the tiled GEMM kernels
//! ([`DotKernel::gemm_unchecked`]) where the instruction set has them.

use crate::error::{EngineError, Result};
use hmoe_cpu::CpuPool;
use hmoe_quant::{
    row_bytes, ActBuf, ActFormat, DotKernel, GEMM_TILE_ROWS, GEMM_TILE_TOKENS, MAX_ROWS_PER_CALL,
};
use std::cell::RefCell;
use std::sync::Mutex;

thread_local! {
    /// The quantised activations of this thread's products, one buffer per format,
    /// kept between calls: a 512-token prefill quantises ~1–2 MB per product, seven
    /// products per layer, and fresh buffers cost page faults every time.
    static ACT_BUFS: RefCell<Vec<ActBuf>> = const { RefCell::new(Vec::new()) };
}

/// Rows from which the activations are quantised on every pool thread rather than on
/// the caller alone (a 2048-wide row takes ~1 µs; waking the pool costs more).
const PARALLEL_QUANT_MIN_ROWS: usize = 32;

/// This thread's reusable buffer for `format` (taken out so the pool can borrow it).
fn take_acts(format: ActFormat) -> ActBuf {
    ACT_BUFS.with(|b| {
        let mut b = b.borrow_mut();
        match b.iter().position(|a| a.format() == format) {
            Some(i) => b.swap_remove(i),
            None => ActBuf::new(format),
        }
    })
}

fn put_acts(acts: ActBuf) {
    ACT_BUFS.with(|b| b.borrow_mut().push(acts));
}

/// Quantises the `n` rows of `x` into `acts`; with many rows each pool thread takes a
/// contiguous block (the token split's thread `t` then reads back the rows it wrote).
fn quantize_acts(pool: &CpuPool, acts: &mut ActBuf, x: &[f32], cols: usize) -> Result<()> {
    let n = x.len() / cols.max(1);
    if n < PARALLEL_QUANT_MIN_ROWS || pool.threads() < 2 {
        return Ok(acts.quantize(x, cols)?);
    }
    acts.prepare(n, cols)?;
    let writer = acts.writer();
    let failure: Mutex<Option<String>> = Mutex::new(None);
    pool.broadcast(|t, threads| {
        // The token split's blocks (see `token_split`).
        let per = n
            .div_ceil(threads.max(1))
            .next_multiple_of(GEMM_TILE_TOKENS);
        for r in t * per..((t + 1) * per).min(n) {
            // SAFETY: thread t alone writes rows t·per..(t+1)·per.
            if let Err(e) = unsafe { writer.quantize_row(r, &x[r * cols..(r + 1) * cols]) } {
                if let Ok(mut f) = failure.lock() {
                    f.get_or_insert(e.to_string());
                }
                return;
            }
        }
    })
    .map_err(compute)?;
    match failure.into_inner().ok().flatten() {
        Some(err) => Err(EngineError::Compute(format!("dense product: {err}"))),
        None => Ok(()),
    }
}

/// Tokens whose quantised activations are reused across all weight rows before the next
/// tile: 64 rows of a 2048-wide Q8_K activation are ~140 KB, inside a core's L2.
const TOKEN_TILE: usize = 64;

/// Tokens per thread from which a GEMM product splits the tokens, not the rows, over
/// the threads: each thread then writes whole output rows in place (no transposed
/// copy, no second buffer) and still reuses each weight tile across a token tile.
/// The weight traffic is the same either way (every token tile reads all rows once).
const TOKEN_SPLIT_MIN_PER_THREAD: usize = 16;

/// The GEMM product with the tokens split over the threads (see
/// [`TOKEN_SPLIT_MIN_PER_THREAD`]); returns `[n, rows]`.
fn token_split(
    pool: &CpuPool,
    kernel: &DotKernel,
    w: &[u8],
    rows: usize,
    acts: &ActBuf,
    n: usize,
) -> Result<Vec<f32>> {
    let threads = pool.threads().max(1);
    let per = n.div_ceil(threads).next_multiple_of(GEMM_TILE_TOKENS);
    let mut out = vec![0f32; n * rows];
    let parts: Vec<Mutex<&mut [f32]>> = out.chunks_mut(per * rows).map(Mutex::new).collect();
    let failure: Mutex<Option<String>> = Mutex::new(None);
    pool.broadcast(|t, _| {
        let Some(part) = parts.get(t) else { return };
        let Ok(mut part) = part.lock() else { return };
        let (a0, a1) = (t * per, ((t + 1) * per).min(n));
        let act_rows: Vec<_> = (a0..a1).filter_map(|i| acts.row(i)).collect();
        if act_rows.len() != a1 - a0 {
            if let Ok(mut f) = failure.lock() {
                f.get_or_insert("activation rows missing".into());
            }
            return;
        }
        for t0 in (0..a1 - a0).step_by(TOKEN_TILE) {
            let t1 = (t0 + TOKEN_TILE).min(a1 - a0);
            // SAFETY: `w` is rows × row_bytes(cols) (checked by the caller), the rows
            // are cols wide in this kernel's format (an ActBuf of its act_format), and
            // index r + t·rows (r < rows, t < t1 - t0) of part[t0·rows..] stays below
            // (a1 - a0)·rows = part.len().
            unsafe {
                kernel.gemm_unchecked(w, rows, &act_rows[t0..t1], &mut part[t0 * rows..], 1, rows)
            };
        }
    })
    .map_err(compute)?;
    if let Some(err) = failure.into_inner().ok().flatten() {
        return Err(EngineError::Compute(format!("dense product: {err}")));
    }
    drop(parts);
    Ok(out)
}

fn compute(e: impl std::fmt::Display) -> EngineError {
    EngineError::Compute(e.to_string())
}

/// `y = x · Wᵀ` for `x` of `[n, cols]` and `w` of `rows` quantised rows; returns `[n, rows]`.
pub fn matmul(
    pool: &CpuPool,
    kernel: &DotKernel,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
) -> Result<Vec<f32>> {
    let n = x.len() / cols.max(1);
    let rb = row_bytes(kernel.dtype(), cols)?;
    if w.len() != rb * rows || x.len() != n * cols {
        return Err(EngineError::Compute(format!(
            "dense product: {} weight bytes for {rows}×{cols} {}, {} inputs",
            w.len(),
            kernel.dtype(),
            x.len()
        )));
    }
    let mut acts = take_acts(ActFormat::for_weights(kernel.dtype())?);
    let out = quantize_acts(pool, &mut acts, x, cols)
        .and_then(|()| product(pool, kernel, w, rows, cols, &acts, n));
    put_acts(acts);
    out
}

/// The product on quantised activations (`acts` holds the `n` input rows).
fn product(
    pool: &CpuPool,
    kernel: &DotKernel,
    w: &[u8],
    rows: usize,
    cols: usize,
    acts: &ActBuf,
    n: usize,
) -> Result<Vec<f32>> {
    let rb = row_bytes(kernel.dtype(), cols)?;
    // Checked once here so the hot loops can use the unchecked kernels.
    if acts.format() != kernel.act_format() || acts.cols() != cols || acts.rows() != n {
        return Err(EngineError::Compute(format!(
            "dense product: {:?} activations of {}×{} for a {} kernel of {n}×{cols}",
            acts.format(),
            acts.rows(),
            acts.cols(),
            kernel.dtype()
        )));
    }
    let threads = pool.threads().max(1);
    // Whole register tiles per thread (the last thread takes the remainder).
    let per = rows
        .div_ceil(threads)
        .next_multiple_of(GEMM_TILE_ROWS)
        .max(1);
    // Same threshold (and benchmark switch) as the experts.
    let gemm = n >= hmoe_cpu::gemm_min_tokens() && kernel.has_gemm();
    if gemm && n >= TOKEN_SPLIT_MIN_PER_THREAD * threads {
        return token_split(pool, kernel, w, rows, acts, n);
    }
    // Each thread owns a contiguous block of output features, written transposed.
    let mut out_t = vec![0f32; rows * n];
    let parts: Vec<Mutex<&mut [f32]>> = out_t.chunks_mut(per * n).map(Mutex::new).collect();
    let failure: Mutex<Option<String>> = Mutex::new(None);
    pool.broadcast(|t, _| {
        let Some(part) = parts.get(t) else { return };
        let Ok(mut part) = part.lock() else { return };
        let act_rows: Vec<_> = (0..n).filter_map(|i| acts.row(i)).collect();
        let r0 = t * per;
        let r1 = (r0 + per).min(rows);
        if r0 >= r1 {
            return;
        }
        if act_rows.len() != n {
            if let Ok(mut f) = failure.lock() {
                f.get_or_insert("activation rows missing".into());
            }
            return;
        }
        if gemm {
            // The thread's weight rows × each token tile: the tile's quantised
            // activations stay in L2 while the weights stream past; part is [row][token].
            for t0 in (0..n).step_by(TOKEN_TILE) {
                let t1 = (t0 + TOKEN_TILE).min(n);
                // SAFETY: `w` is rows × row_bytes(cols) (checked above), the activation
                // rows are cols wide in this kernel's format (quantised by an ActBuf of
                // `act_format`), and every index (r - r0) * n + t of the thread's part
                // is below (r1 - r0) * n = part.len().
                unsafe {
                    kernel.gemm_unchecked(
                        &w[r0 * rb..r1 * rb],
                        r1 - r0,
                        &act_rows[t0..t1],
                        &mut part[t0..],
                        n,
                        1,
                    )
                };
            }
            return;
        }
        // Token tiles outermost: a tile of quantised activations stays in L2 while this
        // thread's weight rows stream past it (decode is a single tile).
        for t0 in (0..n).step_by(TOKEN_TILE) {
            let t1 = (t0 + TOKEN_TILE).min(n);
            for (j, r) in (r0..r1).enumerate() {
                let wr = &w[r * rb..(r + 1) * rb];
                for g in (t0..t1).step_by(MAX_ROWS_PER_CALL) {
                    let e = (g + MAX_ROWS_PER_CALL).min(t1);
                    let dst = &mut part[j * n + g..j * n + e];
                    // SAFETY: `wr` is one row of row_bytes(cols) and the activation rows
                    // are cols wide in the kernel's format (all checked on entry);
                    // dst has e - g elements, one per activation row.
                    unsafe { kernel.dot_rows_unchecked(wr, &act_rows[g..e], dst) };
                }
            }
        }
    })
    .map_err(compute)?;
    if let Some(err) = failure.into_inner().ok().flatten() {
        return Err(EngineError::Compute(format!("dense product: {err}")));
    }
    drop(parts);
    if n == 1 {
        // [rows][1] is already [1][rows] (decode: the 151936-row output head).
        return Ok(out_t);
    }
    let mut out = vec![0f32; n * rows];
    for r in 0..rows {
        for i in 0..n {
            out[i * rows + r] = out_t[r * n + i];
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmoe_quant::{dequantize, quantize, GgmlDType, Isa};

    /// Against f64 math on the dequantised weights and the exact f32 inputs: the
    /// kernels quantise the inputs to 8 bits per block (Q8_0 / Q8_K), ≈ 0.5–0.7 %
    /// relative RMS per value, which averages to ≲ 1 % on a row's dot product; 3 %
    /// leaves room for unlucky rows of a few blocks.
    const QUANT_ACTS_REL: f64 = 0.03;
    /// GEMM against the N-row path on the same quantised inputs: only f32 summation
    /// order differs.
    const SAME_ACTS_REL: f64 = 1e-5;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
            })
            .collect()
    }

    fn rel(got: &[f32], want: &[f64]) -> f64 {
        let num: f64 = got
            .iter()
            .zip(want)
            .map(|(&g, &w)| (g as f64 - w).powi(2))
            .sum();
        let den: f64 = want.iter().map(|w| w * w).sum();
        (num / den.max(1e-30)).sqrt()
    }

    #[test]
    fn gemm_and_n_row_paths_match_reference() {
        for (dtype, cols) in [
            (GgmlDType::Q8_0, 96),
            (GgmlDType::Q4K, 512),
            (GgmlDType::Q5K, 256),
            (GgmlDType::Q6K, 512),
        ] {
            // 37 rows: not a multiple of the register tile or of the thread split.
            let rows = 37;
            let wf = values(rows * cols, 3);
            let mut w = vec![0u8; rows * row_bytes(dtype, cols).unwrap()];
            quantize(dtype, &wf, &mut w).unwrap();
            let mut wd = vec![0f32; rows * cols];
            dequantize(dtype, &w, &mut wd).unwrap();
            let best = DotKernel::best(dtype).unwrap();
            let scalar = DotKernel::new(dtype, Isa::Scalar).unwrap();
            // 4–40 tokens on 3–16 threads: row split; 70 on 3 and 150 on 1: token split.
            for (n, threads) in [
                (1usize, 1usize),
                (3, 2),
                (4, 16),
                (40, 3),
                (70, 3),
                (150, 1),
            ] {
                let x = values(n * cols, n as u64);
                let want: Vec<f64> = (0..n * rows)
                    .map(|i| {
                        let (t, r) = (i / rows, i % rows);
                        (0..cols)
                            .map(|c| x[t * cols + c] as f64 * wd[r * cols + c] as f64)
                            .sum()
                    })
                    .collect();
                let pool = CpuPool::with_threads(threads).unwrap();
                let got = matmul(&pool, &best, &w, rows, cols, &x).unwrap();
                let e = rel(&got, &want);
                assert!(e <= QUANT_ACTS_REL, "{dtype} {n} tokens: {e}");
                // The scalar level has no tiles: the N-row path on the same inputs.
                let n_row = matmul(&pool, &scalar, &w, rows, cols, &x).unwrap();
                let n_row: Vec<f64> = n_row.iter().map(|&v| v as f64).collect();
                let e = rel(&got, &n_row);
                assert!(e <= SAME_ACTS_REL, "{dtype} {n} tokens vs N-row: {e}");
            }
        }
    }
}
