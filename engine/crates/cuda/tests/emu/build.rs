//! Compiles one emulator harness (tests/emu/*.cpp) with g++; shared by the emulator tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `tests/emu/<name>.cpp` into `dir/<name>` and returns the executable.
#[allow(dead_code)] // each test binary includes this file and uses one of the two
pub fn compile_harness(dir: &Path, name: &str) -> PathBuf {
    compile_harness_with(dir, name, &[])
}

/// As [`compile_harness`], with `-D<define>` for each of `defines` (kernel tuning knobs);
/// the executable is named after the defines.
#[allow(dead_code)]
pub fn compile_harness_with(dir: &Path, name: &str, defines: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/emu/{name}.cpp"));
    let tag: String = defines
        .iter()
        .map(|d| format!("_{}", d.replace('=', "")))
        .collect();
    let exe = dir.join(format!("{name}{tag}"));
    let out = Command::new("g++")
        .args(["-std=c++20", "-O2", "-pthread", "-Wall", "-Werror"])
        .args(defines.iter().map(|d| format!("-D{d}")))
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("g++ must be installed to emulate the kernels");
    assert!(
        out.status.success(),
        "g++: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Runs harness `exe` on `input` (written to `dir/<tag>.in`) and returns what it wrote to
/// `dir/<tag>.out`, as little-endian f32s; a failing harness fails the test with its stderr.
#[allow(dead_code)]
pub fn run_harness(exe: &Path, dir: &Path, tag: &str, input: &[u8]) -> Vec<f32> {
    let (i, o) = (
        dir.join(format!("{tag}.in")),
        dir.join(format!("{tag}.out")),
    );
    std::fs::write(&i, input).expect("write harness input");
    let st = Command::new(exe)
        .arg(&i)
        .arg(&o)
        .output()
        .expect("run harness");
    assert!(
        st.status.success(),
        "harness: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    std::fs::read(&o)
        .expect("read harness output")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect()
}
