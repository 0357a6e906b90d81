//! The `Tokenizer`: a `tokenizers::Tokenizer` plus the special-token facts generation needs.

use std::path::Path;

use crate::byte_level::token_bytes;
use crate::error::TokenizerError;
use crate::stream::DecodeStream;

/// Token texts that end a turn in Qwen-style chat models. llama.cpp treats the same texts
/// as end-of-generation even when `eos_token_id` names only one of them: Qwen3's eos is
/// `<|im_end|>` while base-model text ends with `<|endoftext|>`.
const END_OF_GENERATION_TEXTS: [&str; 2] = ["<|im_end|>", "<|endoftext|>"];

/// A byte-level BPE tokenizer with its special tokens and chat template.
#[derive(Clone)]
pub struct Tokenizer {
    pub(crate) inner: tokenizers::Tokenizer,
    /// Number of token ids (the GGUF token list length, or tokenizer.json's size with
    /// added tokens).
    pub(crate) n_vocab: usize,
    pub(crate) eos_ids: Vec<u32>,
    pub(crate) bos_id: Option<u32>,
    pub(crate) pad_id: Option<u32>,
    /// Prepend `bos_id` when encoding with `add_special` (GGUF `add_bos_token`).
    pub(crate) add_bos: bool,
    pub(crate) chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("n_vocab", &self.n_vocab)
            .field("eos_ids", &self.eos_ids)
            .field("bos_id", &self.bos_id)
            .field("pad_id", &self.pad_id)
            .field("add_bos", &self.add_bos)
            .field("has_chat_template", &self.chat_template.is_some())
            .finish()
    }
}

