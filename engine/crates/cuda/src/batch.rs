//! Packs a layer's GPU work items into the index tables the kernels read: one buffer,
//! one host-to-device copy, three launches (gate/up, down, combine), or two in the fused
//! decode pass (gate_up_fused, down_combine: `tok_down` gives it each pair's down matrix).
//!
//! Every (item, token row) pair gets its own row in the intermediate buffers, so the
//! kernels never race; the combine kernel then sums each token's pairs in item order,
//! which keeps the result independent of scheduling (no float atomics).

use crate::error::{CudaError, Result};

/// Words of one item record: gate, up, down pointers, then `pair0 | n << 32`.
pub const ITEM_WORDS: usize = 4;
/// Section alignment inside the packed buffer (bytes).
const ALIGN: usize = 16;
/// The CUDA grid's y dimension limit (items and tokens are launched along y).
pub const MAX_GRID_Y: usize = 65_535;

/// One expert's work: where its matrices are (device addresses, or host addresses in
/// the CPU emulation) and which token rows it serves with which router weights.
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    /// Address of the gate matrix.
    pub gate: u64,
    /// Address of the up matrix.
    pub up: u64,
    /// Address of the down matrix.
    pub down: u64,
    /// Token rows (indices into the layer input).
    pub rows: &'a [u32],
    /// Router weight per row.
    pub weights: &'a [f32],
    /// Position of the item in the layer's original order: each token sums its pairs in
    /// this order, so the result does not depend on how the batch was arranged.
    pub rank: u32,
}

/// Byte offsets of the sections in a packed batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchLayout {
    /// Items in the batch.
    pub n_items: usize,
    /// (item, row) pairs.
    pub n_pairs: usize,
    /// Token rows of the layer input.
    pub n_tokens: usize,
    /// `u64 [n_items * ITEM_WORDS]`.
    pub items: usize,
    /// `u32 [n_pairs]`: token row of each pair.
    pub rows: usize,
    /// `f32 [n_pairs]`: router weight of each pair.
    pub weights: usize,
    /// `u32 [n_tokens + 1]`: CSR start of each token's pair list.
    pub tok_start: usize,
    /// `u32 [n_pairs]`: pairs of each token, in item order.
    pub tok_pairs: usize,
    /// `u64 [n_pairs]`: the down matrix of each `tok_pairs` entry's item (the fused
    /// decode pass reads a token's pairs without going through the items).
    pub tok_down: usize,
    /// Most token rows any one item serves (the fused decode pass is for items of few).
    pub max_item_rows: usize,
    /// Total bytes.
    pub bytes: usize,
}

fn align(x: usize) -> usize {
    x.div_ceil(ALIGN) * ALIGN
}

