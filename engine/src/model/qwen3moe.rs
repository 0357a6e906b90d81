//! The Qwen3-MoE forward pass (Hugging Face `Qwen3MoeForCausalLM` semantics) over a
//! batch of sequences: all new tokens of all sequences go through the dense layers
//! and the MoE layer together; attention runs per sequence against its own cache.

use super::attention::{attend_into, HeadShape};
use super::config::Qwen3MoeConfig;
use super::dense_exec::DenseExec;
use super::kv_cache::KvCache;
use super::ops::{rms_norm_rows, Rope};
use super::weights::ModelWeights;
use crate::error::{EngineError, Result};
use crate::moe::{predict_next, route, DeviceLink, LayerExperts, MoeDispatch, Routing};
use hmoe_cpu::CpuPool;
use hmoe_cuda::DeviceAddend;
use hmoe_gguf::GgufFile;
use std::sync::Arc;

/// Which logits a sequence wants from a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    /// None (a prefill chunk that is not the last).
    None,
    /// The last new token's.
    Last,
    /// Every new token's (reference comparisons).
    All,
}

/// One sequence's share of a forward step.
pub struct SeqStep<'a> {
    /// The sequence's cache (new tokens are appended).
    pub cache: &'a mut KvCache,
    /// New tokens.
    pub tokens: &'a [u32],
    /// Which logits to return.
    pub logits: LogitsFor,
}

/// A loaded Qwen3-MoE model.
pub struct Qwen3Moe {
    /// Hyper-parameters.
    pub cfg: Qwen3MoeConfig,
    file: Arc<GgufFile>,
    weights: ModelWeights,
    rope: Rope,
    pool: Arc<CpuPool>,
    dense: DenseExec,
    /// Host time spent in the dense device's calls (attention blocks and head), ns.
    device_dense_ns: std::sync::atomic::AtomicU64,
    /// Host time spent in MoE blocks (routing, placement, execution), ns.
    moe_block_ns: std::sync::atomic::AtomicU64,
}

impl Qwen3Moe {
    /// Validates and prepares a model from an opened GGUF file.
    /// `exact` dequantises dense weights to f32 (see [`crate::EngineOptions::exact_math`]).
    /// Dense products run on `pool` (shared with the CPU expert executor).
    pub fn load(
        file: Arc<GgufFile>,
        exact: bool,
        pool: Arc<CpuPool>,
        progress: impl FnMut(u64, u64),
    ) -> Result<Self> {
        let cfg = Qwen3MoeConfig::from_gguf(&file)?;
        let weights = ModelWeights::load(&file, &cfg, exact, progress)?;
        let rope = Rope::new(cfg.head_dim, cfg.rope_theta);
        Ok(Self {
            cfg,
            file,
            weights,
            rope,
            pool,
            dense: DenseExec::Cpu,
            device_dense_ns: Default::default(),
            moe_block_ns: Default::default(),
        })
    }

    /// Seconds spent so far in the dense device's calls (0 with the dense path on the
    /// CPU): with the MoE layer times, what the benchmarks split a decode step into.
    pub fn device_dense_seconds(&self) -> f64 {
        self.device_dense_ns
            .load(std::sync::atomic::Ordering::Relaxed) as f64
            / 1e9
    }

    /// Seconds spent so far in MoE blocks, routing and placement included: against the
    /// MoE layers' measured times, what the host adds around them.
    pub fn moe_block_seconds(&self) -> f64 {
        self.moe_block_ns.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9
    }

