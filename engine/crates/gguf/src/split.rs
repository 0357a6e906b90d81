//! llama.cpp `gguf-split` models: parts named `<prefix>-00001-of-00003.gguf`, each a full
//! GGUF file with its own tensors; the first part holds all the model metadata, every part
//! holds `split.no` (0-based), `split.count` and `split.tensors.count` (total tensors).

use std::path::{Path, PathBuf};

use crate::{GgufError, GgufHeader, MetaValue};

/// Key: 0-based index of this part.
pub const KEY_SPLIT_NO: &str = "split.no";
/// Key: number of parts.
pub const KEY_SPLIT_COUNT: &str = "split.count";
/// Key: number of tensors over all parts.
pub const KEY_SPLIT_TENSORS: &str = "split.tensors.count";

const DIGITS: usize = 5;
/// `-NNNNN-of-MMMMM.gguf`
const SUFFIX_LEN: usize = 1 + DIGITS + 4 + DIGITS + 5;

/// The path of part `index` (0-based) of `count`, llama.cpp style:
/// `<prefix>-00001-of-00003.gguf` for index 0 of 3.
pub fn split_path(prefix: &Path, index: usize, count: usize) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(format!("-{:05}-of-{:05}.gguf", index + 1, count));
    PathBuf::from(s)
}

/// A path that follows the split naming pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SplitName {
    /// Everything before `-NNNNN-of-MMMMM.gguf`, directory included.
    pub prefix: PathBuf,
    /// Number of parts named.
    pub count: usize,
}

fn digits(s: &str) -> Option<usize> {
    (s.len() == DIGITS && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
}

impl SplitName {
    /// Recognise `<prefix>-NNNNN-of-MMMMM.gguf` with 1 ≤ NNNNN ≤ MMMMM.
    pub fn parse(path: &Path) -> Option<SplitName> {
        let name = path.file_name()?.to_str()?;
        if name.len() <= SUFFIX_LEN || !name.is_char_boundary(name.len() - SUFFIX_LEN) {
            return None;
        }
        let (stem, suffix) = name.split_at(name.len() - SUFFIX_LEN);
        let no = digits(suffix.get(1..1 + DIGITS)?)?;
        if suffix.get(1 + DIGITS..5 + DIGITS)? != "-of-" || suffix.get(SUFFIX_LEN - 5..)? != ".gguf"
        {
            return None;
        }
        let count = digits(suffix.get(5 + DIGITS..SUFFIX_LEN - 5)?)?;
        if no == 0 || no > count {
            return None;
        }
        Some(SplitName {
            prefix: path.with_file_name(stem),
            count,
        })
    }

    /// Paths of all parts, first to last.
    pub fn part_paths(&self) -> Vec<PathBuf> {
        (0..self.count)
            .map(|i| split_path(&self.prefix, i, self.count))
            .collect()
    }
}

/// The `split.*` keys to put in part `index` (0-based) of `count` holding `total_tensors`.
pub fn split_keys(index: usize, count: usize, total_tensors: usize) -> Vec<(String, MetaValue)> {
    // llama.cpp's types: u16, u16, i32.
    vec![
        (KEY_SPLIT_NO.to_owned(), MetaValue::U16(index as u16)),
        (KEY_SPLIT_COUNT.to_owned(), MetaValue::U16(count as u16)),
        (
            KEY_SPLIT_TENSORS.to_owned(),
            MetaValue::I32(total_tensors as i32),
        ),
    ]
}

fn mismatch(path: &Path, detail: String) -> GgufError {
    GgufError::SplitMismatch {
        path: path.to_path_buf(),
        detail,
    }
}

fn split_u64(h: &GgufHeader, path: &Path, key: &str) -> Result<u64, GgufError> {
    match h.metadata.get(key) {
        None => Err(mismatch(path, format!("metadata key {key:?} is missing"))),
        Some(v) => v.as_u64().ok_or_else(|| {
            mismatch(
                path,
                format!(
                    "metadata key {key:?} is a {}, not an integer",
                    v.type_name()
                ),
            )
        }),
    }
}

/// Check that part `index` of `count` says so, and return its `split.tensors.count`.
pub(crate) fn check_part(
    h: &GgufHeader,
    path: &Path,
    index: usize,
    count: usize,
) -> Result<u64, GgufError> {
    let no = split_u64(h, path, KEY_SPLIT_NO)?;
    if no != index as u64 {
        return Err(mismatch(
            path,
            format!("split.no is {no}, expected {index} from the file name"),
        ));
    }
    let n = split_u64(h, path, KEY_SPLIT_COUNT)?;
    if n != count as u64 {
        return Err(mismatch(
            path,
            format!("split.count is {n}, expected {count} from the file name"),
        ));
    }
    split_u64(h, path, KEY_SPLIT_TENSORS)
}

/// A single (non-split-named) file must not claim to be part of a split.
pub(crate) fn check_single(h: &GgufHeader, path: &Path) -> Result<(), GgufError> {
    match h.metadata.get(KEY_SPLIT_COUNT).and_then(MetaValue::as_u64) {
        Some(n) if n > 1 => Err(mismatch(
            path,
            format!("split.count is {n} but the file name does not end in -NNNNN-of-{n:05}.gguf"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let p = split_path(Path::new("/m/Qwen3-30B-A3B-Q4_K_M"), 1, 3);
        assert_eq!(p, Path::new("/m/Qwen3-30B-A3B-Q4_K_M-00002-of-00003.gguf"));
        let s = SplitName::parse(&p).unwrap();
        assert_eq!(s.count, 3);
        assert_eq!(
            s.part_paths()[0],
            Path::new("/m/Qwen3-30B-A3B-Q4_K_M-00001-of-00003.gguf")
        );
    }

    #[test]
    fn non_split_names() {
        for n in [
            "model.gguf",
            "-00001-of-00003.gguf",
            "m-00004-of-00003.gguf",
            "m-00000-of-00003.gguf",
            "m-0001-of-00003.gguf",
            "m-00001-of-00003.bin",
            "m-00001_of-00003.gguf",
            "é-0000é-of-00003.gguf",
        ] {
            assert_eq!(SplitName::parse(Path::new(n)), None, "{n}");
        }
    }
}
