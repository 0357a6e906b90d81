//! Dense matrix products on the CPU with the same quantised kernels and the same
//! thread pool as the experts: weights stay in the memory-mapped file (no copy), the
//! activations are quantised once per product, and every pool thread streams its own
//! share of the weight rows.

use crate::error::{EngineError, Result};
use hmoe_cpu::CpuPool;
use hmoe_quant::{row_bytes, ActBuf, ActFormat, DotKernel, MAX_ROWS_PER_CALL};
use std::sync::Mutex;

/// Tokens whose quantised activations are reused across all weight rows before the next
/// tile: 64 rows of a 2048-wide Q8_K activation are ~140 KB, inside a core's L2.
const TOKEN_TILE: usize = 64;

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
    let mut acts = ActBuf::new(ActFormat::for_weights(kernel.dtype())?);
    acts.quantize(x, cols)?;
    let threads = pool.threads().max(1);
    let per = rows.div_ceil(threads).max(1);
    // Each thread owns a contiguous block of output features, written transposed.
    let mut out_t = vec![0f32; rows * n];
    let parts: Vec<Mutex<&mut [f32]>> = out_t.chunks_mut(per * n).map(Mutex::new).collect();
    let failure: Mutex<Option<String>> = Mutex::new(None);
    pool.broadcast(|t, _| {
        let Some(part) = parts.get(t) else { return };
        let Ok(mut part) = part.lock() else { return };
        let act_rows: Vec<_> = (0..n).filter_map(|i| acts.row(i)).collect();
        let r0 = t * per;
        // Token tiles outermost: a tile of quantised activations stays in L2 while this
        // thread's weight rows stream past it (decode is a single tile).
        for t0 in (0..n).step_by(TOKEN_TILE) {
            let t1 = (t0 + TOKEN_TILE).min(n);
            for (j, r) in (r0..(r0 + per).min(rows)).enumerate() {
                let wr = &w[r * rb..(r + 1) * rb];
                for g in (t0..t1).step_by(MAX_ROWS_PER_CALL) {
                    let e = (g + MAX_ROWS_PER_CALL).min(t1);
                    let dst = &mut part[j * n + g..j * n + e];
                    if let Err(err) = kernel.dot_rows(wr, &act_rows[g..e], dst) {
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert(err.to_string());
                        }
                        return;
                    }
                }
            }
        }
    })
    .map_err(compute)?;
    if let Some(err) = failure.into_inner().ok().flatten() {
        return Err(EngineError::Compute(format!("dense product: {err}")));
    }
    drop(parts);
    let mut out = vec![0f32; n * rows];
    for r in 0..rows {
        for i in 0..n {
            out[i * rows + r] = out_t[r * n + i];
        }
    }
    Ok(out)
}
