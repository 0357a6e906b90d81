//! The fused MoE expert executor.
//!
//! For each task (one expert and the token rows routed to it) and each of its
//! tokens `r` with router weight `w`:
//! `out[r] += w · down( silu(gate · x_r) ⊙ (up · x_r) )`.
//!
//! Three phases, each split across the pool by rows so that every core streams
//! weights at once whatever the number of experts and tokens:
//! 1. the activations `x` are quantised once into every format the gate/up
//!    kernels need (shared by all experts);
//! 2. gate and up: work items are tiles of `TILE` rows of one expert, claimed
//!    dynamically; each tile computes gate and up for the same rows together (fused)
//!    for all of the expert's tokens, so a tile's weights are read from DRAM once
//!    and reused from L1/L2 across tokens (the blocked, compute-bound path when an
//!    expert has many tokens); the SwiGLU product goes to the intermediate buffer;
//! 3. the intermediate rows are quantised to the down kernels' format, then down:
//!    work items are tiles of output features across all experts, so each thread
//!    owns its slice of `out` (no atomics, no reduction) and reuses each down tile
//!    across the expert's tokens.

use crate::shared::SharedMut;
use crate::{CpuError, CpuPool};
use hmoe_gguf::GgmlDType;
use hmoe_quant::{row_bytes, ActBuf, ActFormat, ActRow, DotKernel, Isa, MAX_ROWS_PER_CALL};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// A row-major weight matrix in a ggml type: `rows` output features, each a row of
/// `cols` input features stored as `row_bytes(dtype, cols)` bytes.
#[derive(Debug, Clone, Copy)]
pub struct MatView<'a> {
    /// Element type.
    pub dtype: GgmlDType,
    /// Output features.
    pub rows: usize,
    /// Input features (row length).
    pub cols: usize,
    /// `rows × row_bytes(dtype, cols)` bytes.
    pub data: &'a [u8],
}

impl<'a> MatView<'a> {
    /// Expert `expert`'s matrix inside a stacked GGUF tensor such as
    /// `blk.N.ffn_gate_exps.weight` (`n_experts` matrices of `rows × cols`, expert-major).
    pub fn from_stacked(
        dtype: GgmlDType,
        rows: usize,
        cols: usize,
        n_experts: usize,
        stacked: &'a [u8],
        expert: usize,
    ) -> Result<Self, CpuError> {
        let per = row_bytes(dtype, cols)?
            .checked_mul(rows)
            .ok_or(CpuError::Length {
                what: "expert matrix bytes (overflow)",
                expected: usize::MAX,
                got: rows,
            })?;
        let total = per.checked_mul(n_experts).ok_or(CpuError::Length {
            what: "stacked tensor bytes (overflow)",
            expected: usize::MAX,
            got: n_experts,
        })?;
        if stacked.len() != total {
            return Err(CpuError::Length {
                what: "stacked expert tensor bytes",
                expected: total,
                got: stacked.len(),
            });
        }
        if expert >= n_experts {
            return Err(CpuError::Length {
                what: "expert index (< n_experts)",
                expected: n_experts,
                got: expert,
            });
        }
        Ok(MatView {
            dtype,
            rows,
            cols,
            data: &stacked[expert * per..(expert + 1) * per],
        })
    }
}

/// One expert's work: its three matrices and the token rows (with router weights)
/// routed to it. `gate`/`up` are `ffn × hidden`, `down` is `hidden × ffn`.
#[derive(Debug, Clone, Copy)]
pub struct ExpertTask<'a> {
    /// Gate projection, `ffn × hidden`.
    pub gate: MatView<'a>,
    /// Up projection, `ffn × hidden`.
    pub up: MatView<'a>,
    /// Down projection, `hidden × ffn`.
    pub down: MatView<'a>,
    /// Rows of `x` / `out` this expert processes (each at most once).
    pub token_rows: &'a [u32],
    /// Router weight of each token row (same length as `token_rows`).
    pub weights: &'a [f32],
}

