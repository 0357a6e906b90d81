//! Single-thread decode throughput of the quantised dot kernels, shaped like the
//! expert decode loop of `hmoe-cpu` (Qwen3-30B-A3B experts: gate/up 768 × 2048, down
//! 2048 × 768; each weight row multiplied with 1..=4 token rows, the next rows
//! prefetched like `run_experts` does), next to this core's read bandwidth.
//!
//! `cargo run --release -p hmoe-quant --example q4k_bench -- [--types q4_k,q8_0]
//!  [--set-mb 512] [--tokens 1,4] [--isa avx512-vnni] [--reps 5]`
//!
//! Prints, per type and token count: weight GB/s from DRAM (a working set much larger
//! than the caches), the same as % of the single-core read bandwidth, and G weights/s
//! with the weights in cache (compute speed alone).

use hmoe_quant::{row_bytes, ActBuf, ActFormat, ActRow, DotKernel, GgmlDType, Isa};
use std::time::Instant;

const HIDDEN: usize = 2048;
const FFN: usize = 768;
/// Rows ahead prefetched (as `hmoe-cpu`'s `PREFETCH_ROWS`).
const PREFETCH_ROWS: usize = 4;

struct Args {
    types: Vec<GgmlDType>,
    set_mb: usize,
    tokens: Vec<usize>,
    isa: Isa,
    reps: usize,
    wrows: bool,
}

