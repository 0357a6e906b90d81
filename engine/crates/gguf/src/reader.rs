//! [`GgufFile`]: a validated, memory-mapped GGUF model, single or split.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::meta::{self, Metadata};
use crate::split::{self, SplitName};
use crate::{parse, GgufError, GgufHeader, MetaValue, TensorInfo};

/// An open GGUF model: metadata, tensor table and zero-copy access to tensor bytes.
///
/// Every tensor's bytes were checked at open to lie inside its file, so
/// [`GgufFile::tensor_data`] is a plain slice of the memory map.
#[derive(Debug)]
pub struct GgufFile {
    paths: Vec<PathBuf>,
    maps: Vec<Mmap>,
    version: u32,
    alignment: u64,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
}

/// Memory-map a file read-only.
#[allow(unsafe_code)]
fn map(path: &Path) -> Result<Mmap, GgufError> {
    let io = |source| GgufError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    // SAFETY: the map is read-only and private to this process. Like every mmap-based
    // loader we assume the model file is not truncated or rewritten while it is open.
    unsafe { Mmap::map(&file) }.map_err(io)
}

fn map_and_parse(path: &Path) -> Result<(Mmap, GgufHeader), GgufError> {
    let m = map(path)?;
    let header = parse(&m).map_err(|e| e.in_file(path))?;
    Ok((m, header))
}