/// Rows per gate/up work item: 2 × 16 rows of a 2048-wide Q8_0 expert are 70 KB
/// (L2-resident across tokens) and 768 / 16 = 48 items per expert keep 16 threads busy
/// even for one expert.
pub(crate) const TILE: usize = 16;
/// Output features per down work item (2048 / 16 = 128 items).
pub(crate) const DOWN_TILE: usize = 16;
/// Below this many x rows (or intermediate rows), quantisation runs on the caller
/// alone: waking the pool costs more than quantising a few thousand values.
const PARALLEL_QUANT_MIN_ROWS: usize = 16;

/// Default token count from which an expert uses the tiled GEMM kernels (see
/// `docs/notes/cpu-kernels.md` for the measurement that chose it).
pub const GEMM_MIN_TOKENS: usize = 4;

/// Tokens from which experts and dense products use the tiled GEMM kernels:
/// [`GEMM_MIN_TOKENS`], or the `HMOE_CPU_GEMM_MIN_TOKENS` environment variable (a
/// count, or `off` for never; read once) so that benchmarks can compare both paths
/// in one build.
pub fn gemm_min_tokens() -> usize {
    static MIN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MIN.get_or_init(|| match std::env::var("HMOE_CPU_GEMM_MIN_TOKENS") {
        Ok(v) if v.trim() == "off" => usize::MAX,
        Ok(v) => v.trim().parse().unwrap_or(GEMM_MIN_TOKENS).max(1),
        Err(_) => GEMM_MIN_TOKENS,
    })
}

/// Whether the tiled GEMM beats the fused N-row gate/up path for this kernel. Q6_K
/// gate/up measured 5–8 % slower tiled inside `run_experts` (cpu-bench
/// `--prefill-only`, CPU time, build machine) although 1.3× faster in cache, so it
/// stays on the N-row kernels; its down projection gains.
fn gemm_gate_up_pays(k: DotKernel) -> bool {
    k.has_gemm() && k.dtype() != GgmlDType::Q6K
}

/// Tokens per register-blocked kernel call.
const G: usize = MAX_ROWS_PER_CALL;
/// Placeholder for unused slots of a token group.
const EMPTY_ROW: ActRow<'static> = ActRow::F32(&[]);

const FORMATS: [ActFormat; 4] = [
    ActFormat::F32,
    ActFormat::BF16,
    ActFormat::Q8_0,
    ActFormat::Q8K,
];

fn fidx(f: ActFormat) -> usize {
    match f {
        ActFormat::F32 => 0,
        ActFormat::BF16 => 1,
        ActFormat::Q8_0 => 2,
        ActFormat::Q8K => 3,
    }
}

/// Per-task data resolved once per call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) gate: DotKernel,
    pub(crate) up: DotKernel,
    pub(crate) down: DotKernel,
    /// First intermediate row of this task.
    pub(crate) inter_row: usize,
    /// First gate/up work item of this task.
    first_item: usize,
    /// Whether this task's gate/up (and down) use the tiled GEMM path.
    gemm_gate_up: bool,
    gemm_down: bool,
}

/// Reusable buffers for [`run_experts`]: they grow to the largest call seen and are
/// then reused, so steady-state calls do not allocate.
#[derive(Debug)]
pub struct ExpertScratch {
    isa: Isa,
    gemm_min_tokens: usize,
    x_q: [ActBuf; 4],
    inter: Vec<f32>,
    inter_q: [ActBuf; 4],
    plans: Vec<Plan>,
    used: Vec<bool>,
}

impl ExpertScratch {
    /// Scratch using the best kernels this CPU has.
    pub fn new() -> Self {
        Self::with_isa(Isa::best())
    }

    /// Scratch using kernels of level `isa` (tests and benchmarks compare levels).
    pub fn with_isa(isa: Isa) -> Self {
        ExpertScratch {
            isa,
            gemm_min_tokens: gemm_min_tokens(),
            x_q: FORMATS.map(ActBuf::new),
            inter: Vec::new(),
            inter_q: FORMATS.map(ActBuf::new),
            plans: Vec::new(),
            used: Vec::new(),
        }
    }

