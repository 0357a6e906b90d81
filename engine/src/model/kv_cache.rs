//! Per-sequence key/value cache on the host.

/// Keys and values of one layer, `[tokens, kv_heads * head_dim]` row-major.
#[derive(Debug, Default, Clone)]
pub struct LayerKv {
    /// Keys (after QK-norm and RoPE).
    pub k: Vec<f32>,
    /// Values.
    pub v: Vec<f32>,
}

/// The cache of one sequence: every layer's keys and values, and how many tokens it holds.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// One entry per layer.
    pub layers: Vec<LayerKv>,
    len: usize,
    kv_dim: usize,
    capacity: usize,
}

impl KvCache {
    /// An empty cache for `n_layers` layers of `kv_dim` floats per token, holding at most
    /// `capacity` tokens.
    pub fn new(n_layers: usize, kv_dim: usize, capacity: usize) -> Self {
        Self {
            layers: vec![LayerKv::default(); n_layers],
            len: 0,
            kv_dim,
            capacity,
        }
    }

    /// Tokens cached so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum tokens.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Tokens that still fit.
    pub fn remaining(&self) -> usize {
        self.capacity - self.len
    }

    /// Floats per token per layer.
    pub fn kv_dim(&self) -> usize {
        self.kv_dim
    }

    /// Marks `n` more tokens as cached once every layer has appended them.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
        debug_assert!(self
            .layers
            .iter()
            .all(|l| l.k.len() == self.len * self.kv_dim));
    }

    /// Drops everything after the first `n` tokens (used to reuse a shared prompt prefix).
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len);
        for l in &mut self.layers {
            l.k.truncate(n * self.kv_dim);
            l.v.truncate(n * self.kv_dim);
        }
        self.len = n;
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.k.len() + l.v.len()) * 4)
            .sum()
    }
}
