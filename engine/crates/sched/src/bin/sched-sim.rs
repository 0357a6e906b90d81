//! `sched-sim`: synthetic-trace calibration, trace generation, simulations and the
//! scheduler benchmark of docs/notes/bench-sched.md.
//!
//! ```text
//! sched-sim calibrate [--steps N]                  fit the synthetic generator to the brief's stats
//! sched-sim stats --trace T                        locality statistics of a trace
//! sched-sim gen --kind calibrated|uniform --steps N --out T [--shape S] [--seed X]
//! sched-sim simulate --trace T [--model-shape S] --sizes 8GiB,20% --policies lru,value [--profile P] [--out plot.svg] [--json r.json]
//! sched-sim bench [--steps N] [--out-dir DIR]      the full benchmark (tables, JSON, SVGs)
//! sched-sim prefill [--out-dir DIR]                predicted prefill throughput
//! sched-sim tune | timing                          value-policy sweep, decision time
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use hmoe_sched::sim::{simulate_trace, CacheSize, SimOptions};
use hmoe_sched::synth::{
    generate, published_qwen3_stats, stats_distance, trace_stats, SynthParams, TraceStats,
};
use hmoe_sched::{simulate, MachineProfile, ModelShape, SimulateArgs, Trace, POLICY_NAMES};

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn flag_or<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T> {
    match flag(args, name) {
        Some(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("bad value for {name}: {v}")),
        None => Ok(default),
    }
}

const FRACTIONS: [f64; 4] = [0.06, 0.19, 0.38, 0.63];

fn print_stats(label: &str, s: &TraceStats) {
    let lru: Vec<String> = s
        .lru
        .iter()
        .map(|(f, h)| format!("{:.0}%→{:.1}%", f * 100.0, h * 100.0))
        .collect();
    println!(
        "{label:>10}: repeat-next {:.1}%  within-8 {:.1}%  LRU {}  top expert {:.1}%  experts for 90% {:.1}",
        s.repeat_next * 100.0,
        s.within_8 * 100.0,
        lru.join(" "),
        s.top_expert_share * 100.0,
        s.experts_for_90
    );
}

fn calibrate(args: &[String]) -> Result<()> {
    let steps: usize = flag_or(args, "--steps", 800)?;
    // Fewer layers: layers are generated independently, so 6 give the same averages.
    let mut shape = ModelShape::preset("qwen3-30b-a3b:q4_k_m")?;
    shape.n_layers = 6;
    let target = published_qwen3_stats();
    let eval = |p: &SynthParams| {
        let t = generate(&shape, p, steps, 11);
        let s = trace_stats(&t, &FRACTIONS);
        (stats_distance(&s, &target), s)
    };
    let (d0, s0) = eval(&SynthParams::qwen3_calibrated());
    println!("current defaults: distance {d0:.2}");
    print_stats("defaults", &s0);
    let mut best = (d0, SynthParams::qwen3_calibrated());
    for pr in [0.25, 0.3, 0.35, 0.4, 0.45] {
        for pw in [0.1, 0.2, 0.3, 0.4, 0.5] {
            if pr + pw > 0.95 {
                continue;
            }
            for wd in [0.6, 0.75, 0.85, 0.92] {
                for zs in [16.0, 22.0, 28.0, 36.0] {
                    let p = SynthParams {
                        p_repeat: pr,
                        p_window: pw,
                        window_decay: wd,
                        pop_tau: zs,
                        ..SynthParams::qwen3_calibrated()
                    };
                    let (d, _) = eval(&p);
                    if d < best.0 {
                        best = (d, p);
                    }
                }
            }
        }
    }
    // Coordinate refinement.
    let mut step = [0.03, 0.03, 0.03, 3.0];
    for _round in 0..4 {
        for (c, &st) in step.iter().enumerate() {
            for dir in [-1.0, 1.0] {
                let mut p = best.1;
                let v = match c {
                    0 => &mut p.p_repeat,
                    1 => &mut p.p_window,
                    2 => &mut p.window_decay,
                    _ => &mut p.pop_tau,
                };
                *v = (*v + dir * st).clamp(0.0, if c == 3 { 200.0 } else { 0.99 });
                if p.p_repeat + p.p_window > 0.98 {
                    continue;
                }
                let (d, _) = eval(&p);
                if d < best.0 {
                    best = (d, p);
                }
            }
        }
        for s in step.iter_mut() {
            *s /= 2.0;
        }
    }
    println!("best distance {:.2}: {:?}", best.0, best.1);
    let (_, s) = eval(&best.1);
    print_stats("fitted", &s);
    print_stats("published", &target);
    Ok(())
}

