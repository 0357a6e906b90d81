//! Per-sequence key/value cache: on the host, or on the device that runs the dense path
//! (then only the bookkeeping is here, and the device's sequence handle).

use hmoe_cuda::DenseSeq;

/// Keys and values of one layer, `[tokens, kv_heads * head_dim]` row-major.
#[derive(Debug, Default, Clone)]
pub struct LayerKv {
    /// Keys (after QK-norm and RoPE).
    pub k: Vec<f32>,
    /// Values.
    pub v: Vec<f32>,
}

/// The cache of one sequence: every layer's keys and values, and how many tokens it holds.
/// Not `Clone`: a device cache belongs to exactly one handle.
#[derive(Debug)]
pub struct KvCache {
    /// One entry per layer (empty when the keys and values live on the device).
    pub layers: Vec<LayerKv>,
    len: usize,
    kv_dim: usize,
    capacity: usize,
    device: Option<DenseSeq>,
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
            device: None,
        }
    }

    /// An empty cache whose keys and values live on the device behind `seq` (writes go
    /// by position there, so [`KvCache::truncate`] needs no device call; dropping the
    /// cache releases the device memory).
    pub fn on_device(n_layers: usize, kv_dim: usize, capacity: usize, seq: DenseSeq) -> Self {
        Self {
            device: Some(seq),
            ..Self::new(n_layers, kv_dim, capacity)
        }
    }

    /// The device sequence, when the cache lives on the device.
    pub fn device_seq(&self) -> Option<&DenseSeq> {
        self.device.as_ref()
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
        debug_assert!(
            self.device.is_some()
                || self
                    .layers
                    .iter()
                    .all(|l| l.k.len() == self.len * self.kv_dim)
        );
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

    /// Host bytes held (a device cache holds none here).
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.k.len() + l.v.len()) * 4)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmoe_cuda::dense_model::SeqRegistry;

    #[test]
    fn a_device_cache_keeps_the_bookkeeping_and_releases_its_sequence() {
        let reg = SeqRegistry::default();
        let mut c = KvCache::on_device(2, 8, 10, reg.new_seq(10));
        let id = c.device_seq().map(|s| s.id());
        c.advance(4);
        assert_eq!((c.len(), c.remaining(), c.bytes()), (4, 6, 0));
        c.truncate(1);
        assert_eq!(c.len(), 1);
        assert_eq!(c.device_seq().map(|s| s.span(c.len(), 2).start), Some(1));
        assert!(reg.take_released().is_empty());
        drop(c);
        assert_eq!(reg.take_released(), id.into_iter().collect::<Vec<_>>());
        assert!(KvCache::new(2, 8, 10).device_seq().is_none());
    }
}
