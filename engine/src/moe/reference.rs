//! The plain per-expert loop: dequantise each expert to f32 and compute row by row.
//! Slow and obviously right: the oracle every other executor is tested against.

use super::{ExpertExecutor, LayerExperts, MatView, WorkItem};
use crate::error::Result;
use crate::model::ops::{dot, silu};

/// The reference executor.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReferenceExecutor;

fn dequant(m: &MatView<'_>) -> Result<Vec<f32>> {
    let mut w = vec![0f32; m.rows * m.cols];
    hmoe_quant::dequantize(m.dtype, m.data, &mut w)?;
    Ok(w)
}

impl ExpertExecutor for ReferenceExecutor {
    fn name(&self) -> &'static str {
        "cpu-ref"
    }

    fn execute(
        &self,
        experts: &LayerExperts<'_>,
        x: &[f32],
        hidden: usize,
        items: &[WorkItem],
        out: &mut [f32],
    ) -> Result<()> {
        for item in items {
            let view = experts.expert(item.expert as usize);
            let (gate, up, down) = (
                dequant(&view.gate)?,
                dequant(&view.up)?,
                dequant(&view.down)?,
            );
            let ffn = view.gate.rows;
            let mut act = vec![0f32; ffn];
            for (&r, &w) in item.rows.iter().zip(&item.weights) {
                let xr = &x[r as usize * hidden..][..hidden];
                for (j, a) in act.iter_mut().enumerate() {
                    let g = dot(&gate[j * hidden..][..hidden], xr);
                    let u = dot(&up[j * hidden..][..hidden], xr);
                    *a = silu(g) * u;
                }
                let o = &mut out[r as usize * hidden..][..hidden];
                for (i, oi) in o.iter_mut().enumerate() {
                    *oi += w * dot(&down[i * ffn..][..ffn], &act);
                }
            }
        }
        Ok(())
    }
}
