//! Runs op 0 (linear) of tests/emu/dense_harness.cpp: `y[t][r] = w_r · x[t]` in the
//! emulator, through whichever kernel the harness picks for `n` tokens (as src/gpu/gemm.rs).

use hmoe_cuda::KernelType;
use std::path::Path;
use std::process::Command;

/// `y` (`n × rows`) of the emulated linear call on raw weights `wq` (`rows × cols` of `t`).
pub fn run_linear(
    exe: &Path,
    dir: &Path,
    t: KernelType,
    wq: &[u8],
    (rows, cols): (usize, usize),
    x: &[f32],
) -> Vec<f32> {
    let n = x.len() / cols;
    let code = KernelType::ALL.iter().position(|&k| k == t).unwrap() as u32;
    let mut input = Vec::new();
    for v in [0, code, rows as u32, cols as u32, n as u32, wq.len() as u32] {
        input.extend_from_slice(&v.to_le_bytes());
    }
    input.extend_from_slice(wq);
    x.iter()
        .for_each(|v| input.extend_from_slice(&v.to_le_bytes()));
    let (i, o) = (dir.join("lin.in"), dir.join("lin.out"));
    std::fs::write(&i, &input).unwrap();
    let st = Command::new(exe).arg(&i).arg(&o).output().unwrap();
    assert!(
        st.status.success(),
        "harness: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    std::fs::read(&o)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
