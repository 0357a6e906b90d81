//! Write a few small valid GGUF files (made by the writer) as a fuzzing seed corpus.
//! Usage: `cargo run -p hmoe-gguf --example fuzz_seeds -- OUT_DIR`

use std::path::PathBuf;

use hmoe_gguf::{split_keys, GgmlDType, GgufError, GgufWriter, MetaValue, TensorDesc};

fn write(
    path: PathBuf,
    meta: Vec<(String, MetaValue)>,
    tensors: Vec<TensorDesc>,
) -> Result<(), GgufError> {
    let mut w = GgufWriter::create(&path, meta, tensors.clone())?;
    for (i, t) in tensors.iter().enumerate() {
        let n = t.n_bytes()? as usize;
        let data: Vec<u8> = (0..n).map(|j| (i * 7 + j) as u8).collect();
        w.write_tensor(&t.name, &data)?;
    }
    w.finish()?;
    Ok(())
}

fn main() -> Result<(), GgufError> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "seeds".into()));
    std::fs::create_dir_all(&out).map_err(|source| GgufError::Io {
        path: out.clone(),
        source,
    })?;
    let s = |x: &str| MetaValue::String(x.into());
    let every_type = vec![
        ("general.architecture".into(), s("qwen3moe")),
        ("a.u8".into(), MetaValue::U8(1)),
        ("a.i8".into(), MetaValue::I8(-1)),
        ("a.u16".into(), MetaValue::U16(2)),
        ("a.i16".into(), MetaValue::I16(-2)),
        ("a.u32".into(), MetaValue::U32(3)),
        ("a.i32".into(), MetaValue::I32(-3)),
        ("a.f32".into(), MetaValue::F32(0.5)),
        ("a.bool".into(), MetaValue::Bool(true)),
        ("a.u64".into(), MetaValue::U64(4)),
        ("a.i64".into(), MetaValue::I64(-4)),
        ("a.f64".into(), MetaValue::F64(0.25)),
        ("a.strs".into(), MetaValue::Array(vec![s("a"), s("Ġb")])),
        (
            "a.nested".into(),
            MetaValue::Array(vec![MetaValue::Array(vec![MetaValue::U8(1)])]),
        ),
    ];
    let tensors = vec![
        TensorDesc::new("f32", &[4, 2], GgmlDType::F32),
        TensorDesc::new("q8_0", &[32], GgmlDType::Q8_0),
        TensorDesc::new("bf16", &[2, 1, 1, 2], GgmlDType::BF16),
    ];
    write(out.join("every-type.gguf"), every_type, tensors)?;
    let aligned = vec![("general.alignment".into(), MetaValue::U32(64))];
    write(
        out.join("align64.gguf"),
        aligned,
        vec![TensorDesc::new("q4_k", &[256], GgmlDType::Q4K)],
    )?;
    write(
        out.join("split-part.gguf"),
        split_keys(1, 3, 5),
        vec![TensorDesc::new("f16", &[3], GgmlDType::F16)],
    )?;
    write(out.join("empty.gguf"), vec![], vec![])?;
    Ok(())
}
