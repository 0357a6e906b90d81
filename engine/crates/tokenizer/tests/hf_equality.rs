//! Equality with Hugging Face on the real Qwen3 tokenizer: token ids, decoding and chat
//! template renderings recorded by `tests/fixtures/make_fixtures.py`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use hmoe_gguf::MetaValue;
use hmoe_tokenizer::{
    gguf_metadata_from_tokenizer_json, gguf_metadata_from_tokenizer_json_with, ChatMessage,
    ChatTemplate, GgufExportOptions, RenderOptions, Tokenizer,
};
use minijinja::Value;

const ASSETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/qwen3");
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hf_qwen3.json");
/// Qwen3's embedding rows: the token list llama.cpp writes is padded to this.
const QWEN3_MODEL_VOCAB: usize = 151_936;

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn tokenizer_json() -> &'static [u8] {
    static B: OnceLock<Vec<u8>> = OnceLock::new();
    B.get_or_init(|| read(&format!("{ASSETS}/tokenizer.json")))
}

fn config_json() -> &'static [u8] {
    static B: OnceLock<Vec<u8>> = OnceLock::new();
    B.get_or_init(|| read(&format!("{ASSETS}/tokenizer_config.json")))
}

/// The fixture as a minijinja value: keeps JSON key order (for `tojson`).
fn fixture() -> &'static Value {
    static F: OnceLock<Value> = OnceLock::new();
    F.get_or_init(|| serde_json::from_slice(&read(FIXTURE)).expect("fixture JSON"))
}

fn from_json() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        Tokenizer::from_hf_json(tokenizer_json(), config_json()).expect("tokenizer.json")
    })
}

fn gguf_meta() -> &'static BTreeMap<String, MetaValue> {
    static M: OnceLock<BTreeMap<String, MetaValue>> = OnceLock::new();
    M.get_or_init(|| {
        gguf_metadata_from_tokenizer_json(tokenizer_json(), config_json())
            .expect("export")
            .into_iter()
            .collect()
    })
}

fn from_gguf() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_gguf_map(gguf_meta()).expect("from gguf"))
}

fn attr(v: &Value, key: &str) -> Value {
    v.get_attr(key).unwrap_or_else(|e| panic!("{key}: {e}"))
}

fn string(v: &Value, key: &str) -> String {
    attr(v, key)
        .as_str()
        .unwrap_or_else(|| panic!("{key} not a string"))
        .to_string()
}

fn ids(v: &Value, key: &str) -> Vec<u32> {
    attr(v, key)
        .try_iter()
        .unwrap_or_else(|e| panic!("{key}: {e}"))
        .map(|x| u32::try_from(x).unwrap_or_else(|e| panic!("{key}: {e}")))
        .collect()
}

fn items(key: &str) -> Vec<Value> {
    attr(fixture(), key).try_iter().expect("array").collect()
}

/// Added tokens HF calls non-special but llama.cpp writes as control because they look
/// like `<|...|>` (`<|fim_prefix|>`, ...): only their skip-special decoding differs.
fn gguf_control_but_hf_plain(tok: &Tokenizer, ids: &[u32]) -> bool {
    ids.iter()
        .any(|&id| tok.is_special(id) && !from_json().is_special(id))
}

fn check_corpus(tok: &Tokenizer, name: &str) {
    let corpus = items("corpus");
    assert!(corpus.len() >= 50);
    for entry in &corpus {
        let text = string(entry, "text");
        let want = ids(entry, "ids");
        let got = tok.encode(&text, true).unwrap();
        assert_eq!(got, want, "{name}: ids of {text:?}");
        assert_eq!(
            tok.decode(&want, false).unwrap(),
            string(entry, "decoded"),
            "{name}: {text:?}"
        );
        if !gguf_control_but_hf_plain(tok, &want) {
            assert_eq!(
                tok.decode(&want, true).unwrap(),
                string(entry, "decoded_skip_special"),
                "{name}: skip-special decode of {text:?}"
            );
        }
    }
    for chat in items("chats") {
        let rendered = string(&chat, "rendered");
        assert_eq!(
            tok.encode(&rendered, false).unwrap(),
            ids(&chat, "ids"),
            "{name}: chat {}",
            string(&chat, "name")
        );
    }
}

