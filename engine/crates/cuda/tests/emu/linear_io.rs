//! Runs op 0 (linear) of tests/emu/dense_harness.cpp: `y[t][r] = w_r · x[t]` in the
//! emulator, through whichever kernel the harness picks for `n` tokens (as src/gpu/gemm.rs).

use hmoe_cuda::KernelType;
use std::path::Path;

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
    crate::emu_build::run_harness(exe, dir, "lin", &input)
}
