//! Launchers of the dense-path kernels (`dense.cu`) with host inputs and outputs. They
//! allocate, copy and synchronise per call: for verification (`hmoe-cuda-check`) and as
//! the reference for the device-resident dense backend of docs/notes/cuda.md, not for the
//! hot path.

use super::gemm::launch_linear_on;
use super::{drv, DeviceBuf, GpuExperts};
use crate::dtype::KernelType;
use crate::error::{CudaError, Result};
use cudarc::driver::result as cu;
use cudarc::driver::{CudaFunction, PushKernelArg};
use std::collections::HashMap;

/// The dense kernels of the module.
pub(super) struct DenseKernels {
    pub(super) linear: HashMap<KernelType, CudaFunction>,
    rms_norm: CudaFunction,
}

impl DenseKernels {
    pub(super) fn load(f: &dyn Fn(&str) -> Result<CudaFunction>) -> Result<Self> {
        let mut linear = HashMap::new();
        for t in KernelType::ALL {
            linear.insert(t, f(&format!("linear_{}", t.suffix()))?);
        }
        Ok(Self {
            linear,
            rms_norm: f("rms_norm")?,
        })
    }
}

fn upload<T>(data: &[T], what: &str) -> Result<DeviceBuf> {
    let b = DeviceBuf::new(std::mem::size_of_val(data), what)?;
    // SAFETY: the buffer holds size_of_val(data) bytes.
    unsafe { cu::memcpy_htod_sync(b.ptr, data) }.map_err(drv(format!("cuMemcpyHtoD({what})")))?;
    Ok(b)
}

fn bad(msg: String) -> CudaError {
    CudaError::InvalidBatch(msg)
}

impl GpuExperts {
    fn dense_finish(&self, out: &DeviceBuf, n: usize) -> Result<Vec<f32>> {
        self.compute
            .synchronize()
            .map_err(drv("cuStreamSynchronize(dense)"))?;
        let mut host = vec![0f32; n];
        // SAFETY: `out` holds n floats written by the kernel that just completed.
        unsafe { cu::memcpy_dtoh_sync(&mut host, out.ptr) }.map_err(drv("cuMemcpyDtoH(dense)"))?;
        Ok(host)
    }

    /// `y[t] = W · x[t]` for a `[rows, cols]` matrix of raw GGUF blocks of type `t`.
    pub fn dense_linear(
        &mut self,
        t: KernelType,
        w: &[u8],
        rows: usize,
        cols: usize,
        x: &[f32],
    ) -> Result<Vec<f32>> {
        let (wd, xd, yd, n) = self.linear_buffers(t, w, rows, cols, x)?;
        self.launch_linear(t, wd.ptr, xd.ptr, yd.ptr, rows, cols, n)?;
        self.dense_finish(&yd, n * rows)
    }

    /// Checks a linear call's sizes and uploads weights and input: (w, x, y, tokens).
    pub(super) fn linear_buffers(
        &mut self,
        t: KernelType,
        w: &[u8],
        rows: usize,
        cols: usize,
        x: &[f32],
    ) -> Result<(DeviceBuf, DeviceBuf, DeviceBuf, usize)> {
        let n = x.len() / cols.max(1);
        if w.len() != t.row_bytes(cols)? * rows || x.len() != n * cols || n == 0 {
            return Err(bad(format!(
                "linear: {} weight bytes, {} inputs for {rows}×{cols}",
                w.len(),
                x.len()
            )));
        }
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        let (wd, xd) = (upload(w, "linear weights")?, upload(x, "linear input")?);
        let yd = DeviceBuf::new(n * rows * 4, "linear output")?;
        Ok((wd, xd, yd, n))
    }

    /// Launches `linear_<t>` (few tokens) or `gemm_linear_<t>` (many; see gpu/gemm.rs).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn launch_linear(
        &self,
        t: KernelType,
        w: u64,
        x: u64,
        y: u64,
        rows: usize,
        cols: usize,
        n: usize,
    ) -> Result<()> {
        let f = self
            .dense_fns
            .linear
            .get(&t)
            .ok_or(CudaError::UnsupportedType(t.ggml()))?;
        let fns = self.gemm.linear(f, t)?;
        launch_linear_on(
            &self.compute,
            &fns,
            w,
            x,
            y,
            rows as u32,
            cols as u32,
            n as u32,
        )
    }

    /// RMSNorm of each `cols`-wide row of `x` with weight `w`.
    pub fn dense_rms_norm(&mut self, x: &[f32], w: &[f32], eps: f32) -> Result<Vec<f32>> {
        let cols = w.len();
        // The kernel reads rows in 16-byte chunks.
        if cols == 0 || !cols.is_multiple_of(4) || !x.len().is_multiple_of(cols) {
            return Err(bad(format!(
                "rms_norm: {} values for rows of {cols} (rows must be whole 4-value chunks)",
                x.len()
            )));
        }
        self.ctx.bind_to_thread().map_err(drv("bind context"))?;
        let (xd, wd) = (upload(x, "norm input")?, upload(w, "norm weight")?);
        let yd = DeviceBuf::new(x.len() * 4, "norm output")?;
        let rows = (x.len() / cols) as u32;
        let cfg = super::resident::norm_config(rows);
        let c = cols as u32;
        // SAFETY: matches rms_norm(const float*, const float*, float*, u32, u32, float).
        unsafe {
            self.compute
                .launch_builder(&self.dense_fns.rms_norm)
                .arg(&xd.ptr)
                .arg(&wd.ptr)
                .arg(&yd.ptr)
                .arg(&rows)
                .arg(&c)
                .arg(&eps)
                .launch(cfg)
        }
        .map_err(drv("launch rms_norm"))?;
        self.dense_finish(&yd, x.len())
    }
}
