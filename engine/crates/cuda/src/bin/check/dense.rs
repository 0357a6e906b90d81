//! The dense path on the device, for `hmoe-cuda-check`: the kernels `GpuDense` runs, each
//! against the f64 references of `dense_ref` (the engine's CPU semantics) — `linear_*` and
//! `rms_norm` through `GpuExperts`' host launchers; the fused `qk_norm_rope_kv` and
//! `add_rms_norm`, and the split-context and tiled attention, through `AttentionBench`
//! (the launch code `GpuDense` uses); then the whole device-resident dense path
//! (`GpuDense`) against its host reference (`RefDense`).

use super::{Report, HIDDEN};
use anyhow::{bail, Result};
use hmoe_cuda::verify::compare;
use hmoe_cuda::verify_dense::vals;
use hmoe_cuda::{dense_ref, GpuExperts, KernelType};
use serde_json::json;

/// Pass bound (relative L2 and largest element error relative to the largest reference
/// value) of the fused per-head and norm kernels against the f64 references: they do a
/// few f32 operations per value (an RMSNorm sum over ≤ 2048 squares, a RoPE rotation with
/// the reference's own f32 angle and f64 cos/sin), so they land within ~1e-6; a wrong
/// RoPE partner, position, head or norm weight is O(1). 100x tighter than the matrix
/// kernels' `KERNEL_REL_L2_TOL` (1e-3, which must absorb 8-bit activation roundings).
#[cfg(feature = "cuda")]
const FUSED_TOL: f64 = 1e-5;

/// The GPU dense path against its reference when both round the prefill projections'
/// inputs to 8 bits (the mma kernels, `RefDense::with_int8_linear`): a value within f32
/// noise of a rounding boundary rounds one step (amax / 127 of its block) apart in the two,
/// and such flips grow over the scenario's two layers into the head. Measured on an H200:
/// up to 1.8e-3 rel_l2 and 2.7e-3 max_rel (the head); wrong buffers, positions or scales
/// give O(0.1-1). The f32 path keeps the kernels' 1e-3.
const INT8_DENSE_TOL: f64 = 5e-3;

/// Whether `got` is within [`FUSED_TOL`] of `want` (and finite): the check's detail.
#[cfg(feature = "cuda")]
fn fused_compare(got: &[f32], want: &[f32]) -> (bool, serde_json::Value) {
    let c = compare(got, want);
    let pass = c.rel_l2 <= FUSED_TOL
        && c.max_rel <= FUSED_TOL
        && got.len() == want.len()
        && got.iter().all(|v| v.is_finite());
    (
        pass,
        json!({"rel_l2": c.rel_l2, "max_rel": c.max_rel, "tol": FUSED_TOL}),
    )
}

/// Inverse RoPE frequencies of theta 1e6 (Qwen3), as `DenseShape::inv_freq` computes them.
#[cfg(feature = "cuda")]
fn inv_freq(head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| 1.0f32 / 1e6f32.powf((2 * i) as f32 / head_dim as f32))
        .collect()
}

/// `linear_*` (the row kernels and, from `GEMM_MIN_TOKENS` tokens, the tiled one) and
/// `rms_norm` at Qwen3-30B-A3B shapes against the f64 references.
pub fn dense_checks(g: &mut GpuExperts, rep: &mut Report) -> Result<()> {
    let mut report = |name: String, got: &[f32], want: &[f32]| {
        let c = compare(got, want);
        rep.check(
            &name,
            c.pass,
            json!({"rel_l2": c.rel_l2, "max_rel": c.max_rel}),
        );
    };
    // q projection: 2048 -> 32 heads x 128.
    let (rows, cols) = (4096usize, HIDDEN);
    for t in [
        KernelType::Q8_0,
        KernelType::Q4K,
        KernelType::Q6K,
        KernelType::Bf16,
    ] {
        let wq = super::quantized(t, rows, cols)?;
        for n in [1usize, 16] {
            let x = vals(n * cols, 12 + n as u64);
            let got = g.dense_linear(t, &wq, rows, cols, &x)?;
            let want = dense_ref::linear(t, &wq, rows, cols, &x)?;
            report(
                format!("dense linear {} {rows}x{cols} tokens={n}", t.suffix()),
                &got,
                &want,
            );
        }
    }
    let x = vals(16 * HIDDEN, 13);
    let w: Vec<f32> = vals(HIDDEN, 14).iter().map(|v| 1.0 + 0.1 * v).collect();
    let got = g.dense_rms_norm(&x, &w, 1e-6)?;
    report(
        "dense rms_norm 16x2048".into(),
        &got,
        &dense_ref::rms_norm(&x, &w, 1e-6),
    );
    Ok(())
}

