//! Host side of the tiled prefill attention (`attend_tiled.cu`): its launch geometry, its
//! dynamic shared memory, and when the dense path takes it instead of the split-context
//! kernels (`attend_split` + `attend_combine`). Pure arithmetic, in both builds, so the
//! emulator tests and the device launch use the same numbers.

/// Query vectors ((row, query head) pairs of one KV head) per CTA (`ATT_TM`).
pub const ATTEND_TILE_VECTORS: usize = 64;
/// Cache positions per shared-memory block (`ATT_TN`).
pub const ATTEND_TILE_POSITIONS: usize = 32;
/// Threads per CTA (`ATT_THREADS`).
pub const ATTEND_TILE_THREADS: u32 = 256;
/// K/V blocks in shared memory (`ATT_STAGES`'s default): 2 copies the next block while
/// the CTA works on this one; 1 copies, waits, then works (less shared memory). A build with
/// `-DATT_STAGES=1` needs [`tiled_smem_floats_for`] with 1.
pub const ATTEND_TILE_STAGES: usize = 2;

/// Calls of at least this many rows take the tiled kernel. Its grid has
/// `rows × n_heads / ATTEND_TILE_VECTORS` CTAs, each walking its rows' whole context, so
/// few rows give few CTAs, while the split kernel also cuts the context. Measured on an
/// H200 (`hmoe-cuda-check attention`, 2026-11-27, 32 heads of 128 at the end of a
/// 1024-position context): tiled over split 0.84x at 32 rows, 2.4x at 64, 4.0x at 128,
/// 7.2x at 256. Decode (≤ 8 rows, graphed) always stays on the split kernel.
pub const TILED_MIN_ROWS: usize = 64;

/// Tiled and split outputs differ only by f32 summation order (scores over head_dim
/// products, softmax sums over up to a few thousand positions, merged in another grouping):
/// a few ulps of the output's scale, ~1e-6 relative. 2e-5 of the largest output value
/// leaves margin for long contexts, and is 50x tighter than the 1e-3 of the kernel checks,
/// so that a dropped or extra position (a 1/context change, 1e-3 at 1k positions) fails.
pub const TILED_VS_SPLIT_MAX_REL: f64 = 2e-5;

/// Whether `attend_tiled` has an instance for this head size.
pub fn tiled_supported(head_dim: usize) -> bool {
    matches!(head_dim, 64 | 128)
}

/// Whether a call of `n_rows` rows runs the tiled kernel (else the split kernels).
pub fn use_tiled(n_rows: usize, head_dim: usize) -> bool {
    n_rows >= TILED_MIN_ROWS && tiled_supported(head_dim)
}

/// Floats of dynamic shared memory the default build of the kernel needs at `head_dim`.
pub fn tiled_smem_floats(head_dim: usize) -> usize {
    tiled_smem_floats_for(head_dim, ATTEND_TILE_STAGES)
}

/// `AttTile<D>::FLOATS` of a build with `ATT_STAGES = stages`: Q `[TM][D + 4]`,
/// K `[stages][TN][D + 4]`, V `[stages][TN][D]`, P `[TM][TN + 8]`, two `[TM]` vectors.
pub fn tiled_smem_floats_for(head_dim: usize, stages: usize) -> usize {
    let (tm, tn, d) = (ATTEND_TILE_VECTORS, ATTEND_TILE_POSITIONS, head_dim);
    tm * (d + 4) + stages * (tn * (d + 4) + tn * d) + tm * (tn + 8) + 2 * tm
}

/// Grid of a call: `(ceil(n_rows × group / TM), n_kv)`, group = `n_heads / n_kv`.
pub fn tiled_grid(n_rows: usize, n_heads: usize, n_kv: usize) -> (u32, u32) {
    let group = n_heads / n_kv.max(1);
    (
        (n_rows * group).div_ceil(ATTEND_TILE_VECTORS) as u32,
        n_kv as u32,
    )
}

/// The largest difference between `got` and `want` relative to the largest `|want|`
/// (infinite when a value is not finite or the lengths differ).
pub fn max_rel_diff(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let (mut err, mut scale) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        if !g.is_finite() || !w.is_finite() {
            return f64::INFINITY;
        }
        err = err.max((g as f64 - w as f64).abs());
        scale = scale.max((w as f64).abs());
    }
    err / scale.max(f64::MIN_POSITIVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_follow_the_kernel_source() {
        assert_eq!(crate::kernel_define("ATT_TM"), Some(ATTEND_TILE_VECTORS));
        assert_eq!(crate::kernel_define("ATT_TN"), Some(ATTEND_TILE_POSITIONS));
        assert_eq!(
            crate::kernel_define("ATT_THREADS"),
            Some(ATTEND_TILE_THREADS as usize)
        );
        assert_eq!(crate::kernel_define("ATT_STAGES"), Some(ATTEND_TILE_STAGES));
    }

    #[test]
    fn shared_memory_allows_two_ctas_per_sm_at_head_dim_128() {
        // 228 KiB per SM on H100/H200, 1 KiB of it reserved per CTA.
        assert!(2 * (4 * tiled_smem_floats(128) + 1024) <= 228 * 1024);
        // Each array 16-byte aligned: every part is a multiple of 4 floats.
        for stages in [1, 2] {
            assert_eq!(tiled_smem_floats_for(64, stages) % 4, 0);
            assert_eq!(tiled_smem_floats_for(128, stages) % 4, 0);
        }
    }

    #[test]
    fn grid_covers_every_query_vector() {
        assert_eq!(tiled_grid(512, 32, 4), (64, 4));
        assert_eq!(tiled_grid(1, 32, 4), (1, 4));
        assert_eq!(tiled_grid(17, 8, 2), (2, 2)); // 68 vectors per KV head
        assert!(!use_tiled(8, 128));
        assert!(use_tiled(TILED_MIN_ROWS, 128));
        assert!(!use_tiled(4096, 256));
    }

    #[test]
    fn relative_difference_flags_non_finite_values() {
        assert_eq!(max_rel_diff(&[1.0, -2.0], &[1.0, -2.0]), 0.0);
        assert!((max_rel_diff(&[1.0, -2.5], &[1.0, -2.0]) - 0.25).abs() < 1e-12);
        assert!(max_rel_diff(&[f32::NAN], &[1.0]).is_infinite());
        assert!(max_rel_diff(&[1.0], &[1.0, 2.0]).is_infinite());
    }
}