impl GgufFile {
    /// Open a GGUF file. A name like `<prefix>-00002-of-00003.gguf` opens all three parts
    /// of a llama.cpp split model as one (tensors merged, metadata from the first part).
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        match SplitName::parse(path) {
            Some(name) if name.count > 1 => Self::open_split(&name),
            _ => {
                let (m, header) = map_and_parse(path)?;
                split::check_single(&header, path)?;
                Self::assemble(vec![path.to_path_buf()], vec![(m, header)])
            }
        }
    }

    /// Parse and validate a whole file held in memory, without keeping it (see [`parse`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<GgufHeader, GgufError> {
        parse(bytes)
    }

    fn open_split(name: &SplitName) -> Result<GgufFile, GgufError> {
        let paths = name.part_paths();
        if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
            return Err(GgufError::MissingSplitPart {
                path: missing.clone(),
            });
        }
        let mut parts = Vec::with_capacity(paths.len());
        let mut expected_total = None;
        for (i, p) in paths.iter().enumerate() {
            let (m, header) = map_and_parse(p)?;
            let total = split::check_part(&header, p, i, paths.len())?;
            if *expected_total.get_or_insert(total) != total {
                let detail = format!(
                    "split.tensors.count is {total}, the first part says {}",
                    expected_total.unwrap_or(0)
                );
                return Err(GgufError::SplitMismatch {
                    path: p.clone(),
                    detail,
                });
            }
            parts.push((m, header));
        }
        let file = Self::assemble(paths, parts)?;
        let total = expected_total.unwrap_or(0);
        if file.tensors.len() as u64 != total {
            let detail = format!(
                "parts hold {} tensors, split.tensors.count says {total}",
                file.tensors.len()
            );
            return Err(GgufError::SplitMismatch {
                path: file.paths[0].clone(),
                detail,
            });
        }
        Ok(file)
    }

    fn assemble(
        paths: Vec<PathBuf>,
        parts: Vec<(Mmap, GgufHeader)>,
    ) -> Result<GgufFile, GgufError> {
        let mut maps = Vec::with_capacity(parts.len());
        let mut tensors = Vec::new();
        let mut index = HashMap::new();
        let mut first = None;
        for (i, (m, header)) in parts.into_iter().enumerate() {
            maps.push(m);
            for mut t in header.tensors {
                t.split = i;
                if index.insert(t.name.clone(), tensors.len()).is_some() {
                    return Err(GgufError::DuplicateTensor { name: t.name }.in_file(&paths[i]));
                }
                tensors.push(t);
            }
            if first.is_none() {
                first = Some((header.version, header.alignment, header.metadata));
            }
        }
        let (version, alignment, metadata) =
            first.ok_or_else(|| GgufError::Writer("no parts".into()))?;
        Ok(GgufFile {
            paths,
            maps,
            version,
            alignment,
            metadata,
            tensors,
            index,
        })
    }

    /// GGUF version of the (first) file.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Data alignment of the (first) file.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// All metadata (of the first part, for split models), ordered by key.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// A required value, or [`GgufError::MissingKey`].
    pub fn require(&self, key: &str) -> Result<&MetaValue, GgufError> {
        meta::require(&self.metadata, key)
    }

    /// An integer of any width that is non-negative.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        meta::required(&self.metadata, key, meta::UINT, MetaValue::as_u64)
    }

    /// Like [`GgufFile::get_u64`], converted to `usize`.
    pub fn get_usize(&self, key: &str) -> Result<usize, GgufError> {
        meta::required(&self.metadata, key, meta::UINT, |v| {
            v.as_u64().and_then(|n| usize::try_from(n).ok())
        })
    }

    /// Any numeric value as `f32`.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        self.get_f64(key).map(|v| v as f32)
    }

    /// Any numeric value as `f64`.
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        meta::required(&self.metadata, key, meta::NUMBER, MetaValue::as_f64)
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        meta::required(&self.metadata, key, meta::STRING, MetaValue::as_str)
    }

    /// A bool value.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        meta::required(&self.metadata, key, meta::BOOL, MetaValue::as_bool)
    }

    /// An array value.
    pub fn get_array(&self, key: &str) -> Result<&[MetaValue], GgufError> {
        meta::required(&self.metadata, key, meta::ARRAY, MetaValue::as_array)
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        meta::required(&self.metadata, key, meta::STR_ARRAY, meta::as_str_array)
    }

    /// An optional integer: `Ok(None)` when absent, an error when present with another type.
    pub fn get_u64_opt(&self, key: &str) -> Result<Option<u64>, GgufError> {
        meta::typed(&self.metadata, key, meta::UINT, MetaValue::as_u64)
    }

    /// An optional number (see [`GgufFile::get_u64_opt`]).
    pub fn get_f32_opt(&self, key: &str) -> Result<Option<f32>, GgufError> {
        Ok(meta::typed(&self.metadata, key, meta::NUMBER, MetaValue::as_f64)?.map(|v| v as f32))
    }

    /// An optional bool (see [`GgufFile::get_u64_opt`]).
    pub fn get_bool_opt(&self, key: &str) -> Result<Option<bool>, GgufError> {
        meta::typed(&self.metadata, key, meta::BOOL, MetaValue::as_bool)
    }

    /// An optional string (see [`GgufFile::get_u64_opt`]).
    pub fn get_str_opt(&self, key: &str) -> Result<Option<&str>, GgufError> {
        meta::typed(&self.metadata, key, meta::STRING, MetaValue::as_str)
    }

    /// `general.architecture`, e.g. `qwen3moe`.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.get_str("general.architecture")
    }

    /// All tensors: file order, parts in order.
    pub fn tensors(&self) -> impl Iterator<Item = &TensorInfo> {
        self.tensors.iter()
    }

    /// Number of tensors.
    pub fn n_tensors(&self) -> usize {
        self.tensors.len()
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// A tensor by name, or [`GgufError::MissingTensor`] naming it.
    pub fn require_tensor(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensor(name).ok_or_else(|| GgufError::MissingTensor {
            name: name.to_owned(),
        })
    }

    /// The bytes of a tensor of this file, straight from the memory map.
    ///
    /// `info` must come from this file; a foreign one whose range does not fit yields an
    /// empty slice rather than a panic.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let range = usize::try_from(info.offset)
            .ok()
            .and_then(|s| Some(s..s.checked_add(usize::try_from(info.n_bytes).ok()?)?));
        range
            .and_then(|r| self.maps.get(info.split)?.get(r))
            .unwrap_or(&[])
    }

    /// The bytes of a tensor by name.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8], GgufError> {
        Ok(self.tensor_data(self.require_tensor(name)?))
    }

    /// Total size in bytes of all files.
    pub fn file_size_total(&self) -> u64 {
        self.maps.iter().map(|m| m.len() as u64).sum()
    }

    /// The files, first to last.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
}