/// The device-resident dense path (`GpuDense`) against the host reference (`RefDense`) on
/// random small weights of each type: the scenario of `verify_dense` (batched prefill and
/// decode, a sequence dropped, a KV cache outgrowing its first allocation; its prefill
/// steps take the tiled attention, its decode step the split kernels). One line per type
/// for the attention blocks (every residual, normed state and router output) and one for
/// the head; the worst output is named.
pub fn resident_checks(rep: &mut Report) -> Result<()> {
    use hmoe_cuda::attend_tiled::use_tiled;
    use hmoe_cuda::verify_dense::{
        scenario, scenario_step_rows, small_shape, OwnedDense, RefDense,
    };
    use hmoe_cuda::GpuDense;
    let shape = small_shape();
    // Which attention kernel each step takes (named in the attention_block lines).
    let steps: Vec<String> = scenario_step_rows(&shape)?
        .into_iter()
        .map(|n| {
            let k = if use_tiled(n, shape.head_dim) {
                "tiled"
            } else {
                "split"
            };
            format!("{n} rows: {k}")
        })
        .collect();
    for t in [
        KernelType::Q8_0,
        KernelType::Q4K,
        KernelType::Q6K,
        KernelType::F16,
    ] {
        let w = OwnedDense::random(&shape, t, 21)?;
        // The GPU instance lives only for its run (its VRAM is back before the next).
        let (got, kv_bytes, weight_bytes, int8) = {
            let mut gpu = GpuDense::new(0, &shape, &w.weights())?;
            let got = scenario(&mut gpu, &shape)?;
            (got, gpu.kv_bytes(), gpu.weight_bytes(), gpu.int8_linear())
        };
        // The reference multiplies as the GPU instance did (8-bit prefill inputs on the
        // mma kernels, unless HMOE_CUDA_DENSE_MMA=0).
        let mut reference = RefDense::new(&shape, w.clone())?.with_int8_linear(int8);
        let want = scenario(&mut reference, &shape)?;
        if got.len() != want.len() {
            bail!(
                "{} GPU outputs, {} reference outputs",
                got.len(),
                want.len()
            );
        }
        for head in [false, true] {
            let mut worst = (String::new(), 0f64, 0f64);
            let mut pass = true;
            for ((name, g), (_, r)) in got.iter().zip(&want) {
                if name.ends_with("head") != head {
                    continue;
                }
                let c = compare(g, r);
                pass &= match int8 {
                    None => c.pass,
                    Some(_) => {
                        g.iter().all(|v| v.is_finite())
                            && c.rel_l2 <= INT8_DENSE_TOL
                            && c.max_rel <= INT8_DENSE_TOL
                    }
                };
                if c.rel_l2 >= worst.1 {
                    worst = (name.clone(), c.rel_l2, c.max_rel);
                }
            }
            let what = if head { "head" } else { "attention_block" };
            let mut detail = json!({"worst": worst.0, "rel_l2": worst.1, "max_rel": worst.2,
                   "weight_bytes": weight_bytes, "kv_bytes_after": kv_bytes,
                   "int8_prefill": int8.is_some()});
            if !head {
                detail["attention_steps"] = json!(steps);
            }
            rep.check(
                &format!("dense {what} (GpuDense) {}", t.suffix()),
                pass,
                detail,
            );
        }
    }
    // Too little memory: a typed refusal before any allocation, never a crash.
    #[cfg(feature = "cuda")]
    {
        use hmoe_cuda::CudaError;
        let w = OwnedDense::random(&shape, KernelType::Q8_0, 22)?;
        std::env::set_var(hmoe_cuda::ASSUME_FREE_ENV, (1usize << 20).to_string());
        let r = GpuDense::new(0, &shape, &w.weights());
        std::env::remove_var(hmoe_cuda::ASSUME_FREE_ENV);
        let (ok, detail) = match r {
            Ok(_) => (false, "started with 1 MiB free".to_string()),
            Err(e) => (
                matches!(e, CudaError::DenseOutOfMemory { .. }),
                e.to_string(),
            ),
        };
        rep.check(
            "GpuDense refuses when its weights do not fit",
            ok,
            json!({ "error": detail }),
        );
    }
    Ok(())
}

