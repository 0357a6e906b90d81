//! Where the dense path (attention, norms, router, head) runs, chosen at load by the
//! service like the MoE executor: the model asks, it never names a device.
//!
//! [`DenseExec::Cpu`] is the forward pass in `qwen3moe.rs`. With [`DenseExec::Device`],
//! [`Qwen3Moe::forward_device`] embeds on the host, then per layer hands the residual to
//! the device's attention block (KV cache on the device, keyed by the sequence handle in
//! each [`KvCache`]) and gets back the normed state and router logits the MoE block needs
//! on the host; the MoE block is the same as the CPU path's.

use super::kv_cache::KvCache;
use super::qwen3moe::{output_rows, Qwen3Moe, SeqStep};
use crate::error::{EngineError, Result};
use crate::moe::DeviceLink;
use crate::moe::MoeDispatch;
use hmoe_cpu::CpuPool;
use hmoe_cuda::{DenseOnDevice, DenseSeq, DeviceAddend, DeviceInput, SeqSpan};
use std::sync::Arc;

/// The host outputs of a dense call: the residual `x`, the normed state `hn`, the router
/// logits and the next layer's router logits (empty for the last layer).
pub type DenseOutputs<'a> = (&'a mut [f32], &'a mut [f32], &'a mut [f32], &'a mut [f32]);

/// A device that runs the dense path with its own weights and KV caches.
pub trait DenseDevice: Send + Sync {
    /// One line for logs: the device and what it holds.
    fn describe(&self) -> String;
    /// A handle for a new sequence of at most `capacity` tokens.
    fn new_seq(&self, capacity: usize) -> DenseSeq;
    /// The dense part of `layer` for the rows of `spans` (see
    /// `hmoe_cuda::GpuDense::attention_block`): `x` gains `addend` (the previous layer's
    /// GPU expert output, left on the device; None when it was added on the host) and the
    /// attention output, `hn` gets the pre-MoE normed state, `router` the router logits,
    /// `next_router` (if not empty) the next layer's router logits on `hn`.
    #[allow(clippy::too_many_arguments)]
    fn attention_block(
        &self,
        layer: usize,
        spans: &[SeqSpan],
        addend: Option<DeviceAddend>,
        x: &mut [f32],
        hn: &mut [f32],
        router: &mut [f32],
        next_router: &mut [f32],
    ) -> Result<()>;
    /// [`DenseDevice::attention_block`] that calls `hook` once the call's kernels are
    /// enqueued, before it waits for them, with where its router logits and normed state
    /// will be on the device (the engine launches the layer's routed expert pass there). A
    /// device that keeps no outputs on a device never calls it.
    fn attention_block_hooked(
        &self,
        layer: usize,
        spans: &[SeqSpan],
        addend: Option<DeviceAddend>,
        (x, hn, router, next_router): DenseOutputs<'_>,
        hook: &mut dyn FnMut(DenseOnDevice),
    ) -> Result<()> {
        let _ = hook;
        self.attention_block(layer, spans, addend, x, hn, router, next_router)
    }
    /// The last `attention_block`'s `hn` still on the device, for the expert pass to read
    /// instead of uploading the host's copy (see `hmoe_cuda::DeviceInput`); None when the
    /// device keeps no such copy.
    fn hn_on_device(&self) -> Option<DeviceInput> {
        None
    }
    /// Final norm and output head of the rows `x`.
    fn head(&self, x: &[f32]) -> Result<Vec<f32>>;
    /// The model's CPU pool, idle while a dense call runs: a device may use its threads
    /// for large host copies. The model hands it over whenever its pool changes.
    fn set_host_pool(&self, pool: Arc<CpuPool>) {
        let _ = pool;
    }
}

/// Where the dense path runs.
#[derive(Clone, Default)]
pub enum DenseExec {
    /// On the host, in the model's own code.
    #[default]
    Cpu,
    /// On a device.
    Device(Arc<dyn DenseDevice>),
}

