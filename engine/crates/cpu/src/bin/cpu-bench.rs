//! CPU expert-kernel benchmark: this machine's memory read bandwidth, then for the
//! Qwen3-30B-A3B expert shape (hidden 2048, FFN 768, 8 experts per token) the weight
//! bandwidth of decode (1 token) and the throughput of prefill (512 tokens) per type
//! and thread count, and the per-expert timings that calibrate the cost model.
//!
//! `cargo run --release -p hmoe-cpu --bin cpu-bench -- [--threads 1,2,4] [--types q8_0,q4_k]
//!  [--set-mb 1536] [--bw-mb 2048] [--layers 24] [--prefill-tokens 512] [--isa avx2] [--no-pin]
//!  [--no-prefill] [--kernels-only] [--prefill-only] [--amx]`
//!
//! `--amx`: only the AMX section: the Q8_0 prefill GEMM with the AMX-INT8 tile kernel
//! against the AVX-512 kernels (one-thread kernel rate, then one MoE layer of 512
//! tokens on 1 and the largest `--threads` count), see `docs/notes/amx.md`.

use anyhow::{anyhow, bail, Context, Result};
use hmoe_cpu::{
    calibrate_cpu, random_expert, run_experts, topology, CpuPool, ExpertScratch, Isa, PoolConfig,
    RandomExpert,
};
use hmoe_gguf::GgmlDType;
use std::time::Instant;

const HIDDEN: usize = 2048;
const FFN: usize = 768;
const TOP_K: usize = 8;
const N_EXPERTS: usize = 128;

struct Args {
    threads: Vec<usize>,
    types: Vec<GgmlDType>,
    set_mb: usize,
    bw_mb: usize,
    layers: usize,
    prefill_tokens: usize,
    isa: Isa,
    pin: bool,
    skip_prefill: bool,
    kernels_only: bool,
    prefill_only: bool,
    latency: bool,
    amx: bool,
}

fn parse_type(s: &str) -> Result<GgmlDType> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "q8_0" => GgmlDType::Q8_0,
        "q4_k" => GgmlDType::Q4K,
        "q5_k" => GgmlDType::Q5K,
        "q6_k" => GgmlDType::Q6K,
        "bf16" => GgmlDType::BF16,
        "f16" => GgmlDType::F16,
        "f32" => GgmlDType::F32,
        other => bail!("unknown type {other:?} (q8_0, q4_k, q5_k, q6_k, bf16, f16, f32)"),
    })
}

