//! The fused executor against the plain reference: every type, odd sizes, 1–512
//! tokens, 1–16 threads.

use crate::calib::{random_expert, RandomExpert, Rng};
use crate::{
    reference_experts, run_experts, CpuPool, ExpertScratch, ExpertTask, Isa, RefActivations,
};
use hmoe_gguf::GgmlDType;

/// Against the reference fed the same quantised activations, only f32 summation
/// order differs (~1e-7) — except that an intermediate value lying on a rounding
/// boundary may quantise to the neighbouring 8-bit level: one step (≈ 3σ/127 for a
/// 256-block) on one of the 256–768 elements moves that token's output by up to
/// ~2e-3 relative. So: every token within 5e-3, and the median token within 1e-5
/// (boundary flips are rare: ~1e-7 relative noise against a 1/127 step).
const SAME_ACTS_REL: f64 = 5e-3;
const SAME_ACTS_MEDIAN_REL: f64 = 1e-5;
/// Against exact f32 activations: x and the SwiGLU product are each quantised to 8
/// bits (≈ 0.5–0.7 % relative RMS each, see hmoe-quant's activation tests), which
/// compounds through gate/up, SwiGLU and down to ~1.5 %; bf16 activations
/// (≈ 0.2 % each) to ~0.5 %; f32 activations are exact up to summation order.
fn f32_acts_rel(dtype: GgmlDType) -> f64 {
    match dtype {
        GgmlDType::F32 | GgmlDType::F16 => 1e-4,
        GgmlDType::BF16 => 0.01,
        _ => 0.03,
    }
}

struct Case {
    n_tokens: usize,
    experts: Vec<RandomExpert>,
    rows: Vec<Vec<u32>>,
    weights: Vec<Vec<f32>>,
    x: Vec<f32>,
    hidden: usize,
}

impl Case {
    /// `n_tokens` tokens each routed to `top_k` distinct experts of `experts`.
    fn new(experts: Vec<RandomExpert>, n_tokens: usize, top_k: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let hidden = experts[0].hidden;
        let ne = experts.len();
        let mut rows = vec![Vec::new(); ne];
        let mut weights = vec![Vec::new(); ne];
        for t in 0..n_tokens {
            let mut chosen = Vec::new();
            while chosen.len() < top_k.min(ne) {
                let e = (rng.next_u64() % ne as u64) as usize;
                if !chosen.contains(&e) {
                    chosen.push(e);
                }
            }
            for e in chosen {
                rows[e].push(t as u32);
                weights[e].push(rng.uniform() + 0.05);
            }
        }
        Case {
            n_tokens,
            experts,
            rows,
            weights,
            x: rng.gaussian(n_tokens * hidden, 1.0),
            hidden,
        }
    }

    fn tasks(&self) -> Vec<ExpertTask<'_>> {
        self.experts
            .iter()
            .enumerate()
            .map(|(e, ex)| ex.task(&self.rows[e], &self.weights[e]))
            .collect()
    }

    fn base_out(&self) -> Vec<f32> {
        // A non-zero starting value checks that results are accumulated, not stored.
        (0..self.n_tokens * self.hidden)
            .map(|i| ((i % 7) as f32 - 3.0) * 0.01)
            .collect()
    }

    fn run(&self, pool: &CpuPool, isa: Isa) -> Vec<f32> {
        let mut out = self.base_out();
        let mut scratch = ExpertScratch::with_isa(isa);
        run_experts(
            pool,
            &self.x,
            self.hidden,
            &self.tasks(),
            &mut out,
            &mut scratch,
        )
        .unwrap();
        out
    }

    fn reference(&self, mode: RefActivations) -> Vec<f32> {
        let mut out = self.base_out();
        reference_experts(&self.x, self.hidden, &self.tasks(), &mut out, mode).unwrap();
        out
    }

    /// Worst per-token relative L2 error of the expert contribution; also asserts
    /// that the median token is within `SAME_ACTS_MEDIAN_REL` when `tight`.
    fn worst_rel(&self, got: &[f32], want: &[f32]) -> f64 {
        self.rel_errors(got, want, true)
    }

    fn rel_errors(&self, got: &[f32], want: &[f32], tight: bool) -> f64 {
        let base = self.base_out();
        let mut errs = Vec::with_capacity(self.n_tokens);
        for t in 0..self.n_tokens {
            let r = t * self.hidden..(t + 1) * self.hidden;
            let (mut num, mut den) = (0f64, 0f64);
            for i in r {
                num += (got[i] as f64 - want[i] as f64).powi(2);
                den += (want[i] as f64 - base[i] as f64).powi(2);
            }
            if den > 0.0 {
                errs.push((num / den).sqrt());
            } else {
                assert_eq!(num, 0.0, "token {t} has no experts but its output changed");
            }
        }
        errs.sort_by(f64::total_cmp);
        if tight && !errs.is_empty() {
            let median = errs[errs.len() / 2];
            assert!(
                median <= SAME_ACTS_MEDIAN_REL,
                "median token error {median:e} > {SAME_ACTS_MEDIAN_REL:e}"
            );
        }
        errs.last().copied().unwrap_or(0.0)
    }
}

