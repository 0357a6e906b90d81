#!/usr/bin/env bash
# Issue 4's benchmark on the GPU machine: the synthetic 48-layer Qwen3-30B-A3B, 16 CPU
# threads, batch 1, every policy x VRAM budget x prefetch on/off in ONE load (hmoe bench
# --sweep switches settings between runs). Usage:
#   cuda-bench.sh HMOE WORK OUT DTYPE ROUTING [GEN] [PROMPT] [BUDGETS] [POLICIES]
# ROUTING: model (the random-weight router: near-uniform) or replay (calibrated trace).
# BENCH_EXTRA: more `hmoe` flags (e.g. "--prefill-chunk 1024").
set -uo pipefail
hmoe=$1; work=$2; out=$3; dtype=${4:-q4_k_m}; routing=${5:-model}
gen=${6:-128}; prompt=${7:-1024}; budgets=${8:-8GiB,16GiB,24GiB,all}
policies=${9:-cpu-only,static,lru,mrs,value}; warmup=${10:-64}
# Expert weights reach the GPU from the page-locked mmap (measured: 48-55 GB/s against
# 7 GB/s through the pinned staging copy) unless the caller says otherwise.
export HMOE_CUDA_HOST=${HMOE_CUDA_HOST:-registered}
mkdir -p "$out" "$work"
# The device call returns only a few files: the table goes to stdout (the stage log),
# the JSON rows and the engine log stay next to the model unless OUT_FILES=1.
# Named after OUT too: the ab stages (OUT/ab) must not overwrite a final stage's table
# (session 8 lost one that way; the stage logs keep the rows either way).
side=$out; [ "${OUT_FILES:-0}" = 1 ] || side=$work/$(basename "$out")
mkdir -p "$side"
m=$work/qwen3-30b-a3b-$dtype.gguf
if [ ! -f "$m" ]; then
  s=$(date +%s)
  "$hmoe" synth --preset qwen3-30b-a3b --dtype "$dtype" --seed 7 -o "$m" 2>&1 | tail -1
  echo "synth took $(($(date +%s) - s)) s"
fi
"$hmoe" info "$m" | head -8
echo "| routing | policy | budget | slots | prefetch | prefill tok/s | cold prefill tok/s | prefill MoE s (CPU/GPU) | prefill dense/MoE-block/sched s | prefill layer err (pred/meas CPU, GPU) | decode tok/s | hit rate | GPU share | PCIe GB/s | layer err | step err | MoE ms/tok | MoE CPU ms | MoE GPU ms | dense ms/tok | dense GPU calls ms | sched us/token | sched share | place share | hooked share | device-routed |"
HMOE_LOG=${HMOE_LOG:-info} "$hmoe" bench -m "$m" --device cuda --threads 16 --vram-budget 70GiB \
  --sweep --routing "$routing" --budgets "$budgets" --policies "$policies" \
  --gen "$gen" --prompt-len "$prompt" --warmup "$warmup" ${BENCH_EXTRA:-} --jsonl "$side/sweep-$dtype-$routing.jsonl" 2>&1 >/dev/null \
  | tee "$side/sweep-$dtype-$routing.err" | grep --line-buffered '^| '
rc=${PIPESTATUS[0]}
# (rows are printed as they are measured: a run cut by its timeout keeps what it did)
grep -E "calibration|CUDA on|dense path|warn|error" "$side/sweep-$dtype-$routing.err" | head -20
grep "prefill mix" "$side/sweep-$dtype-$routing.err" | sed 's/\x1b\[[0-9;]*m//g; s/.*bench_sweep: //' | head -20
# HMOE_DENSE_PROFILE=1: the GPU dense path's per-kernel profile (logged when the engine ends).
grep -A40 "dense path profile" "$side/sweep-$dtype-$routing.err" | sed "s/\x1b\[[0-9;]*m//g" | head -80
grep -A10 -E "MoE layer host profile|GPU submit host profile" "$side/sweep-$dtype-$routing.err" | sed 's/\x1b\[[0-9;]*m//g' | head -60
exit "$rc"
