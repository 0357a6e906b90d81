//! The dense path on the GPU (`hmoe_cuda::GpuDense`) behind the model's [`DenseDevice`]
//! seam: the weights read from the mapped file, the opt-in start-up ([`DENSE_ENV`]) and
//! the executor the model holds.

use super::DENSE_ENV;
use crate::api::DeviceChoice;
use crate::error::{EngineError, Result};
use crate::model::dense_exec::{DenseDevice, DenseOutputs};
use crate::model::weights::dequantize_all;
use crate::model::{Qwen3Moe, Qwen3MoeConfig};
use hmoe_cpu::CpuPool;
use hmoe_cuda::{
    CudaError, DenseLayer, DenseMatrix, DenseOnDevice, DenseSeq, DenseShape, DenseWeights,
    DeviceAddend, DeviceInput, GpuDense, KernelType, SeqSpan,
};
use hmoe_gguf::GgufFile;
use std::sync::{Arc, Mutex};

/// Whether the GPU dense path is wanted: yes unless [`DENSE_ENV`] is `0` (or `off`).
pub fn dense_requested() -> bool {
    dense_wanted(std::env::var(DENSE_ENV).ok().as_deref())
}

/// [`dense_requested`] for a value of [`DENSE_ENV`].
fn dense_wanted(value: Option<&str>) -> bool {
    !matches!(value.map(str::trim), Some("0" | "off" | "false"))
}

/// The dense path's shape of a model.
pub fn dense_shape(cfg: &Qwen3MoeConfig) -> Result<DenseShape> {
    if cfg.value_dim != cfg.head_dim {
        return Err(EngineError::InvalidRequest(format!(
            "the GPU dense path needs value heads as wide as key heads ({} vs {})",
            cfg.value_dim, cfg.head_dim
        )));
    }
    let shape = DenseShape {
        hidden: cfg.hidden,
        n_heads: cfg.n_heads,
        n_kv_heads: cfg.n_kv_heads,
        head_dim: cfg.head_dim,
        n_experts: cfg.n_experts,
        vocab: cfg.vocab_size,
        n_layers: cfg.n_layers,
        rms_eps: cfg.rms_eps,
        rope_theta: cfg.rope_theta,
    };
    shape
        .validate()
        .map_err(|e| EngineError::InvalidRequest(e.to_string()))?;
    Ok(shape)
}

fn matrix<'a>(file: &'a GgufFile, name: &str) -> Result<DenseMatrix<'a>> {
    let info = file
        .tensor(name)
        .ok_or_else(|| EngineError::MissingTensor(name.to_string()))?;
    let t = KernelType::of(info.dtype).map_err(|_| EngineError::UnsupportedTensorType {
        name: name.to_string(),
        dtype: info.dtype,
    })?;
    let dim = |i: usize| info.dims.get(i).copied().unwrap_or(0) as usize;
    Ok(DenseMatrix {
        t,
        rows: dim(1),
        cols: dim(0),
        data: file.tensor_data(info),
    })
}

fn vector(file: &GgufFile, name: &str) -> Result<Vec<f32>> {
    let info = file
        .tensor(name)
        .ok_or_else(|| EngineError::MissingTensor(name.to_string()))?;
    dequantize_all(file, info)
}

