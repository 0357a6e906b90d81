//! Tokenizer (byte-level BPE, qwen2 pre-tokenizer) built from GGUF `tokenizer.ggml.*`
//! metadata or a `tokenizer.json`, incremental UTF-8-safe detokenisation, and the
//! model's chat template rendered in a sandbox.
#![deny(missing_docs)]
