//! Runs a [`TestBatch`] through tests/emu/harness.cpp (the expert kernels in the emulator):
//! writes the harness's input file, runs it, reads the `[n_tokens][hidden]` output.

use hmoe_cuda::verify::TestBatch;
use hmoe_cuda::KernelType;
use std::path::Path;

fn type_code(t: KernelType) -> u32 {
    KernelType::ALL.iter().position(|&k| k == t).unwrap() as u32
}

/// The emulated expert pass (act_round, gate_up, act_round, down, combine) of `b`.
pub fn run_experts(exe: &Path, dir: &Path, b: &TestBatch) -> Vec<f32> {
    let layout = b.layout;
    let mut packed = Vec::new();
    // Addresses are offsets into the weight blob; the harness rebases them.
    let l = b.pack(|i| b.offsets(i)[0], &mut packed).unwrap();
    let mut input = Vec::new();
    let w32 = |v: u32, input: &mut Vec<u8>| input.extend_from_slice(&v.to_le_bytes());
    for v in [
        type_code(layout.gate_up),
        type_code(layout.down),
        layout.hidden as u32,
        layout.ffn as u32,
        b.n_tokens as u32,
        b.weights.len() as u32,
        packed.len() as u32,
    ] {
        w32(v, &mut input);
    }
    input.extend_from_slice(&b.weights);
    input.extend_from_slice(&packed);
    for v in [
        l.items,
        l.rows,
        l.weights,
        l.tok_start,
        l.tok_pairs,
        l.n_items,
        l.n_pairs,
    ] {
        w32(v as u32, &mut input);
    }
    for v in &b.x {
        input.extend_from_slice(&v.to_le_bytes());
    }
    crate::emu_build::run_harness(exe, dir, "experts", &input)
}
