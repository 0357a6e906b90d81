//! Bad input gives a clear error that names the problem and a non-zero exit from the
//! CLI — never a panic. Crafted files are made from the committed F32 fixture.

use hmoe_engine::gguf::{GgmlDType, GgufFile, GgufWriter, MetaValue, TensorDesc};
use std::path::{Path, PathBuf};
use std::process::Command;

fn hmoe(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hmoe"))
        .args(args)
        .output()
        .expect("run hmoe");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "hmoe panicked: {text}");
    (out.status.success(), text)
}

fn expect_error(args: &[&str], needle: &str) {
    let (ok, text) = hmoe(args);
    assert!(!ok, "expected failure for {args:?}, got success: {text}");
    assert!(
        text.contains(needle),
        "error for {args:?} should mention `{needle}`: {text}"
    );
}

fn source() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-a.gguf")
}

/// Rewrites the fixture with edits to its metadata and tensor list.
fn rewrite(
    dst: &Path,
    edit_meta: impl Fn(&mut Vec<(String, MetaValue)>),
    edit_tensor: impl Fn(&str, GgmlDType, &[u64]) -> Option<(GgmlDType, Vec<u64>)>,
) {
    let src = GgufFile::open(&source()).expect("fixture");
    let mut meta: Vec<(String, MetaValue)> = src
        .metadata()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    edit_meta(&mut meta);
    let mut plan = Vec::new();
    for t in src.tensors() {
        if let Some((dt, dims)) = edit_tensor(&t.name, t.dtype, &t.dims) {
            plan.push((t.clone(), dt, dims));
        }
    }
    let descs = plan
        .iter()
        .map(|(t, dt, d)| TensorDesc::new(t.name.clone(), d, *dt))
        .collect();
    let mut w = GgufWriter::create(dst, meta, descs).expect("writer");
    for (t, dt, dims) in &plan {
        if *dt == t.dtype && *dims == t.dims {
            w.write_tensor(&t.name, src.tensor_data(t)).expect("write");
        } else {
            let n = dims.iter().product::<u64>();
            let bytes = vec![0u8; dt.bytes_for(n).expect("whole blocks") as usize];
            w.write_tensor(&t.name, &bytes).expect("write");
        }
    }
    w.finish().expect("finish");
}

fn set(meta: &mut [(String, MetaValue)], key: &str, v: MetaValue) {
    for (k, val) in meta.iter_mut() {
        if k == key {
            *val = v.clone();
        }
    }
}

#[test]
fn missing_file_is_named() {
    expect_error(
        &["info", "/nonexistent/model.gguf"],
        "/nonexistent/model.gguf",
    );
}

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let bytes = std::fs::read(source()).expect("fixture");
    for cut in [10, 200, bytes.len() / 2, bytes.len() - 1] {
        let p = dir.path().join(format!("cut{cut}.gguf"));
        std::fs::write(&p, &bytes[..cut]).expect("write");
        let (ok, text) = hmoe(&["info", p.to_str().expect("utf8")]);
        assert!(!ok, "truncated at {cut}: {text}");
        let t = text.to_lowercase();
        assert!(
            [
                "trunc",
                "end of",
                "out of bounds",
                "outside the file",
                "cannot fit",
                "remain"
            ]
            .iter()
            .any(|w| t.contains(w)),
            "cut {cut}: {text}"
        );
    }
}

#[test]
fn wrong_magic() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut bytes = std::fs::read(source()).expect("fixture");
    bytes[..4].copy_from_slice(b"GGML");
    let p = dir.path().join("magic.gguf");
    std::fs::write(&p, &bytes).expect("write");
    expect_error(&["info", p.to_str().expect("utf8")], "magic");
}

#[test]
fn unknown_architecture() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("arch.gguf");
    rewrite(
        &p,
        |m| set(m, "general.architecture", MetaValue::String("llama".into())),
        |_, d, s| Some((d, s.to_vec())),
    );
    expect_error(
        &["info", p.to_str().expect("utf8")],
        "unsupported architecture `llama`",
    );
}

#[test]
fn missing_tensor() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("missing.gguf");
    rewrite(
        &p,
        |_| {},
        |n, d, s| (n != "blk.1.attn_q.weight").then(|| (d, s.to_vec())),
    );
    let ps = p.to_str().expect("utf8");
    expect_error(
        &[
            "generate", "--model", ps, "--prompt", "x", "--device", "cpu",
        ],
        "blk.1.attn_q.weight",
    );
    expect_error(
        &[
            "logits",
            "--model",
            ps,
            "--tokens",
            "1 2",
            "--out",
            "/dev/null",
        ],
        "blk.1.attn_q.weight",
    );
}

#[test]
fn shape_disagrees_with_metadata() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("shape.gguf");
    rewrite(
        &p,
        |m| set(m, "qwen3moe.expert_feed_forward_length", MetaValue::U32(64)),
        |_, d, s| Some((d, s.to_vec())),
    );
    expect_error(
        &[
            "logits",
            "--model",
            p.to_str().expect("utf8"),
            "--tokens",
            "1",
            "--out",
            "/dev/null",
        ],
        "ffn_gate_exps",
    );
}

#[test]
fn unsupported_tensor_type() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("q4_0.gguf");
    rewrite(
        &p,
        |_| {},
        |n, d, s| {
            Some((
                if n == "blk.0.attn_q.weight" {
                    GgmlDType::Q4_0
                } else {
                    d
                },
                s.to_vec(),
            ))
        },
    );
    expect_error(
        &[
            "logits",
            "--model",
            p.to_str().expect("utf8"),
            "--tokens",
            "1",
            "--out",
            "/dev/null",
        ],
        "q4_0",
    );
}

#[test]
fn empty_prompt_and_bad_tokens() {
    let m = source();
    let ms = m.to_str().expect("utf8");
    expect_error(
        &[
            "logits",
            "--model",
            ms,
            "--tokens",
            "",
            "--out",
            "/dev/null",
        ],
        "empty",
    );
    expect_error(
        &[
            "logits",
            "--model",
            ms,
            "--tokens",
            "1 99999",
            "--out",
            "/dev/null",
        ],
        "99999",
    );
    expect_error(
        &[
            "logits",
            "--model",
            ms,
            "--tokens",
            "1 x",
            "--out",
            "/dev/null",
        ],
        "`x` is not a token id",
    );
}

#[test]
fn prompt_longer_than_context() {
    let m = source();
    let ms = m.to_str().expect("utf8");
    let tokens = (0..20).map(|i| i.to_string()).collect::<Vec<_>>().join(" ");
    expect_error(
        &[
            "logits",
            "--model",
            ms,
            "--tokens",
            &tokens,
            "--ctx",
            "8",
            "--out",
            "/dev/null",
        ],
        "context",
    );
}

#[test]
fn text_prompt_without_tokenizer_is_explained() {
    let m = source();
    expect_error(
        &[
            "generate",
            "--model",
            m.to_str().expect("utf8"),
            "--prompt",
            "hi",
        ],
        "no tokenizer",
    );
}

/// Regression: `hmoe info model.gguf | head -8` panicked ("failed printing to stdout:
/// Broken pipe") when the reader closed the pipe before the output ended.
#[cfg(unix)]
#[test]
fn a_reader_that_closes_the_pipe_early_is_no_panic() {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_hmoe"))
        .args(["info", source().to_str().expect("utf-8 path")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hmoe");
    // Close the read end at once: every write of the listing meets a closed pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait for hmoe");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "hmoe panicked: {err}");
}
