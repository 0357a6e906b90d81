//! tokenizer.json + tokenizer_config.json -> the `tokenizer.ggml.*` metadata that
//! llama.cpp's `convert_hf_to_gguf.py` writes for Qwen2/Qwen3 models.

use std::collections::HashMap;

use hmoe_gguf::MetaValue;
use serde::Deserialize;

use crate::error::TokenizerError;
use crate::from_gguf::QWEN2_SPLIT_PATTERN;

/// llama.cpp's token types (`tokenizer.ggml.token_type`, stored as i32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    /// 1: a regular vocabulary entry.
    Normal,
    /// 2: the unknown token.
    Unknown,
    /// 3: a special/control token (`<|im_end|>`), matched as a whole, hidden when
    /// special tokens are skipped.
    Control,
    /// 4: a user-defined added token (`<think>`), matched as a whole, shown as text.
    UserDefined,
    /// 5: an unused filler (`[PADn]`) the model has a row for.
    Unused,
    /// 6: a raw byte token (`<0x0A>`, SentencePiece style).
    Byte,
    /// Any other value.
    Other(i32),
}

impl TokenType {
    /// From the GGUF integer.
    pub fn from_gguf(v: i32) -> Self {
        match v {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            o => Self::Other(o),
        }
    }

    /// The GGUF integer.
    pub fn to_gguf(self) -> i32 {
        match self {
            Self::Normal => 1,
            Self::Unknown => 2,
            Self::Control => 3,
            Self::UserDefined => 4,
            Self::Unused => 5,
            Self::Byte => 6,
            Self::Other(o) => o,
        }
    }
}

/// Choices the tokenizer files alone do not settle.
#[derive(Debug, Clone, Default)]
pub struct GgufExportOptions {
    /// Length of the token list: the model's embedding rows (Qwen3: 151936). Ids without a
    /// token become `[PADn]` entries of type unused, as llama.cpp writes them. Default:
    /// the tokenizer's own size.
    pub vocab_size: Option<usize>,
    /// The bos id when `tokenizer_config.json` has `bos_token: null`. llama.cpp then takes
    /// `bos_token_id` from the model's config.json; Qwen2/Qwen3 configs say
    /// `<|endoftext|>`, which is the default here when that token exists.
    pub bos_token_id: Option<u32>,
}

/// A token field of tokenizer_config.json: a string, `{"content": ...}` or null.
#[derive(Deserialize)]
#[serde(untagged)]
enum TokenField {
    Text(String),
    Object { content: String },
}

impl TokenField {
    fn into_text(self) -> String {
        match self {
            Self::Text(s) | Self::Object { content: s } => s,
        }
    }
}

/// `chat_template` is a string or a list of named templates.
#[derive(Deserialize)]
#[serde(untagged)]
enum TemplateField {
    One(String),
    Named(Vec<NamedTemplate>),
}

#[derive(Deserialize)]
struct NamedTemplate {
    name: String,
    template: String,
}

#[derive(Deserialize)]
struct RawConfig {
    bos_token: Option<TokenField>,
    eos_token: Option<TokenField>,
    pad_token: Option<TokenField>,
    add_bos_token: Option<bool>,
    add_eos_token: Option<bool>,
    chat_template: Option<TemplateField>,
}

/// The parts of tokenizer_config.json this crate uses.
pub(crate) struct HfConfig {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub add_bos_token: Option<bool>,
    pub add_eos_token: Option<bool>,
    pub chat_template: Option<String>,
}