/// Calls `f` with the model's dense weights: matrices borrowed from the mapped file (raw
/// blocks), norm vectors decoded to f32 for the call; the output head is the embedding
/// when the file ties them (as the CPU path).
pub fn with_dense_weights<R>(
    file: &GgufFile,
    cfg: &Qwen3MoeConfig,
    f: impl FnOnce(&DenseShape, &DenseWeights<'_>) -> R,
) -> Result<R> {
    let shape = dense_shape(cfg)?;
    let mut norms = Vec::with_capacity(cfg.n_layers);
    for i in 0..cfg.n_layers {
        let v = |s: &str| vector(file, &format!("blk.{i}.{s}.weight"));
        norms.push([
            v("attn_norm")?,
            v("attn_q_norm")?,
            v("attn_k_norm")?,
            v("ffn_norm")?,
        ]);
    }
    let output_norm = vector(file, "output_norm.weight")?;
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for (i, n) in norms.iter().enumerate() {
        let m = |s: &str| matrix(file, &format!("blk.{i}.{s}.weight"));
        layers.push(DenseLayer {
            attn_norm: &n[0],
            q_norm: &n[1],
            k_norm: &n[2],
            ffn_norm: &n[3],
            wq: m("attn_q")?,
            wk: m("attn_k")?,
            wv: m("attn_v")?,
            wo: m("attn_output")?,
            router: m("ffn_gate_inp")?,
        });
    }
    let output = match file.tensor("output.weight") {
        Some(_) => matrix(file, "output.weight")?,
        None => matrix(file, "token_embd.weight")?,
    };
    let w = DenseWeights {
        layers,
        output_norm: &output_norm,
        output,
    };
    w.validate(&shape)
        .map_err(|e| EngineError::InvalidRequest(format!("GPU dense path: {e}")))?;
    Ok(f(&shape, &w))
}

/// [`GpuDense`] as the model's dense device.
pub struct GpuDenseExecutor {
    gpu: Mutex<GpuDense>,
    describe: String,
    weight_bytes: usize,
    kv_reserve_bytes: usize,
}

impl std::fmt::Debug for GpuDenseExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

impl GpuDenseExecutor {
    /// Wraps a started [`GpuDense`] (its warnings are logged).
    pub fn new(gpu: GpuDense) -> Self {
        for w in gpu.warnings() {
            tracing::warn!("{w}");
        }
        let weight_bytes = gpu.weight_bytes();
        let kv_reserve_bytes = super::DEFAULT_KV_RESERVE_TOKENS * gpu.shape().kv_bytes_per_token();
        let describe = format!(
            "dense path on {}: {} MiB of weights in VRAM, KV cache {} KiB a token",
            gpu.info().name,
            weight_bytes >> 20,
            gpu.shape().kv_bytes_per_token() >> 10
        );
        Self {
            gpu: Mutex::new(gpu),
            describe,
            weight_bytes,
            kv_reserve_bytes,
        }
    }

    /// Device bytes of the dense weights.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// Device bytes kept free for KV caches when the expert arena is sized.
    pub fn kv_reserve_bytes(&self) -> usize {
        self.kv_reserve_bytes
    }

    /// Device bytes of the KV caches allocated now.
    pub fn kv_bytes(&self) -> usize {
        self.gpu.lock().map_or(0, |g| g.kv_bytes())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, GpuDense>> {
        self.gpu.lock().map_err(|_| {
            EngineError::Compute("CUDA dense path poisoned by an earlier panic".into())
        })
    }
}

impl Drop for GpuDenseExecutor {
    fn drop(&mut self) {
        let Ok(g) = self.gpu.get_mut() else { return };
        let (captured, replayed) = g.graph_stats();
        tracing::debug!("dense path: {captured} decode graphs captured, {replayed} replays");
        // HMOE_DENSE_PROFILE=1: the per-kernel profile of the whole run.
        if let Some(r) = g.profile_report() {
            tracing::info!("{r}");
        }
    }
}

fn cuda_err(what: String) -> impl FnOnce(CudaError) -> EngineError {
    move |e| EngineError::Compute(format!("CUDA dense path ({what}): {e}"))
}

impl DenseDevice for GpuDenseExecutor {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn new_seq(&self, capacity: usize) -> DenseSeq {
        // The registry is inside GpuDense; a poisoned lock still hands out ids through
        // the inner value (ids need no GPU state).
        match self.gpu.lock() {
            Ok(g) => g.new_seq(capacity),
            Err(p) => p.into_inner().new_seq(capacity),
        }
    }

    fn attention_block(
        &self,
        layer: usize,
        spans: &[SeqSpan],
        addend: Option<DeviceAddend>,
        x: &mut [f32],
        hn: &mut [f32],
        router: &mut [f32],
        next_router: &mut [f32],
    ) -> Result<()> {
        self.lock()?
            .attention_block_with(layer, spans, addend, x, hn, router, next_router)
            .map_err(cuda_err(format!("layer {layer}")))
    }

    fn attention_block_hooked(
        &self,
        layer: usize,
        spans: &[SeqSpan],
        addend: Option<DeviceAddend>,
        outs: DenseOutputs<'_>,
        hook: &mut dyn FnMut(DenseOnDevice),
    ) -> Result<()> {
        let mut h = |d: DenseOnDevice| {
            hook(d);
            Ok(())
        };
        self.lock()?
            .attention_block_hooked(layer, spans, addend, outs, Some(&mut h))
            .map_err(cuda_err(format!("layer {layer}")))
    }

    fn hn_on_device(&self) -> Option<DeviceInput> {
        self.gpu.lock().ok()?.hn_on_device()
    }

    fn head(&self, x: &[f32]) -> Result<Vec<f32>> {
        self.lock()?.head(x).map_err(cuda_err("head".into()))
    }

    fn set_host_pool(&self, pool: Arc<CpuPool>) {
        // A poisoned lock still takes the pool (it holds no GPU state).
        match self.gpu.lock() {
            Ok(mut g) => g.set_host_pool(Some(pool)),
            Err(p) => p.into_inner().set_host_pool(Some(pool)),
        }
    }
}

/// Starts the GPU dense path for `model` when [`DENSE_ENV`] asks for it and `choice` allows
/// a GPU. Any failure (no device, unsupported weight type, out of memory) is a warning
/// and `None`: the dense path stays on the CPU.
pub fn setup_dense(choice: DeviceChoice, model: &Qwen3Moe) -> Option<Arc<GpuDenseExecutor>> {
    if choice == DeviceChoice::Cpu || !dense_requested() {
        return None;
    }
    // No usable device: setup_gpu reports why (or fails, for `Cuda`).
    let info = hmoe_cuda::probe(0).ok()?;
    let started = with_dense_weights(model.file(), &model.cfg, |shape, w| {
        GpuDense::new(info.ordinal, shape, w)
    });
    match started {
        Ok(Ok(g)) => {
            let exec = GpuDenseExecutor::new(g);
            tracing::info!("{}", exec.describe());
            Some(Arc::new(exec))
        }
        Ok(Err(e)) => {
            tracing::warn!("the GPU dense path did not start ({e}); the dense path stays on the CPU ({DENSE_ENV}=0 skips it)");
            None
        }
        Err(e) => {
            tracing::warn!("the GPU dense path cannot run this model ({e}); the dense path stays on the CPU ({DENSE_ENV}=0 skips it)");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::dense_wanted;

    #[test]
    fn the_gpu_dense_path_is_on_unless_switched_off() {
        for v in [None, Some("1"), Some(" 1 "), Some("on"), Some("")] {
            assert!(dense_wanted(v), "{v:?}");
        }
        for v in [Some("0"), Some(" 0"), Some("off"), Some("false")] {
            assert!(!dense_wanted(v), "{v:?}");
        }
    }
}
