//! Tokenizer (byte-level BPE, qwen2 pre-tokenizer) built from GGUF `tokenizer.ggml.*`
//! metadata or a `tokenizer.json`, incremental UTF-8-safe detokenisation, and the
//! model's chat template rendered in a sandbox.
//!
//! Equality with Hugging Face (token ids, decoding, chat-template renderings) is tested
//! against fixtures written by `tests/fixtures/make_fixtures.py` from the real Qwen3
//! tokenizer in `engine/assets/qwen3`.
#![deny(missing_docs)]

mod byte_level;
mod error;
mod from_gguf;
mod pyjson;
mod stream;
mod strftime;
mod template;
mod to_gguf;
mod tokenizer;

pub use error::{TemplateError, TokenizerError};
pub use from_gguf::QWEN2_SPLIT_PATTERN;
pub use stream::DecodeStream;
pub use template::{ChatMessage, ChatTemplate, RenderOptions, TemplateLimits};
pub use to_gguf::{
    gguf_metadata_from_tokenizer_json, gguf_metadata_from_tokenizer_json_with, GgufExportOptions,
    TokenType,
};
pub use tokenizer::Tokenizer;
