//! GGUF files: a bounds-checked, memory-mapped reader (single and split files) and a
//! streaming writer. GGUF is untrusted input: every length and offset is checked
//! against the bytes that remain before anything is allocated or sliced.
#![deny(missing_docs)]

mod dtype;
mod value;

pub use dtype::GgmlDType;
pub use value::MetaValue;
