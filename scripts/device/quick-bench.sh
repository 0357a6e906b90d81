#!/usr/bin/env bash
# hmoe bench on the 2-layer synthetic Qwen3-30B-A3B: CPU only, all experts on the GPU, a
# third of the experts on the GPU (value policy). Usage: quick-bench.sh HMOE WORK OUT
set -uo pipefail
hmoe=$1; work=$2; out=$3
mkdir -p "$out"
m=$work/qwen3-30b-a3b-q4_k_m-l2.gguf
[ -f "$m" ] || "$hmoe" synth --preset qwen3-30b-a3b --dtype q4_k_m --layers 2 --seed 7 -o "$m"
size=$(stat -c %s "$m")
b() { echo "--- $*"; "$hmoe" bench -m "$m" --prompt-len 512 --gen 64 --json "$@" | tee -a "$out/bench.jsonl"; }
b --device cpu
b --device cuda --vram-budget 64GiB
b --device cuda --policy value --vram-budget $((size / 3))
b --device cuda --policy value --vram-budget $((size / 3)) --no-prefetch
