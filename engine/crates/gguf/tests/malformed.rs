//! Untrusted input: every malformed case gives its own error, never a panic.

mod common;

use common::{small_valid, Raw};
use hmoe_gguf::{parse, GgufError, GgufFile, MAX_ARRAY_NESTING, MAX_METADATA_VALUES};

/// A file with one KV and the given tensors (name, dims, type, relative offset), padded,
/// followed by `data_len` bytes of data.
fn with_tensors(tensors: &[(&str, &[u64], u32, u64)], data_len: usize) -> Vec<u8> {
    let mut r = Raw::header(3, tensors.len() as u64, 1);
    r.kv_u32("k", 1);
    for &(n, d, t, o) in tensors {
        r.tensor(n, d, t, o);
    }
    r.pad(32).zeros(data_len);
    r.0
}

fn err(bytes: &[u8]) -> GgufError {
    match parse(bytes) {
        Ok(h) => panic!("parsed a malformed file: {h:?}"),
        Err(e) => e,
    }
}

#[test]
fn every_truncation_is_an_error() {
    let full = small_valid();
    let h = parse(&full).unwrap();
    let data_end = h
        .tensors
        .iter()
        .map(|t| t.offset + t.n_bytes)
        .max()
        .unwrap() as usize;
    assert!(
        data_end < full.len(),
        "the last tensor is followed by padding"
    );
    for len in 0..full.len() {
        let r = parse(&full[..len]);
        // Only the trailing padding after the last tensor may be cut.
        assert_eq!(r.is_ok(), len >= data_end, "prefix of {len} bytes: {r:?}");
    }
    assert!(matches!(
        err(&full[..10]),
        GgufError::Truncated {
            offset: 8,
            needed: 8,
            available: 2,
            ..
        }
    ));
    assert!(matches!(err(&full[..2]), GgufError::Truncated { .. }));
    assert!(matches!(
        err(&full[..data_end - 1]),
        GgufError::TensorOutOfBounds { .. }
    ));
}

#[test]
fn wrong_magic_and_versions() {
    let mut b = small_valid();
    b[..4].copy_from_slice(b"GGML");
    assert!(matches!(err(&b), GgufError::BadMagic { .. }));
    assert!(matches!(err(b"PK\x03"), GgufError::BadMagic { .. }));
    let e = err(&Raw::header(1, 0, 0).0);
    assert!(
        matches!(e, GgufError::UnsupportedVersion { version: 1, .. }),
        "{e}"
    );
    let e = err(&Raw::header(3u32.swap_bytes(), 0, 0).0);
    assert!(e.to_string().contains("big-endian"), "{e}");
    assert!(matches!(
        err(&Raw::header(4, 0, 0).0),
        GgufError::UnsupportedVersion { version: 4, .. }
    ));
    // Version 2 is accepted.
    assert!(parse(&Raw::header(2, 0, 0).0).is_ok());
}

#[test]
fn huge_lengths_and_counts() {
    let mut r = Raw::header(3, 0, 1);
    r.u64(u64::MAX).zeros(20);
    assert!(matches!(
        err(&r.0),
        GgufError::StringTooLong { len: u64::MAX, .. }
    ));

    let mut r = Raw::header(3, 0, 1);
    r.str("arr").u32(9).u32(4).u64(1 << 61).zeros(16);
    let e = err(&r.0);
    assert!(
        matches!(e, GgufError::CountTooLarge { count, .. } if count == 1 << 61),
        "{e}"
    );
    assert!(e.to_string().contains("\"arr\""), "{e}");

    let mut r = Raw::header(3, 0, 1 << 60);
    r.zeros(76);
    assert!(matches!(
        err(&r.0),
        GgufError::CountTooLarge { offset: 16, .. }
    ));
    let mut r = Raw::header(3, u64::MAX, 0);
    r.zeros(76);
    assert!(matches!(
        err(&r.0),
        GgufError::CountTooLarge { offset: 8, .. }
    ));
}

#[test]
fn bad_metadata_values() {
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(13).u32(0);
    assert!(matches!(
        err(&r.0),
        GgufError::UnknownValueType { type_id: 13, .. }
    ));

    // Arrays nested `levels` deep around one u8.
    let nested = |levels: usize| {
        let mut r = Raw::header(3, 0, 1);
        r.str("deep").u32(9);
        for _ in 1..levels {
            r.u32(9).u64(1);
        }
        r.u32(0).u64(1).u8(7);
        r.0
    };
    assert!(parse(&nested(MAX_ARRAY_NESTING)).is_ok());
    assert!(matches!(
        err(&nested(MAX_ARRAY_NESTING + 1)),
        GgufError::NestingTooDeep { .. }
    ));

    // One value more than the budget (the key's own value counts too): refused before
    // the 16 MiB array is reserved.
    let mut r = Raw::header(3, 0, 1);
    r.str("big")
        .u32(9)
        .u32(0)
        .u64(MAX_METADATA_VALUES)
        .zeros(MAX_METADATA_VALUES as usize);
    assert!(matches!(err(&r.0), GgufError::TooManyValues { ref key, .. } if key == "big"));

    let mut r = Raw::header(3, 0, 1);
    r.str("b").u32(7).u8(2);
    assert!(matches!(err(&r.0), GgufError::BadValue { .. }));

    let mut r = Raw::header(3, 0, 1);
    r.str("s").u32(8).u64(2).u8(0xff).u8(0xfe);
    assert!(matches!(err(&r.0), GgufError::BadUtf8 { offset: 45, .. }));

    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("k", 1).kv_u32("k", 2);
    assert!(matches!(err(&r.0), GgufError::DuplicateKey { .. }));
}

