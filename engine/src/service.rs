//! [`Engine`]: the handle the CLI, the app and the server hold. Loading happens on a
//! blocking task; generation runs on the engine's worker thread.

use crate::api::{
    ChatMessage, EngineOptions, GenerationEvent, LoadProgress, LoadStage, Prompt, RuntimeOptions,
    SamplingParams,
};
use crate::backend::cpu::CpuExecutor;
use crate::error::{EngineError, Result};
use crate::generate::worker::{self, Command, Request, WorkerConfig};
use crate::info::ModelInfo;
use crate::model::{LogitsFor, Qwen3Moe, SeqStep};
use crate::moe::dispatch::MoeDispatch;
use crate::moe::placer::{model_shape, PlacerOptions, SchedPlacer, TelemetryHub};
use crate::moe::reference::ReferenceExecutor;
use crate::moe::stats::SchedSnapshot;
use crate::moe::ExpertExecutor;
use hmoe_gguf::GgufFile;
use hmoe_sched::{MachineProfile, ModelShape, StepTelemetry, TelemetryTotals, Trace};
use hmoe_tokenizer::{ChatTemplate, RenderOptions, Tokenizer};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Progress callback for [`Engine::load`].
pub type ProgressFn = Arc<dyn Fn(LoadProgress) + Send + Sync>;

/// Queue depth of a generation's event channel (events are small).
const EVENT_QUEUE: usize = 256;
/// Commands that may wait for the worker before `generate` reports the engine busy.
const COMMAND_QUEUE: usize = 1024;
/// Sequences decoded together by default.
const DEFAULT_MAX_BATCH: usize = 16;
/// Upper bound on the CPU thread setting (a typo, not a machine, asks for more).
const MAX_THREADS: usize = 1024;

/// Applies runtime options on the worker thread (between generations). Failures keep
/// the previous settings and are logged: the snapshot shows what is in force.
fn apply_runtime(model: &mut Qwen3Moe, moe: &mut MoeDispatch, opts: &RuntimeOptions, exact: bool) {
    let wanted = if opts.threads == 0 {
        hmoe_cpu::topology::physical_cores().max(1)
    } else {
        opts.threads
    };
    if wanted != model.threads() {
        match CpuExecutor::pool(opts.threads) {
            Ok(pool) => {
                model.set_pool(pool.clone());
                if !exact {
                    moe.set_cpu_executor(Arc::new(CpuExecutor::new(pool)));
                }
            }
            Err(e) => tracing::warn!("keeping {} CPU threads: {e}", model.threads()),
        }
    }
    let placer = PlacerOptions {
        policy: opts.policy.clone(),
        vram_budget_bytes: opts.vram_budget_bytes,
        prefetch: opts.prefetch,
    };
    if let Err(e) = moe.reconfigure(&placer) {
        tracing::warn!("keeping the scheduler settings: {e}");
    }
}

struct Inner {
    info: ModelInfo,
    path: PathBuf,
    tokenizer: Option<Arc<Tokenizer>>,
    template: Option<ChatTemplate>,
    commands: SyncSender<Command>,
    runtime: Mutex<RuntimeOptions>,
    context: usize,
    /// Prompt tokens per prefill step.
    prefill_chunk: usize,
    exact_math: bool,
    shape: ModelShape,
    hub: TelemetryHub,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Ok(mut t) = self.thread.lock() {
            if let Some(h) = t.take() {
                let _ = h.join();
            }
        }
    }
}

/// A loaded model ready to generate. Cheap to clone; the worker stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// A running generation. Dropping it (or calling [`Generation::cancel`]) stops it.
pub struct Generation {
    /// The event stream: text pieces, then one `Done` or `Error`.
    pub events: tokio::sync::mpsc::Receiver<GenerationEvent>,
    cancel: Arc<AtomicBool>,
}

impl Generation {
    /// Asks the engine to stop this generation; a `Done { Cancelled }` event follows.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// A handle that cancels this generation from elsewhere.
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle(self.cancel.clone())
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Cancels a generation from another task.
#[derive(Clone, Debug)]
pub struct CancelHandle(Arc<AtomicBool>);

impl CancelHandle {
    /// Cancels.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn load_tokenizer(file: &GgufFile, path: &Path) -> Result<Option<Tokenizer>> {
    if let Some(dir) = path.parent() {
        let beside = dir.join("tokenizer.json");
        if beside.is_file() {
            return Ok(Some(Tokenizer::from_json_file(&beside)?));
        }
    }
    if file.get("tokenizer.ggml.tokens").is_some() {
        return Ok(Some(Tokenizer::from_gguf_map(file.metadata())?));
    }
    Ok(None)
}

impl Engine {
    /// Opens, validates and prepares a model; progress is reported through `progress`.
    pub async fn load(path: PathBuf, opts: EngineOptions, progress: ProgressFn) -> Result<Engine> {
        tokio::task::spawn_blocking(move || Self::load_blocking(&path, opts, progress))
            .await
            .map_err(|e| EngineError::Compute(format!("load task failed: {e}")))?
    }

