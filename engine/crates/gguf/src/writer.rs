//! [`GgufWriter`]: streams a GGUF v3 file of any size. Metadata and tensor descriptors
//! are declared up front so offsets are known before the header is written; tensor data
//! then flows through in declaration order, in chunks of any size, never held whole.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::parse::{align_up, DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_NESTING};
use crate::tensor::checked_n_bytes;
use crate::{GgmlDType, GgufError, MetaValue};

/// GGUF version written.
pub const WRITE_VERSION: u32 = 3;
/// Buffer size of file writers: large sequential writes for multi-GB files.
const FILE_BUFFER: usize = 1 << 20;
const ZEROS: [u8; 256] = [0; 256];

/// A tensor to be written: name, dims in ggml order (innermost first) and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorDesc {
    /// Tensor name.
    pub name: String,
    /// Dimensions, `dims[0]` innermost.
    pub dims: Vec<u64>,
    /// Element type.
    pub dtype: GgmlDType,
}

impl TensorDesc {
    /// Convenience constructor.
    pub fn new(name: impl Into<String>, dims: &[u64], dtype: GgmlDType) -> TensorDesc {
        TensorDesc {
            name: name.into(),
            dims: dims.to_vec(),
            dtype,
        }
    }

    /// Validated byte size of the data.
    pub fn n_bytes(&self) -> Result<u64, GgufError> {
        checked_n_bytes(&self.name, &self.dims, self.dtype)
    }
}

struct Planned {
    name: String,
    n_bytes: u64,
}

/// Streaming GGUF writer; see the module docs.
pub struct GgufWriter<W: Write> {
    out: W,
    path: Option<PathBuf>,
    alignment: u64,
    plan: Vec<Planned>,
    current: usize,
    written: u64,
}

fn err(msg: String) -> GgufError {
    GgufError::Writer(msg)
}

impl GgufWriter<BufWriter<File>> {
    /// Create (truncate) `path` and write the header.
    pub fn create(
        path: &Path,
        metadata: Vec<(String, MetaValue)>,
        tensors: Vec<TensorDesc>,
    ) -> Result<Self, GgufError> {
        let file = File::create(path).map_err(|source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::start(
            BufWriter::with_capacity(FILE_BUFFER, file),
            Some(path.to_path_buf()),
            metadata,
            tensors,
        )
    }
}

impl<W: Write> GgufWriter<W> {
    /// Validate the declarations and write the header to `out`.
    pub fn new(
        out: W,
        metadata: Vec<(String, MetaValue)>,
        tensors: Vec<TensorDesc>,
    ) -> Result<Self, GgufError> {
        Self::start(out, None, metadata, tensors)
    }

    fn start(
        out: W,
        path: Option<PathBuf>,
        metadata: Vec<(String, MetaValue)>,
        tensors: Vec<TensorDesc>,
    ) -> Result<Self, GgufError> {
        let mut keys = HashSet::new();
        let mut alignment = DEFAULT_ALIGNMENT;
        for (k, v) in &metadata {
            if !keys.insert(k.as_str()) {
                return Err(GgufError::DuplicateKey {
                    key: k.clone(),
                    offset: 0,
                });
            }
            check_value(k, v, 0)?;
            if k == "general.alignment" {
                alignment = match v {
                    MetaValue::U32(a) if a.is_power_of_two() => *a as u64,
                    _ => {
                        return Err(GgufError::BadAlignment {
                            value: format!("{v:?} (must be a u32 power of two)"),
                        })
                    }
                };
            }
        }
        let mut names = HashSet::new();
        let mut plan = Vec::with_capacity(tensors.len());
        let mut header = Vec::new();
        header.extend_from_slice(&MAGIC);
        put_u32(&mut header, WRITE_VERSION);
        put_u64(&mut header, tensors.len() as u64);
        put_u64(&mut header, metadata.len() as u64);
        for (k, v) in &metadata {
            put_str(&mut header, k);
            put_u32(&mut header, v.type_id());
            put_value(&mut header, v);
        }
        let mut rel = 0u64;
        for t in &tensors {
            if !names.insert(t.name.as_str()) {
                return Err(GgufError::DuplicateTensor {
                    name: t.name.clone(),
                });
            }
            let n_bytes = t.n_bytes()?;
            put_str(&mut header, &t.name);
            put_u32(&mut header, t.dims.len() as u32);
            for &d in &t.dims {
                put_u64(&mut header, d);
            }
            put_u32(&mut header, t.dtype.id());
            put_u64(&mut header, rel);
            rel = rel
                .checked_add(n_bytes)
                .and_then(|e| align_up(e, alignment))
                .ok_or_else(|| err(format!("tensor {:?}: total data size overflows", t.name)))?;
            plan.push(Planned {
                name: t.name.clone(),
                n_bytes,
            });
        }
        let mut w = GgufWriter {
            out,
            path,
            alignment,
            plan,
            current: 0,
            written: 0,
        };
        let len = header.len() as u64;
        let pad = align_up(len, alignment).unwrap_or(len) - len;
        w.put(&header)?;
        w.pad(pad)?;
        w.skip_empty()?;
        Ok(w)
    }

