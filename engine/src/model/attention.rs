//! Causal grouped-query attention of one sequence's new tokens over its KV cache.

use super::kv_cache::LayerKv;
use super::ops::{axpy, dot, softmax};
use rayon::prelude::*;

/// Shape of the attention heads.
#[derive(Debug, Clone, Copy)]
pub struct HeadShape {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

/// Computes attention for `n` new query tokens at positions `start..start + n`.
///
/// `q` is `[n, n_heads * head_dim]`; `kv` already holds the keys and values of all
/// `start + n` tokens. Query token `i` sees cache positions `0..=start + i`.
/// Returns `[n, n_heads * head_dim]`.
pub fn attend(q: &[f32], kv: &LayerKv, start: usize, shape: HeadShape) -> Vec<f32> {
    let HeadShape {
        n_heads,
        n_kv_heads,
        head_dim,
    } = shape;
    let q_width = n_heads * head_dim;
    let kv_width = n_kv_heads * head_dim;
    let n = q.len() / q_width;
    let group = n_heads / n_kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut out = vec![0f32; n * q_width];
    // One task per (token, head): each writes its own head_dim slice of the output.
    out.par_chunks_mut(head_dim).enumerate().for_each_init(
        Vec::new,
        |scores: &mut Vec<f32>, (idx, o)| {
            let (i, h) = (idx / n_heads, idx % n_heads);
            let kvh = h / group;
            let qh = &q[i * q_width + h * head_dim..][..head_dim];
            let visible = start + i + 1;
            scores.clear();
            scores.extend(
                (0..visible)
                    .map(|t| dot(qh, &kv.k[t * kv_width + kvh * head_dim..][..head_dim]) * scale),
            );
            softmax(scores);
            for (t, &p) in scores.iter().enumerate() {
                axpy(o, p, &kv.v[t * kv_width + kvh * head_dim..][..head_dim]);
            }
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_visible_token_returns_its_value() {
        let shape = HeadShape {
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 2,
        };
        let kv = LayerKv {
            k: vec![1.0, 0.0],
            v: vec![3.0, -2.0],
        };
        let out = attend(&[0.5, 0.5, -1.0, 2.0], &kv, 0, shape);
        assert_eq!(out, vec![3.0, -2.0, 3.0, -2.0]);
    }

    #[test]
    fn causal_mask_hides_later_tokens() {
        let shape = HeadShape {
            n_heads: 1,
            n_kv_heads: 1,
            head_dim: 1,
        };
        let kv = LayerKv {
            k: vec![0.0, 0.0],
            v: vec![1.0, 5.0],
        };
        // Two new tokens: the first sees only v[0]; the second averages both (equal scores).
        let out = attend(&[1.0, 1.0], &kv, 0, shape);
        assert_eq!(out[0], 1.0);
        assert!((out[1] - 3.0).abs() < 1e-6);
    }
}
