//! Files written by llama.cpp's Python writer (gguf-py 0.19.0, see
//! fixtures/make_gguf_py.py) read correctly: an independent check of the format.

use std::path::{Path, PathBuf};

use hmoe_gguf::{GgmlDType, GgufFile};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn check(f: &GgufFile) {
    assert_eq!(f.version(), 3);
    assert_eq!(f.architecture().unwrap(), "qwen3moe");
    assert_eq!(f.get_u64("test.u32").unwrap(), 7);
    assert_eq!(f.get("test.i32").and_then(|v| v.as_i64()), Some(-7));
    assert_eq!(f.get_f32("test.f32").unwrap(), 0.5);
    assert!(f.get_bool("test.bool").unwrap());
    assert_eq!(f.get_str("test.string").unwrap(), "héllo");
    assert_eq!(f.get_u64("test.u64").unwrap(), 1 << 40);
    assert_eq!(
        f.get_str_array("test.strs").unwrap(),
        ["a", "Ġb", "<|im_end|>"]
    );
    assert_eq!(f.get_array("test.ints").unwrap().len(), 3);
    assert_eq!(f.get_u64("qwen3moe.block_count").unwrap(), 2);
    assert_eq!(f.get_u64("qwen3moe.context_length").unwrap(), 4096);

    let t = f.require_tensor("f32").unwrap();
    assert_eq!((t.dims.as_slice(), t.dtype), (&[4, 3][..], GgmlDType::F32));
    let values: Vec<f32> = f
        .tensor_data(t)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(values, (0..12).map(|i| i as f32).collect::<Vec<_>>());
    let t = f.require_tensor("f16").unwrap();
    assert_eq!(
        (t.dims.as_slice(), t.dtype, t.n_bytes),
        (&[8][..], GgmlDType::F16, 16)
    );
    // f16 7.0 = 0x4700.
    assert_eq!(&f.tensor_data(t)[14..], &[0x00, 0x47]);
    let t = f.require_tensor("q8_0").unwrap();
    assert_eq!(
        (t.dims.as_slice(), t.dtype, t.n_bytes),
        (&[32, 2][..], GgmlDType::Q8_0, 68)
    );
    // The first block's last quant is round(3.875 / d) = 127 by construction of Q8_0.
    assert_eq!(f.tensor_data(t)[33], 127);
}

#[test]
fn reads_gguf_py_single_file() {
    let f = GgufFile::open(&fixture("gguf-py-single.gguf")).unwrap();
    check(&f);
    assert!(f.tensors().all(|t| t.split == 0));
}

#[test]
fn reads_gguf_py_split_files() {
    let single = GgufFile::open(&fixture("gguf-py-single.gguf")).unwrap();
    for part in 1..=3 {
        let f =
            GgufFile::open(&fixture(&format!("gguf-py-split-0000{part}-of-00003.gguf"))).unwrap();
        check(&f);
        assert_eq!(f.paths().len(), 3);
        let splits: Vec<usize> = f.tensors().map(|t| t.split).collect();
        assert_eq!(splits, [0, 1, 2]);
        for t in single.tensors() {
            assert_eq!(
                f.tensor_bytes(&t.name).unwrap(),
                single.tensor_data(t),
                "{}",
                t.name
            );
        }
    }
}