#[test]
fn bad_alignment() {
    for a in [0, 3, 48] {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("general.alignment", a);
        let e = err(&r.0);
        assert!(matches!(e, GgufError::BadAlignment { .. }), "{a}: {e}");
    }
    let mut r = Raw::header(3, 0, 1);
    r.str("general.alignment").u32(8).str("32");
    assert!(matches!(err(&r.0), GgufError::BadAlignment { .. }));
    // 2^63 is a power of two, but puts the data section far past the end of the file.
    let mut r = Raw::header(3, 1, 1);
    r.str("general.alignment")
        .u32(10)
        .u64(1 << 63)
        .tensor("t", &[4], 0, 0)
        .zeros(64);
    assert!(matches!(err(&r.0), GgufError::TensorOutOfBounds { start, .. } if start == 1 << 63));
}

#[test]
fn bad_tensor_infos() {
    let e = err(&with_tensors(&[("t", &[1, 1, 1, 1, 1], 0, 0)], 64));
    assert!(matches!(e, GgufError::BadDimCount { n_dims: 5, .. }), "{e}");
    let e = err(&with_tensors(&[("t", &[], 0, 0)], 64));
    assert!(matches!(e, GgufError::BadDimCount { n_dims: 0, .. }), "{e}");
    let e = err(&with_tensors(&[("t", &[4, 0], 0, 0)], 64));
    assert!(matches!(e, GgufError::ZeroDim { index: 1, .. }), "{e}");
    let e = err(&with_tensors(&[("t", &[1 << 32, 1 << 32, 2], 0, 0)], 64));
    assert!(matches!(e, GgufError::ShapeOverflow { .. }), "{e}");
    let e = err(&with_tensors(&[("t", &[1 << 62], 0, 0)], 64));
    assert!(matches!(e, GgufError::ShapeOverflow { .. }), "{e}");
    let e = err(&with_tensors(&[("t", &[16], 12, 0)], 64));
    assert!(matches!(e, GgufError::PartialBlock { .. }), "{e}");
    let e = err(&with_tensors(&[("odd", &[4], 4, 0)], 64));
    assert!(
        matches!(e, GgufError::UnknownTensorType { id: 4, ref name } if name == "odd"),
        "{e}"
    );
    assert!(e.to_string().contains("\"odd\"") && e.to_string().contains('4'));
    let e = err(&with_tensors(&[("t", &[4], 0, 0), ("t", &[4], 0, 32)], 64));
    assert!(matches!(e, GgufError::DuplicateTensor { .. }), "{e}");
}

#[test]
fn bad_tensor_placement() {
    assert!(parse(&with_tensors(&[("a", &[8], 0, 0), ("b", &[8], 0, 32)], 64)).is_ok());
    let e = err(&with_tensors(&[("a", &[8], 0, 0), ("b", &[8], 0, 32)], 63));
    assert!(
        matches!(e, GgufError::TensorOutOfBounds { ref name, .. } if name == "b"),
        "{e}"
    );
    let e = err(&with_tensors(&[("a", &[8], 0, u64::MAX - 31)], 64));
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e}");
    let e = err(&with_tensors(
        &[("a", &[16], 0, 0), ("b", &[8], 0, 32), ("c", &[8], 0, 32)],
        64,
    ));
    assert!(matches!(e, GgufError::TensorOverlap { .. }), "{e}");
    let e = err(&with_tensors(
        &[("a", &[16], 0, 32), ("b", &[16], 0, 0)],
        128,
    ));
    assert!(
        matches!(e, GgufError::TensorOverlap { ref first, .. } if first == "b"),
        "{e}"
    );
    let e = err(&with_tensors(&[("a", &[8], 0, 4)], 64));
    assert!(
        matches!(e, GgufError::MisalignedTensor { offset: 4, .. }),
        "{e}"
    );
}

#[test]
fn file_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.gguf");
    let e = GgufFile::open(&missing).unwrap_err();
    assert!(
        matches!(e, GgufError::Io { .. }) && e.to_string().contains("absent.gguf"),
        "{e}"
    );

    let bad = dir.path().join("bad.gguf");
    let mut b = small_valid();
    b.truncate(b.len() - 40);
    std::fs::write(&bad, &b).unwrap();
    let e = GgufFile::open(&bad).unwrap_err();
    assert!(e.to_string().contains("bad.gguf"), "{e}");
    assert!(
        matches!(e.root(), GgufError::TensorOutOfBounds { .. }),
        "{e}"
    );

    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        GgufFile::open(&empty).unwrap_err().root(),
        GgufError::Truncated { .. }
    ));
}
