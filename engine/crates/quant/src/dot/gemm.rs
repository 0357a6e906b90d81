//! Many weight rows × many activation rows (prefill): register-tiled kernels where the
//! level has them (AVX-512 VNNI for Q8_0/Q4_K/Q5_K/Q6_K), otherwise the N-row
//! kernels ([`DotKernel::dot_rows`]) row by row.

use super::{DotKernel, Isa, MAX_ROWS_PER_CALL};
use crate::act::ActRow;
use crate::{row_bytes, GgmlDType, QuantError};

#[cfg(target_arch = "x86_64")]
pub(super) type Tiles = [[super::gemm512::RawTile; GEMM_TILE_TOKENS]; GEMM_TILE_ROWS];
#[cfg(not(target_arch = "x86_64"))]
pub(super) type Tiles = ();

/// Weight rows of one register tile.
pub const GEMM_TILE_ROWS: usize = 2;
/// Activation rows (tokens) of one register tile.
pub const GEMM_TILE_TOKENS: usize = 4;

#[cfg(target_arch = "x86_64")]
const _: () =
    assert!(GEMM_TILE_ROWS == super::gemm512::TILE_R && GEMM_TILE_TOKENS == super::gemm512::TILE_T);

pub(super) fn select_tiles(dtype: GgmlDType, isa: Isa) -> Option<Tiles> {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx512 | Isa::Avx512Bf16) {
        return super::gemm512::select_tiles(dtype);
    }
    let _ = (dtype, isa);
    None
}

/// Prefetches the next tile's weight rows `r..r + GEMM_TILE_ROWS` (those that exist):
/// the weights come from DRAM once per tile, and without this the first tokens of
/// every tile wait for demand misses that the hardware prefetcher has not yet caught.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch(w: &[u8], r: usize, rows: usize, rb: usize) {
    let end = (r + GEMM_TILE_ROWS).min(rows) * rb;
    let mut off = r * rb;
    while off < end {
        // SAFETY: `off` is inside `w`; prefetch never faults and reads nothing.
        unsafe {
            core::arch::x86_64::_mm_prefetch(
                w.as_ptr().add(off) as *const i8,
                core::arch::x86_64::_MM_HINT_T0,
            )
        };
        off += 64;
    }
}

impl DotKernel {
    /// Whether [`DotKernel::gemm`] uses register-tiled kernels at this level (otherwise
    /// it loops the N-row kernels).
    pub fn has_gemm(&self) -> bool {
        self.tiles.is_some()
    }

    /// `out[r * rs + t * ts] = w_r · acts[t]` for the `rows` weight rows `w_r` of `w`
    /// (each `row_bytes(dtype, n)` bytes) and every activation row.
    pub fn gemm(
        &self,
        w: &[u8],
        rows: usize,
        acts: &[ActRow<'_>],
        out: &mut [f32],
        rs: usize,
        ts: usize,
    ) -> Result<(), QuantError> {
        let n = acts.first().map(|a| a.len()).unwrap_or(0);
        for a in acts {
            if a.format() != self.act {
                return Err(QuantError::ActFormat {
                    dtype: self.dtype,
                    expected: self.act,
                    got: a.format(),
                });
            }
            if a.len() != n {
                return Err(QuantError::Length {
                    what: "activation rows of one gemm call",
                    expected: n,
                    got: a.len(),
                });
            }
        }
        let expected = row_bytes(self.dtype, n)?.saturating_mul(rows);
        if w.len() != expected {
            return Err(QuantError::ByteLength {
                dtype: self.dtype,
                n,
                expected,
                got: w.len(),
            });
        }
        if rows > 0 && !acts.is_empty() {
            let last = (rows - 1).checked_mul(rs).and_then(|a| {
                (acts.len() - 1)
                    .checked_mul(ts)
                    .and_then(|b| a.checked_add(b))
            });
            match last {
                Some(l) if l < out.len() => {}
                _ => {
                    return Err(QuantError::Length {
                        what: "gemm output (last index + 1)",
                        expected: usize::MAX,
                        got: out.len(),
                    })
                }
            }
        }
        // SAFETY: all checked above.
        unsafe { self.gemm_unchecked(w, rows, acts, out, rs, ts) };
        Ok(())
    }

    /// [`DotKernel::gemm`] without the checks.
    ///
    /// # Safety
    /// Every activation row has the kernel's format, the same length `n` and comes from
    /// an [`crate::ActBuf`]; `w.len() == rows * row_bytes(dtype, n)`; every index
    /// `r * rs + t * ts` (`r < rows`, `t < acts.len()`) is inside `out`.
    pub unsafe fn gemm_unchecked(
        &self,
        w: &[u8],
        rows: usize,
        acts: &[ActRow<'_>],
        out: &mut [f32],
        rs: usize,
        ts: usize,
    ) {
        if rows == 0 || acts.is_empty() {
            return;
        }
        let rb = w.len() / rows;
        #[cfg(target_arch = "x86_64")]
        if let Some(tab) = &self.tiles {
            let o = out.as_mut_ptr();
            let tile = |r0: usize, t0: usize| {
                let nr = GEMM_TILE_ROWS.min(rows - r0);
                let nt = GEMM_TILE_TOKENS.min(acts.len() - t0);
                // SAFETY: the caller guarantees the shapes and output indices; the
                // table entry takes exactly nr rows and nt tokens.
                unsafe {
                    tab[nr - 1][nt - 1](
                        w.as_ptr().add(r0 * rb),
                        rb,
                        &acts[t0..t0 + nt],
                        o.add(r0 * rs + t0 * ts),
                        rs,
                        ts,
                    )
                };
            };
            // Rows outer: a tile's weight rows stay in L1 while the tokens stream past
            // (from L2: callers pass token chunks that fit there). Tokens outer was
            // measured slower inside run_experts.
            for r0 in (0..rows).step_by(GEMM_TILE_ROWS) {
                prefetch(w, r0 + GEMM_TILE_ROWS, rows, rb);
                for t0 in (0..acts.len()).step_by(GEMM_TILE_TOKENS) {
                    tile(r0, t0);
                }
            }
            return;
        }
        let mut v = [0f32; MAX_ROWS_PER_CALL];
        for r in 0..rows {
            let wr = &w[r * rb..(r + 1) * rb];
            for (g, a) in acts.chunks(MAX_ROWS_PER_CALL).enumerate() {
                // SAFETY: forwarded from the caller.
                unsafe { self.dot_rows_unchecked(wr, a, &mut v[..a.len()]) };
                for (k, &x) in v[..a.len()].iter().enumerate() {
                    out[r * rs + (g * MAX_ROWS_PER_CALL + k) * ts] = x;
                }
            }
        }
    }
}