fn experts_of(dtype: GgmlDType, n: usize, hidden: usize, ffn: usize) -> Vec<RandomExpert> {
    (0..n)
        .map(|i| random_expert(dtype, hidden, ffn, 1000 + i as u64).unwrap())
        .collect()
}

fn isas() -> Vec<Isa> {
    let v: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.is_available()).collect();
    for i in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        eprintln!(
            "note: {} path not tested: this CPU lacks the instructions",
            i.name()
        );
    }
    v
}

#[test]
fn fused_matches_reference_for_every_type() {
    let pool = CpuPool::with_threads(3).unwrap();
    for dtype in [
        GgmlDType::F32,
        GgmlDType::F16,
        GgmlDType::BF16,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ] {
        let case = Case::new(experts_of(dtype, 5, 512, 256), 9, 2, 5);
        let same = case.reference(RefActivations::AsKernels);
        let exact = case.reference(RefActivations::F32);
        for isa in isas() {
            let got = case.run(&pool, isa);
            let e1 = case.worst_rel(&got, &same);
            let e2 = case.rel_errors(&got, &exact, false);
            eprintln!(
                "{dtype} {}: vs same-acts {e1:.2e}, vs f32 {e2:.2e}",
                isa.name()
            );
            assert!(
                e1 <= SAME_ACTS_REL,
                "{dtype} {}: {e1} vs reference with the same activations",
                isa.name()
            );
            assert!(
                e2 <= f32_acts_rel(dtype),
                "{dtype} {}: {e2} vs f32 reference",
                isa.name()
            );
        }
    }
}

#[test]
fn odd_sizes_rows_not_multiple_of_tile() {
    // Float types allow any width: 53 × 37 leaves partial tiles in both phases.
    let pool = CpuPool::with_threads(4).unwrap();
    for dtype in [GgmlDType::F32, GgmlDType::F16, GgmlDType::BF16] {
        let case = Case::new(experts_of(dtype, 3, 53, 37), 5, 2, 8);
        let want = case.reference(RefActivations::AsKernels);
        for isa in isas() {
            let e = case.worst_rel(&case.run(&pool, isa), &want);
            assert!(e <= SAME_ACTS_REL, "{dtype} {} 53x37: {e}", isa.name());
        }
    }
    // Q8_0 with 32-wide blocks: hidden 96, ffn 160 → 6 and 10 tiles of 16.
    let case = Case::new(experts_of(GgmlDType::Q8_0, 3, 96, 160), 4, 2, 9);
    let want = case.reference(RefActivations::AsKernels);
    let e = case.worst_rel(&case.run(&pool, Isa::best()), &want);
    assert!(e <= SAME_ACTS_REL, "q8_0 96x160: {e}");
}