fn parse_args() -> Result<Args> {
    let cores = topology::physical_cores();
    let mut a = Args {
        threads: (1..=cores).collect(),
        types: vec![
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
            GgmlDType::BF16,
        ],
        set_mb: 1536,
        bw_mb: 2048,
        layers: 24,
        prefill_tokens: 512,
        isa: Isa::best(),
        pin: true,
        skip_prefill: false,
        kernels_only: false,
        latency: false,
        prefill_only: false,
        amx: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--threads" => {
                a.threads = val()?
                    .split(',')
                    .map(|s| s.trim().parse().context("--threads"))
                    .collect::<Result<_>>()?
            }
            "--types" => a.types = val()?.split(',').map(parse_type).collect::<Result<_>>()?,
            "--set-mb" => a.set_mb = val()?.parse().context("--set-mb")?,
            "--bw-mb" => a.bw_mb = val()?.parse().context("--bw-mb")?,
            "--layers" => a.layers = val()?.parse().context("--layers")?,
            "--prefill-tokens" => a.prefill_tokens = val()?.parse().context("--prefill-tokens")?,
            "--isa" => {
                let v = val()?;
                a.isa = Isa::ALL
                    .into_iter()
                    .find(|i| i.name() == v || format!("{i:?}").eq_ignore_ascii_case(&v))
                    .ok_or_else(|| anyhow!("unknown --isa {v}"))?;
            }
            "--pin" => a.pin = true,
            "--no-pin" => a.pin = false,
            "--no-prefill" => a.skip_prefill = true,
            "--prefill-only" => a.prefill_only = true,
            "--kernels-only" => a.kernels_only = true,
            "--latency" => a.latency = true,
            "--amx" => a.amx = true,
            "-h" | "--help" => {
                println!(
                    "{}",
                    include_str!("cpu-bench.rs")
                        .lines()
                        .take(12)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if a.threads.is_empty() || a.threads.contains(&0) {
        bail!("--threads needs positive counts");
    }
    if !a.isa.is_available() {
        bail!("--isa {} is not available on this CPU", a.isa.name());
    }
    Ok(a)
}

fn pool(threads: usize, pin: bool) -> Result<CpuPool> {
    Ok(CpuPool::new(PoolConfig {
        threads,
        pin,
        spin: None,
    })?)
}

/// Best-of-5 multi-threaded streaming read of `buf`, in GB/s.
fn read_bandwidth(pool: &CpuPool, buf: &[u64]) -> Result<f64> {
    let mut best = 0f64;
    let sink = std::sync::atomic::AtomicU64::new(0);
    for _ in 0..5 {
        let t = Instant::now();
        pool.broadcast(|i, n| {
            let chunk = &buf[i * buf.len() / n..(i + 1) * buf.len() / n];
            // Four independent sums keep several loads in flight.
            let mut s = [0u64; 4];
            for c in chunk.chunks_exact(4) {
                for k in 0..4 {
                    s[k] = s[k].wrapping_add(c[k]);
                }
            }
            sink.fetch_add(
                s.iter().fold(0, |a: u64, &b| a.wrapping_add(b)),
                std::sync::atomic::Ordering::Relaxed,
            );
        })?;
        best = best.max((buf.len() * 8) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    std::hint::black_box(sink.into_inner());
    Ok(best)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Decode: `layers` layers of 8 experts × 1 token, each layer touching other
/// experts of the set; returns seconds per layer.
fn decode_layer_time(
    pool: &CpuPool,
    set: &[RandomExpert],
    layers: usize,
    scratch: &mut ExpertScratch,
) -> Result<f64> {
    let x: Vec<f32> = (0..HIDDEN)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
        .collect();
    let mut y = vec![0f32; HIDDEN];
    let rows = [0u32];
    let w = [0.125f32];
    let mut run = |layer: usize, scratch: &mut ExpertScratch| -> Result<()> {
        let tasks: Vec<_> = (0..TOP_K)
            .map(|k| set[(layer * TOP_K + k) % set.len()].task(&rows, &w))
            .collect();
        run_experts(pool, &x, HIDDEN, &tasks, &mut y, scratch)?;
        Ok(())
    };
    for l in 0..layers.min(4) {
        run(l, scratch)?;
    }
    // Five windows of `layers` layers: the median resists noisy neighbours on
    // shared (virtual) machines.
    let mut per_layer = Vec::with_capacity(5);
    let mut next = 4;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..layers {
            run(next, scratch)?;
            next += 1;
        }
        per_layer.push(t.elapsed().as_secs_f64() / layers as f64);
    }
    per_layer.sort_by(f64::total_cmp);
    Ok(per_layer[per_layer.len() / 2])
}

/// Prefill: `tokens` tokens × 8 experts routed uniformly over 128 experts (like a
/// random-weight model); returns seconds per layer of the N-row path and of the
/// GEMM path.
fn prefill_layer_time(
    pool: &CpuPool,
    set: &[RandomExpert],
    tokens: usize,
    scratch: &mut ExpertScratch,
) -> Result<PrefillTimes> {
    let x: Vec<f32> = (0..tokens * HIDDEN)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
        .collect();
    let mut y = vec![0f32; tokens * HIDDEN];
    let (rows, weights) = top_k_routing(tokens);
    let tasks: Vec<_> = (0..N_EXPERTS)
        .map(|e| set[e % set.len()].task(&rows[e], &weights[e]))
        .collect();
    // Old path (N-row kernels for every expert) and new path (tiled GEMM from
    // GEMM_MIN_TOKENS) alternate, so that both see the same machine load; medians.
    let default_min = scratch.gemm_min_tokens();
    let mut times = [Vec::new(), Vec::new()];
    let mut cpu = [Vec::new(), Vec::new()];
    let t_all = Instant::now();
    let mut round = 0;
    while round < 3 || (round < 15 && t_all.elapsed().as_secs_f64() < 6.0) {
        for (k, min) in [usize::MAX, default_min].into_iter().enumerate() {
            scratch.set_gemm_min_tokens(min);
            let (t, c) = (Instant::now(), cpu_seconds());
            run_experts(pool, &x, HIDDEN, &tasks, &mut y, scratch)?;
            times[k].push(t.elapsed().as_secs_f64());
            cpu[k].push(cpu_seconds() - c);
        }
        round += 1;
    }
    scratch.set_gemm_min_tokens(default_min);
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [mut a, mut b] = times;
    let [mut ca, mut cb] = cpu;
    Ok(PrefillTimes {
        wall: [med(&mut a), med(&mut b)],
        cpu: [med(&mut ca), med(&mut cb)],
    })
}

/// Seconds per layer of the old (N-row) and new (GEMM) path: wall clock, and CPU
/// time of the whole process (all pool threads), which other processes sharing the
/// cores do not inflate.
struct PrefillTimes {
    wall: [f64; 2],
    cpu: [f64; 2],
}

/// CPU time of this process (all threads), in seconds.
fn cpu_seconds() -> f64 {
    topology::process_cpu_seconds()
}

/// Tokens of the kernel section's many-token columns.
const GEMM_BENCH_TOKENS: usize = 64;

/// Single-thread kernel throughput with the weights in cache (one 768 × 2048
/// matrix, L2-sized): separates compute speed from memory speed. The many-token
/// columns compare the N-row kernels looped over the tokens (the old prefill path)
/// with the tiled GEMM, interleaved so that both see the same machine load.
/// One kernel-section measurement: weights, weight rows, activations, tokens, gemm.
type KernelCase<'a> = (&'a [u8], usize, &'a [hmoe_quant::ActRow<'a>], usize, bool);

fn act_rows(b: &hmoe_quant::ActBuf, n: usize) -> Result<Vec<hmoe_quant::ActRow<'_>>> {
    (0..n)
        .map(|r| b.row(r).ok_or_else(|| anyhow!("row")))
        .collect()
}

fn kernel_section(types: &[GgmlDType]) -> Result<()> {
    use hmoe_quant::{ActBuf, ActFormat, DotKernel};
    const NT: usize = GEMM_BENCH_TOKENS;
    println!("## kernels: one thread, weights in cache (GMAC/s per core; CPU time)");
    println!("gate shape 768 × 2048; down shape 2048 × 768 ({NT} tokens only)");
    println!("| type | isa | 1 row | 4 rows | {NT} rows, N-row kernels | {NT} rows, gemm | gemm / N-row | down: N-row | down: gemm | down: gemm / N-row |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &dtype in types {
        let e = random_expert(dtype, HIDDEN, FFN, 3)?;
        let quant = |cols: usize| -> Result<ActBuf> {
            let mut acts = ActBuf::new(ActFormat::for_weights(dtype)?);
            let x: Vec<f32> = (0..NT * cols)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            acts.quantize(&x, cols)?;
            Ok(acts)
        };
        let (ag, ad) = (quant(HIDDEN)?, quant(FFN)?);
        let (rg, rd) = (act_rows(&ag, NT)?, act_rows(&ad, NT)?);
        let mut out = vec![0f32; HIDDEN * NT];
        for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            let k = DotKernel::new(dtype, isa)?;
            let cases: [KernelCase<'_>; 6] = [
                (&e.gate, FFN, &rg, 1, false),
                (&e.gate, FFN, &rg, 4, false),
                (&e.gate, FFN, &rg, NT, false),
                (&e.gate, FFN, &rg, NT, true),
                (&e.down, HIDDEN, &rd, NT, false),
                (&e.down, HIDDEN, &rd, NT, true),
            ];
            let mut best = [f64::MAX; 6];
            // Interleaved repeats; CPU time so that other processes do not count.
            for _ in 0..7 {
                for (slot, &(w, nrows, acts, n, gemm)) in cases.iter().enumerate() {
                    let rb = w.len() / nrows;
                    let c = cpu_seconds();
                    if gemm {
                        k.gemm(w, nrows, &acts[..n], &mut out, NT, 1)?;
                    } else {
                        for r in 0..nrows {
                            for (g, a) in acts[..n].chunks(4).enumerate() {
                                let o = &mut out[r * NT + 4 * g..r * NT + 4 * g + a.len()];
                                k.dot_rows(&w[r * rb..(r + 1) * rb], a, o)?;
                            }
                        }
                    }
                    best[slot] = best[slot].min(cpu_seconds() - c);
                }
            }
            std::hint::black_box(&out);
            let rate = |i: usize| (FFN * HIDDEN * cases[i].3) as f64 / best[i] / 1e9;
            println!(
                "| {dtype} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} | {:.2} |",
                isa.name(),
                rate(0),
                rate(1),
                rate(2),
                rate(3),
                best[2] / best[3],
                rate(4),
                rate(5),
                best[4] / best[5]
            );
        }
    }
    println!();
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let max_threads = *args.threads.iter().max().unwrap_or(&1);
    // Read the core list before pinning anything (it is cached from the first call).
    let cores = topology::physical_core_cpus();
    if args.pin {
        // Workers take cores 1.. (see PoolConfig::pin); the caller, thread 0, takes
        // the first core so that no two pool threads share one.
        if let Some(&c) = cores.first() {
            topology::pin_current_thread(c);
        }
    }
    println!("# hmoe-cpu bench");
    println!(
        "cpu: {} | physical cores: {} | logical: {} | kernels: {} | pinned: {}",
        cpu_model(),
        topology::physical_cores(),
        topology::allowed_cpus().len(),
        args.isa.name(),
        args.pin
    );
    println!("amx: {}", hmoe_cpu::amx::amx_status().describe());
    if args.latency {
        return latency_section(&args.threads, args.pin);
    }
    if args.amx {
        return amx_section(&args.threads, args.pin);
    }
    println!("shape: hidden {HIDDEN}, expert FFN {FFN}, top-{TOP_K} of {N_EXPERTS}; expert working set {} MB per type\n", args.set_mb);
    if !args.prefill_only {
        kernel_section(&args.types)?;
    }
    if args.kernels_only {
        return Ok(());
    }

    // Memory read bandwidth, same thread counts.
    let words = args.bw_mb * (1 << 20) / 8;
    let buf: Vec<u64> = (0..words as u64).collect();
    let mut bw = Vec::new();
    println!(
        "## memory read bandwidth ({} MB buffer, best of 5)",
        args.bw_mb
    );
    println!("| threads | GB/s |\n|---|---|");
    for &t in &args.threads {
        if args.prefill_only {
            bw.push((t, f64::NAN));
            continue;
        }
        let g = read_bandwidth(&pool(t, args.pin)?, &buf)?;
        println!("| {t} | {g:.1} |");
        bw.push((t, g));
    }
    drop(buf);
    let peak_bw = bw.iter().map(|b| b.1).fold(0.0, f64::max);

    println!("\n## decode: 1 token, 8 experts per layer (weights from DRAM)");
    println!("| type | threads | µs/layer | weight GB/s | % of same-threads read BW | % of peak read BW |");
    println!("|---|---|---|---|---|---|");
    let mut prefill_rows = Vec::new();
    for &dtype in &args.types {
        let base = random_expert(dtype, HIDDEN, FFN, 7)?;
        let n_set = (args.set_mb * (1 << 20) / base.bytes())
            .max(2 * TOP_K)
            .max(N_EXPERTS);
        let set: Vec<RandomExpert> = (0..n_set).map(|_| base.clone()).collect();
        let layer_bytes = (TOP_K * base.bytes()) as f64;
        for (&t, &(_, tbw)) in args.threads.iter().zip(&bw) {
            let p = pool(t, args.pin)?;
            let mut scratch = ExpertScratch::with_isa(args.isa);
            if args.prefill_only {
                let s = prefill_layer_time(&p, &set, args.prefill_tokens, &mut scratch)?;
                prefill_rows.push((dtype, t, s));
                continue;
            }
            let s = decode_layer_time(&p, &set, args.layers, &mut scratch)?;
            let g = layer_bytes / s / 1e9;
            println!(
                "| {dtype} | {t} | {:.0} | {g:.1} | {:.0}% | {:.0}% |",
                s * 1e6,
                100.0 * g / tbw,
                100.0 * g / peak_bw
            );
            if !args.skip_prefill && (t == max_threads || t == 1) {
                let s = prefill_layer_time(&p, &set, args.prefill_tokens, &mut scratch)?;
                prefill_rows.push((dtype, t, s));
            }
        }
    }
    if !args.skip_prefill {
        println!(
            "\n## prefill: {} tokens × 8 experts over 128 experts (one MoE layer)",
            args.prefill_tokens
        );
        println!("(medians of alternating runs; old = N-row kernels, new = tiled GEMM; CPU ms = CPU time of all threads)");
        println!("| type | threads | ms/layer old | ms/layer new | wall speed-up | CPU ms old | CPU ms new | CPU-time speed-up | tokens/s, 4 layers (experts only, new) | GMAC/s new |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        let macs = (args.prefill_tokens * TOP_K * 3 * HIDDEN * FFN) as f64;
        for (dtype, t, p) in prefill_rows {
            let ([so, s], [co, c]) = (p.wall, p.cpu);
            let tps = args.prefill_tokens as f64 / s;
            println!(
                "| {dtype} | {t} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} | {:.2} | {:.0} | {:.1} |",
                so * 1e3,
                s * 1e3,
                so / s,
                co * 1e3,
                c * 1e3,
                co / c,
                tps / 4.0,
                macs / s / 1e9
            );
        }
    }

    if args.prefill_only {
        return Ok(());
    }
    println!("\n## calibration: one expert on {max_threads} threads (cost-model CPU term)");
    println!(
        "(`calibrate_cpu`, wall clock; old = N-row kernels, new = default path with tiled GEMM"
    );
    println!(
        " from {} tokens; best of 3 alternating runs)",
        ExpertScratch::new().gemm_min_tokens()
    );
    println!("| type | tokens | µs/expert old | µs/expert new | new speed-up | weight GB/s new |");
    println!("|---|---|---|---|---|---|");
    let p = pool(max_threads, args.pin)?;
    let counts = [1usize, 2, 3, 4, 6, 8, 16, 32, 64, 128, 256, 512];
    for &dtype in &args.types {
        let mut best: [Vec<Option<hmoe_cpu::CpuTiming>>; 2] =
            [vec![None; counts.len()], vec![None; counts.len()]];
        for _ in 0..3 {
            for (k, min) in [usize::MAX, ExpertScratch::new().gemm_min_tokens()]
                .into_iter()
                .enumerate()
            {
                let mut scratch = ExpertScratch::with_isa(args.isa);
                scratch.set_gemm_min_tokens(min);
                let timings = calibrate_cpu(
                    &p,
                    &mut scratch,
                    &[dtype],
                    &counts,
                    HIDDEN,
                    FFN,
                    args.set_mb.min(512) << 20,
                    0.05,
                )?;
                for (slot, t) in best[k].iter_mut().zip(timings) {
                    if slot.is_none_or(|b| t.seconds < b.seconds) {
                        *slot = Some(t);
                    }
                }
            }
        }
        for (o, n) in best[0].iter().zip(&best[1]) {
            if let (Some(o), Some(n)) = (o, n) {
                println!(
                    "| {} | {} | {:.0} | {:.0} | {:.2} | {:.1} |",
                    n.dtype,
                    n.n_tokens,
                    o.seconds * 1e6,
                    n.seconds * 1e6,
                    o.seconds / n.seconds,
                    n.weight_gbps()
                );
            }
        }
    }
    Ok(())
}

/// Broadcasts timed per point of the latency section.
const LATENCY_ROUNDS: usize = 2000;

/// Median and 90th percentile of `f` over [`LATENCY_ROUNDS`] calls, µs, with `gap` of
/// idle time before each call (the time a decode step spends elsewhere between jobs).
fn time_broadcasts(pool: &CpuPool, gap: std::time::Duration) -> Result<(f64, f64)> {
    let mut us = Vec::with_capacity(LATENCY_ROUNDS);
    for _ in 0..LATENCY_ROUNDS {
        if !gap.is_zero() {
            let until = Instant::now() + gap;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        let t = Instant::now();
        pool.broadcast(|_, _| {})?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    Ok((us[us.len() / 2], us[us.len() * 9 / 10]))
}

/// The cost of one empty broadcast (wake every worker, wait for all), back to back and
/// after idle gaps long enough for the workers to park, for each spin setting.
fn latency_section(threads: &[usize], pin: bool) -> Result<()> {
    println!("## pool broadcast latency (empty job; µs, median / p90)");
    println!("| threads | spin µs | back to back | after 20 µs idle | after 200 µs idle | after 2 ms idle |");
    println!("|---|---|---|---|---|---|");
    for &t in threads {
        for spin in [None, Some(0), Some(250)] {
            let pool = CpuPool::new(PoolConfig {
                threads: t,
                pin,
                spin,
            })?;
            let mut cells = Vec::new();
            for gap_us in [0u64, 20, 200, 2000] {
                let (m, p) = time_broadcasts(&pool, std::time::Duration::from_micros(gap_us))?;
                cells.push(format!("{m:.1} / {p:.1}"));
            }
            let spin = spin.map_or("auto".to_string(), |s| s.to_string());
            println!("| {t} | {spin} | {} |", cells.join(" | "));
        }
    }
    Ok(())
}

/// Runs `f(amx_on)` alternately with AMX on and off (`rounds` times each, at least);
/// medians of the wall-clock seconds, `[off, on]`.
fn alternate(mut f: impl FnMut() -> Result<()>, with_amx: bool) -> Result<[f64; 2]> {
    let mut times = [Vec::new(), Vec::new()];
    let t_all = Instant::now();
    let mut round = 0;
    while round < 5 || (round < 25 && t_all.elapsed().as_secs_f64() < 4.0) {
        for (k, on) in [false, true].into_iter().enumerate() {
            if on && !with_amx {
                continue;
            }
            hmoe_quant::amx::set_amx_enabled(on);
            let t = Instant::now();
            f()?;
            times[k].push(t.elapsed().as_secs_f64());
        }
        round += 1;
    }
    hmoe_quant::amx::set_amx_enabled(true);
    Ok(times.map(|mut v| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }))
}

/// The AMX-INT8 Q8_0 prefill GEMM against the AVX-512 kernels: one-thread kernel
/// rate with the weights in cache (calls of 16 weight rows × 64 tokens, as the expert
/// executor makes them), then one MoE layer of 512 tokens (8 experts × 512 tokens
/// each, and top-8 of 128 experts ≈ 32 tokens each) on 1 and the most threads.
fn amx_section(threads: &[usize], pin: bool) -> Result<()> {
    use hmoe_quant::amx::{amx_int8_usable, GemmPath};
    use hmoe_quant::{ActBuf, ActFormat, DotKernel};
    const NT: usize = 64;
    const ROWS: usize = 16;
    const TOKENS: usize = 512;
    let usable = amx_int8_usable();
    let k = DotKernel::best(GgmlDType::Q8_0)?;
    println!(
        "## AMX: Q8_0 prefill GEMM, AMX-INT8 vs {} (AMX path for {NT} tokens: {:?})",
        k.isa().name(),
        k.gemm_path(NT)
    );
    if !usable {
        println!(
            "AMX-INT8 is not usable here: only the {} columns are measured\n",
            k.isa().name()
        );
    }
    let na = |x: f64| {
        if x.is_nan() {
            "n/a".to_string()
        } else {
            format!("{x:.1}")
        }
    };

    println!(
        "### kernel: one thread, weights in cache, calls of {ROWS} rows × {NT} tokens (GFLOP/s)"
    );
    println!(
        "| shape | {} | AMX | AMX / {} |",
        k.isa().name(),
        k.isa().name()
    );
    println!("|---|---|---|---|");
    let e = random_expert(GgmlDType::Q8_0, HIDDEN, FFN, 3)?;
    for (name, w, rows, cols) in [
        ("gate/up 768 × 2048", &e.gate, FFN, HIDDEN),
        ("down 2048 × 768", &e.down, HIDDEN, FFN),
    ] {
        let mut acts = ActBuf::new(ActFormat::Q8_0);
        let x: Vec<f32> = (0..NT * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        acts.quantize(&x, cols)?;
        let a = act_rows(&acts, NT)?;
        let rb = w.len() / rows;
        let mut out = vec![0f32; ROWS * NT];
        let [off, on] = alternate(
            || {
                for r0 in (0..rows).step_by(ROWS) {
                    let ww = &w[r0 * rb..(r0 + ROWS) * rb];
                    if k.gemm_path(NT) == GemmPath::AmxInt8 {
                        k.gemm_amx(ww, ROWS, &a, &mut out, 1, ROWS)?;
                    } else {
                        k.gemm(ww, ROWS, &a, &mut out, 1, ROWS)?;
                    }
                }
                std::hint::black_box(&out);
                Ok(())
            },
            usable,
        )?;
        let gf = |s: f64| 2.0 * (rows * cols * NT) as f64 / s / 1e9;
        println!(
            "| {name} | {:.1} | {} | {} |",
            gf(off),
            na(gf(on)),
            na(off / on)
        );
    }

    println!("\n### MoE layer: Q8_0 experts {HIDDEN} × {FFN}, {TOKENS} tokens (gate, up, down; medians of alternating runs)");
    println!("| routing | threads | {} ms | AMX ms | {} tokens/s | AMX tokens/s | {} GFLOP/s | AMX GFLOP/s | speed-up |", k.isa().name(), k.isa().name(), k.isa().name());
    println!("|---|---|---|---|---|---|---|---|---|");
    let base = random_expert(GgmlDType::Q8_0, HIDDEN, FFN, 7)?;
    let x: Vec<f32> = (0..TOKENS * HIDDEN)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
        .collect();
    let mut y = vec![0f32; TOKENS * HIDDEN];
    // 8 distinct experts with every token; and top-8 of 128 (pseudo-random routing).
    let all: Vec<u32> = (0..TOKENS as u32).collect();
    let w8 = vec![0.125f32; TOKENS];
    let set8: Vec<RandomExpert> = (0..TOP_K).map(|_| base.clone()).collect();
    let (rows, weights) = top_k_routing(TOKENS);
    let set128: Vec<RandomExpert> = (0..N_EXPERTS).map(|_| base.clone()).collect();
    let max_t = threads.iter().copied().max().unwrap_or(1);
    let mut counts = vec![1, max_t];
    counts.dedup();
    let flops = 2.0 * (TOKENS * TOP_K * 3 * HIDDEN * FFN) as f64;
    for (label, tasks) in [
        (
            "8 experts × 512 tokens",
            set8.iter().map(|e| e.task(&all, &w8)).collect::<Vec<_>>(),
        ),
        (
            "top-8 of 128 (~32 tokens each)",
            (0..N_EXPERTS)
                .map(|e| set128[e].task(&rows[e], &weights[e]))
                .collect(),
        ),
    ] {
        for &t in &counts {
            let p = pool(t, pin)?;
            let mut scratch = ExpertScratch::new();
            let [off, on] = alternate(
                || Ok(run_experts(&p, &x, HIDDEN, &tasks, &mut y, &mut scratch)?),
                usable,
            )?;
            println!(
                "| {label} | {t} | {:.1} | {} | {:.0} | {} | {:.0} | {} | {} |",
                off * 1e3,
                na(on * 1e3),
                TOKENS as f64 / off,
                na(TOKENS as f64 / on),
                flops / off / 1e9,
                na(flops / on / 1e9),
                na(off / on)
            );
        }
    }
    Ok(())
}

/// Pseudo-random top-`TOP_K` of `N_EXPERTS` routing of `tokens` tokens (a fixed LCG, so
/// every run and table routes the same way): per expert, its token rows and weights.
fn top_k_routing(tokens: usize) -> (Vec<Vec<u32>>, Vec<Vec<f32>>) {
    let mut rows = vec![Vec::new(); N_EXPERTS];
    let mut weights = vec![Vec::new(); N_EXPERTS];
    let mut state = 12345u64;
    for t in 0..tokens {
        let mut chosen = Vec::with_capacity(TOP_K);
        while chosen.len() < TOP_K {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let e = ((state >> 33) % N_EXPERTS as u64) as usize;
            if !chosen.contains(&e) {
                chosen.push(e);
            }
        }
        for e in chosen {
            rows[e].push(t as u32);
            weights[e].push(0.125f32);
        }
    }
    (rows, weights)
}