fn stats(args: &[String]) -> Result<()> {
    let path = flag(args, "--trace").context("--trace T")?;
    let t = Trace::load(Path::new(&path))?;
    print_stats("trace", &trace_stats(&t, &FRACTIONS));
    print_stats("published", &published_qwen3_stats());
    Ok(())
}

fn gen(args: &[String]) -> Result<()> {
    let kind = flag(args, "--kind").unwrap_or_else(|| "calibrated".into());
    let steps: usize = flag_or(args, "--steps", 2000)?;
    let seed: u64 = flag_or(args, "--seed", 1)?;
    let shape = ModelShape::preset(
        &flag(args, "--shape").unwrap_or_else(|| "qwen3-30b-a3b:q4_k_m".into()),
    )?;
    let out = PathBuf::from(flag(args, "--out").context("--out T")?);
    let params = match kind.as_str() {
        "calibrated" => SynthParams::qwen3_calibrated(),
        "uniform" => SynthParams::uniform(),
        k => bail!("unknown trace kind {k} (calibrated, uniform)"),
    };
    generate(&shape, &params, steps, seed).save(&out)?;
    println!("wrote {} ({steps} steps)", out.display());
    Ok(())
}

fn parse_list<T: std::str::FromStr>(s: &str) -> Result<Vec<T>>
where
    T::Err: std::fmt::Display,
{
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| x.parse::<T>().map_err(|e| anyhow::anyhow!("{x}: {e}")))
        .collect()
}

fn simulate_cmd(args: &[String]) -> Result<()> {
    let a = SimulateArgs {
        trace: PathBuf::from(flag(args, "--trace").context("--trace T")?),
        model_shape: flag(args, "--model-shape"),
        sizes: parse_list(
            &flag(args, "--sizes")
                .or_else(|| flag(args, "--vram-budget"))
                .unwrap_or_else(|| "8GiB,16GiB".into()),
        )?,
        policies: flag(args, "--policies")
            .unwrap_or_else(|| POLICY_NAMES.join(","))
            .split(',')
            .map(String::from)
            .collect(),
        profile: flag(args, "--profile"),
        out_svg: flag(args, "--out").map(PathBuf::from),
        out_json: flag(args, "--json").map(PathBuf::from),
        options: SimOptions::default(),
    };
    let r = simulate(&a)?;
    print!("{}", r.table());
    Ok(())
}

