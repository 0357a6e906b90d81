//! GGUF files: a bounds-checked, memory-mapped reader (single and split files) and a
//! streaming writer. GGUF is untrusted input: every length and offset is checked
//! against the bytes that remain before anything is allocated or sliced.
//!
//! ```
//! use hmoe_gguf::{parse, GgmlDType, GgufWriter, MetaValue, TensorDesc};
//!
//! let meta = vec![("general.architecture".to_owned(), MetaValue::String("qwen3moe".into()))];
//! let tensors = vec![TensorDesc::new("w", &[32, 2], GgmlDType::Q8_0)];
//! let mut w = GgufWriter::new(Vec::new(), meta, tensors)?;
//! w.write_chunk(&[0u8; 34])?; // data may arrive in chunks
//! w.write_chunk(&[1u8; 34])?;
//! let bytes = w.finish()?;
//!
//! let header = parse(&bytes)?; // `GgufFile::open` does the same over a memory map
//! let t = &header.tensors[0];
//! assert_eq!((t.dims.as_slice(), t.n_bytes), (&[32, 2][..], 68));
//! assert_eq!(bytes[t.offset as usize + 34], 1);
//! # Ok::<(), hmoe_gguf::GgufError>(())
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod cursor;
mod dtype;
mod error;
mod meta;
mod parse;
mod reader;
mod split;
mod split_writer;
mod tensor;
mod value;
mod writer;

pub use dtype::GgmlDType;
pub use error::GgufError;
pub use meta::Metadata;
pub use parse::{
    parse, GgufHeader, DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_NESTING, MAX_METADATA_VALUES,
};
pub use reader::GgufFile;
pub use split::{split_keys, split_path, KEY_SPLIT_COUNT, KEY_SPLIT_NO, KEY_SPLIT_TENSORS};
pub use split_writer::SplitWriter;
pub use tensor::{TensorInfo, MAX_DIMS};
pub use value::MetaValue;
pub use writer::{GgufWriter, TensorDesc, WRITE_VERSION};
