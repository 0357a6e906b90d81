//! Tensor descriptors and the shape/size checks shared by the reader and the writer.

use crate::{GgmlDType, GgufError};

/// Most dimensions a ggml tensor may have (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;

/// One tensor of a (possibly split) GGUF file, already validated against the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The llama.cpp tensor name, e.g. `blk.0.ffn_gate_exps.weight`.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the innermost (row length).
    pub dims: Vec<u64>,
    /// Element type.
    pub dtype: GgmlDType,
    /// Which file of a split model holds the data (0 for single files).
    pub split: usize,
    /// Absolute byte offset of the data in its file.
    pub offset: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements (the product of the dims; cannot overflow, checked at open).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Whether the dims equal `expected` (ggml order, innermost first).
    pub fn shape_matches(&self, expected: &[u64]) -> bool {
        self.dims == expected
    }

    /// Like [`TensorInfo::shape_matches`] but an error naming the tensor and both shapes.
    pub fn expect_shape(&self, expected: &[u64]) -> Result<(), GgufError> {
        if self.shape_matches(expected) {
            Ok(())
        } else {
            Err(GgufError::ShapeMismatch {
                name: self.name.clone(),
                expected: expected.to_vec(),
                actual: self.dims.clone(),
            })
        }
    }

    /// Number of rows (product of all dims but the first).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
}

/// Validate a tensor's dims against its type and return its byte size.
///
/// Checks: 1..=4 dims, each ≥ 1, row length a whole number of blocks, element count and
/// byte size without overflow (and addressable on this machine).
pub(crate) fn checked_n_bytes(
    name: &str,
    dims: &[u64],
    dtype: GgmlDType,
) -> Result<u64, GgufError> {
    if dims.is_empty() || dims.len() > MAX_DIMS as usize {
        return Err(GgufError::BadDimCount {
            name: name.to_owned(),
            n_dims: dims.len() as u32,
            max: MAX_DIMS,
        });
    }
    if let Some(index) = dims.iter().position(|&d| d == 0) {
        return Err(GgufError::ZeroDim {
            name: name.to_owned(),
            index,
            dims: dims.to_vec(),
        });
    }
    let overflow = || GgufError::ShapeOverflow {
        name: name.to_owned(),
        dims: dims.to_vec(),
        dtype: dtype.name().to_owned(),
    };
    let n = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    let block = dtype.block_size() as u64;
    if dims[0] % block != 0 {
        return Err(GgufError::PartialBlock {
            name: name.to_owned(),
            row: dims[0],
            dtype: dtype.name().to_owned(),
            block,
        });
    }
    let bytes = dtype.bytes_for(n).ok_or_else(overflow)?;
    // Sizes must be addressable so slices can be taken without truncation.
    usize::try_from(bytes).map_err(|_| overflow())?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_of_common_types() {
        assert_eq!(
            checked_n_bytes("t", &[256, 3], GgmlDType::Q4K).unwrap(),
            3 * 144
        );
        assert_eq!(
            checked_n_bytes("t", &[4, 2, 2], GgmlDType::F32).unwrap(),
            64
        );
        assert_eq!(checked_n_bytes("t", &[64], GgmlDType::Q8_0).unwrap(), 68);
    }

    #[test]
    fn rejects_bad_shapes() {
        let e = checked_n_bytes("w", &[1, 1, 1, 1, 1], GgmlDType::F32).unwrap_err();
        assert!(matches!(e, GgufError::BadDimCount { n_dims: 5, .. }), "{e}");
        let e = checked_n_bytes("w", &[4, 0], GgmlDType::F32).unwrap_err();
        assert!(matches!(e, GgufError::ZeroDim { index: 1, .. }), "{e}");
        let e = checked_n_bytes("w", &[1 << 40, 1 << 40], GgmlDType::F32).unwrap_err();
        assert!(matches!(e, GgufError::ShapeOverflow { .. }), "{e}");
        // Element count fits, byte size does not.
        let e = checked_n_bytes("w", &[1 << 62], GgmlDType::F32).unwrap_err();
        assert!(matches!(e, GgufError::ShapeOverflow { .. }), "{e}");
        let e = checked_n_bytes("w", &[128, 2], GgmlDType::Q4K).unwrap_err();
        assert!(matches!(e, GgufError::PartialBlock { row: 128, .. }), "{e}");
        assert!(e.to_string().contains("\"w\""));
    }

    #[test]
    fn shape_helpers() {
        let t = TensorInfo {
            name: "x".into(),
            dims: vec![8, 3],
            dtype: GgmlDType::F32,
            split: 0,
            offset: 0,
            n_bytes: 96,
        };
        assert_eq!(t.n_elements(), 24);
        assert_eq!(t.n_rows(), 3);
        assert!(t.shape_matches(&[8, 3]));
        assert!(t
            .expect_shape(&[3, 8])
            .unwrap_err()
            .to_string()
            .contains("\"x\""));
    }
}