#[test]
fn tokenizer_json_matches_hf_ids_and_decoding() {
    check_corpus(from_json(), "tokenizer.json");
}

#[test]
fn gguf_metadata_tokenizer_matches_hf_ids_and_decoding() {
    check_corpus(from_gguf(), "gguf");
}

#[test]
fn special_tokens_and_eos() {
    let specials = attr(fixture(), "special_tokens");
    for tok in [from_json(), from_gguf()] {
        for key in specials.try_iter().unwrap() {
            let text = key.as_str().unwrap();
            let want = u32::try_from(specials.get_item(&key).unwrap()).unwrap();
            assert_eq!(tok.special_token_id(text), Some(want), "{text}");
            assert_eq!(tok.token_to_id(text), Some(want), "{text}");
        }
        // Qwen3: eos <|im_end|> (151645), then <|endoftext|> (151643) also ends generation.
        let eos = u32::try_from(attr(fixture(), "eos_token_id")).unwrap();
        let pad = u32::try_from(attr(fixture(), "pad_token_id")).unwrap();
        assert_eq!(tok.eos_ids(), &[eos, pad]);
        assert_eq!(tok.pad_id(), Some(pad));
        assert!(tok.is_special(eos) && !tok.is_special(tok.token_to_id("<think>").unwrap()));
        assert_eq!(
            tok.vocab_size(),
            usize::try_from(attr(fixture(), "vocab_size")).unwrap()
        );
        assert_eq!(
            tok.token_to_piece(tok.token_to_id("Ġhello").unwrap())
                .unwrap(),
            b" hello"
        );
        assert_eq!(tok.token_to_piece(eos).unwrap(), b"<|im_end|>");
        assert_eq!(tok.token_to_piece(u32::MAX), None);
        assert!(tok.chat_template().unwrap().contains("enable_thinking"));
    }
}

#[test]
fn gguf_metadata_has_llama_cpp_keys() {
    let pairs = gguf_metadata_from_tokenizer_json(tokenizer_json(), config_json()).unwrap();
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "tokenizer.ggml.model",
            "tokenizer.ggml.pre",
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.token_type",
            "tokenizer.ggml.merges",
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.padding_token_id",
            "tokenizer.ggml.add_bos_token",
            "tokenizer.chat_template",
        ]
    );
    let m = gguf_meta();
    let get = |k: &str| m.get(k).unwrap();
    assert_eq!(get("tokenizer.ggml.model").as_str(), Some("gpt2"));
    assert_eq!(get("tokenizer.ggml.pre").as_str(), Some("qwen2"));
    let tokens = get("tokenizer.ggml.tokens").as_array().unwrap();
    let types = get("tokenizer.ggml.token_type").as_array().unwrap();
    assert_eq!(tokens.len(), 151_669);
    assert_eq!(
        get("tokenizer.ggml.merges").as_array().unwrap().len(),
        151_387
    );
    assert_eq!(
        get("tokenizer.ggml.merges").as_array().unwrap()[0].as_str(),
        Some("Ġ Ġ")
    );
    // llama.cpp's types: normal, control (<|im_end|>, and <|fim_prefix|> because it looks
    // special), user-defined (<think>, <tool_call>).
    for (id, ty) in [
        (0usize, 1),
        (151_645, 3),
        (151_659, 3),
        (151_657, 4),
        (151_667, 4),
    ] {
        assert_eq!(types[id], MetaValue::I32(ty), "type of {:?}", tokens[id]);
    }
    assert_eq!(get("tokenizer.ggml.bos_token_id"), &MetaValue::U32(151_643));
    assert_eq!(get("tokenizer.ggml.eos_token_id"), &MetaValue::U32(151_645));
    assert_eq!(
        get("tokenizer.ggml.padding_token_id"),
        &MetaValue::U32(151_643)
    );
    assert_eq!(get("tokenizer.ggml.add_bos_token"), &MetaValue::Bool(false));
}

