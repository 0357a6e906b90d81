//! The plain per-expert loop, the executor's test oracle: weights dequantised to
//! f32, products summed in f64, one token at a time, one thread.

use crate::experts::{validate, ExpertTask, MatView};
use crate::CpuError;
use hmoe_quant::{dequantize, ActBuf, ActFormat, ActRow};

/// What the reference multiplies the weights with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefActivations {
    /// The exact f32 activations: measures the total error of the fast path.
    F32,
    /// The activations quantised exactly as the kernels quantise them (x for gate/up,
    /// the SwiGLU product for down): isolates the kernels' own error.
    AsKernels,
}

fn dequant_mat(m: &MatView<'_>) -> Result<Vec<f32>, CpuError> {
    let mut w = vec![0f32; m.rows * m.cols];
    dequantize(m.dtype, m.data, &mut w)?;
    Ok(w)
}

fn act_values(row: ActRow<'_>) -> Vec<f64> {
    match row {
        ActRow::F32(v) => v.iter().map(|&x| x as f64).collect(),
        ActRow::BF16(v) => v
            .iter()
            .map(|&h| f32::from_bits((h as u32) << 16) as f64)
            .collect(),
        ActRow::Q8_0 { qs, d } => qs
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f64 * d[i / 32] as f64)
            .collect(),
        ActRow::Q8K { qs, d, .. } => qs
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f64 * d[i / 256] as f64)
            .collect(),
    }
}

/// The values a kernel for `m` would multiply with, given f32 input `v`.
fn seen_by(m: &MatView<'_>, v: &[f32], mode: RefActivations) -> Result<Vec<f64>, CpuError> {
    if mode == RefActivations::F32 {
        return Ok(v.iter().map(|&x| x as f64).collect());
    }
    let mut buf = ActBuf::new(ActFormat::for_weights(m.dtype)?);
    buf.quantize(v, v.len())?;
    let row = buf.row(0).ok_or(CpuError::Length {
        what: "activation row",
        expected: 1,
        got: 0,
    })?;
    Ok(act_values(row))
}

fn matvec(w: &[f32], cols: usize, a: &[f64]) -> Vec<f64> {
    w.chunks_exact(cols)
        .map(|r| r.iter().zip(a).map(|(&x, &y)| x as f64 * y).sum())
        .collect()
}

/// Same contract as [`crate::run_experts`], computed plainly.
pub fn reference_experts(
    x: &[f32],
    hidden: usize,
    tasks: &[ExpertTask<'_>],
    out: &mut [f32],
    mode: RefActivations,
) -> Result<(), CpuError> {
    let ffn = validate(x, hidden, tasks, out.len())?;
    for t in tasks {
        let (g, u, d) = (
            dequant_mat(&t.gate)?,
            dequant_mat(&t.up)?,
            dequant_mat(&t.down)?,
        );
        for (&row, &w) in t.token_rows.iter().zip(t.weights) {
            let xr = &x[row as usize * hidden..(row as usize + 1) * hidden];
            let gv = matvec(&g, hidden, &seen_by(&t.gate, xr, mode)?);
            let uv = matvec(&u, hidden, &seen_by(&t.up, xr, mode)?);
            // The fast path stores the SwiGLU product in f32 before quantising it.
            let h: Vec<f32> = gv
                .iter()
                .zip(&uv)
                .map(|(&g, &u)| (g / (1.0 + (-g).exp()) * u) as f32)
                .collect();
            let y = matvec(&d, ffn, &seen_by(&t.down, &h, mode)?);
            for (o, v) in out[row as usize * hidden..(row as usize + 1) * hidden]
                .iter_mut()
                .zip(y)
            {
                *o = (*o as f64 + w as f64 * v) as f32;
            }
        }
    }
    Ok(())
}