/// `qk_norm_rope_kv` against per-head `dense_ref::rms_norm` then `dense_ref::rope`, and its
/// cache writes (each token's K and V row at its position of its sequence's cache, bit for
/// bit; every other row untouched), for every head size the kernel takes; and
/// `add_rms_norm` against an f32 add (bit for bit) and `dense_ref::rms_norm`.
#[cfg(feature = "cuda")]
pub fn fused_checks(bench: &hmoe_cuda::AttentionBench, rep: &mut Report) -> Result<()> {
    let eps = 1e-6f32;
    // Qwen3-30B-A3B's grouping at head 128 (a decode batch of three sequences and a
    // prefill chunk); the other sizes move the RoPE partner (a shuffle 4, 8 or 16 lanes
    // away, or at 256 the lane's other group).
    let shapes: [(&str, (usize, usize, usize)); 4] = [
        ("hd128 32/4 heads", (32, 4, 128)),
        ("hd32 8/2 heads", (8, 2, 32)),
        ("hd64 16/4 heads", (16, 4, 64)),
        ("hd256 8/2 heads", (8, 2, 256)),
    ];
    // Tokens: sequence 0 decodes at 1000, sequence 1 gets a chunk of 5 after 37 cached,
    // sequence 2 its first token; positions as large as Qwen3's contexts reach.
    let caps = [1200usize, 64, 40_001];
    let seq_of = [0usize, 1, 1, 1, 1, 1, 2];
    let pos = [1000u32, 37, 38, 39, 40, 41, 40_000];
    let n = pos.len();
    for (label, (nh, nkv, hd)) in shapes {
        let kvw = nkv * hd;
        let q = vals(n * nh * hd, 51);
        let (k, v) = (vals(n * kvw, 52), vals(n * kvw, 53));
        let qnw: Vec<f32> = vals(hd, 54).iter().map(|x| 1.0 + 0.5 * x).collect();
        let knw: Vec<f32> = vals(hd, 55).iter().map(|x| 1.0 + 0.5 * x).collect();
        let inv = inv_freq(hd);
        let (got_q, got_k, caches) = bench.qk_norm_rope_kv(
            (nh, nkv, hd),
            (&q, &k, &v),
            (&qnw, &knw, eps),
            (&pos, &inv),
            (&seq_of, &caps),
        )?;
        let want_q = dense_ref::rope(&dense_ref::rms_norm(&q, &qnw, eps), &pos, &inv, nh, hd);
        let want_k = dense_ref::rope(&dense_ref::rms_norm(&k, &knw, eps), &pos, &inv, nkv, hd);
        let (pq, dq) = fused_compare(&got_q, &want_q);
        let (pk, dk) = fused_compare(&got_k, &want_k);
        rep.check(
            &format!("dense qk_norm_rope_kv q vs f64 norm+rope ({label}, {n} tokens)"),
            pq,
            dq,
        );
        rep.check(
            &format!("dense qk_norm_rope_kv k vs f64 norm+rope ({label}, {n} tokens)"),
            pk,
            dk,
        );
        // The caches: written rows equal the kernel's k and the input v bit for bit, and
        // every other row still holds the poison (0xffffffff).
        let (mut wrong_rows, mut touched_rows) = (0usize, 0usize);
        for (t, (&s, &p)) in seq_of.iter().zip(&pos).enumerate() {
            let row = |c: &[f32]| -> Vec<u32> {
                c[p as usize * kvw..(p as usize + 1) * kvw]
                    .iter()
                    .map(|x| x.to_bits())
                    .collect()
            };
            let bits = |x: &[f32]| -> Vec<u32> { x.iter().map(|v| v.to_bits()).collect() };
            if row(&caches[s].0) != bits(&got_k[t * kvw..(t + 1) * kvw])
                || row(&caches[s].1) != bits(&v[t * kvw..(t + 1) * kvw])
            {
                wrong_rows += 1;
            }
        }
        for (s, (kc, vc)) in caches.iter().enumerate() {
            for r in 0..caps[s] {
                let written = seq_of
                    .iter()
                    .zip(&pos)
                    .any(|(&ts, &tp)| ts == s && tp as usize == r);
                let poisoned = |c: &[f32]| {
                    c[r * kvw..(r + 1) * kvw]
                        .iter()
                        .all(|x| x.to_bits() == u32::MAX)
                };
                let untouched = poisoned(kc) && poisoned(vc);
                if !written && !untouched {
                    touched_rows += 1;
                }
            }
        }
        rep.check(
            &format!("dense qk_norm_rope_kv cache rows ({label})"),
            wrong_rows == 0 && touched_rows == 0,
            json!({"rows_written_wrong": wrong_rows, "other_rows_touched": touched_rows,
                   "tokens": n}),
        );
    }
    // add_rms_norm: 16 rows of the residual (a prefill chunk) and one (decode).
    for rows in [1usize, 16] {
        let (x, y) = (vals(rows * HIDDEN, 61), vals(rows * HIDDEN, 62));
        let w: Vec<f32> = vals(HIDDEN, 63).iter().map(|v| 1.0 + 0.2 * v).collect();
        let (got_x, got_out) = bench.add_rms_norm(&x, &y, &w, eps)?;
        let sum: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
        let residual_same = got_x
            .iter()
            .zip(&sum)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        let (pass, mut detail) = fused_compare(&got_out, &dense_ref::rms_norm(&sum, &w, eps));
        detail["residual_bit_exact"] = json!(residual_same);
        rep.check(
            &format!("dense add_rms_norm {rows}x{HIDDEN}: residual == x + y, norm vs f64"),
            pass && residual_same,
            detail,
        );
    }
    Ok(())
}