fn fail(msg: String) -> ! {
    eprintln!("q4k_bench: {msg}");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        types: vec![GgmlDType::Q4K, GgmlDType::Q8_0],
        set_mb: 512,
        tokens: vec![1, 4],
        isa: Isa::best(),
        reps: 5,
        wrows: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = |it: &mut dyn Iterator<Item = String>| {
            it.next()
                .unwrap_or_else(|| fail(format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--types" => {
                a.types = val(&mut it)
                    .split(',')
                    .map(|s| match s {
                        "q4_k" => GgmlDType::Q4K,
                        "q5_k" => GgmlDType::Q5K,
                        "q6_k" => GgmlDType::Q6K,
                        "q8_0" => GgmlDType::Q8_0,
                        other => fail(format!("unknown type {other}")),
                    })
                    .collect()
            }
            "--set-mb" => {
                a.set_mb = val(&mut it)
                    .parse()
                    .unwrap_or_else(|e| fail(format!("{e}")))
            }
            "--reps" => {
                a.reps = val(&mut it)
                    .parse()
                    .unwrap_or_else(|e| fail(format!("{e}")))
            }
            "--tokens" => {
                a.tokens = val(&mut it)
                    .split(',')
                    .map(|s| s.parse().unwrap_or_else(|e| fail(format!("{e}"))))
                    .collect()
            }
            "--isa" => {
                let v = val(&mut it);
                a.isa = Isa::ALL
                    .into_iter()
                    .find(|i| i.name() == v)
                    .unwrap_or_else(|| fail(format!("unknown isa {v}")));
            }
            "--no-wrows" => a.wrows = false,
            other => fail(format!("unknown argument {other}")),
        }
    }
    a
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Single-thread streaming read of `buf` (eight independent sums), GB/s: the median
/// over 4 MB pieces of `reps` passes.
fn read_bw(buf: &[u64], reps: usize) -> f64 {
    let mut ts = Vec::new();
    const PIECE: usize = 1 << 19;
    for _ in 0..reps {
        for p in buf.chunks_exact(PIECE) {
            let t = Instant::now();
            let mut s = [0u64; 8];
            for c in p.chunks_exact(8) {
                for k in 0..8 {
                    s[k] = s[k].wrapping_add(c[k]);
                }
            }
            std::hint::black_box(s);
            ts.push(t.elapsed().as_secs_f64());
        }
    }
    (PIECE * 8) as f64 / median(&mut ts) / 1e9
}

fn prefetch(data: &[u8], off: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let end = (off + len).min(data.len());
        let mut o = off;
        while o < end {
            // SAFETY: `o` is inside `data`; prefetch never faults.
            unsafe {
                core::arch::x86_64::_mm_prefetch(
                    data.as_ptr().add(o) as *const i8,
                    core::arch::x86_64::_MM_HINT_T0,
                )
            };
            o += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, off, len);
}

/// One matrix (`rows` rows of `rb` bytes) times `acts`, row by row as `run_experts`
/// does it (prefetching `PREFETCH_ROWS` ahead), or with the multi-row entry.
fn matvec(k: &DotKernel, w: &[u8], rows: usize, acts: &[ActRow<'_>], out: &mut [f32], wrows: bool) {
    let rb = w.len() / rows;
    let n = acts.len();
    if wrows {
        // Tiles of 16 rows through the tiled GEMM, like run_experts' many-token path
        // (`experts_gemm`), which prefetches only inside the tile.
        for r0 in (0..rows).step_by(16) {
            let r1 = (r0 + 16).min(rows);
            // SAFETY: shapes built consistently in main; out[r * n + t] is inside `out`.
            unsafe {
                k.gemm_unchecked(
                    &w[r0 * rb..r1 * rb],
                    r1 - r0,
                    acts,
                    &mut out[r0 * n..r1 * n],
                    n,
                    1,
                )
            };
        }
        return;
    }
    for r in 0..rows {
        prefetch(w, (r + PREFETCH_ROWS) * rb, rb);
        // SAFETY: shapes built consistently in main (checked once with `dot_rows`).
        unsafe {
            k.dot_rows_unchecked(&w[r * rb..(r + 1) * rb], acts, &mut out[r * n..(r + 1) * n])
        };
    }
}

/// In-cache speed of one token against 256 KB of weights cut into rows of several
/// lengths: separates the per-call cost (setup, final reductions) from the per-block
/// cost.
fn row_length_section(dtype: GgmlDType, isa: Isa, reps: usize) {
    let k = DotKernel::new(dtype, isa).unwrap_or_else(|e| fail(format!("{e}")));
    let fmt = ActFormat::for_weights(dtype).unwrap_or_else(|e| fail(format!("{e}")));
    print!("{dtype} in cache, 1 token, G weights/s by row length:");
    for len in [256usize, 768, 2048, 8192] {
        let rows = (1 << 18) / row_bytes(dtype, len).unwrap_or(1);
        let x: Vec<f32> = (0..rows * len)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 5000.0)
            .collect();
        let mut w = vec![0u8; rows * row_bytes(dtype, len).unwrap_or(0)];
        hmoe_quant::quantize(dtype, &x, &mut w).unwrap_or_else(|e| fail(format!("{e}")));
        let mut a = ActBuf::new(fmt);
        a.quantize(&x[..len], len)
            .unwrap_or_else(|e| fail(format!("{e}")));
        let acts = [a.row(0).unwrap_or_else(|| fail("row".into()))];
        let mut out = vec![0f32; rows];
        let mut ts = Vec::new();
        for _ in 0..reps * 40 {
            let t = Instant::now();
            matvec(&k, &w, rows, &acts, &mut out, false);
            ts.push(t.elapsed().as_secs_f64());
        }
        std::hint::black_box(&out);
        print!(" {len}: {:.1}", (rows * len) as f64 / median(&mut ts) / 1e9);
    }
    println!();
}

fn main() {
    let args = parse_args();
    println!("# q4k_bench: one thread, kernels {}", args.isa.name());
    let words = args.set_mb << 17;
    let buf: Vec<u64> = (0..words as u64).collect();
    let bw = read_bw(&buf, args.reps);
    drop(buf);
    println!(
        "single-core read bandwidth ({} MB): {bw:.1} GB/s\n",
        args.set_mb
    );
    for &dtype in &args.types {
        row_length_section(dtype, args.isa, args.reps);
    }
    println!();
    println!("| type | tokens | path | DRAM weight GB/s | % of read BW | DRAM G weights/s | in-cache G weights/s |");
    println!("|---|---|---|---|---|---|---|");
    for &dtype in &args.types {
        let k = DotKernel::new(dtype, args.isa).unwrap_or_else(|e| fail(format!("{e}")));
        let fmt = ActFormat::for_weights(dtype).unwrap_or_else(|e| fail(format!("{e}")));
        let gate_rb = row_bytes(dtype, HIDDEN).unwrap_or_else(|e| fail(format!("{e}")));
        let down_rb = row_bytes(dtype, FFN).unwrap_or_else(|e| fail(format!("{e}")));
        let expert_bytes = 2 * FFN * gate_rb + HIDDEN * down_rb;
        // Random weights with valid small f16 scales: speed does not depend on values.
        let mut state = 0x1234_5678u64;
        let mut one = vec![0u8; expert_bytes];
        for b in one.iter_mut() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (state >> 33) as u8;
        }
        let xs: Vec<f32> = (0..HIDDEN)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let mut q = vec![0f32; 2 * FFN * HIDDEN + HIDDEN * FFN];
        for (i, v) in q.iter_mut().enumerate() {
            *v = xs[i % HIDDEN] * 0.01;
        }
        hmoe_quant::quantize(dtype, &q, &mut one).unwrap_or_else(|e| fail(format!("{e}")));
        let n_exp = (args.set_mb << 20) / expert_bytes + 1;
        let set: Vec<Vec<u8>> = (0..n_exp).map(|_| one.clone()).collect();
        let max_t = *args.tokens.iter().max().unwrap_or(&1);
        let mut xg = ActBuf::new(fmt);
        let xin: Vec<f32> = (0..max_t * HIDDEN)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 40.0)
            .collect();
        xg.quantize(&xin, HIDDEN)
            .unwrap_or_else(|e| fail(format!("{e}")));
        let mut xd = ActBuf::new(fmt);
        xd.quantize(&xin[..max_t * FFN], FFN)
            .unwrap_or_else(|e| fail(format!("{e}")));
        let mut out = vec![0f32; HIDDEN * max_t];
        let paths: &[bool] = if args.wrows && k.has_gemm() {
            &[false, true]
        } else {
            &[false]
        };
        for &nt in &args.tokens {
            let ga: Vec<ActRow<'_>> = (0..nt)
                .map(|r| xg.row(r).unwrap_or_else(|| fail("row".into())))
                .collect();
            let da: Vec<ActRow<'_>> = (0..nt)
                .map(|r| xd.row(r).unwrap_or_else(|| fail("row".into())))
                .collect();
            // Checked once, then the unchecked loop.
            k.dot_rows(&one[..gate_rb], &ga, &mut out[..nt])
                .unwrap_or_else(|e| fail(format!("{e}")));
            k.dot_rows(
                &one[2 * FFN * gate_rb..2 * FFN * gate_rb + down_rb],
                &da,
                &mut out[..nt],
            )
            .unwrap_or_else(|e| fail(format!("{e}")));
            for &wr in paths {
                let run = |e: &[u8], out: &mut [f32]| {
                    let (gu, d) = e.split_at(2 * FFN * gate_rb);
                    let (g, u) = gu.split_at(FFN * gate_rb);
                    matvec(&k, g, FFN, &ga, out, wr);
                    matvec(&k, u, FFN, &ga, out, wr);
                    matvec(&k, d, HIDDEN, &da, out, wr);
                };
                // DRAM: walk the whole set once per rep, timing each expert (~0.2-1 ms)
                // alone; the median resists preemption on a shared machine.
                let mut ts = Vec::with_capacity(args.reps * set.len());
                for _ in 0..args.reps {
                    for e in &set {
                        let t = Instant::now();
                        run(e, &mut out);
                        ts.push(t.elapsed().as_secs_f64());
                    }
                }
                let best = median(&mut ts);
                let gbs = expert_bytes as f64 / best / 1e9;
                let weights = (3 * FFN * HIDDEN) as f64;
                // In cache: one expert (2-5 MB; each matrix fits L2) many times.
                let mut tc = Vec::new();
                for _ in 0..args.reps * 20 {
                    let t = Instant::now();
                    run(&set[0], &mut out);
                    tc.push(t.elapsed().as_secs_f64());
                }
                let best_c = median(&mut tc);
                std::hint::black_box(&out);
                println!(
                    "| {dtype} | {nt} | {} | {gbs:.2} | {:.0}% | {:.2} | {:.2} |",
                    if wr { "gemm" } else { "per-row" },
                    100.0 * gbs / bw,
                    weights / best / 1e9,
                    weights / best_c / 1e9
                );
            }
        }
    }
}