    /// The kernels' instruction-set level.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Experts with at least this many tokens use the tiled GEMM kernels where the
    /// level has them (default [`gemm_min_tokens`]; `usize::MAX` keeps every expert
    /// on the N-row kernels, for comparisons).
    pub fn set_gemm_min_tokens(&mut self, n: usize) {
        self.gemm_min_tokens = n.max(1);
    }

    /// See [`ExpertScratch::set_gemm_min_tokens`].
    pub fn gemm_min_tokens(&self) -> usize {
        self.gemm_min_tokens
    }
}

impl Default for ExpertScratch {
    fn default() -> Self {
        Self::new()
    }
}

fn check_mat(task: usize, m: &MatView<'_>, rows: usize, cols: usize) -> Result<(), CpuError> {
    let shape = |what, expected, got| {
        if expected == got {
            Ok(())
        } else {
            Err(CpuError::Shape {
                task,
                what,
                expected,
                got,
            })
        }
    };
    shape("rows", rows, m.rows)?;
    shape("cols", cols, m.cols)?;
    let rb = row_bytes(m.dtype, cols)?;
    let bytes = rb.checked_mul(rows).ok_or(CpuError::Shape {
        task,
        what: "matrix bytes (overflow)",
        expected: usize::MAX,
        got: rows,
    })?;
    shape("matrix bytes", bytes, m.data.len())
}

