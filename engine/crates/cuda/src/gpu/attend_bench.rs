//! Device check and timing of the attention kernels for `hmoe-cuda-check attention`: the
//! split-context kernels and the tiled prefill kernel on the same caches, launched through
//! the same functions as `GpuDense` (`attend.rs`), timed between two CUDA events.

use super::attend::{launch_split, launch_tiled, AttendCall, AttendFns};
use super::{compile, context, drv, info, DeviceBuf};
use crate::attend_tiled::tiled_supported;
use crate::dense_model::{attention_split, grid_split_count};
use crate::error::{CudaError, Result};
use cudarc::driver::result as cu;
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::CudaStream;

/// Upper bound on timed launches per kernel.
const MAX_REPS: usize = 1000;

/// One sequence of a timed call: `n` new rows at positions `start..start + n`, and its
/// whole K and V cache up to them (`(start + n) × n_kv × head_dim` f32 each, the new
/// rows' keys and values included, as after `kv_write`).
#[derive(Debug, Clone, Copy)]
pub struct BenchSeq<'a> {
    /// Positions cached before the call.
    pub start: usize,
    /// New rows.
    pub n: usize,
    /// Keys, `[start + n][n_kv × head_dim]`.
    pub k: &'a [f32],
    /// Values, same shape.
    pub v: &'a [f32],
}

/// Outputs and mean GPU milliseconds of both kernels on one call.
#[derive(Debug, Clone)]
pub struct AttendBench {
    /// `attend_split` + `attend_combine` output, `[rows][n_heads][head_dim]`.
    pub split: Vec<f32>,
    /// `attend_tiled` output, or `None` when it cannot run here (head size, shared memory).
    pub tiled: Option<Vec<f32>>,
    /// Milliseconds per split call (both kernels).
    pub split_ms: f32,
    /// Milliseconds per tiled call.
    pub tiled_ms: Option<f32>,
}

fn upload<T>(data: &[T], what: &str) -> Result<DeviceBuf> {
    let b = DeviceBuf::new(std::mem::size_of_val(data), what)?;
    // SAFETY: the buffer holds size_of_val(data) bytes.
    unsafe { cu::memcpy_htod_sync(b.ptr, data) }.map_err(drv(format!("cuMemcpyHtoD({what})")))?;
    Ok(b)
}

/// Runs and times both attention kernels on device `ordinal` (a context and a module of
/// its own) for the rows of `seqs` (in order) with queries `q` (`[rows][n_heads][head_dim]`),
/// `reps` timed launches each after one warm-up.
pub fn attention_bench(
    ordinal: usize,
    (n_heads, n_kv, head_dim): (usize, usize, usize),
    seqs: &[BenchSeq<'_>],
    q: &[f32],
    reps: usize,
) -> Result<AttendBench> {
    let kvw = n_kv * head_dim;
    let n: usize = seqs.iter().map(|s| s.n).sum();
    let bad = |m: String| Err(CudaError::InvalidBatch(format!("attention bench: {m}")));
    if n == 0 || n_kv == 0 || !n_heads.is_multiple_of(n_kv) || q.len() != n * n_heads * head_dim {
        return bad(format!(
            "{} query values for {n} rows of {n_heads} x {head_dim} over {n_kv} KV heads",
            q.len()
        ));
    }
    if let Some(s) = seqs
        .iter()
        .find(|s| s.k.len() != (s.start + s.n) * kvw || s.v.len() != s.k.len())
    {
        return bad(format!(
            "a cache of {} / {} values for {} positions of {kvw}",
            s.k.len(),
            s.v.len(),
            s.start + s.n
        ));
    }
    let ctx = context(ordinal)?;
    let dev = info(&ctx)?;
    let module = compile(&ctx, dev.compute_capability, &mut Vec::new())?;
    let fns = AttendFns::load(&|name: &str| {
        module
            .load_function(name)
            .map_err(drv(format!("kernel `{name}`")))
    })?;
    let stream = ctx.new_stream().map_err(drv("create bench stream"))?;
    let mut caches = Vec::new();
    let (mut kc, mut vc, mut pos) = (Vec::new(), Vec::new(), Vec::new());
    for s in seqs {
        let (k, v) = (upload(s.k, "bench K cache")?, upload(s.v, "bench V cache")?);
        kc.extend(std::iter::repeat_n(k.ptr, s.n));
        vc.extend(std::iter::repeat_n(v.ptr, s.n));
        pos.extend((s.start..s.start + s.n).map(|p| p as u32));
        caches.push((k, v));
    }
    let max_visible = pos.iter().max().map_or(1, |&p| p as usize + 1);
    let (chunk, n_splits) = attention_split(n, n_heads, max_visible);
    let grid_splits = grid_split_count(n_splits);
    let (kc, vc, pos) = (
        upload(&kc, "bench kc")?,
        upload(&vc, "bench vc")?,
        upload(&pos, "bench positions")?,
    );
    let plan = upload(&[chunk as u32, n_splits as u32], "bench plan")?;
    let qd = upload(q, "bench q")?;
    let out_bytes = 4 * q.len();
    let outs = [
        DeviceBuf::new(out_bytes, "bench split output")?,
        DeviceBuf::new(out_bytes, "bench tiled output")?,
    ];
    let part = DeviceBuf::new(
        4 * n * n_heads * grid_splits * (head_dim + 2),
        "bench partials",
    )?;
    let call = |out: u64| AttendCall {
        q: qd.ptr,
        kc: kc.ptr,
        vc: vc.ptr,
        pos: pos.ptr,
        out,
        n: n as u32,
        n_heads: n_heads as u32,
        n_kv: n_kv as u32,
        head_dim: head_dim as u32,
    };
    let split = |st: &CudaStream| {
        launch_split(
            st,
            &fns,
            &call(outs[0].ptr),
            part.ptr,
            plan.ptr,
            grid_splits as u32,
        )
    };
    let reps = reps.clamp(1, MAX_REPS);
    let time = |launch: &dyn Fn(&CudaStream) -> Result<()>| -> Result<f32> {
        let ev = || {
            ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(drv("cuEventCreate(bench)"))
        };
        let (t0, t1) = (ev()?, ev()?);
        launch(&stream)?; // warm-up
        t0.record(&stream).map_err(drv("cuEventRecord"))?;
        for _ in 0..reps {
            launch(&stream)?;
        }
        t1.record(&stream).map_err(drv("cuEventRecord"))?;
        t1.synchronize()
            .map_err(drv("cuEventSynchronize(attention bench)"))?;
        Ok(t0.elapsed_ms(&t1).map_err(drv("cuEventElapsedTime"))? / reps as f32)
    };
    let download = |b: &DeviceBuf| -> Result<Vec<f32>> {
        let mut host = vec![0f32; q.len()];
        // SAFETY: `b` holds q.len() floats; the stream was synchronised by `time`.
        unsafe { cu::memcpy_dtoh_sync(&mut host, b.ptr) }
            .map_err(drv("cuMemcpyDtoH(attention bench)"))?;
        Ok(host)
    };
    let split_ms = time(&split)?;
    let split_out = download(&outs[0])?;
    let (tiled, tiled_ms) = match &fns.tiled {
        Some(t) if tiled_supported(head_dim) => {
            let ms = time(&|st: &CudaStream| launch_tiled(st, t, &call(outs[1].ptr)))?;
            (Some(download(&outs[1])?), Some(ms))
        }
        _ => (None, None),
    };
    drop(caches);
    Ok(AttendBench {
        split: split_out,
        tiled,
        split_ms,
        tiled_ms,
    })
}
