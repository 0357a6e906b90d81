//! Error types of the tokenizer and the chat-template sandbox.

use std::path::PathBuf;

/// Errors while building or using a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A tokenizer file could not be read.
    #[error("cannot read tokenizer file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSON file (tokenizer.json / tokenizer_config.json) is malformed.
    #[error("invalid {file}: {message}")]
    Json {
        /// Which file.
        file: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A required GGUF metadata key is absent.
    #[error("GGUF metadata key `{0}` is missing")]
    MissingKey(String),
    /// A GGUF metadata key has the wrong type.
    #[error("GGUF metadata key `{key}` should be {expected}, found {found}")]
    WrongType {
        /// The key.
        key: String,
        /// The expected type.
        expected: &'static str,
        /// The type found.
        found: &'static str,
    },
    /// `tokenizer.ggml.model` names a tokenizer family this crate does not implement.
    #[error("unsupported tokenizer.ggml.model `{0}` (supported: \"gpt2\" byte-level BPE)")]
    UnsupportedModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not implement.
    #[error("unsupported tokenizer.ggml.pre `{0}` (supported: \"qwen2\")")]
    UnsupportedPre(String),
    /// A tokenizer.json this crate cannot export to GGUF (not a Qwen2-style byte-level BPE).
    #[error("unsupported tokenizer.json: {0}")]
    UnsupportedTokenizerJson(String),
    /// A token id in the metadata is outside the vocabulary.
    #[error("{key} = {id} is outside the vocabulary of {n_vocab} tokens")]
    TokenIdOutOfRange {
        /// The key or field naming the id.
        key: String,
        /// The id.
        id: u64,
        /// The vocabulary size.
        n_vocab: usize,
    },
    /// A metadata array is malformed (lengths disagree, duplicate token, bad merge).
    #[error("invalid GGUF tokenizer metadata: {0}")]
    InvalidMetadata(String),
    /// An error from the `tokenizers` crate.
    #[error("tokenizer: {0}")]
    Tokenizers(String),
}

impl TokenizerError {
    pub(crate) fn tk(e: tokenizers::Error) -> Self {
        Self::Tokenizers(e.to_string())
    }
}

/// Errors while compiling or rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template source does not parse.
    #[error("chat template syntax error: {0}")]
    Syntax(String),
    /// Rendering failed (undefined method, type error, `raise_exception`, ...).
    #[error("chat template render error: {0}")]
    Render(String),
    /// The template called `raise_exception(message)`.
    #[error("chat template raised an exception: {0}")]
    Raised(String),
    /// The template used up its instruction budget (an endless or very long loop).
    #[error("chat template exceeded its fuel limit of {limit} instructions")]
    FuelExhausted {
        /// The limit.
        limit: u64,
    },
    /// The template nested macros/loops/calls deeper than allowed.
    #[error("chat template exceeded its recursion limit of {limit}")]
    RecursionLimit {
        /// The limit.
        limit: usize,
    },
    /// The rendered text grew beyond the output cap.
    #[error("chat template output exceeded {limit} bytes")]
    OutputTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The template source is larger than allowed.
    #[error("chat template source is {len} bytes, more than the limit of {limit}")]
    SourceTooLarge {
        /// The source length.
        len: usize,
        /// The limit.
        limit: usize,
    },
}
