//! The device-resident dense path's host-side types (both builds): shape, borrowed
//! weights, sequence handles whose drop releases the device KV cache, the spans of a layer
//! call, and their validation. [`crate::GpuDense`] (feature `cuda`) runs them on the GPU;
//! [`crate::dense_ref::attention_block`] is the f64 reference.

use crate::dtype::KernelType;
use crate::error::{CudaError, Result};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Smallest KV capacity (tokens) allocated for a sequence: growth doubles from here, so a
/// long generation reallocates O(log n) times.
pub const KV_MIN_TOKENS: usize = 256;
/// Largest head the attention kernels take (the split kernel keeps 8 floats per lane).
pub const MAX_HEAD_DIM: usize = 256;

/// Hyper-parameters of the dense path.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseShape {
    /// Residual width.
    pub hidden: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Experts per layer (router rows).
    pub n_experts: usize,
    /// Output head rows.
    pub vocab: usize,
    /// Blocks.
    pub n_layers: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE base.
    pub rope_theta: f32,
}

impl DenseShape {
    /// Query width (`n_heads × head_dim`).
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Key/value width per token (`n_kv_heads × head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Device bytes of one token's keys and values over all layers (f32).
    pub fn kv_bytes_per_token(&self) -> usize {
        self.n_layers * 2 * self.kv_dim() * 4
    }

    /// RoPE inverse frequencies, computed in f32 exactly as the engine's CPU path
    /// (`model::ops::Rope::new`), so angles round the same way.
    pub fn inv_freq(&self) -> Vec<f32> {
        (0..self.head_dim / 2)
            .map(|i| 1.0f32 / self.rope_theta.powf((2 * i) as f32 / self.head_dim as f32))
            .collect()
    }

    /// Checks what the kernels need: head_dim 32, 64, 128 or 256 ([`MAX_HEAD_DIM`]; the
    /// attention kernels are instantiated for those), a residual of whole 16-byte chunks,
    /// whole query groups, non-zero sizes.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(CudaError::InvalidBatch(format!("dense shape: {m}")));
        if self.hidden == 0 || self.n_layers == 0 || self.vocab == 0 || self.n_experts == 0 {
            return bad(format!("empty dimension in {self:?}"));
        }
        if !matches!(self.head_dim, 32 | 64 | 128 | 256) || self.head_dim > MAX_HEAD_DIM {
            return bad(format!(
                "head_dim {} (the attention kernels take 32, 64, 128 or 256)",
                self.head_dim
            ));
        }
        if !self.hidden.is_multiple_of(4) {
            return bad(format!(
                "hidden {} (the norms read whole 16-byte chunks)",
                self.hidden
            ));
        }
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "{} query heads over {} KV heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        Ok(())
    }
}

/// A `[rows, cols]` matrix of raw GGUF blocks.
#[derive(Debug, Clone, Copy)]
pub struct DenseMatrix<'a> {
    /// Block type.
    pub t: KernelType,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// `rows × row_bytes(cols)` bytes.
    pub data: &'a [u8],
}

impl DenseMatrix<'_> {
    /// Checks the shape and the byte count; `what` names the tensor in the error.
    pub fn check(&self, what: &str, rows: usize, cols: usize) -> Result<()> {
        let want = self.t.row_bytes(cols)? * rows;
        if self.rows != rows || self.cols != cols || self.data.len() != want {
            return Err(CudaError::InvalidBatch(format!(
                "{what}: {}×{} with {} bytes, expected {rows}×{cols} ({want} bytes of {})",
                self.rows,
                self.cols,
                self.data.len(),
                self.t.ggml()
            )));
        }
        Ok(())
    }
}

/// One block's dense weights.
#[derive(Debug, Clone)]
pub struct DenseLayer<'a> {
    /// Pre-attention RMSNorm weight `[hidden]`.
    pub attn_norm: &'a [f32],
    /// Query projection `[q_dim, hidden]`.
    pub wq: DenseMatrix<'a>,
    /// Key projection `[kv_dim, hidden]`.
    pub wk: DenseMatrix<'a>,
    /// Value projection `[kv_dim, hidden]`.
    pub wv: DenseMatrix<'a>,
    /// Output projection `[hidden, q_dim]`.
    pub wo: DenseMatrix<'a>,
    /// Per-head query RMSNorm `[head_dim]`.
    pub q_norm: &'a [f32],
    /// Per-head key RMSNorm `[head_dim]`.
    pub k_norm: &'a [f32],
    /// Pre-MoE RMSNorm `[hidden]`.
    pub ffn_norm: &'a [f32],
    /// Router `[n_experts, hidden]`.
    pub router: DenseMatrix<'a>,
}

/// Every dense weight of a model (borrowed: the caller's mapped file or decoded vectors).
#[derive(Debug, Clone)]
pub struct DenseWeights<'a> {
    /// Blocks.
    pub layers: Vec<DenseLayer<'a>>,
    /// Final RMSNorm `[hidden]`.
    pub output_norm: &'a [f32],
    /// Output head `[vocab, hidden]`.
    pub output: DenseMatrix<'a>,
}

fn check_vec(what: &str, v: &[f32], len: usize) -> Result<()> {
    if v.len() != len {
        return Err(CudaError::InvalidBatch(format!(
            "{what}: {} values, expected {len}",
            v.len()
        )));
    }
    Ok(())
}

impl DenseWeights<'_> {
    /// Checks every tensor against `shape`.
    pub fn validate(&self, shape: &DenseShape) -> Result<()> {
        shape.validate()?;
        let (h, q, kv, hd) = (shape.hidden, shape.q_dim(), shape.kv_dim(), shape.head_dim);
        if self.layers.len() != shape.n_layers {
            return Err(CudaError::InvalidBatch(format!(
                "{} layers of dense weights for a {}-layer shape",
                self.layers.len(),
                shape.n_layers
            )));
        }
        for (i, l) in self.layers.iter().enumerate() {
            let n = |s: &str| format!("blk.{i}.{s}");
            check_vec(&n("attn_norm"), l.attn_norm, h)?;
            l.wq.check(&n("attn_q"), q, h)?;
            l.wk.check(&n("attn_k"), kv, h)?;
            l.wv.check(&n("attn_v"), kv, h)?;
            l.wo.check(&n("attn_output"), h, q)?;
            check_vec(&n("attn_q_norm"), l.q_norm, hd)?;
            check_vec(&n("attn_k_norm"), l.k_norm, hd)?;
            check_vec(&n("ffn_norm"), l.ffn_norm, h)?;
            l.router.check(&n("ffn_gate_inp"), shape.n_experts, h)?;
        }
        check_vec("output_norm", self.output_norm, h)?;
        self.output.check("output", shape.vocab, h)
    }

    /// Device bytes the weights take (raw blocks, f32 vectors, RoPE table).
    pub fn device_bytes(&self, shape: &DenseShape) -> usize {
        let v = |s: &[f32]| s.len() * 4;
        let per: usize = self
            .layers
            .iter()
            .map(|l| {
                v(l.attn_norm)
                    + v(l.q_norm)
                    + v(l.k_norm)
                    + v(l.ffn_norm)
                    + [l.wq, l.wk, l.wv, l.wo, l.router]
                        .iter()
                        .map(|m| m.data.len())
                        .sum::<usize>()
            })
            .sum();
        per + v(self.output_norm) + self.output.data.len() + shape.head_dim / 2 * 4
    }
}

/// A sequence's KV cache on the device. Dropping the handle queues its memory for release
/// (done at the next call of the backend, on the backend's thread).
#[derive(Debug)]
pub struct DenseSeq {
    id: u64,
    capacity: usize,
    released: Arc<Mutex<Vec<u64>>>,
}

impl DenseSeq {
    /// The id the backend knows the sequence by.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Tokens the sequence may hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Its span in a layer call: `n` new tokens at positions `start..start + n`.
    pub fn span(&self, start: usize, n: usize) -> SeqSpan {
        SeqSpan {
            seq: self.id,
            capacity: self.capacity,
            start,
            n,
        }
    }
}

impl Drop for DenseSeq {
    fn drop(&mut self) {
        if let Ok(mut r) = self.released.lock() {
            r.push(self.id);
        }
    }
}

/// Hands out sequence ids and collects the released ones.
#[derive(Debug, Default)]
pub struct SeqRegistry {
    next: AtomicU64,
    released: Arc<Mutex<Vec<u64>>>,
}

impl SeqRegistry {
    /// A new sequence of at most `capacity` tokens (nothing is allocated until it is used).
    pub fn new_seq(&self, capacity: usize) -> DenseSeq {
        DenseSeq {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            capacity,
            released: self.released.clone(),
        }
    }

    /// Ids dropped since the last call.
    pub fn take_released(&self) -> Vec<u64> {
        self.released
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}

/// One sequence's share of a layer call: `n` new tokens at positions `start..start + n`,
/// rows in call order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqSpan {
    /// [`DenseSeq::id`].
    pub seq: u64,
    /// [`DenseSeq::capacity`].
    pub capacity: usize,
    /// Tokens already cached.
    pub start: usize,
    /// New tokens.
    pub n: usize,
}

/// Checks a call's spans against `n_tokens` rows: every span non-empty and within its
/// capacity, each sequence once, rows adding up.
pub fn validate_spans(spans: &[SeqSpan], n_tokens: usize) -> Result<()> {
    let mut seen = HashSet::new();
    let mut total = 0;
    for s in spans {
        if s.n == 0 || s.start + s.n > s.capacity {
            return Err(CudaError::InvalidBatch(format!(
                "sequence {}: {} new tokens after {} do not fit its {} positions",
                s.seq, s.n, s.start, s.capacity
            )));
        }
        if !seen.insert(s.seq) {
            return Err(CudaError::InvalidBatch(format!(
                "sequence {} appears twice in one call",
                s.seq
            )));
        }
        total += s.n;
    }
    if total != n_tokens || n_tokens == 0 {
        return Err(CudaError::InvalidBatch(format!(
            "spans cover {total} tokens, the call has {n_tokens}"
        )));
    }
    Ok(())
}

/// Position of every row of a call.
pub fn positions(spans: &[SeqSpan]) -> Vec<u32> {
    spans
        .iter()
        .flat_map(|s| (s.start..s.start + s.n).map(|p| p as u32))
        .collect()
}

/// The capacity (tokens) to allocate when a sequence holding `have` needs `need`:
/// at least double, at least [`KV_MIN_TOKENS`], never beyond `max`.
pub fn grown_capacity(have: usize, need: usize, max: usize) -> usize {
    need.max(2 * have).max(KV_MIN_TOKENS).min(max.max(need))
}

/// Warps the split attention aims for: enough independent K/V streams in flight to cover
/// the memory latency of a 132-SM card (~8k resident warps) without merging too many partials.
pub const ATTEND_TARGET_WARPS: usize = 4096;
/// Fewest positions per split: below this the partials cost more than they save.
pub const ATTEND_MIN_CHUNK: usize = 32;
/// Most positions per split, so that one warp never walks a long prefill context alone.
pub const ATTEND_MAX_CHUNK: usize = 512;

/// Query heads one split-attention warp serves at most ([`attention_plan`]): they share
/// their KV head's K and V rows, which the warp then loads once for all of them. Measured
/// on an H100 (`hmoe-cuda-check attention`, docs/notes/bench-cuda.md, session 7): with
/// many rows (a batch of sequences, a short prefill chunk) 8 heads a warp halve the time
/// against 1; a single decode row is fastest with 1 (its few warps are bound by their own
/// chain of loads, which more heads a warp lengthen), so the plan only groups heads while
/// the grid keeps [`ATTEND_TARGET_WARPS`] warps.
pub const ATTEND_HEADS_PER_WARP: usize = 8;
/// Environment variable: [`ATTEND_HEADS_PER_WARP`] unless set (1, 2, 4 or 8; a tuning
/// knob for the device benchmark).
pub const ATTEND_HPW_ENV: &str = "HMOE_ATTEND_HPW";

/// The query heads per warp of `attend_split` (its `hpw`) for `n_heads` query heads over
/// `n_kv` KV heads: the largest of 8, 4, 2, 1 that is at most `max` and divides the group
/// `n_heads / n_kv` (a warp's heads must share one KV head).
pub fn heads_per_warp(n_heads: usize, n_kv: usize, max: usize) -> usize {
    let group = if n_kv == 0 || !n_heads.is_multiple_of(n_kv) {
        1
    } else {
        n_heads / n_kv
    };
    [8, 4, 2, 1]
        .into_iter()
        .find(|&h| h <= max.max(1) && group % h == 0)
        .unwrap_or(1)
}

/// The split attention's whole plan for a call: `(chunk, n_splits, hpw)`, the split plan
/// of [`attention_split_min`] for `n_heads / hpw` warp heads, where `hpw` is the largest
/// [`heads_per_warp`] (at most `max_hpw`) whose grid still has [`ATTEND_TARGET_WARPS`]
/// warps (or 1).
pub fn attention_plan(
    n_rows: usize,
    (n_heads, n_kv): (usize, usize),
    max_visible: usize,
    (min_chunk, max_hpw): (usize, usize),
) -> (usize, usize, usize) {
    let mut hpw = heads_per_warp(n_heads, n_kv, max_hpw);
    loop {
        let warp_heads = n_heads / hpw;
        let (chunk, splits) = attention_split_min(n_rows, warp_heads, max_visible, min_chunk);
        if hpw == 1 || n_rows * warp_heads * splits >= ATTEND_TARGET_WARPS {
            return (chunk, splits, hpw);
        }
        hpw /= 2;
    }
}

/// How the split-context attention (attend.cu) cuts a call of `n_rows` query rows over
/// `n_heads` heads whose longest context is `max_visible` positions: `(chunk, n_splits)`,
/// positions per split and splits per (row, head), with `chunk * n_splits >= max_visible`
/// and no split left empty for the longest row.
pub fn attention_split(n_rows: usize, n_heads: usize, max_visible: usize) -> (usize, usize) {
    attention_split_min(n_rows, n_heads, max_visible, ATTEND_MIN_CHUNK)
}

/// Environment variable: the fewest positions per split ([`ATTEND_MIN_CHUNK`] unless set;
/// a tuning knob for the device benchmark).
pub const ATTEND_MIN_CHUNK_ENV: &str = "HMOE_ATTEND_MIN_CHUNK";

/// [`attention_split`] with `min_chunk` positions per split at the fewest.
pub fn attention_split_min(
    n_rows: usize,
    n_heads: usize,
    max_visible: usize,
    min_chunk: usize,
) -> (usize, usize) {
    let max_visible = max_visible.max(1);
    let most = max_visible.div_ceil(min_chunk.max(1));
    let want = ATTEND_TARGET_WARPS
        .div_ceil((n_rows * n_heads).max(1))
        .max(max_visible.div_ceil(ATTEND_MAX_CHUNK));
    let chunk = max_visible.div_ceil(want.clamp(1, most));
    (chunk, max_visible.div_ceil(chunk))
}

/// Splits the attention grid is sized for: `n_splits` rounded up to a power of two (at
/// least 4, one block), so that a captured decode graph serves a growing context until the
/// split count passes the next power of two (the kernels read the real plan from memory).
pub fn grid_split_count(n_splits: usize) -> usize {
    n_splits.max(4).next_power_of_two()
}

#[cfg(test)]
mod tests {
    #[test]
    fn heads_per_warp_divides_the_group_and_respects_the_cap() {
        use super::heads_per_warp;
        assert_eq!(heads_per_warp(32, 4, 4), 4);
        assert_eq!(heads_per_warp(32, 4, 8), 8);
        assert_eq!(heads_per_warp(32, 4, 16), 8);
        assert_eq!(heads_per_warp(32, 4, 3), 2);
        assert_eq!(heads_per_warp(32, 4, 0), 1);
        // Groups of 6 take 2; no grouping (or an odd layout) takes 1.
        assert_eq!(heads_per_warp(12, 2, 8), 2);
        assert_eq!(heads_per_warp(8, 8, 8), 1);
        assert_eq!(heads_per_warp(10, 4, 8), 1);
        assert_eq!(heads_per_warp(10, 0, 8), 1);
    }

    #[test]
    fn attention_plan_groups_heads_only_while_the_grid_stays_full() {
        use super::{attention_plan, attention_split_min, ATTEND_MIN_CHUNK, ATTEND_TARGET_WARPS};
        let q3 = (32, 4);
        let knobs = (ATTEND_MIN_CHUNK, 8);
        // One decode row at 1.3k: 32 heads x 41 splits is below the target; one head a
        // warp, the plan of attention_split.
        let (c, s, h) = attention_plan(1, q3, 1300, knobs);
        assert_eq!(h, 1);
        assert_eq!((c, s), attention_split_min(1, 32, 1300, ATTEND_MIN_CHUNK));
        // A batch of 188 rows fills the grid with 8 heads a warp.
        let (_, s, h) = attention_plan(188, q3, 600, knobs);
        assert_eq!(h, 8);
        assert!(188 * (32 / h) * s >= ATTEND_TARGET_WARPS);
        // Three long decode rows: the largest grouping that still fills the grid.
        let (_, s, h) = attention_plan(3, q3, 4001, knobs);
        assert_eq!(h, 2, "{s} splits");
        assert!(3 * 16 * s >= ATTEND_TARGET_WARPS);
        // The cap and the group size bound it.
        assert_eq!(attention_plan(188, q3, 600, (ATTEND_MIN_CHUNK, 1)).2, 1);
        assert_eq!(attention_plan(188, (12, 2), 600, knobs).2, 2);
    }

    #[test]
    fn attention_split_covers_the_context_without_empty_splits() {
        for (n, heads) in [
            (1usize, 32usize),
            (4, 32),
            (64, 32),
            (512, 32),
            (1, 4),
            (3, 8),
        ] {
            for vis in [1usize, 2, 31, 32, 33, 100, 511, 1300, 4096, 40_000] {
                let (chunk, splits) = attention_split(n, heads, vis);
                assert!(chunk >= 1 && splits >= 1, "{n} {heads} {vis}");
                assert!(
                    chunk * splits >= vis,
                    "{n} {heads} {vis}: {chunk} x {splits}"
                );
                assert!(
                    chunk * (splits - 1) < vis,
                    "{n} {heads} {vis}: empty last split"
                );
                // ceil(vis / ceil(vis / MIN)) is at least half of MIN.
                assert!(
                    2 * chunk >= ATTEND_MIN_CHUNK.min(vis),
                    "{n} {heads} {vis}: chunk {chunk}"
                );
                assert!(
                    chunk <= ATTEND_MAX_CHUNK || splits * n * heads >= ATTEND_TARGET_WARPS,
                    "{n} {heads} {vis}: chunk {chunk}"
                );
            }
        }
        // Decode of one sequence at a 1.3k context: many short splits.
        assert_eq!(attention_split(1, 32, 1300), (32, 41));
        // A long prefill already has warps enough: chunks as long as allowed.
        assert_eq!(attention_split(1024, 32, 1024), (512, 2));
    }

    use super::*;

    fn shape() -> DenseShape {
        DenseShape {
            hidden: 256,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 64,
            n_experts: 16,
            vocab: 100,
            n_layers: 2,
            rms_eps: 1e-6,
            rope_theta: 1e6,
        }
    }

    #[test]
    fn shapes_the_kernels_cannot_run_are_refused() {
        assert!(shape().validate().is_ok());
        for bad in [
            DenseShape {
                head_dim: 48,
                ..shape()
            },
            DenseShape {
                head_dim: 512,
                ..shape()
            },
            // A multiple of 32 without an attention kernel instance.
            DenseShape {
                head_dim: 96,
                ..shape()
            },
            DenseShape {
                hidden: 1022,
                ..shape()
            },
            DenseShape {
                n_kv_heads: 3,
                ..shape()
            },
            DenseShape {
                vocab: 0,
                ..shape()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert_eq!(shape().kv_bytes_per_token(), 2 * 2 * 128 * 4);
    }

    #[test]
    fn dropped_sequences_are_released_once() {
        let r = SeqRegistry::default();
        let (a, b) = (r.new_seq(10), r.new_seq(20));
        assert_ne!(a.id(), b.id());
        let id = a.id();
        drop(a);
        assert_eq!(r.take_released(), vec![id]);
        assert!(r.take_released().is_empty());
        assert_eq!(b.span(3, 2).capacity, 20);
    }

    #[test]
    fn spans_are_checked_and_positions_follow_them() {
        let s = |seq, start, n| SeqSpan {
            seq,
            capacity: 8,
            start,
            n,
        };
        assert!(validate_spans(&[s(0, 0, 3), s(1, 5, 1)], 4).is_ok());
        assert_eq!(positions(&[s(0, 0, 3), s(1, 5, 1)]), vec![0, 1, 2, 5]);
        assert!(validate_spans(&[s(0, 0, 3)], 4).is_err(), "row count");
        assert!(validate_spans(&[s(0, 6, 3)], 3).is_err(), "capacity");
        assert!(
            validate_spans(&[s(0, 0, 1), s(0, 1, 1)], 2).is_err(),
            "twice"
        );
        assert!(validate_spans(&[s(0, 0, 0)], 0).is_err(), "empty");
    }

    #[test]
    fn capacity_doubles_within_the_limit() {
        assert_eq!(grown_capacity(0, 1, 40960), KV_MIN_TOKENS);
        assert_eq!(grown_capacity(256, 257, 40960), 512);
        assert_eq!(grown_capacity(256, 1000, 40960), 1000);
        assert_eq!(grown_capacity(32768, 32769, 40960), 40960);
        assert_eq!(grown_capacity(0, 5, 8), 8);
    }
}