impl std::fmt::Debug for DenseExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DenseExec::Cpu => f.write_str("Cpu"),
            DenseExec::Device(d) => write!(f, "Device({})", d.describe()),
        }
    }
}

impl DenseExec {
    /// The device, if the dense path runs on one.
    pub fn device(&self) -> Option<&Arc<dyn DenseDevice>> {
        match self {
            DenseExec::Cpu => None,
            DenseExec::Device(d) => Some(d),
        }
    }
}

/// The span of one sequence in a step, checked against its cache.
fn span_of(cache: &KvCache, n: usize) -> Result<SeqSpan> {
    let seq = cache.device_seq().ok_or_else(|| {
        EngineError::Compute(
            "the dense path runs on the device but this cache was made without a device \
             sequence (make caches with Qwen3Moe::new_cache after choosing the device)"
                .into(),
        )
    })?;
    Ok(seq.span(cache.len(), n))
}

impl Qwen3Moe {
    /// The forward pass with the dense path on `dev` (see the module docs).
    pub(super) fn forward_device(
        &self,
        dev: &dyn DenseDevice,
        batch: &mut [SeqStep<'_>],
        moe: &mut MoeDispatch,
    ) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.cfg;
        let (h, e) = (cfg.hidden, cfg.n_experts);
        let n: usize = batch.iter().map(|s| s.tokens.len()).sum();
        let spans = batch
            .iter()
            .map(|s| span_of(s.cache, s.tokens.len()))
            .collect::<Result<Vec<_>>>()?;
        let mut x = self.embed_batch(batch)?;
        let mut hn = vec![0f32; n * h];
        let mut logits = vec![0f32; n * e];
        let mut next_logits = vec![0f32; n * e];
        // The GPU experts' output of the previous layer, left on the device: the next
        // dense call adds it, so the host never waits for the GPU share of a layer.
        let mut addend = None;
        // Whether layer `l`'s dense call runs a hook: a one-row layer routed on the device,
        // not the last (its output is wanted on the host).
        let has_hook =
            |l: usize, moe: &MoeDispatch| n == 1 && l + 1 < cfg.n_layers && moe.device_routing();
        for li in 0..cfg.n_layers {
            let last = li + 1 == cfg.n_layers;
            let next_out = if last {
                &mut next_logits[..0]
            } else {
                &mut next_logits[..]
            };
            let t = std::time::Instant::now();
            // A one-row decode layer (not the last: its output is wanted on the host) may
            // be routed on the device: its resident experts then run right behind the
            // dense call, launched from its hook before the host waits.
            if has_hook(li, moe) {
                let experts = self.layer_experts(li);
                let prev = li.checked_sub(1).map(|p| self.layer_experts(p));
                // The previous layer's background loads, its feedback and the last step's
                // telemetry go in the hook too: the GPU is busy. The loads go before the
                // routed pass, as they did when the previous layer issued them.
                let mut hook = |d| {
                    if let Some(prev) = &prev {
                        moe.background_loads(prev, &experts);
                    }
                    moe.launch_routed(&experts, d);
                    moe.while_gpu_busy();
                };
                let outs = (&mut x[..], &mut hn[..], &mut logits[..], next_out);
                dev.attention_block_hooked(li, &spans, addend.take(), outs, &mut hook)?;
            } else {
                dev.attention_block(
                    li,
                    &spans,
                    addend.take(),
                    &mut x,
                    &mut hn,
                    &mut logits,
                    next_out,
                )?;
            }
            self.count_device_dense(t.elapsed());
            // MoE block, as on the CPU path; the last layer's output is needed on the host.
            let next = (!last && !moe.replaying()).then_some(&next_logits[..]);
            let link = DeviceLink {
                defer: !last,
                input: dev.hn_on_device(),
                // The next call has a hook: this layer's background loads wait for it.
                background_later: has_hook(li + 1, moe),
            };
            addend = self.moe_block(li, moe, &hn, &logits, next, link, &mut x)?;
        }
        // Output head for the rows each sequence wants.
        let (wanted, counts) = output_rows(batch);
        let mut xs = Vec::with_capacity(wanted.len() * h);
        for &r in &wanted {
            xs.extend_from_slice(&x[r * h..(r + 1) * h]);
        }
        let t = std::time::Instant::now();
        let logits = if wanted.is_empty() {
            Vec::new()
        } else {
            dev.head(&xs)?
        };
        self.count_device_dense(t.elapsed());
        let vocab = cfg.vocab_size;
        let mut out = Vec::with_capacity(batch.len());
        let mut at = 0;
        for c in counts {
            out.push(logits[at * vocab..(at + c) * vocab].to_vec());
            at += c;
        }
        Ok(out)
    }
}

