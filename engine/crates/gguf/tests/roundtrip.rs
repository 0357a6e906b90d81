//! Writer → reader round trips: every metadata type, several tensor types, chunked writes.

mod common;

use common::pattern;
use hmoe_gguf::{parse, GgmlDType, GgufError, GgufFile, GgufWriter, MetaValue, TensorDesc};

fn all_values() -> Vec<(String, MetaValue)> {
    let s = |x: &str| MetaValue::String(x.into());
    vec![
        ("v.u8".into(), MetaValue::U8(200)),
        ("v.i8".into(), MetaValue::I8(-100)),
        ("v.u16".into(), MetaValue::U16(60000)),
        ("v.i16".into(), MetaValue::I16(-30000)),
        ("v.u32".into(), MetaValue::U32(4_000_000_000)),
        ("v.i32".into(), MetaValue::I32(-2_000_000_000)),
        ("v.f32".into(), MetaValue::F32(1e-6)),
        ("v.bool".into(), MetaValue::Bool(true)),
        ("v.string".into(), s("héllo 世界 🙂")),
        ("v.u64".into(), MetaValue::U64(u64::MAX)),
        ("v.i64".into(), MetaValue::I64(i64::MIN)),
        ("v.f64".into(), MetaValue::F64(1_000_000.5)),
        ("v.empty".into(), MetaValue::Array(vec![])),
        (
            "v.strs".into(),
            MetaValue::Array(vec![s(""), s("Ġthe"), s("<|im_end|>")]),
        ),
        (
            "v.i32s".into(),
            MetaValue::Array(vec![MetaValue::I32(1), MetaValue::I32(-3)]),
        ),
        (
            "v.nested".into(),
            MetaValue::Array(vec![
                MetaValue::Array(vec![MetaValue::U8(1)]),
                MetaValue::Array(vec![s("x")]),
            ]),
        ),
        ("general.architecture".into(), s("qwen3moe")),
        ("general.alignment".into(), MetaValue::U32(64)),
    ]
}

fn tensors() -> Vec<TensorDesc> {
    vec![
        TensorDesc::new("f32", &[3, 5], GgmlDType::F32),
        TensorDesc::new("f16", &[7], GgmlDType::F16),
        TensorDesc::new("bf16", &[2, 2, 2, 3], GgmlDType::BF16),
        TensorDesc::new("q8_0", &[64, 3], GgmlDType::Q8_0),
        TensorDesc::new("q4_k", &[256, 2], GgmlDType::Q4K),
        TensorDesc::new("q5_k", &[256], GgmlDType::Q5K),
        TensorDesc::new("q6_k", &[512, 1, 2], GgmlDType::Q6K),
        TensorDesc::new("q4_0", &[32], GgmlDType::Q4_0),
    ]
}

fn write_all(chunk: usize) -> Vec<u8> {
    let descs = tensors();
    let mut w = GgufWriter::new(Vec::new(), all_values(), descs.clone()).unwrap();
    for (i, t) in descs.iter().enumerate() {
        assert_eq!(w.next_tensor(), Some(t.name.as_str()));
        let data = pattern(t.n_bytes().unwrap() as usize, i as u8);
        for c in data.chunks(chunk) {
            w.write_chunk(c).unwrap();
        }
    }
    assert_eq!(w.next_tensor(), None);
    w.finish().unwrap()
}

#[test]
fn every_value_type_round_trips() {
    let bytes = write_all(usize::MAX);
    let h = parse(&bytes).unwrap();
    assert_eq!(h.version, 3);
    assert_eq!(h.alignment, 64);
    assert_eq!(h.metadata.len(), all_values().len());
    for (k, v) in all_values() {
        assert_eq!(h.metadata.get(&k), Some(&v), "{k}");
    }
    assert_eq!(h.data_offset % 64, 0);
    for (i, (t, d)) in h.tensors.iter().zip(tensors()).enumerate() {
        assert_eq!(
            (t.name.as_str(), &t.dims, t.dtype),
            (d.name.as_str(), &d.dims, d.dtype)
        );
        assert_eq!(t.offset % 64, 0);
        let data = &bytes[t.offset as usize..(t.offset + t.n_bytes) as usize];
        assert_eq!(data, pattern(t.n_bytes as usize, i as u8), "{}", t.name);
    }
}

#[test]
fn chunked_writes_give_identical_files() {
    let whole = write_all(usize::MAX);
    assert_eq!(write_all(1), whole);
    assert_eq!(write_all(7), whole);
}