#[test]
fn padded_gguf_vocab_encodes_the_same() {
    let opts = GgufExportOptions {
        vocab_size: Some(QWEN3_MODEL_VOCAB),
        ..GgufExportOptions::default()
    };
    let meta: BTreeMap<_, _> =
        gguf_metadata_from_tokenizer_json_with(tokenizer_json(), config_json(), &opts)
            .unwrap()
            .into_iter()
            .collect();
    let tokens = meta["tokenizer.ggml.tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), QWEN3_MODEL_VOCAB);
    assert_eq!(tokens[151_700].as_str(), Some("[PAD151700]"));
    assert_eq!(
        meta["tokenizer.ggml.token_type"].as_array().unwrap()[151_700],
        MetaValue::I32(5)
    );
    let tok = Tokenizer::from_gguf_map(&meta).unwrap();
    assert_eq!(tok.vocab_size(), QWEN3_MODEL_VOCAB);
    // Unused filler ids decode to nothing and are never produced.
    assert_eq!(tok.decode(&[151_700], false).unwrap(), "");
    assert_eq!(
        tok.encode("[PAD151700]", false).unwrap(),
        from_json().encode("[PAD151700]", false).unwrap()
    );
    let entry = &items("corpus")[0];
    assert_eq!(
        tok.encode(&string(entry, "text"), true).unwrap(),
        ids(entry, "ids")
    );
    let too_small = GgufExportOptions {
        vocab_size: Some(1000),
        ..GgufExportOptions::default()
    };
    assert!(
        gguf_metadata_from_tokenizer_json_with(tokenizer_json(), config_json(), &too_small)
            .is_err()
    );
}

fn options_of(chat: &Value) -> RenderOptions {
    let tools = attr(chat, "tools");
    RenderOptions {
        add_generation_prompt: attr(chat, "add_generation_prompt").is_true(),
        enable_thinking: {
            let v = attr(chat, "enable_thinking");
            (!v.is_undefined()).then(|| v.is_true())
        },
        tools_json: (!tools.is_undefined()).then(|| serde_json::to_string(&tools).unwrap()),
        extra_json: None,
    }
}

#[test]
fn chat_template_renders_exactly_as_hf() {
    for tok in [from_json(), from_gguf()] {
        let template = ChatTemplate::new(tok.chat_template().unwrap()).unwrap();
        let chats = items("chats");
        assert!(chats.len() >= 10);
        for chat in chats {
            let messages = serde_json::to_string(&attr(&chat, "messages")).unwrap();
            let got = template.render_json(&messages, &options_of(&chat)).unwrap();
            assert_eq!(
                got,
                string(&chat, "rendered"),
                "chat {}",
                string(&chat, "name")
            );
        }
    }
}

#[test]
fn chat_messages_api_matches_hf() {
    let template = ChatTemplate::new(from_json().chat_template().unwrap()).unwrap();
    for chat in items("chats") {
        let msgs: Vec<Value> = attr(&chat, "messages").try_iter().unwrap().collect();
        let messages: Vec<ChatMessage> = msgs
            .iter()
            .map(|m| {
                let reasoning = attr(m, "reasoning_content");
                let calls = attr(m, "tool_calls");
                ChatMessage {
                    role: string(m, "role"),
                    content: string(m, "content"),
                    reasoning_content: reasoning.as_str().map(str::to_string),
                    tool_calls_json: (!calls.is_undefined())
                        .then(|| serde_json::to_string(&calls).unwrap()),
                }
            })
            .collect();
        let got = template.render(&messages, &options_of(&chat)).unwrap();
        assert_eq!(
            got,
            string(&chat, "rendered"),
            "chat {}",
            string(&chat, "name")
        );
    }
}

/// Pushes `ids` through a DecodeStream and checks the pieces against `decode`.
fn check_stream(tok: &Tokenizer, ids: &[u32], skip_special: bool) {
    let full = tok.decode(ids, skip_special).unwrap();
    let mut stream = tok.decode_stream(skip_special);
    let mut acc = String::new();
    for &id in ids {
        let piece = stream.step(id);
        acc.push_str(&piece);
        assert!(
            full.starts_with(&acc),
            "stream {acc:?} is not a prefix of {full:?}"
        );
    }
    acc.push_str(&stream.finish());
    assert_eq!(acc, full, "ids {ids:?}");
}

#[test]
fn decode_stream_never_splits_characters_on_the_corpus() {
    for tok in [from_json(), from_gguf()] {
        for entry in items("corpus") {
            let ids = ids(&entry, "ids");
            let decoded = string(&entry, "decoded");
            let mut stream = tok.decode_stream(false);
            for &id in &ids {
                let piece = stream.step(id);
                // Valid text never shows U+FFFD mid-stream.
                assert!(
                    decoded.contains('\u{FFFD}') || !piece.contains('\u{FFFD}'),
                    "{decoded:?}"
                );
            }
            check_stream(tok, &ids, false);
            check_stream(tok, &ids, true);
        }
    }
}

#[test]
fn decode_stream_equals_decode_on_arbitrary_ids() {
    // A fixed LCG: arbitrary (often invalid UTF-8) id sequences, reproducible.
    let tok = from_gguf();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    // Byte-level ids 0..256 are single bytes (often UTF-8 fragments); mix in emoji and
    // CJK pieces, specials, and ids outside the vocabulary.
    for _ in 0..300 {
        let len = 1 + next(40) as usize;
        let ids: Vec<u32> = (0..len)
            .map(|_| match next(4) {
                0 | 1 => next(256) as u32,
                2 => 140_000 + next(11_669) as u32,
                _ => next(160_000) as u32,
            })
            .collect();
        check_stream(tok, &ids, false);
        check_stream(tok, &ids, true);
    }
}

#[test]
fn tokenizer_survives_a_gguf_file_round_trip() {
    // Written by hmoe-gguf's writer and parsed back, as `hmoe synth` models will be.
    let pairs = gguf_metadata_from_tokenizer_json(tokenizer_json(), config_json()).unwrap();
    let bytes = hmoe_gguf::GgufWriter::new(Vec::new(), pairs, Vec::new())
        .and_then(|w| w.finish())
        .unwrap();
    let header = hmoe_gguf::parse(&bytes).unwrap();
    assert_eq!(&header.metadata, gguf_meta());
    let tok = Tokenizer::from_gguf_metadata(|k| header.metadata.get(k)).unwrap();
    for entry in items("corpus") {
        assert_eq!(
            tok.encode(&string(&entry, "text"), true).unwrap(),
            ids(&entry, "ids")
        );
    }
}

#[test]
fn generic_jinja_features_render_as_in_hf() {
    let messages = serde_json::to_string(&attr(fixture(), "feature_messages")).unwrap();
    let extra = serde_json::to_string(&attr(fixture(), "feature_extra")).unwrap();
    let options = RenderOptions {
        add_generation_prompt: true,
        extra_json: Some(format!("{{\"extra\": {extra}}}")),
        ..RenderOptions::default()
    };
    let mut failures = Vec::new();
    for case in items("feature_templates") {
        let name = string(&case, "name");
        let template = ChatTemplate::new(&string(&case, "template")).unwrap();
        let got = template.render_json(&messages, &options);
        let want_error = attr(&case, "error");
        match (got, want_error.as_str()) {
            (Err(hmoe_tokenizer::TemplateError::Raised(msg)), Some(want)) if msg == want => {}
            (Ok(text), None) if text == string(&case, "rendered") => {}
            (got, _) => failures.push(format!(
                "{name}: got {got:?}, HF {:?} / error {want_error:?}",
                attr(&case, "rendered").as_str()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