impl HfConfig {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, TokenizerError> {
        let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| TokenizerError::Json {
            file: "tokenizer_config.json",
            message: e.to_string(),
        })?;
        let chat_template = match raw.chat_template {
            None => None,
            Some(TemplateField::One(s)) => Some(s),
            Some(TemplateField::Named(list)) => list
                .into_iter()
                .find(|t| t.name == "default")
                .map(|t| t.template),
        };
        Ok(Self {
            bos_token: raw.bos_token.map(TokenField::into_text),
            eos_token: raw.eos_token.map(TokenField::into_text),
            pad_token: raw.pad_token.map(TokenField::into_text),
            add_bos_token: raw.add_bos_token,
            add_eos_token: raw.add_eos_token,
            chat_template,
        })
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Merge {
    Joined(String),
    Pair(String, String),
}

#[derive(Deserialize)]
struct RawModel {
    #[serde(rename = "type")]
    kind: String,
    vocab: HashMap<String, u32>,
    merges: Vec<Merge>,
    #[serde(default)]
    byte_fallback: bool,
}

#[derive(Deserialize)]
struct RawAdded {
    id: u32,
    content: String,
    special: bool,
}

#[derive(Deserialize)]
struct RawTokenizer {
    model: RawModel,
    #[serde(default)]
    added_tokens: Vec<RawAdded>,
    pre_tokenizer: Option<serde_json::Value>,
}

/// Whether the pre-tokenizer is Qwen2's: Split(Qwen2 regex) then ByteLevel without regex.
fn is_qwen2_pre_tokenizer(pre: &serde_json::Value) -> bool {
    let Some(steps) = pre.get("pretokenizers").and_then(|p| p.as_array()) else {
        return false;
    };
    let [split, byte_level] = steps.as_slice() else {
        return false;
    };
    split.get("type").and_then(|t| t.as_str()) == Some("Split")
        && split.pointer("/pattern/Regex").and_then(|r| r.as_str()) == Some(QWEN2_SPLIT_PATTERN)
        && byte_level.get("type").and_then(|t| t.as_str()) == Some("ByteLevel")
}

/// llama.cpp marks added tokens that look like `<|...|>` as control even when the
/// tokenizer does not call them special (Qwen's `<|fim_prefix|>`, ...).
fn looks_special(token: &str) -> bool {
    (token.starts_with("<|") && token.ends_with("|>"))
        || (token.starts_with("<｜") && token.ends_with("｜>"))
        || matches!(token, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (token.starts_with("<unused") && token.ends_with('>'))
}

/// The `tokenizer.ggml.*` keys (and `tokenizer.chat_template`) llama.cpp writes for a
/// Qwen3 model with these tokenizer files, in llama.cpp's order. See
/// [`gguf_metadata_from_tokenizer_json_with`] for the padded vocabulary of a real model.
pub fn gguf_metadata_from_tokenizer_json(
    tokenizer_json: &[u8],
    tokenizer_config_json: &[u8],
) -> Result<Vec<(String, MetaValue)>, TokenizerError> {
    gguf_metadata_from_tokenizer_json_with(
        tokenizer_json,
        tokenizer_config_json,
        &GgufExportOptions::default(),
    )
}

/// [`gguf_metadata_from_tokenizer_json`] with explicit options.
pub fn gguf_metadata_from_tokenizer_json_with(
    tokenizer_json: &[u8],
    tokenizer_config_json: &[u8],
    options: &GgufExportOptions,
) -> Result<Vec<(String, MetaValue)>, TokenizerError> {
    let raw: RawTokenizer =
        serde_json::from_slice(tokenizer_json).map_err(|e| TokenizerError::Json {
            file: "tokenizer.json",
            message: e.to_string(),
        })?;
    let config = HfConfig::parse(tokenizer_config_json)?;
    if raw.model.kind != "BPE" || raw.model.byte_fallback {
        return Err(TokenizerError::UnsupportedTokenizerJson(format!(
            "model type {} (byte_fallback {}); only byte-level BPE can be written as gpt2",
            raw.model.kind, raw.model.byte_fallback
        )));
    }
    if !raw
        .pre_tokenizer
        .as_ref()
        .is_some_and(is_qwen2_pre_tokenizer)
    {
        return Err(TokenizerError::UnsupportedTokenizerJson(
            "pre_tokenizer is not Qwen2's Split regex + ByteLevel".into(),
        ));
    }

    // id -> (text, type); added tokens override the model vocabulary.
    let mut by_id: HashMap<u32, (String, TokenType)> = raw
        .model
        .vocab
        .into_iter()
        .map(|(t, id)| (id, (t, TokenType::Normal)))
        .collect();
    for a in raw.added_tokens {
        let ty = if a.special || looks_special(&a.content) {
            TokenType::Control
        } else {
            TokenType::UserDefined
        };
        by_id.insert(a.id, (a.content, ty));
    }
    let own_size = by_id.keys().max().map_or(0, |&m| m as usize + 1);
    let n_vocab = options.vocab_size.unwrap_or(own_size);
    if n_vocab < own_size {
        return Err(TokenizerError::TokenIdOutOfRange {
            key: "GgufExportOptions::vocab_size (largest token id)".into(),
            id: own_size as u64 - 1,
            n_vocab,
        });
    }
    let mut tokens = Vec::with_capacity(n_vocab);
    let mut types = Vec::with_capacity(n_vocab);
    let mut text_to_id = HashMap::with_capacity(n_vocab);
    for id in 0..n_vocab as u32 {
        let (text, ty) = by_id
            .remove(&id)
            .unwrap_or_else(|| (format!("[PAD{id}]"), TokenType::Unused));
        if ty != TokenType::Unused {
            text_to_id.entry(text.clone()).or_insert(id);
        }
        tokens.push(MetaValue::String(text));
        types.push(MetaValue::I32(ty.to_gguf()));
    }

    let merges = raw
        .model
        .merges
        .into_iter()
        .enumerate()
        .map(|(i, m)| match m {
            Merge::Joined(s) => Ok(MetaValue::String(s)),
            Merge::Pair(a, b) if !a.contains(' ') && !b.contains(' ') => {
                Ok(MetaValue::String(format!("{a} {b}")))
            }
            Merge::Pair(a, b) => Err(TokenizerError::UnsupportedTokenizerJson(format!(
                "merge {i} ({a:?}, {b:?}) contains a space and cannot be written as \"a b\""
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;

    let id_of = |field: &str, text: &str| -> Result<u32, TokenizerError> {
        text_to_id
            .get(text)
            .copied()
            .ok_or_else(|| TokenizerError::Json {
                file: "tokenizer_config.json",
                message: format!("{field} `{text}` is not a token"),
            })
    };
    let bos = match &config.bos_token {
        Some(t) => Some(id_of("bos_token", t)?),
        None => options
            .bos_token_id
            .or_else(|| text_to_id.get("<|endoftext|>").copied()),
    };
    let eos = config
        .eos_token
        .as_deref()
        .map(|t| id_of("eos_token", t))
        .transpose()?;
    let pad = config
        .pad_token
        .as_deref()
        .map(|t| id_of("pad_token", t))
        .transpose()?;

    let mut out = vec![
        (
            "tokenizer.ggml.model".to_string(),
            MetaValue::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            MetaValue::String("qwen2".into()),
        ),
        (
            "tokenizer.ggml.tokens".to_string(),
            MetaValue::Array(tokens),
        ),
        (
            "tokenizer.ggml.token_type".to_string(),
            MetaValue::Array(types),
        ),
        (
            "tokenizer.ggml.merges".to_string(),
            MetaValue::Array(merges),
        ),
    ];
    for (key, id) in [
        ("tokenizer.ggml.bos_token_id", bos),
        ("tokenizer.ggml.eos_token_id", eos),
        ("tokenizer.ggml.padding_token_id", pad),
    ] {
        if let Some(id) = id {
            out.push((key.to_string(), MetaValue::U32(id)));
        }
    }
    if let Some(b) = config.add_bos_token {
        out.push(("tokenizer.ggml.add_bos_token".into(), MetaValue::Bool(b)));
    }
    if let Some(b) = config.add_eos_token {
        out.push(("tokenizer.ggml.add_eos_token".into(), MetaValue::Bool(b)));
    }
    if let Some(t) = config.chat_template {
        out.push(("tokenizer.chat_template".into(), MetaValue::String(t)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_types_round_trip() {
        for v in 0..8 {
            assert_eq!(TokenType::from_gguf(v).to_gguf(), v);
        }
    }

    #[test]
    fn looks_special_matches_llama_cpp() {
        assert!(looks_special("<|fim_prefix|>"));
        assert!(!looks_special("<think>"));
        assert!(!looks_special("<tool_call>"));
    }

    #[test]
    fn config_token_fields_accept_both_forms() {
        let c = HfConfig::parse(
            br#"{"eos_token": {"content": "<e>"}, "bos_token": null, "pad_token": "<p>",
                 "chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": "y"}]}"#,
        )
        .unwrap();
        assert_eq!(c.eos_token.as_deref(), Some("<e>"));
        assert_eq!(c.bos_token, None);
        assert_eq!(c.pad_token.as_deref(), Some("<p>"));
        assert_eq!(c.chat_template.as_deref(), Some("y"));
        assert!(HfConfig::parse(b"[1]").is_err());
    }

    #[test]
    fn rejects_non_qwen_tokenizers() {
        let json =
            br#"{"model": {"type": "Unigram", "vocab": {}, "merges": []}, "added_tokens": []}"#;
        let e = gguf_metadata_from_tokenizer_json(json, b"{}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Unigram"), "{e}");
        let json = br#"{"model": {"type": "BPE", "vocab": {}, "merges": []}, "added_tokens": [],
                        "pre_tokenizer": {"type": "ByteLevel"}}"#;
        let e = gguf_metadata_from_tokenizer_json(json, b"{}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pre_tokenizer"), "{e}");
    }
}
