//! Runs a [`TestBatch`] through tests/emu/harness.cpp (the expert kernels in the emulator):
//! writes the harness's input file, runs it, reads the `[n_tokens][hidden]` output. Also
//! the input and the cases of the fused-pass harnesses (fuse_harness.cpp,
//! fused_q8_harness.cpp).

#![allow(dead_code)] // each test crate that includes this uses part of it

use hmoe_cuda::batch::BatchLayout;
use hmoe_cuda::verify::TestBatch;
use hmoe_cuda::{ExpertLayout, KernelType};
use std::path::Path;

/// The harnesses' code of a weight type (its index in `KernelType::ALL`).
pub fn type_code(t: KernelType) -> u32 {
    KernelType::ALL.iter().position(|&k| k == t).unwrap() as u32
}

/// One batch for the fused-pass harnesses: `n_items` experts, `n_tokens` tokens routed to
/// `top_k` each, the first `split` items in the first gate_up launch.
pub struct PassCase {
    pub layout: ExpertLayout,
    pub n_items: usize,
    pub n_tokens: usize,
    pub top_k: usize,
    pub split: usize,
}

/// A [`PassCase`].
pub fn case(
    layout: ExpertLayout,
    n_items: usize,
    n_tokens: usize,
    top_k: usize,
    split: usize,
) -> PassCase {
    PassCase {
        layout,
        n_items,
        n_tokens,
        top_k,
        split,
    }
}

/// The fused-pass harnesses' input for `b` launched as `split` + the rest: type codes,
/// shape, the weight blob, the packed index tables (addresses as offsets into the blob,
/// which the harness rebases), their section offsets and counts, then x. Returns it with
/// the batch's layout.
pub fn fused_pass_input(b: &TestBatch, split: usize) -> (Vec<u8>, BatchLayout) {
    let l = b.layout;
    let mut packed = Vec::new();
    let bl = b.pack(|i| b.offsets(i)[0], &mut packed).unwrap();
    let mut input = Vec::new();
    let header = [
        type_code(l.gate_up) as usize,
        type_code(l.down) as usize,
        l.hidden,
        l.ffn,
        b.n_tokens,
        b.weights.len(),
        packed.len(),
        split,
    ];
    for v in header {
        input.extend_from_slice(&(v as u32).to_le_bytes());
    }
    input.extend_from_slice(&b.weights);
    input.extend_from_slice(&packed);
    let sections = [
        bl.items,
        bl.rows,
        bl.weights,
        bl.tok_start,
        bl.tok_pairs,
        bl.tok_down,
        bl.n_items,
        bl.n_pairs,
    ];
    for v in sections {
        input.extend_from_slice(&(v as u32).to_le_bytes());
    }
    for v in &b.x {
        input.extend_from_slice(&v.to_le_bytes());
    }
    (input, bl)
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