/// Writes `v` as the `i`-th little-endian u32 of the table at `off`.
fn put32(buf: &mut [u8], off: usize, i: usize, v: u32) {
    buf[off + 4 * i..off + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
}

/// Writes `v` as the `i`-th little-endian u64 of the table at `off`.
fn put64(buf: &mut [u8], off: usize, i: usize, v: u64) {
    buf[off + 8 * i..off + 8 * i + 8].copy_from_slice(&v.to_le_bytes());
}

/// Packs `items` for a layer input of `n_tokens` rows into `buf` (cleared and reused).
pub fn pack(items: &[BatchItem<'_>], n_tokens: usize, buf: &mut Vec<u8>) -> Result<BatchLayout> {
    if items.len() > MAX_GRID_Y || n_tokens > MAX_GRID_Y {
        return Err(CudaError::InvalidBatch(format!(
            "{} items / {n_tokens} tokens exceed the grid limit {MAX_GRID_Y}",
            items.len()
        )));
    }
    let mut n_pairs = 0usize;
    let mut per_token = vec![0u32; n_tokens + 1];
    for (i, it) in items.iter().enumerate() {
        if it.rows.len() != it.weights.len() {
            return Err(CudaError::InvalidBatch(format!(
                "item {i}: {} rows but {} weights",
                it.rows.len(),
                it.weights.len()
            )));
        }
        for &r in it.rows {
            if r as usize >= n_tokens {
                return Err(CudaError::InvalidBatch(format!(
                    "item {i}: token row {r} outside the input ({n_tokens} rows)"
                )));
            }
            per_token[r as usize + 1] += 1;
        }
        n_pairs += it.rows.len();
    }
    if n_pairs > u32::MAX as usize {
        return Err(CudaError::InvalidBatch(format!("{n_pairs} pairs")));
    }
    for t in 0..n_tokens {
        per_token[t + 1] += per_token[t];
    }
    let mut l = BatchLayout {
        n_items: items.len(),
        n_pairs,
        n_tokens,
        ..Default::default()
    };
    l.items = 0;
    l.rows = align(l.items + items.len() * ITEM_WORDS * 8);
    l.weights = align(l.rows + n_pairs * 4);
    l.tok_start = align(l.weights + n_pairs * 4);
    l.tok_pairs = align(l.tok_start + (n_tokens + 1) * 4);
    l.tok_down = align(l.tok_pairs + n_pairs * 4);
    l.bytes = align(l.tok_down + n_pairs * 8);
    l.max_item_rows = items.iter().map(|it| it.rows.len()).max().unwrap_or(0);
    buf.clear();
    buf.resize(l.bytes, 0);
    let mut fill = per_token.clone();
    let mut pair_rank = vec![0u32; n_pairs];
    let mut pair_down = vec![0u64; n_pairs];
    let mut tok_pairs = vec![0u32; n_pairs];
    let mut pair = 0usize;
    for (i, it) in items.iter().enumerate() {
        let w = i * ITEM_WORDS;
        put64(buf, l.items, w, it.gate);
        put64(buf, l.items, w + 1, it.up);
        put64(buf, l.items, w + 2, it.down);
        put64(
            buf,
            l.items,
            w + 3,
            pair as u64 | (it.rows.len() as u64) << 32,
        );
        for (&r, &wt) in it.rows.iter().zip(it.weights) {
            put32(buf, l.rows, pair, r);
            put32(buf, l.weights, pair, wt.to_bits());
            let slot = &mut fill[r as usize];
            tok_pairs[*slot as usize] = pair as u32;
            pair_rank[pair] = it.rank;
            pair_down[pair] = it.down;
            *slot += 1;
            pair += 1;
        }
    }
    for t in 0..n_tokens {
        let seg = &mut tok_pairs[per_token[t] as usize..per_token[t + 1] as usize];
        seg.sort_by_key(|&p| (pair_rank[p as usize], p));
    }
    for (i, &p) in tok_pairs.iter().enumerate() {
        put32(buf, l.tok_pairs, i, p);
        put64(buf, l.tok_down, i, pair_down[p as usize]);
    }
    for (t, &s) in per_token.iter().enumerate() {
        put32(buf, l.tok_start, t, s);
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32s(buf: &[u8], off: usize, n: usize) -> Vec<u32> {
        (0..n)
            .map(|i| u32::from_le_bytes(buf[off + 4 * i..off + 4 * i + 4].try_into().unwrap()))
            .collect()
    }

    #[test]
    fn pairs_and_csr_follow_item_order() {
        let items = [
            BatchItem {
                gate: 1,
                up: 2,
                down: 3,
                rows: &[2, 0],
                weights: &[0.5, 0.25],
                rank: 0,
            },
            BatchItem {
                gate: 4,
                up: 5,
                down: 6,
                rows: &[0],
                weights: &[0.125],
                rank: 1,
            },
        ];
        let mut buf = Vec::new();
        let l = pack(&items, 3, &mut buf).unwrap();
        assert_eq!((l.n_items, l.n_pairs, l.n_tokens), (2, 3, 3));
        assert_eq!(u32s(&buf, l.rows, 3), vec![2, 0, 0]);
        // token 0 is served by pair 1 (item 0) then pair 2 (item 1); token 1 by none.
        assert_eq!(u32s(&buf, l.tok_start, 4), vec![0, 2, 2, 3]);
        assert_eq!(u32s(&buf, l.tok_pairs, 3), vec![1, 2, 0]);
        // Each entry's down matrix: pairs 1 (item 0), 2 (item 1), 0 (item 0).
        let downs: Vec<u64> = (0..3)
            .map(|i| {
                let at = l.tok_down + 8 * i;
                u64::from_le_bytes(buf[at..at + 8].try_into().unwrap())
            })
            .collect();
        assert_eq!(downs, vec![3, 6, 3]);
        assert_eq!(l.max_item_rows, 2);
        let w3 = u64::from_le_bytes(buf[l.items + 56..l.items + 64].try_into().unwrap());
        assert_eq!(w3, 2 | 1 << 32);
        assert_eq!(f32::from_bits(u32s(&buf, l.weights, 3)[1]), 0.25);
        for off in [
            l.rows,
            l.weights,
            l.tok_start,
            l.tok_pairs,
            l.tok_down,
            l.bytes,
        ] {
            assert_eq!(off % ALIGN, 0);
        }
    }

    #[test]
    fn each_token_sums_in_original_item_order() {
        // Packed hits-first: the item of rank 1 comes first, but token 0 lists rank 0 first.
        let items = [
            BatchItem {
                gate: 0,
                up: 0,
                down: 0,
                rows: &[0],
                weights: &[1.0],
                rank: 1,
            },
            BatchItem {
                gate: 0,
                up: 0,
                down: 0,
                rows: &[0],
                weights: &[1.0],
                rank: 0,
            },
        ];
        let mut buf = Vec::new();
        let l = pack(&items, 1, &mut buf).unwrap();
        assert_eq!(u32s(&buf, l.tok_pairs, 2), vec![1, 0]);
    }

    #[test]
    fn rejects_rows_outside_the_input_and_ragged_weights() {
        let mut buf = Vec::new();
        let bad_row = [BatchItem {
            gate: 0,
            up: 0,
            down: 0,
            rows: &[3],
            weights: &[1.0],
            rank: 0,
        }];
        assert!(pack(&bad_row, 3, &mut buf).is_err());
        let ragged = [BatchItem {
            gate: 0,
            up: 0,
            down: 0,
            rows: &[0, 1],
            weights: &[1.0],
            rank: 0,
        }];
        assert!(pack(&ragged, 3, &mut buf).is_err());
        assert!(pack(&[], MAX_GRID_Y + 1, &mut buf).is_err());
    }
}