#[test]
fn mixed_types_like_q4_k_m() {
    // Q4_K_M files keep gate/up in Q4_K and down in Q6_K (and some layers' down in Q4_K):
    // two down formats share one Q8_K buffer; a Q8_0 down adds a second format.
    let pool = CpuPool::with_threads(2).unwrap();
    let mut a = random_expert(GgmlDType::Q4K, 512, 256, 1).unwrap();
    a.down = random_expert(GgmlDType::Q6K, 512, 256, 2).unwrap().down;
    let b = random_expert(GgmlDType::Q4K, 512, 256, 3).unwrap();
    let c = random_expert(GgmlDType::Q8_0, 512, 256, 4).unwrap();
    let case = Case::new(vec![b.clone(), c.clone()], 6, 2, 3);
    let rows = &case.rows;
    let w = &case.weights;
    let mut tasks = case.tasks();
    let mut t0 = a.task(&rows[0], &w[0]);
    t0.down.dtype = GgmlDType::Q6K;
    tasks[0] = t0;
    let mut out = case.base_out();
    run_experts(
        &pool,
        &case.x,
        512,
        &tasks,
        &mut out,
        &mut ExpertScratch::new(),
    )
    .unwrap();
    let mut want = case.base_out();
    reference_experts(&case.x, 512, &tasks, &mut want, RefActivations::AsKernels).unwrap();
    let e = case.worst_rel(&out, &want);
    assert!(e <= SAME_ACTS_REL, "mixed types: {e}");
}

#[test]
fn token_counts_1_to_512_and_threads_1_to_16() {
    let experts = experts_of(GgmlDType::Q4K, 6, 256, 256);
    for (n_tokens, threads) in [
        (1usize, 1usize),
        (1, 16),
        (2, 2),
        (7, 5),
        (33, 3),
        (128, 8),
        (512, 2),
        (512, 16),
    ] {
        let pool = CpuPool::with_threads(threads).unwrap();
        let case = Case::new(experts.clone(), n_tokens, 2, n_tokens as u64);
        let want = case.reference(RefActivations::AsKernels);
        let got = case.run(&pool, Isa::best());
        let e = case.worst_rel(&got, &want);
        assert!(
            e <= SAME_ACTS_REL,
            "{n_tokens} tokens, {threads} threads: {e}"
        );
        // Thread count must not change the result: each output element is summed
        // in the same order whatever thread computes it.
        let single = case.run(&CpuPool::with_threads(1).unwrap(), Isa::best());
        assert_eq!(
            got, single,
            "{n_tokens} tokens: {threads} threads differ from 1 thread"
        );
    }
}

#[test]
fn empty_tasks_and_bad_inputs() {
    let pool = CpuPool::with_threads(2).unwrap();
    let e = random_expert(GgmlDType::Q8_0, 64, 32, 1).unwrap();
    let x = vec![0.5f32; 2 * 64];
    let mut out = vec![0f32; 2 * 64];
    let mut s = ExpertScratch::new();
    // No tasks / no tokens: nothing happens.
    run_experts(&pool, &x, 64, &[], &mut out, &mut s).unwrap();
    run_experts(&pool, &x, 64, &[e.task(&[], &[])], &mut out, &mut s).unwrap();
    assert!(out.iter().all(|&v| v == 0.0));
    // A token row outside x, mismatched weights, wrong out size, wrong matrix bytes.
    assert!(run_experts(&pool, &x, 64, &[e.task(&[2], &[1.0])], &mut out, &mut s).is_err());
    assert!(run_experts(&pool, &x, 64, &[e.task(&[0, 1], &[1.0])], &mut out, &mut s).is_err());
    assert!(run_experts(
        &pool,
        &x,
        64,
        &[e.task(&[0], &[1.0])],
        &mut out[..64],
        &mut s
    )
    .is_err());
    let mut bad = e.task(&[0], &[1.0]);
    bad.down.data = &e.down[..e.down.len() - 1];
    assert!(run_experts(&pool, &x, 64, &[bad], &mut out, &mut s).is_err());
    let mut bad = e.task(&[0], &[1.0]);
    bad.up.cols = 32;
    assert!(run_experts(&pool, &x, 64, &[bad], &mut out, &mut s).is_err());
}

