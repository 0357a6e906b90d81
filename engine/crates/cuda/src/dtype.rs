//! Weight types the GPU kernels read directly from raw GGUF blocks.

use crate::error::{CudaError, Result};
use hmoe_gguf::GgmlDType;

/// A weight type with a GPU kernel, and the suffix of its kernel names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelType {
    /// f32.
    F32,
    /// IEEE f16.
    F16,
    /// bfloat16.
    Bf16,
    /// 8-bit, 32-element blocks.
    Q8_0,
    /// 4-bit k-quant.
    Q4K,
    /// 5-bit k-quant.
    Q5K,
    /// 6-bit k-quant.
    Q6K,
}

impl KernelType {
    /// Every supported type, in kernel-table order.
    pub const ALL: [KernelType; 7] = [
        KernelType::F32,
        KernelType::F16,
        KernelType::Bf16,
        KernelType::Q8_0,
        KernelType::Q4K,
        KernelType::Q5K,
        KernelType::Q6K,
    ];

    /// The kernel type of a GGUF weight type.
    pub fn of(dtype: GgmlDType) -> Result<Self> {
        Ok(match dtype {
            GgmlDType::F32 => KernelType::F32,
            GgmlDType::F16 => KernelType::F16,
            GgmlDType::BF16 => KernelType::Bf16,
            GgmlDType::Q8_0 => KernelType::Q8_0,
            GgmlDType::Q4K => KernelType::Q4K,
            GgmlDType::Q5K => KernelType::Q5K,
            GgmlDType::Q6K => KernelType::Q6K,
            other => return Err(CudaError::UnsupportedType(other)),
        })
    }

    /// The GGUF type.
    pub fn ggml(self) -> GgmlDType {
        match self {
            KernelType::F32 => GgmlDType::F32,
            KernelType::F16 => GgmlDType::F16,
            KernelType::Bf16 => GgmlDType::BF16,
            KernelType::Q8_0 => GgmlDType::Q8_0,
            KernelType::Q4K => GgmlDType::Q4K,
            KernelType::Q5K => GgmlDType::Q5K,
            KernelType::Q6K => GgmlDType::Q6K,
        }
    }

    /// Suffix of the kernel names in `kernels.cu` (`gate_up_<suffix>`, `down_<suffix>`).
    pub fn suffix(self) -> &'static str {
        match self {
            KernelType::F32 => "f32",
            KernelType::F16 => "f16",
            KernelType::Bf16 => "bf16",
            KernelType::Q8_0 => "q8_0",
            KernelType::Q4K => "q4_k",
            KernelType::Q5K => "q5_k",
            KernelType::Q6K => "q6_k",
        }
    }

    /// How the CPU kernels round activations multiplied with weights of this type
    /// (`act_round`'s `fmt` in kernels.cu: 0 none, 1 bf16, 2 Q8_0, 3 Q8_K) and the block
    /// those rounding steps work on.
    pub fn act_format(self) -> (u32, usize) {
        match self {
            KernelType::F32 | KernelType::F16 => (0, 1),
            KernelType::Bf16 => (1, 32),
            KernelType::Q8_0 => (2, 32),
            KernelType::Q4K | KernelType::Q5K | KernelType::Q6K => (3, 256),
        }
    }

    /// Elements per block.
    pub fn block_elems(self) -> usize {
        self.ggml().block_size()
    }

    /// Bytes of a row of `cols` elements; an error unless `cols` is a whole number of
    /// blocks and of the kernels' 8-element chunks.
    pub fn row_bytes(self, cols: usize) -> Result<usize> {
        if cols == 0 || !cols.is_multiple_of(self.block_elems()) || !cols.is_multiple_of(8) {
            return Err(CudaError::InvalidBatch(format!(
                "{cols} columns is not a whole number of {:?} blocks",
                self.ggml()
            )));
        }
        Ok(cols / self.block_elems() * self.ggml().type_size())
    }
}

/// Weight types and shape of one layer's experts, checked for the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpertLayout {
    /// Type of gate and up (the fused kernel reads both with one decoder).
    pub gate_up: KernelType,
    /// Type of down.
    pub down: KernelType,
    /// Model width (gate/up columns, down rows).
    pub hidden: usize,
    /// Expert FFN width (gate/up rows, down columns).
    pub ffn: usize,
}

impl ExpertLayout {
    /// Checks the types and shape of an expert's three matrices.
    pub fn new(
        gate: GgmlDType,
        up: GgmlDType,
        down: GgmlDType,
        hidden: usize,
        ffn: usize,
    ) -> Result<Self> {
        if gate != up {
            return Err(CudaError::MixedGateUp { gate, up });
        }
        let l = Self {
            gate_up: KernelType::of(gate)?,
            down: KernelType::of(down)?,
            hidden,
            ffn,
        };
        l.gate_up.row_bytes(hidden)?;
        l.down.row_bytes(ffn)?;
        Ok(l)
    }

    /// Bytes of the gate (and of the up) matrix.
    pub fn gate_bytes(&self) -> usize {
        self.gate_up.row_bytes(self.hidden).unwrap_or(0) * self.ffn
    }

    /// Bytes of the down matrix.
    pub fn down_bytes(&self) -> usize {
        self.down.row_bytes(self.ffn).unwrap_or(0) * self.hidden
    }

    /// Bytes of one expert as stored in a slot: gate, up, down back to back.
    pub fn expert_bytes(&self) -> usize {
        2 * self.gate_bytes() + self.down_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen3_30b_shapes() {
        // Q4_K_M experts: gate/up Q4_K, down Q6_K (brief: ≈ 3.06 MB per expert).
        let l =
            ExpertLayout::new(GgmlDType::Q4K, GgmlDType::Q4K, GgmlDType::Q6K, 2048, 768).unwrap();
        assert_eq!(l.gate_bytes(), 768 * 8 * 144);
        assert_eq!(l.down_bytes(), 2048 * 3 * 210);
        assert_eq!(l.expert_bytes(), 3_059_712);
        let q8 = ExpertLayout::new(GgmlDType::Q8_0, GgmlDType::Q8_0, GgmlDType::Q8_0, 2048, 768)
            .unwrap();
        assert_eq!(q8.expert_bytes(), 3 * 2048 * 768 / 32 * 34);
    }

    #[test]
    fn rejects_what_the_kernels_cannot_read() {
        assert!(matches!(
            ExpertLayout::new(GgmlDType::Q4K, GgmlDType::Q6K, GgmlDType::Q6K, 2048, 768),
            Err(CudaError::MixedGateUp { .. })
        ));
        assert!(matches!(
            KernelType::of(GgmlDType::Q4_0),
            Err(CudaError::UnsupportedType(GgmlDType::Q4_0))
        ));
        // 100 columns is not a whole k-quant super-block.
        assert!(
            ExpertLayout::new(GgmlDType::Q4K, GgmlDType::Q4K, GgmlDType::Q4K, 2048, 100).is_err()
        );
        for t in KernelType::ALL {
            assert_eq!(KernelType::of(t.ggml()).unwrap(), t);
        }
    }
}
