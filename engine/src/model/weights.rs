//! Dense weights (attention, norms, router, output head) prepared for compute, and
//! descriptors of the stacked expert tensors, which stay in the memory-mapped file.

use super::config::Qwen3MoeConfig;
use crate::error::{EngineError, Result};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType as CDType, QMatMul};
use candle_core::{Device, Module, Tensor};
use hmoe_cpu::CpuPool;
use hmoe_gguf::{GgmlDType, GgufFile, TensorInfo};
use hmoe_quant::DotKernel;

/// How a weight matrix is applied.
pub enum LinearKind {
    /// Exact mode: f32 weights dequantised once, candle's f32 matmul.
    Exact(QMatMul),
    /// Fast mode: quantised rows read in place from the mapped file by our kernels.
    Mapped {
        /// The tensor in the file.
        info: TensorInfo,
        /// The dot kernel for its type.
        kernel: DotKernel,
    },
}

/// A weight matrix `[rows, cols]` applied as `x · Wᵀ`.
pub struct Linear {
    /// The implementation.
    pub kind: LinearKind,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
}

impl Linear {
    /// `x` is `[n, cols]`; returns `[n, rows]`.
    pub fn forward(&self, file: &GgufFile, pool: &CpuPool, x: &[f32]) -> Result<Vec<f32>> {
        match &self.kind {
            LinearKind::Exact(m) => {
                let t = Tensor::from_slice(x, (x.len() / self.cols, self.cols), &Device::Cpu)?;
                Ok(m.forward(&t)?.flatten_all()?.to_vec1::<f32>()?)
            }
            LinearKind::Mapped { info, kernel } => crate::backend::dense::matmul(
                pool,
                kernel,
                file.tensor_data(info),
                self.rows,
                self.cols,
                x,
            ),
        }
    }
}

/// Where one stacked expert tensor (`ffn_{gate,up,down}_exps`) lives.
#[derive(Debug, Clone)]
pub struct ExpertTensor {
    /// Tensor record in the file.
    pub info: TensorInfo,
    /// Element type.
    pub dtype: GgmlDType,
    /// Output features of one expert's matrix.
    pub rows: usize,
    /// Input features (row length).
    pub cols: usize,
    /// Bytes of one expert's matrix.
    pub expert_bytes: usize,
}

/// One transformer block's weights.
pub struct LayerWeights {
    /// Pre-attention RMSNorm weight.
    pub attn_norm: Vec<f32>,
    /// Query projection.
    pub wq: Linear,
    /// Key projection.
    pub wk: Linear,
    /// Value projection.
    pub wv: Linear,
    /// Attention output projection.
    pub wo: Linear,
    /// Per-head query RMSNorm weight.
    pub q_norm: Vec<f32>,
    /// Per-head key RMSNorm weight.
    pub k_norm: Vec<f32>,
    /// Pre-MoE RMSNorm weight.
    pub ffn_norm: Vec<f32>,
    /// Router `[n_experts, hidden]`.
    pub router: Linear,
    /// Stacked expert gate projections.
    pub gate_exps: ExpertTensor,
    /// Stacked expert up projections.
    pub up_exps: ExpertTensor,
    /// Stacked expert down projections.
    pub down_exps: ExpertTensor,
}

/// All weights of a model.
pub struct ModelWeights {
    /// Token embedding table, kept in the mapped file and decoded row by row.
    pub token_embd: TensorInfo,
    /// Blocks.
    pub layers: Vec<LayerWeights>,
    /// Final RMSNorm weight.
    pub output_norm: Vec<f32>,
    /// Output head (the embedding when the file ties them).
    pub output: Linear,
}

fn candle_dtype(name: &str, t: GgmlDType) -> Result<CDType> {
    Ok(match t {
        GgmlDType::F32 => CDType::F32,
        GgmlDType::F16 => CDType::F16,
        GgmlDType::BF16 => CDType::BF16,
        GgmlDType::Q8_0 => CDType::Q8_0,
        GgmlDType::Q4K => CDType::Q4K,
        GgmlDType::Q5K => CDType::Q5K,
        GgmlDType::Q6K => CDType::Q6K,
        other => {
            return Err(EngineError::UnsupportedTensorType {
                name: name.to_string(),
                dtype: other,
            })
        }
    })
}

fn check_shape(info: &TensorInfo, expected: &[u64]) -> Result<()> {
    if info.dims != expected {
        return Err(EngineError::ShapeMismatch {
            name: info.name.clone(),
            found: info.dims.clone(),
            expected: expected.to_vec(),
        });
    }
    if !info.dtype.is_compute_supported() {
        return Err(EngineError::UnsupportedTensorType {
            name: info.name.clone(),
            dtype: info.dtype,
        });
    }
    Ok(())
}

