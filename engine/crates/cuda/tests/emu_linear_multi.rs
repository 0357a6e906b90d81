//! `linear_multi` (src/dense.cu: up to three same-type matrices on one input in one
//! launch, the decode path's wq/wk/wv and router pair) in the host emulator: bit for bit
//! what three `linear` launches give, and within the f64 reference's tolerance, for every
//! weight type, row counts that leave blocks partly empty and the 2- and 3-matrix forms.

use hmoe_cuda::dense_ref;
use hmoe_cuda::verify::compare;
use hmoe_cuda::verify_dense::vals;
use hmoe_cuda::KernelType;
use hmoe_quant::quantize;

#[path = "emu/build.rs"]
mod emu_build;
use emu_build::{compile_harness, run_harness};

#[test]
fn linear_multi_equals_separate_linear_launches_in_the_emulator() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "multi_harness");
    for (ti, &t) in KernelType::ALL.iter().enumerate() {
        let cols = match t.block_elems() {
            256 => 512,
            32 => 352,
            _ => 200,
        };
        for (rows, n) in [([13, 37, 8], 1), ([64, 16, 0], 3), ([9, 0, 0], 2)] {
            let mut input = Vec::new();
            for v in [ti as u32, cols as u32, n as u32, rows[0], rows[1], rows[2]] {
                input.extend_from_slice(&v.to_le_bytes());
            }
            let mut mats = Vec::new();
            for (k, &r) in rows.iter().enumerate() {
                let r = r as usize;
                let wf: Vec<f32> = vals(r * cols, 11 + k as u64)
                    .iter()
                    .map(|v| v * 0.05)
                    .collect();
                let mut wq = vec![0u8; t.row_bytes(cols).unwrap() * r];
                quantize(t.ggml(), &wf, &mut wq).unwrap();
                input.extend_from_slice(&wq);
                mats.push((r, wq));
            }
            let x = vals(n * cols, 5 + n as u64);
            x.iter()
                .for_each(|v| input.extend_from_slice(&v.to_le_bytes()));
            let got = run_harness(&exe, dir.path(), "multi", &input);
            let total: usize = rows.iter().map(|&r| r as usize * n).sum();
            assert_eq!(got.len(), 2 * total, "{}", t.suffix());
            let (multi, separate) = got.split_at(total);
            // The same row walk per matrix: identical bits, not just close values.
            let same = multi
                .iter()
                .zip(separate)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{} rows {rows:?} n {n}: multi != separate",
                t.suffix()
            );
            let mut off = 0;
            for (r, wq) in mats.iter().filter(|(r, _)| *r > 0) {
                let want = dense_ref::linear(t, wq, *r, cols, &x).unwrap();
                let c = compare(&multi[off..off + r * n], &want);
                assert!(c.pass, "{} {r}x{cols} n {n}: {c:?}", t.suffix());
                off += r * n;
            }
        }
    }
}