fn bench(args: &[String]) -> Result<()> {
    let steps: usize = flag_or(args, "--steps", 1500)?;
    let out_dir =
        PathBuf::from(flag(args, "--out-dir").unwrap_or_else(|| "target/sched-bench".into()));
    std::fs::create_dir_all(&out_dir)?;
    let profile = MachineProfile::h100_box();
    let policies: Vec<String> = POLICY_NAMES.iter().map(|s| s.to_string()).collect();
    let mut sizes: Vec<CacheSize> = [5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
        .iter()
        .map(|p| CacheSize::Fraction(p / 100.0))
        .collect();
    sizes.push(CacheSize::VramBudget(8 << 30));
    sizes.push(CacheSize::VramBudget(16 << 30));
    let opts = SimOptions::default();
    for (kind, params) in [
        ("calibrated", SynthParams::qwen3_calibrated()),
        ("uniform", SynthParams::uniform()),
    ] {
        for quant in ["q4_k_m", "q8_0"] {
            let shape = ModelShape::preset(&format!("qwen3-30b-a3b:{quant}"))?;
            let trace = generate(&shape, &params, steps, 1);
            if quant == "q4_k_m" {
                print_stats(kind, &trace_stats(&trace, &FRACTIONS));
            }
            let t0 = Instant::now();
            let r = simulate_trace(&trace, &shape, &profile, &sizes, &policies, &opts)?;
            let name = format!("sched-{kind}-{quant}");
            println!("== {name} ({:.1} s)", t0.elapsed().as_secs_f64());
            print!("{}", r.table());
            std::fs::write(out_dir.join(format!("{name}.txt")), r.table())?;
            std::fs::write(
                out_dir.join(format!("{name}.json")),
                serde_json::to_string_pretty(&r)?,
            )?;
            std::fs::write(out_dir.join(format!("{name}.svg")), r.svg())?;
        }
    }
    prefill_bench(&out_dir, &profile)?;
    Ok(())
}

/// Prefill: 4 chunks of 512 tokens (first one warms the cache), predicted tokens/s.
fn prefill_bench(out_dir: &Path, profile: &MachineProfile) -> Result<()> {
    use hmoe_sched::sim::run_policy;
    use hmoe_sched::synth::generate_prefill;
    use hmoe_sched::SchedConfig;
    let mut out =
        String::from("prefill, 512-token chunks (3 counted after 1 warm-up), predicted tok/s\n");
    out += &format!(
        "{:>8} {:>7} {:>6} {:>10} {:>8} {:>8} {:>8} {:>10}\n",
        "quant", "budget", "slots", "policy", "hit%", "tok/s", "GB/s", "cpu busy%"
    );
    for quant in ["q4_k_m", "q8_0"] {
        let shape = ModelShape::preset(&format!("qwen3-30b-a3b:{quant}"))?;
        let trace = generate_prefill(&shape, &SynthParams::qwen3_calibrated(), 4, 512, 2);
        for gib in [8u64, 16] {
            let opts = SimOptions {
                warmup_steps: 1,
                ..SimOptions::default()
            };
            let slots = CacheSize::VramBudget(gib << 30).slots(&shape, opts.reserve_bytes);
            for policy in ["cpu-only", "static", "lru", "value"] {
                let n = if policy == "cpu-only" { 0 } else { slots };
                let r = run_policy(
                    &trace,
                    &shape,
                    profile,
                    policy,
                    n,
                    &opts,
                    SchedConfig::default(),
                )?;
                let t = r.totals;
                out += &format!(
                    "{quant:>8} {:>5}GiB {n:>6} {policy:>10} {:>8.1} {:>8.0} {:>8.1} {:>10.0}\n",
                    gib,
                    t.hit_rate() * 100.0,
                    t.tok_per_s(),
                    t.pcie_gbps(),
                    100.0 * t.cpu_busy_s / t.wall_s.max(1e-12)
                );
            }
        }
    }
    print!("{out}");
    std::fs::write(out_dir.join("sched-prefill.txt"), out)?;
    Ok(())
}

/// Sweeps `value` parameters on both synthetic traces (hit rate without prefetch).
fn tune(args: &[String]) -> Result<()> {
    use hmoe_sched::sim::run_policy;
    use hmoe_sched::{SchedConfig, ValueParams};
    let steps: usize = flag_or(args, "--steps", 300)?;
    let shape = ModelShape::preset("qwen3-30b-a3b:q4_k_m")?;
    let profile = MachineProfile::h100_box();
    let fracs: Vec<f64> =
        parse_list(&flag(args, "--fracs").unwrap_or_else(|| "0.05,0.1,0.2,0.3".into()))?;
    let traces = [
        generate(&shape, &SynthParams::qwen3_calibrated(), steps, 3),
        generate(&shape, &SynthParams::uniform(), steps, 3),
    ];
    let cfg = SchedConfig::default();
    let mut opts = SimOptions {
        partitioned: flag(args, "--global").is_none() && !args.iter().any(|a| a == "--global"),
        ..SimOptions::default()
    };
    let row = |name: String, policy: &str, opts: &SimOptions| -> Result<()> {
        let mut line = format!("{name:>40}");
        for t in &traces {
            for &f in &fracs {
                let slots = (f * shape.total_experts() as f64) as usize;
                let r = run_policy(t, &shape, &profile, policy, slots, opts, cfg)?;
                line += &format!(" {:5.1}", r.totals.hit_rate() * 100.0);
            }
            line += " |";
        }
        println!("{line}");
        Ok(())
    };
    println!("{:>40} calibrated 5/10/20/30% | uniform 5/10/20/30%", "");
    for p in ["lru", "mrs", "lfu"] {
        row(p.to_string(), p, &opts)?;
    }
    let horizons: Vec<usize> =
        parse_list(&flag(args, "--horizons").unwrap_or_else(|| "0,1".into()))?;
    let decays: Vec<f64> = parse_list(&flag(args, "--decays").unwrap_or_else(|| "0.7".into()))?;
    for &horizon in &horizons {
        for &decay in &decays {
            for admission in [true, false] {
                opts.value = ValueParams {
                    horizon,
                    decay,
                    admission,
                    ..ValueParams::default()
                };
                row(
                    format!("value H={horizon} d={decay} adm={admission}"),
                    "value",
                    &opts,
                )?;
            }
        }
    }
    Ok(())
}

/// Scheduler decision time per layer (plan + finish), replaying the calibrated trace.
fn timing(args: &[String]) -> Result<()> {
    use hmoe_sched::cache::ExpertCache;
    use hmoe_sched::policy::make_policy;
    use hmoe_sched::{
        CostModel, PredictedExpert, RoutedExpert, SchedConfig, Scheduler, ValueParams,
    };
    let steps: usize = flag_or(args, "--steps", 400)?;
    let shape = ModelShape::preset("qwen3-30b-a3b:q4_k_m")?;
    let trace = generate(&shape, &SynthParams::qwen3_calibrated(), steps, 1);
    println!(
        "{:>10} {:>6} {:>8} {:>10} {:>10} {:>10}",
        "policy", "cache", "prefetch", "mean ns", "p50 ns", "p99 ns"
    );
    for policy in ["cpu-only", "lru", "mrs", "value"] {
        for frac in [0.1, 0.3, 0.8] {
            for prefetch in [false, true] {
                if prefetch && policy != "value" {
                    continue;
                }
                let mut cost = CostModel::new(MachineProfile::h100_box());
                let cfg = SchedConfig {
                    prefetch,
                    ..SchedConfig::default()
                };
                let mut sched = Scheduler::new(&shape, &mut cost, cfg);
                let pol = make_policy(policy, &shape, None, ValueParams::default(), &[])?;
                let slots = (frac * shape.total_experts() as f64) as usize;
                let mut cache = ExpertCache::with_partition(&shape, slots, pol, true);
                let mut routed: Vec<RoutedExpert> = Vec::new();
                let mut pred: Vec<PredictedExpert> = Vec::new();
                let mut ns: Vec<u64> = Vec::with_capacity(steps * 48);
                let mut plan = hmoe_sched::LayerPlan::default();
                for step in &trace.steps {
                    for (l, layer) in step.layers.iter().enumerate() {
                        routed.clear();
                        routed.extend(layer.routed());
                        pred.clear();
                        pred.extend(layer.predicted());
                        let t0 = Instant::now();
                        sched.plan_layer_into(
                            step.step, l as u16, &routed, &pred, &mut cache, 0.0, &mut plan,
                        );
                        sched.finish_layer(&mut cache);
                        ns.push(t0.elapsed().as_nanos() as u64);
                        std::hint::black_box(&plan);
                    }
                }
                let warm = ns.split_off(ns.len() / 5);
                let mut v = warm;
                v.sort_unstable();
                let mean = v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
                println!(
                    "{policy:>10} {:>5.0}% {prefetch:>8} {mean:>10.0} {:>10} {:>10}",
                    frac * 100.0,
                    v[v.len() / 2],
                    v[v.len() * 99 / 100]
                );
            }
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("calibrate") => calibrate(&args),
        Some("stats") => stats(&args),
        Some("gen") => gen(&args),
        Some("simulate") => simulate_cmd(&args),
        Some("bench") => bench(&args),
        Some("tune") => tune(&args),
        Some("timing") => timing(&args),
        Some("prefill") => {
            let dir = PathBuf::from(
                flag(&args, "--out-dir").unwrap_or_else(|| "target/sched-bench".into()),
            );
            std::fs::create_dir_all(&dir)?;
            prefill_bench(&dir, &MachineProfile::h100_box())
        }
        _ => bail!(
            "usage: sched-sim calibrate|stats|gen|simulate|bench [options] (see the file's docs)"
        ),
    }
}