    /// Adds `t` to [`Qwen3Moe::device_dense_seconds`].
    pub(super) fn count_device_dense(&self, t: std::time::Duration) {
        self.device_dense_ns
            .fetch_add(t.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Where the dense path runs (the service sets it at load, before any cache exists:
    /// caches made earlier have no device sequence and fail on a device).
    pub fn set_dense(&mut self, dense: DenseExec) {
        if let Some(d) = dense.device() {
            d.set_host_pool(self.pool.clone());
        }
        self.dense = dense;
    }

    /// Where the dense path runs.
    pub fn dense(&self) -> &DenseExec {
        &self.dense
    }

    /// Threads of the CPU pool the dense products (and CPU experts) run on.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Moves the dense products onto another pool (thread-count change between
    /// generations; the CPU expert executor must be given the same pool).
    pub fn set_pool(&mut self, pool: Arc<CpuPool>) {
        if let Some(d) = self.dense.device() {
            d.set_host_pool(pool.clone());
        }
        self.pool = pool;
    }

    /// The mapped model file.
    pub fn file(&self) -> &Arc<GgufFile> {
        &self.file
    }

    /// An empty cache holding up to `capacity` tokens.
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        let cap = capacity.min(self.cfg.context_length);
        let (layers, kv_dim) = (self.cfg.n_layers, self.cfg.n_kv_heads * self.cfg.head_dim);
        match self.dense.device() {
            Some(d) => KvCache::on_device(layers, kv_dim, cap, d.new_seq(cap)),
            None => KvCache::new(layers, kv_dim, cap),
        }
    }

    /// The expert tensors of layer `layer`, addressable per expert.
    pub fn layer_experts(&self, layer: usize) -> LayerExperts<'_> {
        let lw = &self.weights.layers[layer];
        LayerExperts::new(layer, &self.file, &lw.gate_exps, &lw.up_exps, &lw.down_exps)
    }

    /// The embeddings of every sequence's new tokens, in batch order: `[n, hidden]`.
    pub(super) fn embed_batch(&self, batch: &[SeqStep<'_>]) -> Result<Vec<f32>> {
        let h = self.cfg.hidden;
        let n: usize = batch.iter().map(|s| s.tokens.len()).sum();
        let mut x = vec![0f32; n * h];
        let mut row = 0;
        for s in batch {
            self.embed(s.tokens, &mut x[row * h..(row + s.tokens.len()) * h])?;
            row += s.tokens.len();
        }
        Ok(x)
    }

    pub(super) fn embed(&self, tokens: &[u32], out: &mut [f32]) -> Result<()> {
        let h = self.cfg.hidden;
        let info = &self.weights.token_embd;
        let row_bytes = info.dtype.bytes_for(h as u64).unwrap_or(0) as usize;
        let data = self.file.tensor_data(info);
        for (t, row) in tokens.iter().zip(out.chunks_exact_mut(h)) {
            let start = *t as usize * row_bytes;
            hmoe_quant::dequantize(info.dtype, &data[start..start + row_bytes], row)?;
        }
        Ok(())
    }

    fn validate(&self, batch: &[SeqStep<'_>]) -> Result<()> {
        for s in batch {
            if s.tokens.is_empty() {
                return Err(EngineError::EmptyPrompt);
            }
            if s.tokens.len() > s.cache.remaining() {
                return Err(EngineError::PromptTooLong {
                    tokens: s.cache.len() + s.tokens.len(),
                    context: s.cache.capacity(),
                });
            }
            if let Some(&bad) = s
                .tokens
                .iter()
                .find(|&&t| t as usize >= self.cfg.vocab_size)
            {
                return Err(EngineError::TokenOutOfRange {
                    id: bad,
                    vocab: self.cfg.vocab_size,
                });
            }
        }
        Ok(())
    }

    /// Runs one step for a batch of sequences. Returns, per sequence, the logits it
    /// asked for, row-major `[rows, vocab]`.
    pub fn forward(
        &self,
        batch: &mut [SeqStep<'_>],
        moe: &mut MoeDispatch,
    ) -> Result<Vec<Vec<f32>>> {
        self.validate(batch)?;
        moe.begin_step(batch.iter().map(|s| s.tokens.len()).sum());
        let out = self.forward_inner(batch, moe);
        moe.end_step();
        if out.is_err() {
            // Drop whatever the failed step appended to the caches.
            for s in batch.iter_mut() {
                let n = s.cache.len();
                s.cache.truncate(n);
            }
        }
        out
    }

    /// The MoE block of layer `li` on the normed input `hn`, whatever device ran the
    /// dense part: routes `router_logits` (or the replayed trace's choice), predicts the
    /// next layer's experts from `next_logits` (that layer's router on `hn`; None for
    /// the last layer or under replay), lets the dispatcher place and run the experts,
    /// and adds their output into the residual `x`. With `link.defer`, the GPU share's output
    /// may stay on the device instead: it is returned, for the dense path's next call.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn moe_block(
        &self,
        li: usize,
        moe: &mut MoeDispatch,
        hn: &[f32],
        router_logits: &[f32],
        next_logits: Option<&[f32]>,
        link: DeviceLink,
        x: &mut [f32],
    ) -> Result<Option<DeviceAddend>> {
        let t = std::time::Instant::now();
        let r = self.moe_block_inner(li, moe, hn, router_logits, next_logits, link, x);
        self.moe_block_ns.fetch_add(
            t.elapsed().as_nanos() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn moe_block_inner(
        &self,
        li: usize,
        moe: &mut MoeDispatch,
        hn: &[f32],
        router_logits: &[f32],
        next_logits: Option<&[f32]>,
        link: DeviceLink,
        x: &mut [f32],
    ) -> Result<Option<DeviceAddend>> {
        let cfg = &self.cfg;
        let (h, e) = (cfg.hidden, cfg.n_experts);
        // A layer routed on the device (dense path's hook) uses the device's choice, so
        // that the host and the routed pass agree on every expert and weight.
        let mut routing = match moe.take_routed()? {
            Some(c) => Routing {
                top_k: c.ids.len(),
                ids: c.ids,
                weights: c.weights,
            },
            None => route(router_logits, e, cfg.top_k, cfg.norm_topk_prob),
        };
        let replayed_next = moe.replay_routing(li, &mut routing);
        let items = routing.work_items(e);
        let next = match (replayed_next, next_logits) {
            (Some(pred), _) => pred,
            (None, Some(l)) => predict_next(l, e, cfg.top_k),
            (None, None) => Vec::new(),
        };
        let next_layer = (li + 1 < self.weights.layers.len()).then(|| self.layer_experts(li + 1));
        // The executors add into their output (`out += Σ experts`): the residual itself,
        // which spares a zeroed buffer and a pass over it (4 MB each of a 512-row prefill
        // layer).
        moe.run_layer(
            &self.layer_experts(li),
            next_layer.as_ref(),
            hn,
            h,
            &items,
            &next,
            link,
            x,
        )
    }

    fn forward_inner(
        &self,
        batch: &mut [SeqStep<'_>],
        moe: &mut MoeDispatch,
    ) -> Result<Vec<Vec<f32>>> {
        if let Some(d) = self.dense.device() {
            return self.forward_device(d.as_ref(), batch, moe);
        }
        let cfg = &self.cfg;
        let (h, hd) = (cfg.hidden, cfg.head_dim);
        let shape = HeadShape {
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: hd,
        };
        let (q_w, kv_w) = (cfg.n_heads * hd, cfg.n_kv_heads * hd);
        let n: usize = batch.iter().map(|s| s.tokens.len()).sum();
        let mut x = self.embed_batch(batch)?;

        // Buffers reused by every layer (the products still return fresh outputs).
        let mut hn = vec![0f32; n * h];
        let mut attn = vec![0f32; n * q_w];
        for (li, lw) in self.weights.layers.iter().enumerate() {
            // Attention block.
            hn.copy_from_slice(&x);
            rms_norm_rows(&mut hn, &lw.attn_norm, cfg.rms_eps);
            let mut q = lw.wq.forward(&self.file, &self.pool, &hn)?;
            let mut k = lw.wk.forward(&self.file, &self.pool, &hn)?;
            let v = lw.wv.forward(&self.file, &self.pool, &hn)?;
            rms_norm_rows(&mut q, &lw.q_norm, cfg.rms_eps);
            rms_norm_rows(&mut k, &lw.k_norm, cfg.rms_eps);
            let mut row = 0;
            for s in batch.iter_mut() {
                let m = s.tokens.len();
                let start = s.cache.len();
                for i in 0..m {
                    let r = row + i;
                    let (qr, kr) = (r * q_w..(r + 1) * q_w, r * kv_w..(r + 1) * kv_w);
                    self.rope
                        .apply_all(&mut [&mut q[qr], &mut k[kr]], hd, start + i);
                }
                let kv = &mut s.cache.layers[li];
                kv.k.extend_from_slice(&k[row * kv_w..(row + m) * kv_w]);
                kv.v.extend_from_slice(&v[row * kv_w..(row + m) * kv_w]);
                let rows = row * q_w..(row + m) * q_w;
                attend_into(
                    &self.pool,
                    &q[rows.clone()],
                    kv,
                    start,
                    shape,
                    &mut attn[rows],
                );
                row += m;
            }
            let o = lw.wo.forward(&self.file, &self.pool, &attn)?;
            for (xi, oi) in x.iter_mut().zip(&o) {
                *xi += oi;
            }

            // MoE block: the router decides which experts, the dispatcher decides where.
            hn.copy_from_slice(&x);
            rms_norm_rows(&mut hn, &lw.ffn_norm, cfg.rms_eps);
            let logits = lw.router.forward(&self.file, &self.pool, &hn)?;
            // The next layer's router on this layer's input predicts what comes next,
            // so the scheduler can prefetch while the link is idle.
            let next_logits = match self.weights.layers.get(li + 1) {
                Some(next_lw) if !moe.replaying() => {
                    Some(next_lw.router.forward(&self.file, &self.pool, &hn)?)
                }
                _ => None,
            };
            self.moe_block(
                li,
                moe,
                &hn,
                &logits,
                next_logits.as_deref(),
                DeviceLink::default(),
                &mut x,
            )?;
        }

        // Output head for the rows each sequence wants.
        let (wanted, counts) = output_rows(batch);
        let mut hn = Vec::with_capacity(wanted.len() * h);
        for &r in &wanted {
            hn.extend_from_slice(&x[r * h..(r + 1) * h]);
        }
        rms_norm_rows(&mut hn, &self.weights.output_norm, cfg.rms_eps);
        let logits = if wanted.is_empty() {
            Vec::new()
        } else {
            self.weights.output.forward(&self.file, &self.pool, &hn)?
        };
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

/// The rows of a step whose logits the sequences asked for (all sequences' rows in
/// order), and how many each sequence gets; advances every cache past its new tokens.
pub(crate) fn output_rows(batch: &mut [SeqStep<'_>]) -> (Vec<usize>, Vec<usize>) {
    let mut wanted = Vec::new();
    let mut counts = Vec::with_capacity(batch.len());
    let mut row = 0;
    for s in batch.iter_mut() {
        let m = s.tokens.len();
        s.cache.advance(m);
        let rows: Vec<usize> = match s.logits {
            LogitsFor::None => vec![],
            LogitsFor::Last => vec![row + m - 1],
            LogitsFor::All => (row..row + m).collect(),
        };
        counts.push(rows.len());
        wanted.extend(rows);
        row += m;
    }
    (wanted, counts)
}
