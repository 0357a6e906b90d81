//! Shared test helpers: a hand-rolled byte builder for malformed files and a small
//! valid file made by the writer.
#![allow(dead_code)]

use hmoe_gguf::{GgmlDType, GgufWriter, MetaValue, TensorDesc};

/// Builds GGUF bytes field by field, so tests can write what the writer refuses to.
#[derive(Default)]
pub struct Raw(pub Vec<u8>);

impl Raw {
    /// Magic, version, tensor count and KV count.
    pub fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw::default();
        r.0.extend_from_slice(b"GGUF");
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    /// A u32-valued KV.
    pub fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key).u32(4).u32(v)
    }
    /// A tensor info record.
    pub fn tensor(&mut self, name: &str, dims: &[u64], type_id: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(type_id).u64(offset)
    }
    /// Zero padding up to a multiple of `align`.
    pub fn pad(&mut self, align: usize) -> &mut Self {
        while self.0.len() % align != 0 {
            self.0.push(0);
        }
        self
    }
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
}

/// Deterministic test bytes.
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A small valid file with a few KVs (string, array) and two tensors.
pub fn small_valid() -> Vec<u8> {
    let meta = vec![
        (
            "general.architecture".to_owned(),
            MetaValue::String("qwen3moe".into()),
        ),
        ("qwen3moe.block_count".to_owned(), MetaValue::U32(2)),
        (
            "tokenizer.ggml.tokens".to_owned(),
            MetaValue::Array(vec![
                MetaValue::String("a".into()),
                MetaValue::String("bc".into()),
            ]),
        ),
    ];
    let tensors = vec![
        TensorDesc::new("a", &[4, 2], GgmlDType::F32),
        TensorDesc::new("b", &[32], GgmlDType::Q8_0),
    ];
    let mut w = GgufWriter::new(Vec::new(), meta, tensors).unwrap();
    w.write_tensor("a", &pattern(32, 1)).unwrap();
    w.write_tensor("b", &pattern(34, 2)).unwrap();
    w.finish().unwrap()
}
