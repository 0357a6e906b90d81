#!/usr/bin/env bash
# Issue 8 on the GPU machine: the `--layers 4` synthetic Qwen3-30B-A3B with every expert on
# the CPU (16 threads), prefill 512 and decode 128, Q4_K_M and Q8_0, and Q8_0 with the AMX
# prefill GEMM switched off (HMOE_AMX=0) for comparison. Usage: cpu4-bench.sh HMOE WORK
set -uo pipefail
hmoe=$1; work=$2
for d in q4_k_m q8_0; do
  m=$work/qwen3-30b-a3b-$d-l4.gguf
  [ -f "$m" ] || "$hmoe" synth --preset qwen3-30b-a3b --dtype "$d" --layers 4 --seed 7 -o "$m" 2>&1 | tail -1
  echo "--- $d"; "$hmoe" bench -m "$m" --device cpu --threads 16 --prompt-len 512 --gen 128 2>/dev/null | tail -4
done
echo "--- q8_0 HMOE_AMX=0"
HMOE_AMX=0 "$hmoe" bench -m "$work/qwen3-30b-a3b-q8_0-l4.gguf" --device cpu --threads 16 --prompt-len 512 --gen 128 2>/dev/null | tail -4
