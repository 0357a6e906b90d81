//! `linear_multi` (src/dense.cu: up to three same-type matrices on one input in one
//! launch, the decode path's wq/wk/wv and router pair) in the host emulator: bit for bit
//! what three `linear` launches give, and within the f64 reference's tolerance, for every
//! weight type, row counts that leave blocks partly empty and the 2- and 3-matrix forms;
//! and `linear_mix` (a third matrix of another type) likewise for each instantiated pair.

use hmoe_cuda::dense_ref;
use hmoe_cuda::verify::compare;
use hmoe_cuda::verify_dense::vals;
use hmoe_cuda::KernelType;
use hmoe_quant::quantize;

#[path = "emu/build.rs"]
mod emu_build;
use emu_build::{compile_harness, run_harness};

/// One harness run: matrices of `rows` (the first two of type `t`, the third of `t2`) on
/// `n` tokens; asserts the one launch equals the separate ones bit for bit and the f64
/// reference within its tolerance.
fn check_multi(
    exe: &std::path::Path,
    dir: &std::path::Path,
    t: KernelType,
    t2: KernelType,
    rows: [u32; 3],
    n: usize,
) {
    let index = |k: KernelType| KernelType::ALL.iter().position(|&a| a == k).unwrap() as u32;
    let cols = match (t.block_elems(), t2.block_elems()) {
        (256, _) | (_, 256) => 512,
        (32, _) | (_, 32) => 352,
        _ => 200,
    };
    let types = index(t) | if t2 == t { 0 } else { (index(t2) + 1) << 8 };
    let mut input = Vec::new();
    for v in [types, cols as u32, n as u32, rows[0], rows[1], rows[2]] {
        input.extend_from_slice(&v.to_le_bytes());
    }
    let mut mats = Vec::new();
    for (k, &r) in rows.iter().enumerate() {
        let (r, tk) = (r as usize, if k == 2 { t2 } else { t });
        let wf: Vec<f32> = vals(r * cols, 11 + k as u64)
            .iter()
            .map(|v| v * 0.05)
            .collect();
        let mut wq = vec![0u8; tk.row_bytes(cols).unwrap() * r];
        quantize(tk.ggml(), &wf, &mut wq).unwrap();
        input.extend_from_slice(&wq);
        mats.push((r, tk, wq));
    }
    let x = vals(n * cols, 5 + n as u64);
    x.iter()
        .for_each(|v| input.extend_from_slice(&v.to_le_bytes()));
    let got = run_harness(exe, dir, "multi", &input);
    let what = format!("{}/{} rows {rows:?} n {n}", t.suffix(), t2.suffix());
    let total: usize = rows.iter().map(|&r| r as usize * n).sum();
    assert_eq!(got.len(), 2 * total, "{what}");
    let (multi, separate) = got.split_at(total);
    // The same row walk per matrix: identical bits, not just close values.
    let same = multi
        .iter()
        .zip(separate)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "{what}: multi != separate");
    let mut off = 0;
    for (r, tk, wq) in mats.iter().filter(|(r, _, _)| *r > 0) {
        let want = dense_ref::linear(*tk, wq, *r, cols, &x).unwrap();
        let c = compare(&multi[off..off + r * n], &want);
        assert!(c.pass, "{what}: {}: {c:?}", tk.suffix());
        off += r * n;
    }
}

#[test]
fn linear_multi_equals_separate_linear_launches_in_the_emulator() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "multi_harness");
    for &t in KernelType::ALL.iter() {
        for (rows, n) in [([13, 37, 8], 1), ([64, 16, 0], 3), ([9, 0, 0], 2)] {
            check_multi(&exe, dir.path(), t, t, rows, n);
        }
    }
}

#[test]
fn linear_mix_equals_separate_linear_launches_in_the_emulator() {
    use KernelType::{Q4K, Q5K, Q6K, Q8_0};
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "multi_harness");
    for (t, t2) in [
        (Q4K, Q6K),
        (Q5K, Q6K),
        (Q4K, Q5K),
        (Q4K, Q8_0),
        (Q5K, Q8_0),
        (Q6K, Q8_0),
    ] {
        // wq, wk, wv as a decode layer; one matrix of each type; a batch of tokens.
        for (rows, n) in [([24, 8, 8], 1), ([13, 0, 9], 1), ([16, 8, 11], 5)] {
            check_multi(&exe, dir.path(), t, t2, rows, n);
        }
    }
}
