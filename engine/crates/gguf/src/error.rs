//! The one error type of this crate. Every message names what was wrong and where
//! (key, tensor, byte offset, path) so a user can tell a corrupt download from a bug.

use std::path::PathBuf;

/// Everything that can go wrong reading, validating or writing a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An I/O error while writing to a stream with no path.
    #[error("write failed: {0}")]
    Write(#[source] std::io::Error),
    /// A parse or validation error inside a named file.
    #[error("{path}: {source}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        source: Box<GgufError>,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: magic bytes {found:02x?} at offset 0, expected \"GGUF\"")]
    BadMagic {
        /// The bytes found (fewer than 4 if the file is shorter).
        found: Vec<u8>,
    },
    /// A version other than 2 or 3.
    #[error("unsupported GGUF version {version} (only versions 2 and 3 are supported){hint}")]
    UnsupportedVersion {
        /// The version field as read (little-endian).
        version: u32,
        /// Extra explanation, e.g. for big-endian files.
        hint: &'static str,
    },
    /// The file ends before a field is complete.
    #[error(
        "file truncated: {what} at offset {offset} needs {needed} bytes, only {available} remain"
    )]
    Truncated {
        /// The field being read.
        what: String,
        /// Where it starts.
        offset: u64,
        /// Bytes it needs.
        needed: u64,
        /// Bytes left in the file.
        available: u64,
    },
    /// A count (KVs, tensors, array elements) larger than the remaining bytes could hold.
    #[error("{what}: count {count} at offset {offset} cannot fit in the {remaining} bytes that remain (each needs at least {min_size})")]
    CountTooLarge {
        /// Which count.
        what: String,
        /// The count as read.
        count: u64,
        /// Where the count field starts.
        offset: u64,
        /// Bytes left after the count field.
        remaining: u64,
        /// Minimum bytes per record.
        min_size: u64,
    },
    /// A string whose length field exceeds the remaining bytes.
    #[error(
        "{what}: string length {len} at offset {offset} exceeds the {remaining} bytes that remain"
    )]
    StringTooLong {
        /// Which string.
        what: String,
        /// The length as read.
        len: u64,
        /// Where the length field starts.
        offset: u64,
        /// Bytes left after the length field.
        remaining: u64,
    },
    /// A string that is not UTF-8.
    #[error("{what}: string at offset {offset} is not valid UTF-8")]
    BadUtf8 {
        /// Which string.
        what: String,
        /// Where its bytes start.
        offset: u64,
    },
    /// A metadata value type id outside 0..=12.
    #[error("metadata key {key:?}: unknown value type {type_id} at offset {offset}")]
    UnknownValueType {
        /// The key.
        key: String,
        /// The type id.
        type_id: u32,
        /// Where the type field starts.
        offset: u64,
    },
    /// Arrays of arrays nested too deeply.
    #[error("metadata key {key:?}: arrays nested deeper than {max} levels")]
    NestingTooDeep {
        /// The key.
        key: String,
        /// The limit.
        max: usize,
    },
    /// More metadata values in total than the parser accepts.
    #[error("metadata key {key:?}: more than {max} metadata values in total")]
    TooManyValues {
        /// The key being read when the budget ran out.
        key: String,
        /// The limit.
        max: u64,
    },
    /// A metadata value that is malformed (e.g. a bool that is neither 0 nor 1).
    #[error("metadata key {key:?}: {detail} at offset {offset}")]
    BadValue {
        /// The key.
        key: String,
        /// What is wrong.
        detail: String,
        /// Where the value starts.
        offset: u64,
    },
    /// The same metadata key twice.
    #[error("duplicate metadata key {key:?} at offset {offset}")]
    DuplicateKey {
        /// The key.
        key: String,
        /// Where its second occurrence starts.
        offset: u64,
    },
    /// `general.alignment` that is not a non-zero power of two.
    #[error("general.alignment = {value} is not a non-zero power of two")]
    BadAlignment {
        /// The value as read (or its type, when it is not an unsigned integer).
        value: String,
    },
    /// A tensor with 0 or more than 4 dimensions.
    #[error("tensor {name:?}: {n_dims} dimensions, expected 1 to {max}")]
    BadDimCount {
        /// The tensor.
        name: String,
        /// Dimensions declared.
        n_dims: u32,
        /// The limit.
        max: u32,
    },
    /// A zero-sized dimension.
    #[error("tensor {name:?}: dimension {index} is zero (dims {dims:?})")]
    ZeroDim {
        /// The tensor.
        name: String,
        /// Which dimension.
        index: usize,
        /// All dimensions.
        dims: Vec<u64>,
    },
    /// Element count or byte size overflowing 64 bits (or the address space).
    #[error("tensor {name:?}: size of dims {dims:?} as {dtype} overflows")]
    ShapeOverflow {
        /// The tensor.
        name: String,
        /// Its dimensions.
        dims: Vec<u64>,
        /// Its type name.
        dtype: String,
    },
    /// A row length that is not a whole number of quantisation blocks.
    #[error(
        "tensor {name:?}: row length {row} is not a multiple of the {dtype} block size {block}"
    )]
    PartialBlock {
        /// The tensor.
        name: String,
        /// `dims[0]`.
        row: u64,
        /// Its type name.
        dtype: String,
        /// Elements per block.
        block: u64,
    },
    /// A tensor type id this crate does not know.
    #[error("tensor {name:?}: unknown tensor type id {id}")]
    UnknownTensorType {
        /// The tensor.
        name: String,
        /// The type id.
        id: u32,
    },
    /// The same tensor name twice (within a file or across split parts).
    #[error("duplicate tensor name {name:?}")]
    DuplicateTensor {
        /// The name.
        name: String,
    },
    /// A tensor offset that is not a multiple of the alignment.
    #[error(
        "tensor {name:?}: data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        /// The tensor.
        name: String,
        /// Its offset relative to the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// Tensor data that does not lie inside the file.
    #[error("tensor {name:?}: data at bytes [{start}, {end}) lies outside the file of {file_size} bytes")]
    TensorOutOfBounds {
        /// The tensor.
        name: String,
        /// Absolute start (saturated on overflow).
        start: u64,
        /// Absolute end (saturated on overflow).
        end: u64,
        /// The file size.
        file_size: u64,
    },
    /// Two tensors sharing bytes.
    #[error("tensors {first:?} (bytes [{first_start}, {first_end})) and {second:?} (starting at {second_start}) overlap")]
    TensorOverlap {
        /// The tensor that starts first.
        first: String,
        /// Its absolute start.
        first_start: u64,
        /// Its absolute end.
        first_end: u64,
        /// The tensor that starts inside it.
        second: String,
        /// Its absolute start.
        second_start: u64,
    },
    /// A metadata key that is required but absent.
    #[error("metadata key {key:?} is missing")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata value of the wrong type.
    #[error("metadata key {key:?}: expected {expected}, found {found}")]
    WrongType {
        /// The key.
        key: String,
        /// What the caller asked for.
        expected: &'static str,
        /// What the file holds.
        found: String,
    },
    /// A tensor that is required but absent.
    #[error("tensor {name:?} is missing")]
    MissingTensor {
        /// The tensor.
        name: String,
    },
    /// A tensor whose dimensions differ from what the model needs.
    #[error("tensor {name:?}: dims {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The tensor.
        name: String,
        /// Dims the caller expected (ggml order).
        expected: Vec<u64>,
        /// Dims in the file.
        actual: Vec<u64>,
    },
    /// A part of a split model that does not exist.
    #[error("split model part {path} is missing")]
    MissingSplitPart {
        /// The missing file.
        path: PathBuf,
    },
    /// Split parts that disagree with each other or with their names.
    #[error("split model part {path}: {detail}")]
    SplitMismatch {
        /// The part.
        path: PathBuf,
        /// What disagrees.
        detail: String,
    },
    /// Writer misuse or inconsistent writer input.
    #[error("GGUF writer: {0}")]
    Writer(String),
}

impl GgufError {
    /// The error without the file-path wrappers ([`GgufError::InFile`]), for matching on the cause.
    pub fn root(&self) -> &GgufError {
        match self {
            GgufError::InFile { source, .. } => source.root(),
            other => other,
        }
    }

    pub(crate) fn in_file(self, path: &std::path::Path) -> GgufError {
        GgufError::InFile {
            path: path.to_path_buf(),
            source: Box::new(self),
        }
    }
}
