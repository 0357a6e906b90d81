//! Tokenizer (byte-level BPE, qwen2 pre-tokenizer) built from GGUF `tokenizer.ggml.*`
//! metadata or a `tokenizer.json`, incremental UTF-8-safe detokenisation, and the
//! model's chat template rendered in a sandbox.
//!
//! Equality with Hugging Face (token ids, decoding, chat-template renderings) is tested
//! against fixtures written by `tests/fixtures/make_fixtures.py` from the real Qwen3
//! tokenizer in `engine/assets/qwen3`.
//!
//! ```
//! use hmoe_tokenizer::{
//!     gguf_metadata_from_tokenizer_json, ChatMessage, ChatTemplate, RenderOptions, Tokenizer,
//! };
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/qwen3");
//! let json = std::fs::read(format!("{dir}/tokenizer.json"))?;
//! let config = std::fs::read(format!("{dir}/tokenizer_config.json"))?;
//! // What a model writer puts into a GGUF file, and what a loader builds back from it.
//! let meta: std::collections::BTreeMap<_, _> =
//!     gguf_metadata_from_tokenizer_json(&json, &config)?.into_iter().collect();
//! let tok = Tokenizer::from_gguf_map(&meta)?;
//!
//! let template = ChatTemplate::new(tok.chat_template().unwrap_or_default())?;
//! let prompt = template.render(
//!     &[ChatMessage::new("user", "Hi 👋")],
//!     &RenderOptions { add_generation_prompt: true, enable_thinking: Some(false), ..Default::default() },
//! )?;
//! assert!(prompt.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"));
//! let ids = tok.encode(&prompt, false)?;
//!
//! // Streaming detokenisation: only whole characters come out.
//! let mut stream = tok.decode_stream(false);
//! let text: String = ids.iter().map(|&id| stream.step(id)).collect::<String>() + &stream.finish();
//! assert_eq!(text, prompt);
//! assert!(tok.is_eos(tok.token_to_id("<|im_end|>").unwrap_or_default()));
//! # Ok(())
//! # }
//! ```
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