    /// [`Engine::load`] for callers without an async runtime.
    pub fn load_blocking(path: &Path, opts: EngineOptions, progress: ProgressFn) -> Result<Engine> {
        let report = |stage, done, total| progress(LoadProgress { stage, done, total });
        report(LoadStage::Opening, 0, 1);
        let file = Arc::new(GgufFile::open(path)?);
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let info = ModelInfo::from_file(&file, &stem)?;
        report(LoadStage::Opening, 1, 1);
        report(LoadStage::Tokenizer, 0, 1);
        let tokenizer = load_tokenizer(&file, path)?.map(Arc::new);
        let template = match file.get("tokenizer.chat_template").and_then(|v| v.as_str()) {
            Some(src) => Some(ChatTemplate::new(src)?),
            None => None,
        };
        report(LoadStage::Tokenizer, 1, 1);
        let pool = CpuExecutor::pool(opts.runtime.threads)?;
        let mut model = Qwen3Moe::load(file, opts.exact_math, pool.clone(), |d, t| {
            report(LoadStage::Weights, d, t)
        })?;
        let context = opts
            .max_context
            .unwrap_or(model.cfg.context_length)
            .min(model.cfg.context_length)
            .max(1);
        // Exact mode keeps the f32 reference loop so results match the reference
        // implementation; otherwise the fused, activation-quantised kernels run.
        let cpu: Arc<dyn ExpertExecutor> = if opts.exact_math {
            Arc::new(ReferenceExecutor)
        } else {
            Arc::new(CpuExecutor::new(pool.clone()))
        };
        let types = ["gate", "up", "down"].map(|m| {
            model
                .file()
                .tensor(&format!("blk.0.ffn_{m}_exps.weight"))
                .map_or(hmoe_gguf::GgmlDType::F32, |t| t.dtype)
        });
        let shape = model_shape(&info, types)?;
        let hub = SchedPlacer::hub(&shape);
        // Experts on the GPU when CUDA is usable; `Auto` falls back to the CPU with the
        // reason, `Cuda` fails with it. Without a GPU the cache has no VRAM and every plan
        // is all-CPU (the telemetry says so).
        // The dense path on the GPU (opt-in, HMOE_CUDA_DENSE=1) starts first: the expert
        // arena gets what its weights and KV reserve leave.
        let dense = crate::backend::cuda::setup_dense(opts.device, &model);
        let gpu = crate::backend::cuda::setup_gpu_with(
            opts.device,
            &opts.runtime,
            model.file(),
            info.config.top_k,
            dense.as_deref(),
        )?;
        match (dense, &gpu.executor) {
            (Some(d), Some(_)) => model.set_dense(crate::model::DenseExec::Device(d)),
            (Some(_), None) => tracing::warn!(
                "the GPU dense path runs only with the CUDA expert backend, which did not start; the dense path stays on the CPU"
            ),
            (None, _) => {}
        }
        tracing::info!("experts: {}; policy `{}`", gpu.note, opts.runtime.policy);
        report(LoadStage::Calibrating, 0, 1);
        let profile = crate::calibrate::profile_for(
            opts.calibration,
            &pool,
            &shape,
            &types,
            MachineProfile::build_box(),
        )?;
        let profile = match &gpu.executor {
            Some(g) => {
                crate::calibrate::calibrate_gpu(g, &model.layer_experts(0), &shape, profile)?
            }
            None => profile,
        };
        report(LoadStage::Calibrating, 1, 1);
        let placer = SchedPlacer::new(
            shape.clone(),
            &opts.runtime.policy,
            0,
            opts.runtime.prefetch,
            profile,
            hub.clone(),
        )?;
        let mut placer = placer;
        placer.reconfigure(PlacerOptions {
            policy: opts.runtime.policy.clone(),
            vram_budget_bytes: opts.runtime.vram_budget_bytes,
            prefetch: opts.runtime.prefetch,
        })?;
        if let Some(g) = &gpu.executor {
            let arena = gpu.placer_budget(shape.expert_bytes());
            placer.set_gpu(gpu.note.clone(), arena, g.hints())?;
        }
        let mut moe = MoeDispatch::new(cpu, None, Box::new(placer));
        if let Some(g) = gpu.executor {
            moe.set_cuda(g);
            // Decode routing on the device needs the router logits there: the GPU dense path.
            if model.dense().device().is_some() {
                let c = &model.cfg;
                let routing = (c.n_experts, c.top_k, c.norm_topk_prob);
                moe.enable_device_routing(c.n_layers, routing, c.hidden);
            }
        }
        let eos = tokenizer
            .as_ref()
            .map(|t| t.eos_ids().to_vec())
            .unwrap_or_default();
        let (tx, rx) = mpsc::sync_channel(COMMAND_QUEUE);
        let prefill_chunk = opts.prefill_chunk.max(1);
        let cfg = WorkerConfig {
            max_batch: DEFAULT_MAX_BATCH,
            prefill_chunk,
            context,
        };
        let tok = tokenizer.clone();
        let thread = std::thread::Builder::new()
            .name("hmoe-engine".into())
            .spawn(move || worker::run(model, moe, tok, eos, cfg, rx))
            .map_err(|e| EngineError::Io {
                path: "engine thread".into(),
                source: e,
            })?;
        report(LoadStage::Ready, 1, 1);
        Ok(Engine {
            inner: Arc::new(Inner {
                info,
                path: path.to_path_buf(),
                tokenizer,
                template,
                commands: tx,
                runtime: Mutex::new(opts.runtime),
                context,
                prefill_chunk,
                exact_math: opts.exact_math,
                shape,
                hub,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// The model's info.
    pub fn info(&self) -> &ModelInfo {
        &self.inner.info
    }

    /// The model file this engine was loaded from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Prompt tokens per prefill step (the generation worker's and the benchmarks').
    pub fn prefill_chunk(&self) -> usize {
        self.inner.prefill_chunk
    }

    /// Context window per sequence.
    pub fn context_length(&self) -> usize {
        self.inner.context
    }

    fn tokenizer(&self) -> Result<&Tokenizer> {
        self.inner.tokenizer.as_deref().ok_or_else(|| {
            EngineError::InvalidRequest("this model file has no tokenizer; give token ids".into())
        })
    }

    /// Tokenizes text (special tokens in the text are recognised).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer()?.encode(text, false)?)
    }

    /// Decodes token ids.
    pub fn detokenize(&self, ids: &[u32]) -> Result<String> {
        Ok(self.tokenizer()?.decode(ids, false)?)
    }

    /// Renders messages through the model's chat template with the generation prompt.
    pub fn render_chat(&self, messages: &[ChatMessage], enable_thinking: bool) -> Result<String> {
        let t = self.inner.template.as_ref().ok_or_else(|| {
            EngineError::InvalidRequest("this model file has no chat template".into())
        })?;
        let msgs: Vec<_> = messages
            .iter()
            .map(|m| hmoe_tokenizer::ChatMessage::new(m.role.clone(), m.content.clone()))
            .collect();
        let opts = RenderOptions {
            add_generation_prompt: true,
            enable_thinking: Some(enable_thinking),
            ..Default::default()
        };
        Ok(t.render(&msgs, &opts)?)
    }

    /// Turns a prompt into token ids.
    pub fn prompt_tokens(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        let ids = match prompt {
            Prompt::Text { text } => self.tokenize(text)?,
            Prompt::Tokens { ids } => ids.clone(),
            Prompt::Chat {
                messages,
                enable_thinking,
            } => self.tokenize(&self.render_chat(messages, *enable_thinking)?)?,
        };
        if ids.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if ids.len() >= self.inner.context {
            return Err(EngineError::PromptTooLong {
                tokens: ids.len(),
                context: self.inner.context,
            });
        }
        Ok(ids)
    }

    /// Starts a generation. Errors in the prompt or parameters are returned here;
    /// failures during generation arrive as an `Error` event.
    pub fn generate(&self, prompt: Prompt, params: SamplingParams) -> Result<Generation> {
        crate::generate::sampler::validate(&params)?;
        let ids = self.prompt_tokens(&prompt)?;
        let (tx, rx) = tokio::sync::mpsc::channel(EVENT_QUEUE);
        let cancel = Arc::new(AtomicBool::new(false));
        let req = Request {
            prompt: ids,
            params,
            events: tx,
            cancel: cancel.clone(),
            submitted: Instant::now(),
        };
        self.inner
            .commands
            .try_send(Command::Generate(Box::new(req)))
            .map_err(|e| match e {
                mpsc::TrySendError::Full(_) => EngineError::Busy,
                mpsc::TrySendError::Disconnected(_) => EngineError::ShutDown,
            })?;
        Ok(Generation { events: rx, cancel })
    }

    /// Per-step scheduler telemetry (placements, predicted and measured times).
    pub fn subscribe_telemetry(&self) -> tokio::sync::broadcast::Receiver<Arc<StepTelemetry>> {
        self.inner.hub.sender.subscribe()
    }

    /// Running totals of the telemetry (hit rate, bytes moved, busy times, tokens).
    pub fn telemetry_totals(&self) -> TelemetryTotals {
        self.inner.hub.totals.lock().map(|t| *t).unwrap_or_default()
    }

    /// Median relative error of the cost model's predicted layer times against the
    /// measured ones (None before any measurement).
    pub fn prediction_error(&self) -> Option<f64> {
        self.inner.hub.prediction_error.lock().ok().and_then(|e| *e)
    }

    /// Writes the routing trace kept so far (the newest steps, see
    /// [`crate::moe::placer::TRACE_KEEP_STEPS`]; format in docs/notes/trace-format.md).
    pub fn save_trace(&self, path: &Path) -> Result<()> {
        let trace = self
            .inner
            .hub
            .trace
            .lock()
            .map_err(|_| EngineError::Compute("trace lock poisoned".into()))?;
        trace.save(path).map_err(|e| EngineError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// The runtime options in force.
    pub fn runtime_options(&self) -> RuntimeOptions {
        self.inner
            .runtime
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Changes threads, policy, VRAM budget and prefetch without reloading the model.
    /// Checked here; applied on the worker when no sequence is active, i.e. from the
    /// next generation on (a running one keeps its settings). The cache starts empty
    /// under the new settings; the calibrated cost model, statistics and trace are kept.
    /// Without a GPU the budget is recorded and the cache stays empty.
    pub fn set_runtime_options(&self, opts: RuntimeOptions) -> Result<()> {
        if !hmoe_sched::POLICY_NAMES.contains(&opts.policy.as_str()) {
            return Err(EngineError::InvalidRequest(format!(
                "unknown policy `{}` (one of {})",
                opts.policy,
                hmoe_sched::POLICY_NAMES.join(", ")
            )));
        }
        if opts.threads > MAX_THREADS {
            return Err(EngineError::InvalidRequest(format!(
                "threads {} is more than {MAX_THREADS}",
                opts.threads
            )));
        }
        if let Ok(mut r) = self.inner.runtime.lock() {
            *r = opts.clone();
        }
        let exact = self.inner.exact_math;
        let job = move |model: &mut Qwen3Moe, moe: &mut MoeDispatch| {
            apply_runtime(model, moe, &opts, exact);
        };
        self.inner
            .commands
            .send(Command::Reconfigure(Box::new(job)))
            .map_err(|_| EngineError::ShutDown)
    }

    /// The scheduler's cache map, per-expert statistics and the settings in force,
    /// taken between two steps (waits for the current step to end).
    pub fn scheduler_snapshot(&self) -> Result<SchedSnapshot> {
        self.with_model(|model, moe| moe.placer().snapshot(model.threads()))?
            .ok_or_else(|| EngineError::InvalidRequest("no scheduler in this engine".into()))
    }

    /// The scheduler's view of the model (layers, experts, sizes).
    pub fn model_shape(&self) -> &ModelShape {
        &self.inner.shape
    }

    /// The routing trace kept so far, the newest steps (a copy; see
    /// [`crate::moe::placer::TRACE_KEEP_STEPS`]).
    pub fn trace(&self) -> Result<Trace> {
        self.inner
            .hub
            .trace
            .lock()
            .map(|t| t.clone())
            .map_err(|_| EngineError::Compute("trace lock poisoned".into()))
    }

    /// Runs `f` on the worker thread with exclusive access to the model and the MoE
    /// dispatcher, between steps (benchmarks, reference logits, policy changes).
    pub fn with_model<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Qwen3Moe, &mut MoeDispatch) -> R + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = mpsc::channel();
        let job = move |model: &Qwen3Moe, moe: &mut MoeDispatch| {
            let _ = tx.send(f(model, moe));
        };
        self.inner
            .commands
            .send(Command::With(Box::new(job)))
            .map_err(|_| EngineError::ShutDown)?;
        rx.recv().map_err(|_| EngineError::ShutDown)
    }

    /// Logits of every position of `tokens` on a fresh cache, `[n, vocab]`, for
    /// reference comparisons. `chunk` splits the prompt into prefill chunks.
    pub fn logits(&self, tokens: Vec<u32>, chunk: usize) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if tokens.len() > self.inner.context {
            return Err(EngineError::PromptTooLong {
                tokens: tokens.len(),
                context: self.inner.context,
            });
        }
        self.with_model(move |model, moe| {
            let mut cache = model.new_cache(tokens.len());
            let mut all = Vec::new();
            for part in tokens.chunks(chunk.max(1)) {
                let mut step = [SeqStep {
                    cache: &mut cache,
                    tokens: part,
                    logits: LogitsFor::All,
                }];
                let mut out = model.forward(&mut step, moe)?;
                all.append(&mut out[0]);
            }
            Ok(all)
        })?
    }
}
