//! AMX (Advanced Matrix Extensions) status for the CPU backend: CPU support (CPUID),
//! OS support (XCR0 tile state), the Linux per-process tile data permission
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`) and a tile probe run in a forked child.
//!
//! Detection and the kernels live in `hmoe-quant` (so that the tile kernel itself
//! refuses to run without a positive status); this module re-exports them. The
//! many-token expert GEMM (`experts_gemm`) uses the AMX-INT8 kernel for Q8_0 experts
//! with at least [`amx_min_tokens`] tokens per chunk (default [`AMX_MIN_TOKENS`],
//! `HMOE_AMX_MIN_TOKENS` to tune) where [`amx_status`] is [`AmxStatus::Available`]
//! with INT8, unless `HMOE_AMX=0` (see `docs/notes/amx.md`).

pub use hmoe_quant::amx::{
    amx_cpuid, amx_env_enabled, amx_int8_usable, amx_min_tokens, amx_status, set_amx_enabled,
    AmxStatus, GemmPath, AMX_MIN_TOKENS,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_agrees_with_cpuid() {
        let (tile, int8, bf16) = amx_cpuid();
        let s = amx_status();
        eprintln!("AMX: {}", s.describe());
        match s {
            AmxStatus::NoCpuSupport => {
                assert!(!tile || !cfg!(all(target_arch = "x86_64", target_os = "linux")))
            }
            AmxStatus::Available { int8: i, bf16: b } => {
                assert!(tile);
                // int8 is reported only where the kernels can use it (AVX-512 too).
                assert!(!i || int8);
                assert_eq!(b, bf16);
            }
            AmxStatus::NotEnabledByOs
            | AmxStatus::PermissionDenied(_)
            | AmxStatus::ProbeFailed(_) => assert!(tile),
        }
        // Detected once: a second call gives the same answer.
        assert_eq!(amx_status(), s);
        assert_eq!(
            amx_int8_usable(),
            amx_env_enabled() && matches!(s, AmxStatus::Available { int8: true, .. })
        );
    }
}

/// `run_experts` on Q8_0 experts with many tokens per expert — the AMX-INT8 path
/// where AMX is usable (the GPU machine), the AVX-512 path elsewhere — against the
/// reference fed the same quantised activations.
#[cfg(test)]
mod expert_tests {
    use super::*;
    use crate::calib::{random_expert, Rng};
    use crate::{reference_experts, run_experts, CpuPool, ExpertScratch, RefActivations};
    use hmoe_quant::{DotKernel, GgmlDType};

    /// As `tests::SAME_ACTS_REL`/`SAME_ACTS_MEDIAN_REL`: only f32 summation order
    /// differs from the reference, except that an intermediate value on a rounding
    /// boundary may quantise to the neighbouring 8-bit level (one step of 1/127 on one
    /// of the ffn values moves that token by up to ~2e-3); the median token must stay
    /// at summation-order noise.
    const WORST_REL: f64 = 5e-3;
    const MEDIAN_REL: f64 = 1e-5;

    #[test]
    fn amx_experts_match_reference() {
        let (hidden, ffn, n_tokens) = (512, 224, 200);
        let experts: Vec<_> = (0..4)
            .map(|e| random_expert(GgmlDType::Q8_0, hidden, ffn, 90 + e).unwrap())
            .collect();
        let mut rng = Rng::new(7);
        let (mut rows, mut weights) = (vec![Vec::new(); 4], vec![Vec::new(); 4]);
        for t in 0..n_tokens {
            let a = (rng.next_u64() % 4) as usize;
            let b = (a + 1 + (rng.next_u64() % 3) as usize) % 4;
            for e in [a, b] {
                rows[e].push(t as u32);
                weights[e].push(rng.uniform() + 0.05);
            }
        }
        let x = rng.gaussian(n_tokens * hidden, 1.0);
        let tasks: Vec<_> = (0..4)
            .map(|e| experts[e].task(&rows[e], &weights[e]))
            .collect();
        let path = DotKernel::best(GgmlDType::Q8_0).unwrap().gemm_path(64);
        eprintln!(
            "AMX: {}; Q8_0 expert chunks of 64 tokens take {path:?}",
            amx_status().describe()
        );
        assert_eq!(
            path == GemmPath::AmxInt8,
            amx_int8_usable() && hmoe_quant::Isa::best() != hmoe_quant::Isa::Avx2
        );
        let mut want = vec![0f32; n_tokens * hidden];
        reference_experts(&x, hidden, &tasks, &mut want, RefActivations::AsKernels).unwrap();
        for threads in [1, 3] {
            let pool = CpuPool::with_threads(threads).unwrap();
            let mut got = vec![0f32; n_tokens * hidden];
            let mut scratch = ExpertScratch::new();
            run_experts(&pool, &x, hidden, &tasks, &mut got, &mut scratch).unwrap();
            let mut errs: Vec<f64> = got
                .chunks_exact(hidden)
                .zip(want.chunks_exact(hidden))
                .map(|(g, w)| {
                    let num: f64 = g
                        .iter()
                        .zip(w)
                        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                        .sum();
                    let den: f64 = w.iter().map(|&b| (b as f64).powi(2)).sum();
                    (num / den.max(1e-30)).sqrt()
                })
                .collect();
            errs.sort_by(f64::total_cmp);
            let (median, worst) = (errs[errs.len() / 2], errs[errs.len() - 1]);
            assert!(
                worst <= WORST_REL,
                "{threads} threads: worst token {worst:e}"
            );
            assert!(
                median <= MEDIAN_REL,
                "{threads} threads: median token {median:e}"
            );
        }
    }
}
