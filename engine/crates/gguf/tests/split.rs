//! Split models (`-0000k-of-0000N.gguf`): written by `SplitWriter`, read as one file.

mod common;

use std::path::Path;

use common::pattern;
use hmoe_gguf::{
    split_keys, split_path, GgmlDType, GgufError, GgufFile, GgufWriter, MetaValue, SplitWriter,
    TensorDesc,
};

fn descs() -> Vec<TensorDesc> {
    (0..7)
        .map(|i| TensorDesc::new(format!("blk.{i}.w"), &[64, 1 + i as u64], GgmlDType::Q8_0))
        .collect()
}

fn meta() -> Vec<(String, MetaValue)> {
    vec![
        (
            "general.architecture".into(),
            MetaValue::String("qwen3moe".into()),
        ),
        ("qwen3moe.block_count".into(), MetaValue::U32(7)),
    ]
}

fn write_split(prefix: &Path, n_parts: usize) -> Vec<std::path::PathBuf> {
    let mut w = SplitWriter::create(prefix, meta(), descs(), n_parts).unwrap();
    for (i, t) in descs().iter().enumerate() {
        let data = pattern(t.n_bytes().unwrap() as usize, i as u8);
        // Chunked, to cross the part boundary inside the streaming API.
        for c in data.chunks(50) {
            w.write_chunk(c).unwrap();
        }
    }
    w.finish().unwrap()
}

/// Write one GGUF file with the given metadata and tensors filled with pattern data.
fn write_part(path: &Path, meta: Vec<(String, MetaValue)>, tensors: Vec<TensorDesc>) {
    let mut w = GgufWriter::create(path, meta, tensors.clone()).unwrap();
    for (i, t) in tensors.iter().enumerate() {
        w.write_tensor(&t.name, &pattern(t.n_bytes().unwrap() as usize, i as u8))
            .unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn three_parts_read_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("model-Q8_0");
    let paths = write_split(&prefix, 3);
    assert_eq!(paths[2], dir.path().join("model-Q8_0-00003-of-00003.gguf"));
    for p in &paths {
        let f = GgufFile::open(p).unwrap();
        assert_eq!(f.paths(), paths.as_slice());
        assert_eq!(f.architecture().unwrap(), "qwen3moe");
        assert_eq!(f.get_u64("split.count").unwrap(), 3);
        let names: Vec<_> = f.tensors().map(|t| t.name.clone()).collect();
        let expected: Vec<_> = descs().into_iter().map(|d| d.name).collect();
        assert_eq!(names, expected);
        let splits: Vec<_> = f.tensors().map(|t| t.split).collect();
        assert_eq!(splits.first(), Some(&0));
        assert_eq!(splits.last(), Some(&2));
        assert!(splits.windows(2).all(|w| w[0] <= w[1]));
        for (i, t) in f.tensors().enumerate() {
            assert_eq!(
                f.tensor_data(t),
                pattern(t.n_bytes as usize, i as u8),
                "{}",
                t.name
            );
        }
        let sizes: u64 = paths
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        assert_eq!(f.file_size_total(), sizes);
    }
    // Later parts carry only the split keys.
    let last = hmoe_gguf::parse(&std::fs::read(&paths[2]).unwrap()).unwrap();
    assert_eq!(last.metadata.len(), 3);
}

#[test]
fn single_part_split_name() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_split(&dir.path().join("m"), 1);
    assert_eq!(GgufFile::open(&paths[0]).unwrap().n_tensors(), 7);
}

#[test]
fn missing_part_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_split(&dir.path().join("m"), 3);
    std::fs::remove_file(&paths[1]).unwrap();
    let e = GgufFile::open(&paths[0]).unwrap_err();
    assert!(
        matches!(e, GgufError::MissingSplitPart { ref path } if *path == paths[1]),
        "{e}"
    );
    assert!(e.to_string().contains("m-00002-of-00003.gguf"), "{e}");
}

#[test]
fn parts_that_disagree() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("m");
    let t = |n: &str| TensorDesc::new(n, &[8], GgmlDType::F32);
    let with = |keys: Vec<(String, MetaValue)>| [meta(), keys].concat();

    // Part 2 claims to be part 3.
    write_part(
        &split_path(&prefix, 0, 2),
        with(split_keys(0, 2, 2)),
        vec![t("a")],
    );
    write_part(
        &split_path(&prefix, 1, 2),
        split_keys(2, 2, 2),
        vec![t("b")],
    );
    let e = GgufFile::open(&split_path(&prefix, 0, 2)).unwrap_err();
    assert!(
        matches!(e, GgufError::SplitMismatch { .. }) && e.to_string().contains("split.no"),
        "{e}"
    );

    // Tensor totals do not add up.
    write_part(
        &split_path(&prefix, 1, 2),
        split_keys(1, 2, 3),
        vec![t("b")],
    );
    let e = GgufFile::open(&split_path(&prefix, 0, 2)).unwrap_err();
    assert!(matches!(e, GgufError::SplitMismatch { .. }), "{e}");
    write_part(
        &split_path(&prefix, 0, 2),
        with(split_keys(0, 2, 3)),
        vec![t("a")],
    );
    let e = GgufFile::open(&split_path(&prefix, 0, 2)).unwrap_err();
    assert!(e.to_string().contains("split.tensors.count"), "{e}");

    // The same tensor in two parts.
    write_part(
        &split_path(&prefix, 0, 2),
        with(split_keys(0, 2, 2)),
        vec![t("a")],
    );
    write_part(
        &split_path(&prefix, 1, 2),
        split_keys(1, 2, 2),
        vec![t("a")],
    );
    let e = GgufFile::open(&split_path(&prefix, 1, 2)).unwrap_err();
    assert!(matches!(e.root(), GgufError::DuplicateTensor { .. }), "{e}");

    // A part without split keys.
    write_part(&split_path(&prefix, 1, 2), vec![], vec![t("b")]);
    let e = GgufFile::open(&split_path(&prefix, 0, 2)).unwrap_err();
    assert!(e.to_string().contains("split.no"), "{e}");

    // A split part renamed to a plain name.
    let plain = dir.path().join("renamed.gguf");
    std::fs::copy(split_path(&prefix, 0, 2), &plain).unwrap();
    let e = GgufFile::open(&plain).unwrap_err();
    assert!(matches!(e, GgufError::SplitMismatch { .. }), "{e}");
}

#[test]
fn split_writer_rejects_bad_plans() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m");
    assert!(SplitWriter::create(&p, meta(), descs(), 0).is_err());
    assert!(SplitWriter::create(&p, meta(), descs(), 8).is_err());
    let mut w = SplitWriter::create(&p, meta(), descs(), 2).unwrap();
    w.write_tensor("blk.0.w", &pattern(68, 0)).unwrap();
    assert!(w.finish().is_err(), "unwritten tensors");
}