/// Shared by the tests here and the GPU device tests: a tiny synthetic model and its
/// logits over a prompt and a few decode steps.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::model::qwen3moe::LogitsFor;
    use crate::moe::dispatch::CpuOnly;
    use crate::moe::reference::ReferenceExecutor;
    use crate::synth::{preset, write_synthetic, Recipe, SynthOptions};
    use hmoe_gguf::GgufFile;

    /// Whole-model logits of the device path against the CPU path (both exact f32 dense
    /// math, the same f32 reference experts): only the summation order of the dense ops
    /// differs (f64 or f32 sums on the device, SIMD f32 on the CPU), ~1e-6 relative per
    /// op; a few layers of it stay far below this. A real error (a wrong position, mask
    /// or cache row) moves the logits by O(1).
    pub const LOGITS_REL_L2_TOL: f64 = 1e-3;

    /// Writes the `tiny` preset (2 layers) with `recipe` into `dir` and loads it in exact
    /// mode (dense products in f32 on the CPU).
    pub fn tiny_model(dir: &std::path::Path, recipe: &str) -> Qwen3Moe {
        let path = dir.join(format!("tiny-{recipe}.gguf"));
        let opts = SynthOptions {
            preset: preset("tiny").expect("preset"),
            recipe: Recipe::parse(recipe).expect("recipe"),
            seed: 11,
            layers: Some(2),
        };
        write_synthetic(&opts, &path, |_, _| {}).expect("synthetic model");
        let file = Arc::new(GgufFile::open(&path).expect("open"));
        let pool = crate::backend::cpu::CpuExecutor::pool(1).expect("pool");
        Qwen3Moe::load(file, true, pool, |_, _| {}).expect("load")
    }

    /// Logits of two sequences decoded together: A's prompt (5 tokens, every row's
    /// logits) and B's (3), then 3 decode steps of both with fixed tokens, then A cut back
    /// to 3 tokens and given 2 new ones; all logits concatenated in order.
    pub fn logits(model: &Qwen3Moe) -> Vec<f32> {
        let mut moe = MoeDispatch::new(Arc::new(ReferenceExecutor), None, Box::new(CpuOnly));
        let (mut a, mut b) = (model.new_cache(64), model.new_cache(64));
        let mut all = Vec::new();
        let (pa, pb) = ([3u32, 17, 92, 5, 41], [7u32, 7, 200]);
        let mut steps: Vec<(Vec<u32>, Vec<u32>, LogitsFor)> =
            vec![(pa.to_vec(), pb.to_vec(), LogitsFor::All)];
        for t in 0..3u32 {
            steps.push((vec![10 + t], vec![50 + 3 * t], LogitsFor::Last));
        }
        for (ta, tb, which) in &steps {
            let mut batch = [
                SeqStep {
                    cache: &mut a,
                    tokens: ta,
                    logits: *which,
                },
                SeqStep {
                    cache: &mut b,
                    tokens: tb,
                    logits: *which,
                },
            ];
            for l in model.forward(&mut batch, &mut moe).expect("forward") {
                all.extend(l);
            }
        }
        assert_eq!((a.len(), b.len()), (8, 6));
        // Reuse of a prefix: A goes back to 3 tokens and continues differently (the
        // device overwrites positions 3.. without being told).
        a.truncate(3);
        let mut batch = [SeqStep {
            cache: &mut a,
            tokens: &[9, 8],
            logits: LogitsFor::All,
        }];
        for l in model.forward(&mut batch, &mut moe).expect("forward") {
            all.extend(l);
        }
        assert_eq!(a.len(), 5);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{logits, tiny_model, LOGITS_REL_L2_TOL};
    use super::*;
    use crate::backend::cuda::with_dense_weights;
    use crate::model::LogitsFor;
    use hmoe_cuda::verify::compare;
    use hmoe_cuda::verify_dense::{DenseRunner, OwnedDense, RefDense};
    use std::sync::Mutex;

    /// The f64 host reference of the GPU dense path as a device: tests the seam (spans,
    /// device sequences in the caches, head rows, the MoE block fed from the device's
    /// outputs) and the weight mapping without a GPU.
    struct HostDense(Mutex<RefDense>);

    impl DenseDevice for HostDense {
        fn describe(&self) -> String {
            "host reference".into()
        }
        fn new_seq(&self, capacity: usize) -> DenseSeq {
            match self.0.lock() {
                Ok(mut r) => r.new_seq(capacity),
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
            if addend.is_some() {
                return Err(EngineError::Compute(
                    "the host reference has no device memory to add experts' output from".into(),
                ));
            }
            let mut r = self
                .0
                .lock()
                .map_err(|_| EngineError::Compute("poisoned".into()))?;
            r.block(layer, spans, x, hn, router, next_router)
                .map_err(|e| EngineError::Compute(e.to_string()))
        }
        fn head(&self, x: &[f32]) -> Result<Vec<f32>> {
            let mut r = self
                .0
                .lock()
                .map_err(|_| EngineError::Compute("poisoned".into()))?;
            DenseRunner::head(&mut *r, x).map_err(|e| EngineError::Compute(e.to_string()))
        }
    }

    #[test]
    fn the_device_seam_gives_the_cpu_paths_logits() {
        let dir = tempfile::tempdir().expect("tempdir");
        for recipe in ["q8_0", "q4_k_m"] {
            let mut model = tiny_model(dir.path(), recipe);
            let want = logits(&model);
            let owned = with_dense_weights(model.file(), &model.cfg, OwnedDense::copy_of)
                .expect("dense weights");
            let shape = crate::backend::cuda::dense_shape(&model.cfg).expect("shape");
            let dev = HostDense(Mutex::new(RefDense::new(&shape, owned).expect("reference")));
            model.set_dense(DenseExec::Device(Arc::new(dev)));
            let got = logits(&model);
            let c = compare(&got, &want);
            println!(
                "{recipe}: rel_l2 {:.2e} max_rel {:.2e}",
                c.rel_l2, c.max_rel
            );
            assert!(
                got.len() == want.len() && c.rel_l2 <= LOGITS_REL_L2_TOL,
                "{recipe}: {c:?}"
            );
        }
    }

    #[test]
    fn a_host_cache_on_a_device_path_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut model = tiny_model(dir.path(), "q8_0");
        let mut cache = model.new_cache(8); // made before the device was chosen
        let owned = with_dense_weights(model.file(), &model.cfg, OwnedDense::copy_of)
            .expect("dense weights");
        let shape = crate::backend::cuda::dense_shape(&model.cfg).expect("shape");
        let dev = HostDense(Mutex::new(RefDense::new(&shape, owned).expect("reference")));
        model.set_dense(DenseExec::Device(Arc::new(dev)));
        let mut moe = MoeDispatch::new(
            Arc::new(crate::moe::reference::ReferenceExecutor),
            None,
            Box::new(crate::moe::dispatch::CpuOnly),
        );
        let mut batch = [SeqStep {
            cache: &mut cache,
            tokens: &[1, 2],
            logits: LogitsFor::Last,
        }];
        let err = model.forward(&mut batch, &mut moe).unwrap_err();
        assert!(err.to_string().contains("device sequence"), "{err}");
        assert_eq!(cache.len(), 0);
    }
}
