//! GGUF files: a bounds-checked, memory-mapped reader (single and split files) and a
//! streaming writer. GGUF is untrusted input: every length and offset is checked
//! against the bytes that remain before anything is allocated or sliced.
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