    fn io(&self, source: std::io::Error) -> GgufError {
        match &self.path {
            Some(path) => GgufError::Io {
                path: path.clone(),
                source,
            },
            None => GgufError::Write(source),
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        self.out.write_all(bytes).map_err(|e| self.io(e))
    }

    fn pad(&mut self, mut n: u64) -> Result<(), GgufError> {
        while n > 0 {
            let k = n.min(ZEROS.len() as u64) as usize;
            self.put(&ZEROS[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Zero-sized tensors cannot exist (dims ≥ 1), but keep the state machine total.
    fn skip_empty(&mut self) -> Result<(), GgufError> {
        while self
            .plan
            .get(self.current)
            .is_some_and(|t| t.n_bytes == self.written)
        {
            let n = self.plan[self.current].n_bytes;
            let pad = align_up(n, self.alignment).unwrap_or(n) - n;
            self.pad(pad)?;
            self.current += 1;
            self.written = 0;
        }
        Ok(())
    }

    /// Name of the tensor whose data is expected next, `None` when all are written.
    pub fn next_tensor(&self) -> Option<&str> {
        self.plan.get(self.current).map(|t| t.name.as_str())
    }

    /// Bytes still expected for the current tensor.
    pub fn remaining_in_tensor(&self) -> u64 {
        self.plan
            .get(self.current)
            .map_or(0, |t| t.n_bytes - self.written)
    }

    /// Append bytes to the current tensor's data. A chunk may not run past the end of the
    /// current tensor; when a tensor is complete the writer pads and moves to the next.
    pub fn write_chunk(&mut self, data: &[u8]) -> Result<(), GgufError> {
        let Some(t) = self.plan.get(self.current) else {
            return Err(err(format!(
                "{} bytes written after the last tensor",
                data.len()
            )));
        };
        if data.len() as u64 > t.n_bytes - self.written {
            return Err(err(format!(
                "tensor {:?}: {} bytes written past its size of {} bytes",
                t.name,
                self.written + data.len() as u64 - t.n_bytes,
                t.n_bytes
            )));
        }
        self.put(data)?;
        self.written += data.len() as u64;
        self.skip_empty()
    }

    /// Write the whole data of the next tensor, which must be `name` and exactly its size.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<(), GgufError> {
        let Some(t) = self.plan.get(self.current) else {
            return Err(err(format!(
                "tensor {name:?}: all declared tensors are already written"
            )));
        };
        if t.name != name || self.written != 0 {
            return Err(err(format!(
                "tensor {name:?} written while tensor {:?} is expected next",
                t.name
            )));
        }
        if data.len() as u64 != t.n_bytes {
            return Err(err(format!(
                "tensor {name:?}: got {} bytes, its dims and type need {}",
                data.len(),
                t.n_bytes
            )));
        }
        self.write_chunk(data)
    }

    /// Check that every tensor got all its bytes, flush, and return the sink.
    pub fn finish(mut self) -> Result<W, GgufError> {
        if let Some(t) = self.plan.get(self.current) {
            return Err(err(format!(
                "finished with tensor {:?} at {} of {} bytes ({} tensors unwritten)",
                t.name,
                self.written,
                t.n_bytes,
                self.plan.len() - self.current
            )));
        }
        self.out.flush().map_err(|e| self.io(e))?;
        Ok(self.out)
    }
}

fn check_value(key: &str, v: &MetaValue, depth: usize) -> Result<(), GgufError> {
    if let MetaValue::Array(items) = v {
        if depth >= MAX_ARRAY_NESTING {
            return Err(GgufError::NestingTooDeep {
                key: key.to_owned(),
                max: MAX_ARRAY_NESTING,
            });
        }
        let t = items.first().map_or(0, MetaValue::type_id);
        for item in items {
            if item.type_id() != t {
                let detail = format!(
                    "array mixes {} and {} elements",
                    items[0].type_name(),
                    item.type_name()
                );
                return Err(GgufError::BadValue {
                    key: key.to_owned(),
                    detail,
                    offset: 0,
                });
            }
            check_value(key, item, depth + 1)?;
        }
    }
    Ok(())
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    put_u64(b, s.len() as u64);
    b.extend_from_slice(s.as_bytes());
}

fn put_value(b: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => b.push(*x),
        MetaValue::I8(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => put_u32(b, *x),
        MetaValue::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => put_u32(b, x.to_bits()),
        MetaValue::Bool(x) => b.push(u8::from(*x)),
        MetaValue::String(s) => put_str(b, s),
        MetaValue::Array(items) => {
            // An empty array has no element to take a type from: write u8.
            put_u32(b, items.first().map_or(0, MetaValue::type_id));
            put_u64(b, items.len() as u64);
            for item in items {
                put_value(b, item);
            }
        }
        MetaValue::U64(x) => put_u64(b, *x),
        MetaValue::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => put_u64(b, x.to_bits()),
    }
}
