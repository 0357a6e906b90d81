//! Errors of the quantisation and kernel entry points.

use crate::act::ActFormat;
use hmoe_gguf::GgmlDType;

/// Why a (de)quantisation or dot-product call was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantError {
    /// The type has no implementation here.
    #[error("ggml type {0} is not supported by hmoe-quant")]
    Unsupported(GgmlDType),
    /// The element count is not a whole number of the type's blocks.
    #[error("{n} elements is not a whole number of {dtype} blocks of {block}")]
    PartialBlock {
        /// The type.
        dtype: GgmlDType,
        /// The element count asked for.
        n: usize,
        /// The type's block size.
        block: usize,
    },
    /// The byte buffer does not have the size the element count needs.
    #[error("{dtype}: {n} elements need {expected} bytes, got {got}")]
    ByteLength {
        /// The type.
        dtype: GgmlDType,
        /// The element count.
        n: usize,
        /// Bytes the element count needs.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// Two operands of a dot product disagree in length.
    #[error("length mismatch: {what}: expected {expected}, got {got}")]
    Length {
        /// Which operand.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// A size computation overflowed `usize`.
    #[error("size overflow for {0} elements")]
    Overflow(usize),
    /// The CPU (or OS) cannot run the requested instruction-set level.
    #[error("instruction set {0} is not available on this CPU")]
    IsaUnavailable(&'static str),
    /// The activation row is not in the format the weight type's kernel consumes.
    #[error("{dtype} weights take {expected:?} activations, got {got:?}")]
    ActFormat {
        /// Weight type.
        dtype: GgmlDType,
        /// Format the kernel needs.
        expected: ActFormat,
        /// Format given.
        got: ActFormat,
    },
}