impl Tokenizer {
    /// Loads a `tokenizer.json` (for example one beside the model file).
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_bytes(&bytes)
    }

    /// Parses a `tokenizer.json`. End-of-generation ids are the Qwen turn/text end tokens
    /// present in the vocabulary; use [`Tokenizer::from_hf_json`] to also read
    /// `tokenizer_config.json` (eos/pad tokens and the chat template).
    pub fn from_json_bytes(tokenizer_json: &[u8]) -> Result<Self, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_bytes(tokenizer_json).map_err(|e| {
            TokenizerError::Json {
                file: "tokenizer.json",
                message: e.to_string(),
            }
        })?;
        let n_vocab = inner.get_vocab_size(true);
        let mut tok = Self {
            inner,
            n_vocab,
            eos_ids: Vec::new(),
            bos_id: None,
            pad_id: None,
            add_bos: false,
            chat_template: None,
        };
        tok.eos_ids = tok.end_of_generation_ids(None);
        Ok(tok)
    }

    /// Parses a `tokenizer.json` with its `tokenizer_config.json`: eos, bos and pad tokens
    /// and the chat template come from the config.
    pub fn from_hf_json(
        tokenizer_json: &[u8],
        tokenizer_config_json: &[u8],
    ) -> Result<Self, TokenizerError> {
        let mut tok = Self::from_json_bytes(tokenizer_json)?;
        let config = crate::to_gguf::HfConfig::parse(tokenizer_config_json)?;
        let id_of = |name: &str, text: Option<&String>| -> Result<Option<u32>, TokenizerError> {
            match text {
                None => Ok(None),
                Some(t) => tok
                    .inner
                    .token_to_id(t)
                    .map(Some)
                    .ok_or_else(|| TokenizerError::Json {
                        file: "tokenizer_config.json",
                        message: format!("{name} `{t}` is not in the vocabulary"),
                    }),
            }
        };
        let eos = id_of("eos_token", config.eos_token.as_ref())?;
        tok.bos_id = id_of("bos_token", config.bos_token.as_ref())?;
        tok.pad_id = id_of("pad_token", config.pad_token.as_ref())?;
        tok.chat_template = config.chat_template;
        tok.eos_ids = tok.end_of_generation_ids(eos);
        Ok(tok)
    }

    /// The declared eos id first, then the known end-of-turn tokens of the vocabulary.
    pub(crate) fn end_of_generation_ids(&self, eos: Option<u32>) -> Vec<u32> {
        let mut ids: Vec<u32> = eos.into_iter().collect();
        for text in END_OF_GENERATION_TEXTS {
            if let Some(id) = self.inner.token_to_id(text) {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// Token ids of `text`. With `add_special`, the BOS token is prepended when the model
    /// asks for it (`add_bos_token`; Qwen3 does not). Special-token texts such as
    /// `<|im_start|>` in `text` always become their single ids, as in Hugging Face.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode_fast(text, add_special)
            .map_err(TokenizerError::tk)?;
        let ids = enc.get_ids();
        // Like HF's TemplateProcessing, BOS is added even if the text starts with it.
        match (add_special && self.add_bos, self.bos_id) {
            (true, Some(bos)) => {
                let mut out = Vec::with_capacity(ids.len() + 1);
                out.push(bos);
                out.extend_from_slice(ids);
                Ok(out)
            }
            _ => Ok(ids.to_vec()),
        }
    }

    /// Text of `ids`; ids outside the vocabulary are skipped, invalid UTF-8 becomes U+FFFD
    /// (as Hugging Face does). With `skip_special`, special tokens are left out.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(TokenizerError::tk)
    }

    /// An incremental decoder yielding only complete UTF-8 text.
    pub fn decode_stream(&self, skip_special: bool) -> DecodeStream<'_> {
        DecodeStream::new(self, skip_special)
    }

    /// The raw bytes one token stands for (may be part of a UTF-8 character), or `None`
    /// for an id outside the vocabulary.
    pub fn token_to_piece(&self, id: u32) -> Option<Vec<u8>> {
        let token = self.inner.id_to_token(id)?;
        let mut out = Vec::with_capacity(token.len());
        token_bytes(&token, &mut out);
        Some(out)
    }

    /// The token's string in the vocabulary (byte-level alphabet, e.g. `Ġhello`).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a vocabulary entry or added token, by its exact string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The id of an added (special or user-defined) token such as `<|im_end|>` or `<think>`.
    pub fn special_token_id(&self, token: &str) -> Option<u32> {
        let added = self.inner.get_added_vocabulary();
        added.get_vocab().get(token).copied()
    }

    /// Whether `id` is a special (control) token, skipped by `decode(.., true)`.
    pub fn is_special(&self, id: u32) -> bool {
        let added = self.inner.get_added_vocabulary();
        added
            .simple_id_to_token(id)
            .is_some_and(|t| added.is_special_token(&t))
    }

    /// Ids that end generation: the eos id and the chat template's end-of-turn token
    /// (Qwen3: `<|im_end|>` and `<|endoftext|>`).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// Whether `id` ends generation.
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }

    /// The BOS id, if the model declares one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// The padding id, if the model declares one.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// Number of token ids (for GGUF, the `tokenizer.ggml.tokens` length, which equals the
    /// embedding rows and may include unused padding entries).
    pub fn vocab_size(&self) -> usize {
        self.n_vocab
    }

    /// The chat template carried with the tokenizer (GGUF `tokenizer.chat_template` or
    /// `tokenizer_config.json`), if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The special-token variables transformers gives chat templates (`bos_token`,
    /// `eos_token`, `pad_token`), as a JSON object text for [`crate::RenderOptions`]'s
    /// `extra_json`; tokens the model does not declare are left out.
    pub fn template_special_tokens_json(&self) -> String {
        let mut vars = serde_json::Map::new();
        let eos = self.eos_ids.first().copied();
        for (name, id) in [
            ("bos_token", self.bos_id),
            ("eos_token", eos),
            ("pad_token", self.pad_id),
        ] {
            if let Some(text) = id.and_then(|id| self.inner.id_to_token(id)) {
                vars.insert(name.into(), serde_json::Value::String(text));
            }
        }
        serde_json::Value::Object(vars).to_string()
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Tokenizer>();
        assert_send_sync::<crate::ChatTemplate>();
    }

    #[test]
    fn special_token_variables_for_templates() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/qwen3");
        let json = std::fs::read(format!("{dir}/tokenizer.json")).unwrap();
        let config = std::fs::read(format!("{dir}/tokenizer_config.json")).unwrap();
        let tok = Tokenizer::from_hf_json(&json, &config).unwrap();
        // Qwen3's config: bos null, eos <|im_end|>, pad <|endoftext|> (as transformers passes them).
        assert_eq!(
            tok.template_special_tokens_json(),
            r#"{"eos_token":"<|im_end|>","pad_token":"<|endoftext|>"}"#
        );
    }

    #[test]
    fn load_errors_name_the_problem() {
        let e = Tokenizer::from_json_file("/nonexistent/tokenizer.json").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/tokenizer.json"), "{e}");
        let e = Tokenizer::from_json_bytes(b"{not json").unwrap_err();
        assert!(e.to_string().contains("tokenizer.json"), "{e}");
    }
}
