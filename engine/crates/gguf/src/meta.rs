//! Typed metadata look-ups whose errors name the key and the expected/actual type.

use std::collections::BTreeMap;

use crate::{GgufError, MetaValue};

/// The metadata map of a GGUF file (ordered by key).
pub type Metadata = BTreeMap<String, MetaValue>;

fn found(v: &MetaValue) -> String {
    match v {
        MetaValue::Array(items) => match items.first() {
            Some(first) => format!("array of {} ({} elements)", first.type_name(), items.len()),
            None => "empty array".to_owned(),
        },
        MetaValue::String(_) => "string".to_owned(),
        MetaValue::Bool(b) => format!("bool {b}"),
        other => match (other.as_i64(), other.as_f64()) {
            (Some(i), _) => format!("{} {i}", other.type_name()),
            (None, Some(f)) => format!("{} {f}", other.type_name()),
            _ => other.type_name().to_owned(),
        },
    }
}

pub(crate) fn require<'a>(m: &'a Metadata, key: &str) -> Result<&'a MetaValue, GgufError> {
    m.get(key).ok_or_else(|| GgufError::MissingKey {
        key: key.to_owned(),
    })
}

/// Convert a present value with `f`, or report the key, `expected` and what was found.
pub(crate) fn typed<'a, T>(
    m: &'a Metadata,
    key: &str,
    expected: &'static str,
    f: impl FnOnce(&'a MetaValue) -> Option<T>,
) -> Result<Option<T>, GgufError> {
    match m.get(key) {
        None => Ok(None),
        Some(v) => match f(v) {
            Some(t) => Ok(Some(t)),
            None => Err(GgufError::WrongType {
                key: key.to_owned(),
                expected,
                found: found(v),
            }),
        },
    }
}

/// Like [`typed`] but the key must be present.
pub(crate) fn required<'a, T>(
    m: &'a Metadata,
    key: &str,
    expected: &'static str,
    f: impl FnOnce(&'a MetaValue) -> Option<T>,
) -> Result<T, GgufError> {
    typed(m, key, expected, f)?.ok_or_else(|| GgufError::MissingKey {
        key: key.to_owned(),
    })
}

pub(crate) const UINT: &str = "a non-negative integer";
pub(crate) const NUMBER: &str = "a number";
pub(crate) const STRING: &str = "a string";
pub(crate) const BOOL: &str = "a bool";
pub(crate) const ARRAY: &str = "an array";
pub(crate) const STR_ARRAY: &str = "an array of strings";

pub(crate) fn as_str_array(v: &MetaValue) -> Option<Vec<&str>> {
    v.as_array()?.iter().map(MetaValue::as_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> Metadata {
        let mut m = Metadata::new();
        m.insert("n".into(), MetaValue::I32(-3));
        m.insert(
            "toks".into(),
            MetaValue::Array(vec![MetaValue::String("a".into()), MetaValue::U8(1)]),
        );
        m
    }

    #[test]
    fn wrong_type_names_key_and_types() {
        let m = map();
        let e = required(&m, "n", UINT, MetaValue::as_u64).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("\"n\"") && msg.contains("non-negative integer") && msg.contains("i32 -3"),
            "{msg}"
        );
        let e = required(&m, "toks", STR_ARRAY, as_str_array).unwrap_err();
        assert!(matches!(e, GgufError::WrongType { .. }), "{e}");
        let e = required(&m, "absent", UINT, MetaValue::as_u64).unwrap_err();
        assert!(matches!(e, GgufError::MissingKey { ref key } if key == "absent"));
        assert_eq!(typed(&m, "absent", UINT, MetaValue::as_u64).unwrap(), None);
    }
}