/// Validates the tasks; returns `ffn` (shared by all tasks of one call).
pub(crate) fn validate(
    x: &[f32],
    hidden: usize,
    tasks: &[ExpertTask<'_>],
    out_len: usize,
) -> Result<usize, CpuError> {
    if hidden == 0 || !x.len().is_multiple_of(hidden) {
        return Err(CpuError::Length {
            what: "x (n_tokens × hidden)",
            expected: hidden,
            got: x.len(),
        });
    }
    if out_len != x.len() {
        return Err(CpuError::Length {
            what: "out (same shape as x)",
            expected: x.len(),
            got: out_len,
        });
    }
    let n_tokens = x.len() / hidden;
    let ffn = tasks.first().map(|t| t.gate.rows).unwrap_or(0);
    for (i, t) in tasks.iter().enumerate() {
        check_mat(i, &t.gate, ffn, hidden)?;
        check_mat(i, &t.up, ffn, hidden)?;
        check_mat(i, &t.down, hidden, ffn)?;
        if t.weights.len() != t.token_rows.len() {
            return Err(CpuError::Shape {
                task: i,
                what: "weights (one per token row)",
                expected: t.token_rows.len(),
                got: t.weights.len(),
            });
        }
        if let Some(&row) = t.token_rows.iter().find(|&&r| r as usize >= n_tokens) {
            return Err(CpuError::TokenRow {
                task: i,
                row,
                n_tokens,
            });
        }
    }
    Ok(ffn)
}

/// Rows ahead whose weights are prefetched while the current row is computed (on a
/// token group's first pass): the k-quant kernels are partly compute-bound, and
/// explicit prefetch keeps DRAM busy during the arithmetic.
const PREFETCH_ROWS: usize = 4;

/// Prefetches row `r` (`rb` bytes) of `data` into L1, if it exists.
#[inline(always)]
fn prefetch_row(data: &[u8], rb: usize, r: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let (start, end) = (r * rb, (r + 1) * rb);
        if PREFETCH_ROWS == 0 || end > data.len() {
            return;
        }
        let mut off = start;
        while off < end {
            // SAFETY: `off` is inside `data`; prefetch never faults and reads nothing.
            unsafe {
                core::arch::x86_64::_mm_prefetch(
                    data.as_ptr().add(off) as *const i8,
                    core::arch::x86_64::_MM_HINT_T0,
                )
            };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, rb, r);
}

#[inline]
pub(crate) fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

/// Quantises rows of `src` (`cols` wide) into `buf`, on the pool when there are many.
fn quantize_rows(
    pool: &CpuPool,
    buf: &mut ActBuf,
    src: &[f32],
    cols: usize,
    rows_used: Option<&[bool]>,
) -> Result<(), CpuError> {
    let rows = src.len() / cols;
    buf.prepare(rows, cols)?;
    let w = buf.writer();
    let failed = AtomicBool::new(false);
    let do_row = |r: usize| {
        if rows_used.is_some_and(|u| !u[r]) {
            return;
        }
        // SAFETY: each row index is handled by exactly one thread (static split).
        if unsafe { w.quantize_row(r, &src[r * cols..(r + 1) * cols]) }.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
    };
    let n_used = rows_used.map_or(rows, |u| u.iter().filter(|&&b| b).count());
    if n_used < PARALLEL_QUANT_MIN_ROWS || pool.threads() == 1 {
        (0..rows).for_each(do_row);
    } else {
        pool.broadcast(|t, n| (t * rows / n..(t + 1) * rows / n).for_each(do_row))?;
    }
    if failed.load(Ordering::Relaxed) {
        return Err(CpuError::Length {
            what: "activation row",
            expected: cols,
            got: 0,
        });
    }
    Ok(())
}

/// Runs every task and accumulates into `out` (`n_tokens × hidden`, same shape as
/// `x`): `out[r] += w · down(silu(gate·x_r) ⊙ (up·x_r))` for each (r, w) of each task.
/// All tasks must share `hidden` and the expert FFN width (one MoE layer).
pub fn run_experts(
    pool: &CpuPool,
    x: &[f32],
    hidden: usize,
    tasks: &[ExpertTask<'_>],
    out: &mut [f32],
    scratch: &mut ExpertScratch,
) -> Result<(), CpuError> {
    run_experts_beside(pool, x, hidden, tasks, out, scratch, &mut || {})
}

/// As [`run_experts`], and the calling thread runs `beside` exactly once (unless the
/// arguments are invalid): while the other pool threads start the gate/up products,
/// which hand out their row tiles dynamically, so the caller joins them when `beside`
/// returns. The engine issues a layer's GPU share there, beside its CPU share.
pub fn run_experts_beside(
    pool: &CpuPool,
    x: &[f32],
    hidden: usize,
    tasks: &[ExpertTask<'_>],
    out: &mut [f32],
    scratch: &mut ExpertScratch,
    beside: &mut dyn FnMut(),
) -> Result<(), CpuError> {
    let ffn = validate(x, hidden, tasks, out.len())?;
    if tasks.is_empty() || ffn == 0 {
        beside();
        return Ok(());
    }
    let isa = scratch.isa;
    // Plans: kernels, intermediate rows and work-item offsets per task.
    scratch.plans.clear();
    let (mut inter_rows, mut items) = (0usize, 0usize);
    let mut need_x = [false; 4];
    let mut need_inter = [false; 4];
    let many = |n: usize| n >= scratch.gemm_min_tokens;
    for t in tasks {
        let (gate, up, down) = (
            DotKernel::new(t.gate.dtype, isa)?,
            DotKernel::new(t.up.dtype, isa)?,
            DotKernel::new(t.down.dtype, isa)?,
        );
        let n = t.token_rows.len();
        let p = Plan {
            gate,
            up,
            down,
            inter_row: inter_rows,
            first_item: items,
            gemm_gate_up: many(n) && gemm_gate_up_pays(gate) && gemm_gate_up_pays(up),
            gemm_down: many(n) && down.has_gemm(),
        };
        need_x[fidx(p.gate.act_format())] = true;
        need_x[fidx(p.up.act_format())] = true;
        need_inter[fidx(p.down.act_format())] = true;
        inter_rows += t.token_rows.len();
        if !t.token_rows.is_empty() {
            items += ffn.div_ceil(TILE);
        }
        scratch.plans.push(p);
    }
    if inter_rows == 0 {
        beside();
        return Ok(());
    }

    // Phase 1: quantise x once per needed format, only the rows some task reads: a
    // prefill layer whose plan gives the GPU most experts leaves the CPU a few experts'
    // tokens (on the GPU machine at 16 GiB ~60 of 512 rows), and quantising every row
    // was a fixed cost of each CPU share.
    let n_rows = x.len() / hidden;
    scratch.used.clear();
    scratch.used.resize(n_rows, false);
    for t in tasks {
        for &r in t.token_rows {
            if let Some(u) = scratch.used.get_mut(r as usize) {
                *u = true;
            }
        }
    }
    let x_used = scratch.used.contains(&false).then_some(&scratch.used[..]);
    for f in FORMATS {
        if need_x[fidx(f)] {
            quantize_rows(pool, &mut scratch.x_q[fidx(f)], x, hidden, x_used)?;
        }
    }

    // Phase 2: gate + up (fused per row tile), SwiGLU into the intermediate buffer.
    let inter_len = inter_rows * ffn;
    if scratch.inter.len() < inter_len {
        scratch.inter.resize(inter_len, 0.0);
    }
    let error: Mutex<Option<CpuError>> = Mutex::new(None);
    let fail = |e: CpuError| {
        if let Ok(mut g) = error.lock() {
            g.get_or_insert(e);
        }
    };
    {
        let inter = SharedMut::new(&mut scratch.inter[..inter_len]);
        let plans = &scratch.plans;
        let x_q = &scratch.x_q;
        let next = AtomicUsize::new(0);
        let n_items = items;
        pool.broadcast_beside(beside, |_, _| loop {
            let item = next.fetch_add(1, Ordering::Relaxed);
            if item >= n_items {
                break;
            }
            // The task owning this item: few tasks, so a linear scan is cheapest.
            let ti = plans
                .iter()
                .rposition(|p| p.first_item <= item)
                .unwrap_or(0);
            let (t, p) = (&tasks[ti], &plans[ti]);
            let r0 = (item - p.first_item) * TILE;
            let r1 = (r0 + TILE).min(ffn);
            let (gx, ux) = (
                &x_q[fidx(p.gate.act_format())],
                &x_q[fidx(p.up.act_format())],
            );
            if p.gemm_gate_up {
                if let Err(e) =
                    crate::experts_gemm::gate_up(ti, t, p, (r0, r1), gx, ux, &inter, ffn)
                {
                    fail(e);
                }
                continue;
            }
            let (grb, urb) = (t.gate.data.len() / ffn, t.up.data.len() / ffn);
            // Tokens in groups of G: each weight row is decoded once per group and
            // the tile's rows stay in L1/L2 across groups.
            for (gi, group) in t.token_rows.chunks(G).enumerate() {
                let mut ga = [EMPTY_ROW; G];
                let mut ua = [EMPTY_ROW; G];
                for (k, &row) in group.iter().enumerate() {
                    let (Some(g), Some(u)) = (gx.row(row as usize), ux.row(row as usize)) else {
                        fail(CpuError::TokenRow {
                            task: ti,
                            row,
                            n_tokens: gx.rows(),
                        });
                        return;
                    };
                    ga[k] = g;
                    ua[k] = u;
                }
                let n = group.len();
                let (mut gv, mut uv) = ([0f32; G], [0f32; G]);
                for r in r0..r1 {
                    if gi == 0 {
                        prefetch_row(t.gate.data, grb, r + PREFETCH_ROWS);
                        prefetch_row(t.up.data, urb, r + PREFETCH_ROWS);
                    }
                    // SAFETY: `validate` checked every matrix is rows × row_bytes(cols)
                    // with cols = hidden, and `ga`/`ua` hold hidden-wide rows of the
                    // ActBufs of exactly these kernels' formats.
                    unsafe {
                        p.gate.dot_rows_unchecked(
                            &t.gate.data[r * grb..(r + 1) * grb],
                            &ga[..n],
                            &mut gv[..n],
                        );
                        p.up.dot_rows_unchecked(
                            &t.up.data[r * urb..(r + 1) * urb],
                            &ua[..n],
                            &mut uv[..n],
                        );
                    }
                    for k in 0..n {
                        // SAFETY: (task, token, row) is written by this item only.
                        if let Some(o) =
                            unsafe { inter.get_mut((p.inter_row + gi * G + k) * ffn + r) }
                        {
                            *o = silu(gv[k]) * uv[k];
                        }
                    }
                }
            }
        })?;
    }
    if let Some(e) = error.lock().ok().and_then(|mut g| g.take()) {
        return Err(e);
    }

    // Phase 3a: quantise the intermediate rows for the down kernels.
    for f in FORMATS {
        if need_inter[fidx(f)] {
            // Only rows whose task's down kernel takes this format are needed; with
            // one down type per layer (the usual case) that is all of them.
            let mixed = need_inter.iter().filter(|&&b| b).count() > 1;
            if mixed {
                scratch.used.clear();
                scratch.used.resize(inter_rows, false);
                for (t, p) in tasks.iter().zip(&scratch.plans) {
                    if p.down.act_format() == f {
                        scratch.used[p.inter_row..p.inter_row + t.token_rows.len()].fill(true);
                    }
                }
            }
            let used = mixed.then_some(&scratch.used[..]);
            quantize_rows(
                pool,
                &mut scratch.inter_q[fidx(f)],
                &scratch.inter[..inter_len],
                ffn,
                used,
            )?;
        }
    }

    // Phase 3b: down, split by output features; each thread owns its columns of out.
    {
        let out_s = SharedMut::new(out);
        let plans = &scratch.plans;
        let inter_q = &scratch.inter_q;
        let next = AtomicUsize::new(0);
        let n_items = hidden.div_ceil(DOWN_TILE);
        pool.broadcast(|_, _| loop {
            let item = next.fetch_add(1, Ordering::Relaxed);
            if item >= n_items {
                break;
            }
            let c0 = item * DOWN_TILE;
            let c1 = (c0 + DOWN_TILE).min(hidden);
            for (ti, (t, p)) in tasks.iter().zip(plans).enumerate() {
                let q = &inter_q[fidx(p.down.act_format())];
                if p.gemm_down {
                    if let Err(e) = crate::experts_gemm::down(ti, t, p, (c0, c1), q, &out_s, hidden)
                    {
                        fail(e);
                        return;
                    }
                    continue;
                }
                let drb = t.down.data.len() / hidden;
                for (gi, (rows, ws)) in t.token_rows.chunks(G).zip(t.weights.chunks(G)).enumerate()
                {
                    let mut acts = [EMPTY_ROW; G];
                    for k in 0..rows.len() {
                        let Some(a) = q.row(p.inter_row + gi * G + k) else {
                            fail(CpuError::TokenRow {
                                task: ti,
                                row: rows[k],
                                n_tokens: q.rows(),
                            });
                            return;
                        };
                        acts[k] = a;
                    }
                    let n = rows.len();
                    let mut v = [0f32; G];
                    for c in c0..c1 {
                        if gi == 0 {
                            prefetch_row(t.down.data, drb, c + PREFETCH_ROWS);
                        }
                        // SAFETY: down is hidden × row_bytes(ffn) (validated) and `acts`
                        // hold ffn-wide rows of the ActBuf of this kernel's format.
                        unsafe {
                            p.down.dot_rows_unchecked(
                                &t.down.data[c * drb..(c + 1) * drb],
                                &acts[..n],
                                &mut v[..n],
                            )
                        };
                        for k in 0..n {
                            // SAFETY: column c of every out row belongs to this item only.
                            if let Some(o) = unsafe { out_s.get_mut(rows[k] as usize * hidden + c) }
                            {
                                *o += ws[k] * v[k];
                            }
                        }
                    }
                }
            }
        })?;
    }
    if let Some(e) = error.lock().ok().and_then(|mut g| g.take()) {
        return Err(e);
    }
    Ok(())
}
