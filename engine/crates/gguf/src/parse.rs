//! Parsing and validating a GGUF header (v2/v3, little-endian) from untrusted bytes.
//!
//! Layout: magic `GGUF`, u32 version, u64 tensor count, u64 KV count, the KVs, the tensor
//! infos, padding to `general.alignment`, then the data section. Tensor offsets in the
//! infos are relative to the data section; [`GgufHeader::tensors`] holds absolute ones.

use std::collections::{BTreeMap, HashSet};

use crate::cursor::Cursor;
use crate::tensor::{checked_n_bytes, MAX_DIMS};
use crate::{GgmlDType, GgufError, MetaValue, TensorInfo};

/// The file magic.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of tensor offsets when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Deepest nesting of arrays inside arrays (llama.cpp writes none; allow a little).
pub const MAX_ARRAY_NESTING: usize = 4;
/// Most metadata values (array elements included) one file may hold. Real models have
/// about 0.5 M (vocabulary + merges + token types); each parsed value costs up to 32 bytes
/// of memory against 1 byte in the file, so this caps metadata memory at 512 MiB.
pub const MAX_METADATA_VALUES: u64 = 1 << 24;

/// Smallest key/value record: empty key (u64 length) + u32 type + 1-byte value.
const MIN_KV_SIZE: u64 = 8 + 4 + 1;
/// Smallest tensor info: empty name + u32 n_dims + one u64 dim + u32 type + u64 offset.
const MIN_TENSOR_INFO_SIZE: u64 = 8 + 4 + 8 + 4 + 8;
/// Offset of the tensor count field.
const TENSOR_COUNT_OFFSET: u64 = 8;

/// A parsed and validated GGUF header of one file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    /// Format version (2 or 3).
    pub version: u32,
    /// Alignment of the data section and tensor offsets.
    pub alignment: u64,
    /// All key/value pairs.
    pub metadata: BTreeMap<String, MetaValue>,
    /// Tensors in file order, with absolute offsets, checked to lie inside the bytes parsed.
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

/// Bytes a value of GGUF type `type_id` needs at least, or `None` for unknown types.
fn min_value_size(type_id: u32) -> Option<u64> {
    Some(match type_id {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 4 + 8,
        _ => return None,
    })
}

/// Parse and validate a whole GGUF file held in `bytes` (usually a memory map).
pub fn parse(bytes: &[u8]) -> Result<GgufHeader, GgufError> {
    let mut cur = Cursor::new(bytes);
    let magic = bytes.get(..4).unwrap_or(bytes);
    // A shorter file that starts like the magic is reported as truncated below.
    if magic != &MAGIC[..magic.len()] {
        return Err(GgufError::BadMagic {
            found: magic.to_vec(),
        });
    }
    cur.take(4, || "magic".into())?;
    let version = cur.u32(|| "version".into())?;
    check_version(version)?;
    let tensor_count = cur.u64(|| "tensor count".into())?;
    let kv_count = cur.count(MIN_KV_SIZE, || "metadata key/value count".into())?;

    let mut metadata = BTreeMap::new();
    let mut budget = MAX_METADATA_VALUES;
    for i in 0..kv_count {
        let at = cur.pos() as u64;
        let key = cur.string(|| format!("metadata key #{i}"))?;
        if metadata.contains_key(&key) {
            return Err(GgufError::DuplicateKey { key, offset: at });
        }
        let type_at = cur.pos() as u64;
        let type_id = cur.u32(|| format!("value type of metadata key {key:?}"))?;
        let value = read_value(&mut cur, type_id, type_at, &key, 0, &mut budget)?;
        metadata.insert(key, value);
    }
    let alignment = alignment_of(&metadata)?;

    let n_tensors = cur.check_count(
        tensor_count,
        TENSOR_COUNT_OFFSET,
        MIN_TENSOR_INFO_SIZE,
        || "tensor count".into(),
    )?;
    let mut tensors = Vec::with_capacity(n_tensors);
    for i in 0..n_tensors {
        tensors.push(read_tensor_info(&mut cur, i)?);
    }
    let data_offset =
        align_up(cur.pos() as u64, alignment).ok_or_else(|| GgufError::BadAlignment {
            value: format!("{alignment} (data section offset overflows)"),
        })?;
    place_tensors(&mut tensors, data_offset, alignment, bytes.len() as u64)?;
    Ok(GgufHeader {
        version,
        alignment,
        metadata,
        tensors,
        data_offset,
    })
}

fn check_version(version: u32) -> Result<(), GgufError> {
    let hint = match version {
        2 | 3 => return Ok(()),
        1 => " (version 1 used 32-bit counts; re-convert the model with current llama.cpp tools)",
        v if matches!(v.swap_bytes(), 2 | 3) => " (this looks like a big-endian GGUF file)",
        _ => "",
    };
    Err(GgufError::UnsupportedVersion { version, hint })
}

fn alignment_of(metadata: &BTreeMap<String, MetaValue>) -> Result<u64, GgufError> {
    match metadata.get("general.alignment") {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() => Ok(a),
            Some(a) => Err(GgufError::BadAlignment {
                value: a.to_string(),
            }),
            None => Err(GgufError::BadAlignment {
                value: format!("a value of type {}", v.type_name()),
            }),
        },
    }
}

/// Round `pos` up to a multiple of `alignment` (a power of two); `None` on overflow.
pub(crate) fn align_up(pos: u64, alignment: u64) -> Option<u64> {
    Some(pos.checked_add(alignment - 1)? & !(alignment - 1))
}

