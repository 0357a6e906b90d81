//! The many-token path of [`crate::run_experts`]: a work item's weight tile (gate/up
//! rows of one expert, or down rows) is multiplied with all of the expert's tokens
//! by the tiled GEMM kernels ([`hmoe_quant::DotKernel::gemm_unchecked`]), in chunks of
//! [`GEMM_CHUNK`] tokens, so each weight block is decoded once per
//! [`hmoe_quant::GEMM_TILE_TOKENS`] tokens and each activation chunk is loaded once
//! per [`hmoe_quant::GEMM_TILE_ROWS`] rows. Through
//! [`hmoe_quant::DotKernel::gemm_prefill_unchecked`]: Q8_0 chunks of at least
//! [`hmoe_quant::amx::AMX_MIN_TOKENS`] tokens take the AMX-INT8 tile kernel where
//! the CPU and OS allow it (`crate::amx`), everything else the SIMD kernels.

use crate::experts::{silu, ExpertTask, Plan, DOWN_TILE, TILE};
use crate::shared::SharedMut;
use crate::CpuError;
use hmoe_quant::{ActBuf, ActRow};

/// Tokens per GEMM call: 64 Q8_K rows of 2048 values (~160 KB) stay in L2 while a
/// tile's weight rows pass, and the per-item stack buffers stay small (2 × 4 KB).
pub(crate) const GEMM_CHUNK: usize = 64;

/// Placeholder for unused slots of a chunk.
const EMPTY: ActRow<'static> = ActRow::F32(&[]);

/// Gathers the activation rows `rows` of `buf` into `dst`.
fn gather<'a>(
    task: usize,
    buf: &'a ActBuf,
    rows: impl Iterator<Item = usize>,
    dst: &mut [ActRow<'a>; GEMM_CHUNK],
) -> Result<usize, CpuError> {
    let mut n = 0;
    for (k, r) in rows.enumerate() {
        dst[k] = buf.row(r).ok_or(CpuError::TokenRow {
            task,
            row: r as u32,
            n_tokens: buf.rows(),
        })?;
        n = k + 1;
    }
    Ok(n)
}

/// Gate and up rows `r0..r1` of task `ti` for all its tokens; `silu(g)·u` into
/// the intermediate rows of the task.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gate_up(
    ti: usize,
    t: &ExpertTask<'_>,
    p: &Plan,
    (r0, r1): (usize, usize),
    gx: &ActBuf,
    ux: &ActBuf,
    inter: &SharedMut<'_, f32>,
    ffn: usize,
) -> Result<(), CpuError> {
    let nr = r1 - r0;
    let (grb, urb) = (t.gate.data.len() / ffn, t.up.data.len() / ffn);
    let gw = &t.gate.data[r0 * grb..r1 * grb];
    let uw = &t.up.data[r0 * urb..r1 * urb];
    let mut ga = [EMPTY; GEMM_CHUNK];
    let mut ua = [EMPTY; GEMM_CHUNK];
    // Token-major: gv[k * TILE + r].
    let mut gv = [0f32; GEMM_CHUNK * TILE];
    let mut uv = [0f32; GEMM_CHUNK * TILE];
    for (ci, chunk) in t.token_rows.chunks(GEMM_CHUNK).enumerate() {
        let n = gather(ti, gx, chunk.iter().map(|&r| r as usize), &mut ga)?;
        gather(ti, ux, chunk.iter().map(|&r| r as usize), &mut ua)?;
        // SAFETY: `validate` checked every matrix is rows × row_bytes(cols) with
        // cols = hidden, the rows come from the ActBufs of exactly these kernels'
        // formats, and r < nr ≤ TILE, k < n ≤ GEMM_CHUNK index inside the buffers.
        unsafe {
            p.gate
                .gemm_prefill_unchecked(gw, nr, &ga[..n], &mut gv, 1, TILE);
            p.up.gemm_prefill_unchecked(uw, nr, &ua[..n], &mut uv, 1, TILE);
        }
        for k in 0..n {
            let base = (p.inter_row + ci * GEMM_CHUNK + k) * ffn + r0;
            for r in 0..nr {
                // SAFETY: (task, token, row) is written by this item only.
                if let Some(o) = unsafe { inter.get_mut(base + r) } {
                    *o = silu(gv[k * TILE + r]) * uv[k * TILE + r];
                }
            }
        }
    }
    Ok(())
}

/// Down rows (output features) `c0..c1` of task `ti` for all its tokens,
/// accumulated (router-weighted) into `out`.
pub(crate) fn down(
    ti: usize,
    t: &ExpertTask<'_>,
    p: &Plan,
    (c0, c1): (usize, usize),
    q: &ActBuf,
    out: &SharedMut<'_, f32>,
    hidden: usize,
) -> Result<(), CpuError> {
    let nc = c1 - c0;
    let drb = t.down.data.len() / hidden;
    let dw = &t.down.data[c0 * drb..c1 * drb];
    let mut acts = [EMPTY; GEMM_CHUNK];
    let mut v = [0f32; GEMM_CHUNK * DOWN_TILE];
    for (ci, (rows, ws)) in t
        .token_rows
        .chunks(GEMM_CHUNK)
        .zip(t.weights.chunks(GEMM_CHUNK))
        .enumerate()
    {
        let first = p.inter_row + ci * GEMM_CHUNK;
        let n = gather(ti, q, first..first + rows.len(), &mut acts)?;
        // SAFETY: down is hidden × row_bytes(ffn) (validated), the rows are ffn-wide
        // rows of the ActBuf of this kernel's format; indices c < nc ≤ DOWN_TILE,
        // k < n ≤ GEMM_CHUNK.
        unsafe {
            p.down
                .gemm_prefill_unchecked(dw, nc, &acts[..n], &mut v, 1, DOWN_TILE)
        };
        for k in 0..n {
            let base = rows[k] as usize * hidden + c0;
            for c in 0..nc {
                // SAFETY: columns c0..c1 of every out row belong to this item only.
                if let Some(o) = unsafe { out.get_mut(base + c) } {
                    *o += ws[k] * v[k * DOWN_TILE + c];
                }
            }
        }
    }
    Ok(())
}