#[test]
fn stacked_expert_views() {
    use crate::MatView;
    let e = random_expert(GgmlDType::Q4K, 256, 256, 3).unwrap();
    let mut stacked = e.gate.clone();
    stacked.extend_from_slice(&e.up);
    let v = MatView::from_stacked(GgmlDType::Q4K, 256, 256, 2, &stacked, 1).unwrap();
    assert_eq!(v.data, &e.up[..]);
    assert!(MatView::from_stacked(GgmlDType::Q4K, 256, 256, 2, &stacked, 2).is_err());
    assert!(MatView::from_stacked(GgmlDType::Q4K, 256, 256, 3, &stacked, 0).is_err());
    assert!(MatView::from_stacked(GgmlDType::Q4K, 256, 100, 2, &stacked, 0).is_err());
}

#[test]
fn gemm_path_matches_reference_for_many_tokens() {
    // Many tokens per expert (top-2 of 4): the tiled GEMM path, crossing its
    // 64-token chunks, against the reference and against the N-row path, for 1–16
    // threads; results must not depend on the thread count.
    for (dtype, hidden, ffn) in [
        (GgmlDType::Q8_0, 96, 160),
        (GgmlDType::Q4K, 512, 256),
        (GgmlDType::Q5K, 256, 512),
        (GgmlDType::Q6K, 512, 256),
    ] {
        let experts = experts_of(dtype, 4, hidden, ffn);
        for (n_tokens, threads) in [(5usize, 1usize), (64, 3), (150, 16), (512, 2)] {
            let case = Case::new(experts.clone(), n_tokens, 2, 40 + n_tokens as u64);
            let want = case.reference(RefActivations::AsKernels);
            let run = |threads: usize, min_tokens: usize| {
                let pool = CpuPool::with_threads(threads).unwrap();
                let mut out = case.base_out();
                let mut scratch = ExpertScratch::new();
                scratch.set_gemm_min_tokens(min_tokens);
                run_experts(
                    &pool,
                    &case.x,
                    hidden,
                    &case.tasks(),
                    &mut out,
                    &mut scratch,
                )
                .unwrap();
                out
            };
            let gemm = run(threads, 1);
            let e = case.worst_rel(&gemm, &want);
            assert!(e <= SAME_ACTS_REL, "{dtype} {n_tokens} tokens gemm: {e}");
            let n_row = run(threads, usize::MAX);
            let e = case.worst_rel(&gemm, &n_row);
            assert!(
                e <= SAME_ACTS_REL,
                "{dtype} {n_tokens} tokens gemm vs N-row: {e}"
            );
            assert_eq!(
                gemm,
                run(1, 1),
                "{dtype} {n_tokens}: {threads} threads vs 1"
            );
        }
    }
}

#[test]
fn a_share_of_a_few_experts_quantises_and_reads_only_its_rows() {
    // A CPU share of 2 of 8 experts (top-2 routing): most rows of x belong to no task
    // and are not quantised. One scratch serves two calls with other inputs and other
    // shares, so a row left stale by the first call would show in the second.
    for (dtype, n_tokens, threads) in [
        (GgmlDType::Q8_0, 40usize, 1usize),
        (GgmlDType::Q4K, 96, 3),
        (GgmlDType::Q6K, 200, 4),
    ] {
        let experts = experts_of(dtype, 8, 256, 256);
        let pool = CpuPool::with_threads(threads).unwrap();
        let mut scratch = ExpertScratch::new();
        for (seed, share) in [(3u64, [0usize, 5]), (4, [2, 7])] {
            let case = Case::new(experts.clone(), n_tokens, 2, seed);
            let tasks: Vec<ExpertTask<'_>> = case
                .tasks()
                .into_iter()
                .enumerate()
                .filter(|(e, _)| share.contains(e))
                .map(|(_, t)| t)
                .collect();
            let used: usize = tasks.iter().map(|t| t.token_rows.len()).sum();
            assert!(used < n_tokens, "the share must leave rows unused");
            let mut want = case.base_out();
            reference_experts(
                &case.x,
                case.hidden,
                &tasks,
                &mut want,
                RefActivations::AsKernels,
            )
            .unwrap();
            let mut got = case.base_out();
            run_experts(&pool, &case.x, case.hidden, &tasks, &mut got, &mut scratch).unwrap();
            let e = case.worst_rel(&got, &want);
            assert!(e <= SAME_ACTS_REL, "{dtype} seed {seed}: {e}");
        }
    }
}