fn read_value(
    cur: &mut Cursor<'_>,
    type_id: u32,
    type_at: u64,
    key: &str,
    depth: usize,
    budget: &mut u64,
) -> Result<MetaValue, GgufError> {
    if *budget == 0 {
        return Err(GgufError::TooManyValues {
            key: key.to_owned(),
            max: MAX_METADATA_VALUES,
        });
    }
    *budget -= 1;
    let what = || format!("value of metadata key {key:?}");
    let at = cur.pos() as u64;
    Ok(match type_id {
        0 => MetaValue::U8(cur.u8(what)?),
        1 => MetaValue::I8(cur.u8(what)? as i8),
        2 => MetaValue::U16(cur.u16(what)?),
        3 => MetaValue::I16(cur.u16(what)? as i16),
        4 => MetaValue::U32(cur.u32(what)?),
        5 => MetaValue::I32(cur.u32(what)? as i32),
        6 => MetaValue::F32(f32::from_bits(cur.u32(what)?)),
        7 => match cur.u8(what)? {
            0 => MetaValue::Bool(false),
            1 => MetaValue::Bool(true),
            b => {
                let detail = format!("bool byte {b} is neither 0 nor 1");
                return Err(GgufError::BadValue {
                    key: key.to_owned(),
                    detail,
                    offset: at,
                });
            }
        },
        8 => MetaValue::String(cur.string(what)?),
        9 => {
            if depth >= MAX_ARRAY_NESTING {
                return Err(GgufError::NestingTooDeep {
                    key: key.to_owned(),
                    max: MAX_ARRAY_NESTING,
                });
            }
            let elem_at = cur.pos() as u64;
            let elem_type = cur.u32(|| format!("array type of metadata key {key:?}"))?;
            let min = min_value_size(elem_type).ok_or_else(|| GgufError::UnknownValueType {
                key: key.to_owned(),
                type_id: elem_type,
                offset: elem_at,
            })?;
            let n = cur.count(min, || format!("array of metadata key {key:?}"))?;
            if n as u64 > *budget {
                return Err(GgufError::TooManyValues {
                    key: key.to_owned(),
                    max: MAX_METADATA_VALUES,
                });
            }
            // `n * min <= remaining`: the reservation is bounded by the file's own size.
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(read_value(cur, elem_type, elem_at, key, depth + 1, budget)?);
            }
            MetaValue::Array(items)
        }
        10 => MetaValue::U64(cur.u64(what)?),
        11 => MetaValue::I64(cur.u64(what)? as i64),
        12 => MetaValue::F64(f64::from_bits(cur.u64(what)?)),
        _ => {
            return Err(GgufError::UnknownValueType {
                key: key.to_owned(),
                type_id,
                offset: type_at,
            })
        }
    })
}

fn read_tensor_info(cur: &mut Cursor<'_>, i: usize) -> Result<TensorInfo, GgufError> {
    let name = cur.string(|| format!("name of tensor #{i}"))?;
    let n_dims = cur.u32(|| format!("n_dims of tensor {name:?}"))?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(GgufError::BadDimCount {
            name,
            n_dims,
            max: MAX_DIMS,
        });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        dims.push(cur.u64(|| format!("dim {d} of tensor {name:?}"))?);
    }
    let type_id = cur.u32(|| format!("type of tensor {name:?}"))?;
    let rel_offset = cur.u64(|| format!("offset of tensor {name:?}"))?;
    let Some(dtype) = GgmlDType::from_id(type_id) else {
        return Err(GgufError::UnknownTensorType { name, id: type_id });
    };
    let n_bytes = checked_n_bytes(&name, &dims, dtype)?;
    // `offset` is relative here; `place_tensors` makes it absolute.
    Ok(TensorInfo {
        name,
        dims,
        dtype,
        split: 0,
        offset: rel_offset,
        n_bytes,
    })
}

/// Turn relative offsets absolute and check alignment, bounds, overlaps and unique names.
fn place_tensors(
    tensors: &mut [TensorInfo],
    data_offset: u64,
    alignment: u64,
    file_size: u64,
) -> Result<(), GgufError> {
    let mut names = HashSet::with_capacity(tensors.len());
    for t in tensors.iter() {
        if !names.insert(t.name.as_str()) {
            return Err(GgufError::DuplicateTensor {
                name: t.name.clone(),
            });
        }
    }
    for t in tensors.iter_mut() {
        if t.offset % alignment != 0 {
            return Err(GgufError::MisalignedTensor {
                name: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_size => t.offset = start,
            _ => {
                return Err(GgufError::TensorOutOfBounds {
                    name: t.name.clone(),
                    start: data_offset.saturating_add(t.offset),
                    end: data_offset
                        .saturating_add(t.offset)
                        .saturating_add(t.n_bytes),
                    file_size,
                })
            }
        }
    }
    let mut order: Vec<&TensorInfo> = tensors.iter().collect();
    order.sort_by_key(|t| t.offset);
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        // Bounds were checked above, so `a.offset + a.n_bytes` cannot overflow.
        if b.offset < a.offset + a.n_bytes {
            return Err(GgufError::TensorOverlap {
                first: a.name.clone(),
                first_start: a.offset,
                first_end: a.offset + a.n_bytes,
                second: b.name.clone(),
                second_start: b.offset,
            });
        }
    }
    Ok(())
}
