//! Compiles one emulator harness (tests/emu/*.cpp) with g++; shared by the emulator tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `tests/emu/<name>.cpp` into `dir/<name>` and returns the executable.
pub fn compile_harness(dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/emu/{name}.cpp"));
    let exe = dir.join(name);
    let out = Command::new("g++")
        .args(["-std=c++20", "-O2", "-pthread", "-Wall", "-Werror", "-o"])
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