fn tensor<'a>(file: &'a GgufFile, name: &str, expected: &[u64]) -> Result<&'a TensorInfo> {
    let info = file
        .tensor(name)
        .ok_or_else(|| EngineError::MissingTensor(name.to_string()))?;
    check_shape(info, expected)?;
    Ok(info)
}

/// Decodes a whole (small) tensor to f32.
pub fn dequantize_all(file: &GgufFile, info: &TensorInfo) -> Result<Vec<f32>> {
    let n = info.n_elements() as usize;
    let mut out = vec![0f32; n];
    hmoe_quant::dequantize(info.dtype, file.tensor_data(info), &mut out)?;
    Ok(out)
}

fn vector(file: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>> {
    let info = tensor(file, name, &[len as u64])?;
    dequantize_all(file, info)
}

fn linear_from(file: &GgufFile, info: &TensorInfo, exact: bool) -> Result<Linear> {
    let cols = info.dims[0] as usize;
    let rows = info.dims[1] as usize;
    let kind = if exact {
        let dt = candle_dtype(&info.name, info.dtype)?;
        let q = qtensor_from_ggml(dt, file.tensor_data(info), vec![rows, cols], &Device::Cpu)?;
        LinearKind::Exact(QMatMul::Tensor(q.dequantize(&Device::Cpu)?))
    } else {
        LinearKind::Mapped {
            info: info.clone(),
            kernel: DotKernel::best(info.dtype)?,
        }
    };
    Ok(Linear { kind, rows, cols })
}

fn experts(
    file: &GgufFile,
    name: &str,
    cols: usize,
    rows: usize,
    n: usize,
) -> Result<ExpertTensor> {
    let info = tensor(file, name, &[cols as u64, rows as u64, n as u64])?;
    let expert_bytes = info.dtype.bytes_for((rows * cols) as u64).ok_or_else(|| {
        EngineError::InvalidMetadata(format!("`{name}` rows are not whole blocks"))
    })? as usize;
    Ok(ExpertTensor {
        info: info.clone(),
        dtype: info.dtype,
        rows,
        cols,
        expert_bytes,
    })
}

impl ModelWeights {
    /// Validates every tensor against the config and prepares the dense ones.
    /// `progress(done, total)` is called once per layer.
    pub fn load(
        file: &GgufFile,
        cfg: &Qwen3MoeConfig,
        exact: bool,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Self> {
        let linear = |name: &str, cols: usize, rows: usize| -> Result<Linear> {
            let info = tensor(file, name, &[cols as u64, rows as u64])?;
            linear_from(file, info, exact)
        };
        let (h, hd) = (cfg.hidden, cfg.head_dim);
        let q_out = cfg.n_heads * hd;
        let kv_out = cfg.n_kv_heads * hd;
        let token_embd = tensor(
            file,
            "token_embd.weight",
            &[h as u64, cfg.vocab_size as u64],
        )?
        .clone();
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            layers.push(LayerWeights {
                attn_norm: vector(file, &p("attn_norm"), h)?,
                wq: linear(&p("attn_q"), h, q_out)?,
                wk: linear(&p("attn_k"), h, kv_out)?,
                wv: linear(&p("attn_v"), h, kv_out)?,
                wo: linear(&p("attn_output"), q_out, h)?,
                q_norm: vector(file, &p("attn_q_norm"), hd)?,
                k_norm: vector(file, &p("attn_k_norm"), hd)?,
                ffn_norm: vector(file, &p("ffn_norm"), h)?,
                router: linear(&p("ffn_gate_inp"), h, cfg.n_experts)?,
                gate_exps: experts(file, &p("ffn_gate_exps"), h, cfg.expert_ffn, cfg.n_experts)?,
                up_exps: experts(file, &p("ffn_up_exps"), h, cfg.expert_ffn, cfg.n_experts)?,
                down_exps: experts(file, &p("ffn_down_exps"), cfg.expert_ffn, h, cfg.n_experts)?,
            });
            progress(i as u64 + 1, cfg.n_layers as u64);
        }
        let output_norm = vector(file, "output_norm.weight", h)?;
        let output = match file.tensor("output.weight") {
            Some(info) => {
                check_shape(info, &[h as u64, cfg.vocab_size as u64])?;
                linear_from(file, info, exact)?
            }
            None => linear_from(file, &token_embd, exact)?,
        };
        Ok(Self {
            token_embd,
            layers,
            output_norm,
            output,
        })
    }
}