/// Timed launches per attention kernel and case (the full run, `hmoe-cuda-check attention`).
#[cfg(feature = "cuda")]
const ATT_REPS: usize = 20;
/// The same with `--quick`: the launches are 0.03-8 ms, a handful gives the order of
/// magnitude (the table is for the full run).
#[cfg(feature = "cuda")]
const ATT_REPS_QUICK: usize = 3;

/// The attention kernels and the fused per-head kernels on the device (`AttentionBench`):
/// first [`fused_checks`]; then the tiled prefill kernel and the split-context kernels on
/// the same caches, each against the other (within `TILED_VS_SPLIT_MAX_REL`) and, for the
/// small mixed batches and a decode batch, against the f64 reference; with a timing table
/// of prefill shapes (rows after cached positions, one or several sequences): both
/// kernels' milliseconds and the tiled kernel's TFLOP/s. `quick`: the default
/// `attend_tiled` build only (no NVRTC compile of the `ATT_STAGES=1` variant) and
/// [`ATT_REPS_QUICK`] timed launches; the same cases and checks.
#[cfg(feature = "cuda")]
pub fn attention_checks(rep: &mut Report, quick: bool) -> Result<serde_json::Value> {
    use hmoe_cuda::attend_tiled::{
        max_rel_diff, ATTEND_TILE_STAGES, TILED_MIN_ROWS, TILED_VS_SPLIT_MAX_REL,
    };
    use hmoe_cuda::{AttentionBench, BenchSeq};
    /// Query heads, KV heads, head size of the timings (Qwen3-30B-A3B).
    const ATT_SHAPE: (usize, usize, usize) = (32, 4, 128);
    // (label, (heads, kv heads, head size), per sequence (cached, new), check vs f64)
    type Case = (
        &'static str,
        (usize, usize, usize),
        Vec<(usize, usize)>,
        bool,
    );
    let cases: Vec<Case> = vec![
        (
            "mixed hd128",
            ATT_SHAPE,
            vec![(100, 150), (0, 37), (500, 1)],
            true,
        ),
        (
            "decode hd128",
            ATT_SHAPE,
            vec![(1000, 1), (4000, 1), (5, 1)],
            true,
        ),
        // The benchmark's decode: one row after a 1024-token prompt and ~256 new tokens.
        ("decode 1 row after 1280", ATT_SHAPE, vec![(1280, 1)], true),
        (
            "mixed hd64",
            (16, 4, 64),
            vec![(60, 130), (0, 5), (7, 64)],
            true,
        ),
        ("512 rows after 512", ATT_SHAPE, vec![(512, 512)], false),
        ("1024 rows after 0", ATT_SHAPE, vec![(0, 1024)], false),
        ("1024 rows after 1024", ATT_SHAPE, vec![(1024, 1024)], false),
        (
            "4 seqs x 128 rows after 896",
            ATT_SHAPE,
            vec![(896, 128); 4],
            false,
        ),
        ("256 rows after 768", ATT_SHAPE, vec![(768, 256)], false),
        ("128 rows after 896", ATT_SHAPE, vec![(896, 128)], false),
        ("64 rows after 960", ATT_SHAPE, vec![(960, 64)], false),
        ("32 rows after 992", ATT_SHAPE, vec![(992, 32)], false),
        ("128 rows after 3968", ATT_SHAPE, vec![(3968, 128)], false),
    ];
    let (stages, reps): (&[usize], usize) = if quick {
        (&[ATTEND_TILE_STAGES], ATT_REPS_QUICK)
    } else {
        (&[1, 2], ATT_REPS)
    };
    let (bench, warnings) = AttentionBench::new(0, stages)?;
    for w in warnings {
        println!("  attention bench: {w}");
    }
    fused_checks(&bench, rep)?;
    for hd in [64, 128] {
        for (stages, ctas) in bench.tiled_occupancy(hd)? {
            println!("  attend_tiled ATT_STAGES={stages} head_dim {hd}: {ctas} CTAs per SM");
        }
    }
    println!(
        "attention (split: attend_split + attend_combine; tiled sN: attend_tiled built with ATT_STAGES=N; \
         GpuDense takes the default build from {TILED_MIN_ROWS} rows; TFLOP/s of the causal work)"
    );
    let mut rows_out = Vec::new();
    for (ci, (label, (nh, nkv, hd), seqs, reference)) in cases.into_iter().enumerate() {
        let kvw = nkv * hd;
        let caches: Vec<(Vec<f32>, Vec<f32>)> = seqs
            .iter()
            .enumerate()
            .map(|(s, &(start, n))| {
                let seed = 100 * ci as u64 + 2 * s as u64;
                (
                    vals((start + n) * kvw, 40 + seed),
                    vals((start + n) * kvw, 41 + seed),
                )
            })
            .collect();
        let bseqs: Vec<BenchSeq<'_>> = seqs
            .iter()
            .zip(&caches)
            .map(|(&(start, n), (k, v))| BenchSeq { start, n, k, v })
            .collect();
        let rows: usize = seqs.iter().map(|s| s.1).sum();
        let q = vals(rows * nh * hd, 60 + ci as u64);
        let b = bench.run((nh, nkv, hd), &bseqs, &q, reps)?;
        if b.tiled.is_empty() {
            rep.check(
                &format!("attention tiled runs ({label})"),
                false,
                json!({"error": "attend_tiled unavailable (shared memory or head size)"}),
            );
            continue;
        }
        let want = reference.then(|| {
            let (mut want, mut row) = (Vec::new(), 0);
            for (&(start, n), (k, v)) in seqs.iter().zip(&caches) {
                let qs = &q[row * nh * hd..(row + n) * nh * hd];
                want.extend(dense_ref::attend(qs, k, v, start, nh, nkv, hd));
                row += n;
            }
            want
        });
        if let Some(want) = &want {
            let c = compare(&b.split, want);
            rep.check(
                &format!("attention split vs f64 reference ({label})"),
                c.pass,
                json!({"rel_l2": c.rel_l2, "max_rel": c.max_rel}),
            );
        }
        let visible: usize = seqs.iter().map(|&(st, n)| n * st + n * (n + 1) / 2).sum();
        let tflops = |ms: f32| 4.0 * (nh * hd * visible) as f64 / (ms as f64 * 1e9);
        let mut line = format!(
            "  {label:<28} rows {rows:>5}  split {:>7.3} ms ({:>5.2} TFLOP/s)",
            b.split_ms,
            tflops(b.split_ms)
        );
        // Every heads-per-warp against the default's output (their plans differ, so the
        // sums do too, by rounding only) and, where there is one, the f64 reference.
        let mut hpw_runs = Vec::new();
        for r in &b.split_runs {
            let d = max_rel_diff(&r.out, &b.split);
            rep.check(
                &format!("attention split hpw {} vs default ({label})", r.hpw),
                d <= TILED_VS_SPLIT_MAX_REL,
                json!({"max_rel": d, "tol": TILED_VS_SPLIT_MAX_REL}),
            );
            if let Some(want) = &want {
                let c = compare(&r.out, want);
                rep.check(
                    &format!("attention split hpw {} vs f64 reference ({label})", r.hpw),
                    c.pass,
                    json!({"rel_l2": c.rel_l2, "max_rel": c.max_rel}),
                );
            }
            line += &format!(" hpw{} {:.4}", r.hpw, r.ms);
            hpw_runs.push(json!({"hpw": r.hpw, "ms": r.ms}));
        }
        let mut runs = Vec::new();
        for t in &b.tiled {
            let d = max_rel_diff(&t.out, &b.split);
            rep.check(
                &format!("attention tiled s{} vs split ({label})", t.stages),
                d <= TILED_VS_SPLIT_MAX_REL,
                json!({"max_rel": d, "tol": TILED_VS_SPLIT_MAX_REL}),
            );
            if let Some(want) = &want {
                let c = compare(&t.out, want);
                rep.check(
                    &format!("attention tiled s{} vs f64 reference ({label})", t.stages),
                    c.pass,
                    json!({"rel_l2": c.rel_l2, "max_rel": c.max_rel}),
                );
            }
            line += &format!(
                "  tiled s{} {:>7.3} ms ({:>5.2}x, {:>5.2} TFLOP/s)",
                t.stages,
                t.ms,
                b.split_ms / t.ms,
                tflops(t.ms)
            );
            runs.push(json!({"stages": t.stages, "ms": t.ms, "max_rel_vs_split": d}));
        }
        println!("{line}");
        rows_out.push(json!({"case": label, "rows": rows, "split_ms": b.split_ms, "split_hpw": hpw_runs, "tiled": runs}));
    }
    Ok(serde_json::Value::Array(rows_out))
}
