//! Building the tokenizer from GGUF `tokenizer.ggml.*` metadata (llama.cpp's layout).

use std::collections::BTreeMap;

use hmoe_gguf::MetaValue;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::error::TokenizerError;
use crate::to_gguf::TokenType;
use crate::tokenizer::Tokenizer;

/// The split regex of Hugging Face's Qwen2/Qwen3 tokenizer (llama.cpp's `qwen2` pre-tokenizer).
pub const QWEN2_SPLIT_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.ggml.pre` values that use the Qwen2 regex (llama.cpp maps both to QWEN2).
const QWEN2_PRE_NAMES: [&str; 2] = ["qwen2", "deepseek-r1-qwen"];

fn get_str<'a>(
    get: &impl Fn(&str) -> Option<&'a MetaValue>,
    key: &str,
) -> Result<Option<&'a str>, TokenizerError> {
    match get(key) {
        None => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or(TokenizerError::WrongType {
            key: key.into(),
            expected: "string",
            found: v.type_name(),
        }),
    }
}

fn get_array<'a>(
    get: &impl Fn(&str) -> Option<&'a MetaValue>,
    key: &str,
) -> Result<Option<&'a [MetaValue]>, TokenizerError> {
    match get(key) {
        None => Ok(None),
        Some(v) => v.as_array().map(Some).ok_or(TokenizerError::WrongType {
            key: key.into(),
            expected: "array",
            found: v.type_name(),
        }),
    }
}

fn get_id<'a>(
    get: &impl Fn(&str) -> Option<&'a MetaValue>,
    key: &str,
    n_vocab: usize,
) -> Result<Option<u32>, TokenizerError> {
    let Some(v) = get(key) else { return Ok(None) };
    let id = v.as_u64().ok_or(TokenizerError::WrongType {
        key: key.into(),
        expected: "unsigned integer",
        found: v.type_name(),
    })?;
    match u32::try_from(id) {
        Ok(id32) if (id32 as usize) < n_vocab => Ok(Some(id32)),
        _ => Err(TokenizerError::TokenIdOutOfRange {
            key: key.into(),
            id,
            n_vocab,
        }),
    }
}

/// Splits a GGUF merge "a b" at the first space after the first char, as llama.cpp does.
fn split_merge(merge: &str) -> Option<(String, String)> {
    let (pos, _) = merge.char_indices().skip(1).find(|&(_, c)| c == ' ')?;
    Some((merge[..pos].to_string(), merge[pos + 1..].to_string()))
}

impl Tokenizer {
    /// Builds the tokenizer from GGUF metadata looked up by key: a byte-level BPE with the
    /// qwen2 pre-tokenizer (NFC, Qwen2 split regex, ByteLevel) from `tokenizer.ggml.tokens`,
    /// `.token_type` (control tokens become special added tokens, user-defined ones plain
    /// added tokens, unused ones are left out), `.merges`, `.eos_token_id`,
    /// `.bos_token_id`, `.padding_token_id`, `.add_bos_token` and `tokenizer.chat_template`.
    pub fn from_gguf_metadata<'a>(
        get: impl Fn(&str) -> Option<&'a MetaValue>,
    ) -> Result<Self, TokenizerError> {
        let model = get_str(&get, "tokenizer.ggml.model")?
            .ok_or_else(|| TokenizerError::MissingKey("tokenizer.ggml.model".into()))?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.into()));
        }
        let pre = get_str(&get, "tokenizer.ggml.pre")?
            .ok_or_else(|| TokenizerError::MissingKey("tokenizer.ggml.pre".into()))?;
        if !QWEN2_PRE_NAMES.contains(&pre) {
            return Err(TokenizerError::UnsupportedPre(pre.into()));
        }
        let tokens = get_array(&get, "tokenizer.ggml.tokens")?
            .ok_or_else(|| TokenizerError::MissingKey("tokenizer.ggml.tokens".into()))?;
        let n_vocab = tokens.len();
        if n_vocab == 0 || u32::try_from(n_vocab).is_err() {
            return Err(TokenizerError::InvalidMetadata(format!(
                "tokenizer.ggml.tokens has {n_vocab} entries"
            )));
        }
        let types = match get_array(&get, "tokenizer.ggml.token_type")? {
            None => vec![TokenType::Normal; n_vocab],
            Some(a) if a.len() != n_vocab => {
                return Err(TokenizerError::InvalidMetadata(format!(
                    "tokenizer.ggml.token_type has {} entries, tokenizer.ggml.tokens {n_vocab}",
                    a.len()
                )))
            }
            Some(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    // gguf-py writes i32; accept any integer width that fits.
                    let t = match *v {
                        MetaValue::I8(t) => Some(t as i64),
                        MetaValue::I16(t) => Some(t as i64),
                        MetaValue::I32(t) => Some(t as i64),
                        MetaValue::I64(t) => Some(t),
                        _ => v.as_u64().and_then(|t| i64::try_from(t).ok()),
                    };
                    t.and_then(|t| i32::try_from(t).ok())
                        .map(TokenType::from_gguf)
                        .ok_or(TokenizerError::WrongType {
                            key: format!("tokenizer.ggml.token_type[{i}]"),
                            expected: "i32",
                            found: v.type_name(),
                        })
                })
                .collect::<Result<_, _>>()?,
        };

        let mut vocab = Vocab::with_capacity(n_vocab);
        let mut special = Vec::new();
        let mut user_defined = Vec::new();
        for (id, (tok, ty)) in tokens.iter().zip(&types).enumerate() {
            let text = tok.as_str().ok_or_else(|| TokenizerError::WrongType {
                key: format!("tokenizer.ggml.tokens[{id}]"),
                expected: "string",
                found: tok.type_name(),
            })?;
            match ty {
                // llama.cpp's [PADn] fillers: ids the model may have rows for but that no
                // text maps to; Hugging Face has no token for them either.
                TokenType::Unused => continue,
                TokenType::Control => special.push(text),
                TokenType::UserDefined => user_defined.push(text),
                _ => {}
            }
            // Keep the first id of a duplicated string, so text -> id is deterministic.
            vocab.entry(text.to_string()).or_insert(id as u32);
        }

        let merges = get_array(&get, "tokenizer.ggml.merges")?
            .ok_or_else(|| TokenizerError::MissingKey("tokenizer.ggml.merges".into()))?
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let s = m.as_str().ok_or_else(|| TokenizerError::WrongType {
                    key: format!("tokenizer.ggml.merges[{i}]"),
                    expected: "string",
                    found: m.type_name(),
                })?;
                split_merge(s).ok_or_else(|| {
                    TokenizerError::InvalidMetadata(format!(
                        "tokenizer.ggml.merges[{i}] = {s:?} is not two tokens separated by a space"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| TokenizerError::InvalidMetadata(format!("BPE: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner
            .with_normalizer(Some(NFC))
            .map_err(TokenizerError::tk)?;
        let split = Split::new(
            SplitPattern::Regex(QWEN2_SPLIT_PATTERN.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(TokenizerError::tk)?;
        inner.with_pre_tokenizer(Some(Sequence::new(vec![
            split.into(),
            ByteLevel::new(false, false, false).into(),
        ])));
        inner.with_post_processor(Some(ByteLevel::new(false, false, false)));
        inner.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
        // Added tokens are matched in the raw text before normalisation, as HF does for
        // tokens with `normalized: false`; they are already in the model vocabulary, so
        // they keep their GGUF ids.
        let added = |texts: &[&str], is_special: bool| -> Vec<AddedToken> {
            texts
                .iter()
                .map(|t| AddedToken::from(t.to_string(), is_special).normalized(false))
                .collect()
        };
        inner
            .add_special_tokens(added(&special, true))
            .map_err(TokenizerError::tk)?;
        inner
            .add_tokens(added(&user_defined, false))
            .map_err(TokenizerError::tk)?;

        let eos = get_id(&get, "tokenizer.ggml.eos_token_id", n_vocab)?;
        let bos_id = get_id(&get, "tokenizer.ggml.bos_token_id", n_vocab)?;
        let pad_id = get_id(&get, "tokenizer.ggml.padding_token_id", n_vocab)?;
        let add_bos = match get("tokenizer.ggml.add_bos_token") {
            None => false,
            Some(v) => v.as_bool().ok_or(TokenizerError::WrongType {
                key: "tokenizer.ggml.add_bos_token".into(),
                expected: "bool",
                found: v.type_name(),
            })?,
        };
        let chat_template = get_str(&get, "tokenizer.chat_template")?.map(str::to_string);
        let mut tok = Self {
            inner,
            n_vocab,
            eos_ids: Vec::new(),
            bos_id,
            pad_id,
            add_bos,
            chat_template,
        };
        tok.eos_ids = tok.end_of_generation_ids(eos);
        Ok(tok)
    }

    /// [`Tokenizer::from_gguf_metadata`] over a key/value map.
    pub fn from_gguf_map(map: &BTreeMap<String, MetaValue>) -> Result<Self, TokenizerError> {
        Self::from_gguf_metadata(|k| map.get(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> MetaValue {
        MetaValue::String(v.into())
    }

    fn tiny() -> BTreeMap<String, MetaValue> {
        let toks = ["a", "b", "ab", "Ġ", "Ġab", "<|im_end|>", "[PAD6]"];
        let types = [1, 1, 1, 1, 1, 3, 5];
        let mut m = BTreeMap::new();
        m.insert("tokenizer.ggml.model".into(), s("gpt2"));
        m.insert("tokenizer.ggml.pre".into(), s("qwen2"));
        m.insert(
            "tokenizer.ggml.tokens".into(),
            MetaValue::Array(toks.iter().map(|t| s(t)).collect()),
        );
        m.insert(
            "tokenizer.ggml.token_type".into(),
            MetaValue::Array(types.iter().map(|&t| MetaValue::I32(t)).collect()),
        );
        m.insert(
            "tokenizer.ggml.merges".into(),
            MetaValue::Array(vec![s("a b"), s("Ġ ab")]),
        );
        m.insert("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(5));
        m
    }

    #[test]
    fn builds_a_small_vocabulary() {
        let t = Tokenizer::from_gguf_map(&tiny()).unwrap();
        assert_eq!(t.encode("ab ab<|im_end|>", true).unwrap(), vec![2, 4, 5]);
        assert_eq!(t.eos_ids(), &[5]);
        assert_eq!(t.vocab_size(), 7);
        assert!(t.is_special(5));
        assert_eq!(t.decode(&[2, 4, 5], true).unwrap(), "ab ab");
        // The unused filler is not a token.
        assert_eq!(t.token_to_id("[PAD6]"), None);
    }

    #[test]
    fn add_bos_token_prepends_bos_with_special_tokens_only() {
        let mut m = tiny();
        m.insert("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(5));
        m.insert("tokenizer.ggml.add_bos_token".into(), MetaValue::Bool(true));
        let t = Tokenizer::from_gguf_map(&m).unwrap();
        assert_eq!(t.encode("ab", true).unwrap(), vec![5, 2]);
        assert_eq!(t.encode("ab", false).unwrap(), vec![2]);
        // Added even when the text starts with it, as HF's TemplateProcessing does.
        assert_eq!(t.encode("<|im_end|>ab", true).unwrap(), vec![5, 5, 2]);
        assert_eq!(t.bos_id(), Some(5));
    }

    #[test]
    fn unsupported_model_and_pre_are_named() {
        let mut m = tiny();
        m.insert("tokenizer.ggml.model".into(), s("llama"));
        let e = Tokenizer::from_gguf_map(&m).unwrap_err().to_string();
        assert!(e.contains("`llama`"), "{e}");
        let mut m = tiny();
        m.insert("tokenizer.ggml.pre".into(), s("llama3"));
        let e = Tokenizer::from_gguf_map(&m).unwrap_err().to_string();
        assert!(e.contains("`llama3`"), "{e}");
    }

    #[test]
    fn bad_metadata_is_reported() {
        let mut m = tiny();
        m.insert("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(70));
        let e = Tokenizer::from_gguf_map(&m).unwrap_err().to_string();
        assert!(e.contains("eos_token_id = 70"), "{e}");
        let mut m = tiny();
        m.insert(
            "tokenizer.ggml.token_type".into(),
            MetaValue::Array(vec![MetaValue::I32(1)]),
        );
        assert!(Tokenizer::from_gguf_map(&m).is_err());
        let mut m = tiny();
        m.insert(
            "tokenizer.ggml.merges".into(),
            MetaValue::Array(vec![s("a z")]),
        );
        let e = Tokenizer::from_gguf_map(&m).unwrap_err().to_string();
        assert!(e.contains("BPE"), "{e}");
        let mut m = tiny();
        m.insert(
            "tokenizer.ggml.merges".into(),
            MetaValue::Array(vec![s("ab")]),
        );
        assert!(Tokenizer::from_gguf_map(&m).is_err());
        let mut m = tiny();
        m.remove("tokenizer.ggml.tokens");
        let e = Tokenizer::from_gguf_map(&m).unwrap_err().to_string();
        assert!(e.contains("tokenizer.ggml.tokens"), "{e}");
        let mut m = tiny();
        m.insert("tokenizer.ggml.tokens".into(), s("oops"));
        let e = Tokenizer::from_gguf_map(&m).unwrap_err().to_string();
        assert!(e.contains("should be array"), "{e}");
    }

    #[test]
    fn odd_but_valid_metadata_does_not_panic() {
        // Empty and duplicated token strings, u8 token types, an eos given as u64.
        let mut m = tiny();
        m.insert(
            "tokenizer.ggml.tokens".into(),
            MetaValue::Array(
                ["a", "b", "ab", "Ġ", "Ġab", "", "a"]
                    .iter()
                    .map(|t| s(t))
                    .collect(),
            ),
        );
        m.insert(
            "tokenizer.ggml.token_type".into(),
            MetaValue::Array(
                [1u8, 1, 1, 1, 1, 4, 1]
                    .iter()
                    .map(|&t| MetaValue::U8(t))
                    .collect(),
            ),
        );
        m.insert("tokenizer.ggml.eos_token_id".into(), MetaValue::U64(4));
        let t = Tokenizer::from_gguf_map(&m).unwrap();
        assert_eq!(t.encode("ab a", false).unwrap(), vec![2, 3, 0]);
        assert_eq!(t.decode(&[0, 5, 0], false).unwrap(), "aa");
        // A repeated string keeps its first id; the later id has no text of its own.
        assert_eq!(t.token_to_id("a"), Some(0));
        assert_eq!(t.decode(&[6], false).unwrap(), "");
        let mut m = tiny();
        m.insert(
            "tokenizer.ggml.token_type".into(),
            MetaValue::Array((0..7).map(|_| s("x")).collect()),
        );
        let e = Tokenizer::from_gguf_map(&m).unwrap_err().to_string();
        assert!(e.contains("token_type[0]"), "{e}");
    }

    #[test]
    fn merge_split_matches_llama_cpp() {
        assert_eq!(split_merge("Ġ Ġ"), Some(("Ġ".into(), "Ġ".into())));
        assert_eq!(split_merge("  a"), Some((" ".into(), "a".into())));
        assert_eq!(split_merge("ab"), None);
    }
}