#[test]
fn file_reader_and_typed_getters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, write_all(100)).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.architecture().unwrap(), "qwen3moe");
    assert_eq!(f.get_u64("v.u8").unwrap(), 200);
    assert_eq!(f.get_u64("v.u64").unwrap(), u64::MAX);
    assert_eq!(f.get_f32("v.u16").unwrap(), 60000.0);
    assert_eq!(f.get_f64("v.f64").unwrap(), 1_000_000.5);
    assert!(f.get_bool("v.bool").unwrap());
    assert_eq!(
        f.get_str_array("v.strs").unwrap(),
        ["", "Ġthe", "<|im_end|>"]
    );
    assert_eq!(f.get_array("v.i32s").unwrap().len(), 2);
    assert_eq!(f.get_u64_opt("absent").unwrap(), None);
    assert_eq!(f.get_u64_opt("v.u16").unwrap(), Some(60000));
    assert!(
        f.get_u64_opt("v.string").is_err(),
        "present with the wrong type"
    );
    assert_eq!(f.get_usize("v.u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_f32_opt("v.f32").unwrap(), Some(1e-6));
    assert_eq!(f.get_bool_opt("v.bool").unwrap(), Some(true));
    assert_eq!(f.get_str_opt("v.string").unwrap(), Some("héllo 世界 🙂"));
    assert_eq!(f.get("v.i64").and_then(MetaValue::as_i64), Some(i64::MIN));
    assert_eq!(
        f.get("v.u64").and_then(MetaValue::as_i64),
        None,
        "u64::MAX does not fit"
    );
    assert_eq!((f.version(), f.alignment()), (3, 64));
    let e = f.get_u64("v.i8").unwrap_err();
    assert!(
        e.to_string().contains("v.i8") && e.to_string().contains("i8 -100"),
        "{e}"
    );
    assert!(matches!(
        f.get_str("v.u8").unwrap_err(),
        GgufError::WrongType { .. }
    ));
    assert!(matches!(
        f.get_str("nope").unwrap_err(),
        GgufError::MissingKey { .. }
    ));
    assert!(matches!(
        f.get_str_array("v.i32s").unwrap_err(),
        GgufError::WrongType { .. }
    ));
    assert_eq!(f.n_tensors(), tensors().len());
    for (i, t) in f.tensors().enumerate() {
        assert_eq!(f.tensor_data(t), pattern(t.n_bytes as usize, i as u8));
    }
    let q = f.require_tensor("q6_k").unwrap();
    assert!(q.shape_matches(&[512, 1, 2]));
    assert_eq!(q.n_elements(), 1024);
    assert_eq!(q.n_bytes, 4 * 210);
    let e = f.require_tensor("blk.0.attn_q.weight").unwrap_err();
    assert!(e.to_string().contains("blk.0.attn_q.weight"));
    assert_eq!(f.file_size_total(), std::fs::metadata(&path).unwrap().len());
    assert_eq!(f.paths(), [path]);
}

#[test]
fn writer_rejects_bad_input() {
    let w = |meta, ts| GgufWriter::new(Vec::new(), meta, ts).err();
    let t = |n: &str| TensorDesc::new(n, &[4], GgmlDType::F32);
    let dup = vec![
        ("k".into(), MetaValue::U8(1)),
        ("k".into(), MetaValue::U8(2)),
    ];
    assert!(matches!(
        w(dup, vec![]),
        Some(GgufError::DuplicateKey { .. })
    ));
    assert!(matches!(
        w(vec![], vec![t("x"), t("x")]),
        Some(GgufError::DuplicateTensor { .. })
    ));
    let mixed = vec![(
        "k".into(),
        MetaValue::Array(vec![MetaValue::U8(1), MetaValue::I8(2)]),
    )];
    assert!(matches!(w(mixed, vec![]), Some(GgufError::BadValue { .. })));
    let align = vec![("general.alignment".into(), MetaValue::U32(3))];
    assert!(matches!(
        w(align, vec![]),
        Some(GgufError::BadAlignment { .. })
    ));
    let partial = vec![TensorDesc::new("q", &[100], GgmlDType::Q4K)];
    assert!(matches!(
        w(vec![], partial),
        Some(GgufError::PartialBlock { .. })
    ));

    let mut ok = GgufWriter::new(Vec::new(), vec![], vec![t("x"), t("y")]).unwrap();
    assert!(ok.write_tensor("y", &[0; 16]).is_err(), "out of order");
    assert!(ok.write_tensor("x", &[0; 15]).is_err(), "short");
    assert!(ok.write_chunk(&[0; 17]).is_err(), "overrun");
    ok.write_chunk(&[0; 16]).unwrap();
    let e = ok.finish().unwrap_err();
    assert!(e.to_string().contains("\"y\""), "{e}");
}
