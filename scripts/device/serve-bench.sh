#!/usr/bin/env bash
# Aggregate decode speed of `hmoe serve` at concurrency 1, 4 and 8 (test_speed semantics,
# `hmoe bench-serve`). Usage: serve-bench.sh HMOE WORK OUT [MODEL] [DEVICE ARGS...]
set -uo pipefail
hmoe=$1; work=$2; out=$3; m=${4:-$work/qwen3-30b-a3b-q4_k_m-l2.gguf}
shift 4 2>/dev/null || shift $#
dev=("$@"); [ ${#dev[@]} -gt 0 ] || dev=(--device auto)
mkdir -p "$out"
layers=$(echo "$m" | sed -n 's/.*-l\([0-9]*\)\.gguf$/\1/p')
[ -f "$m" ] || "$hmoe" synth --preset qwen3-30b-a3b --dtype q4_k_m --layers "${layers:-2}" --seed 7 -o "$m"
port=10077
"$hmoe" serve -m "$m" --port $port --max-concurrent 8 --served-model-name bench "${dev[@]}" > "$work/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null' EXIT
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 1; done
for c in 1 4 8; do
  echo "--- concurrency $c"
  "$hmoe" bench-serve --api-url "http://127.0.0.1:$port/v1/chat/completions" --model bench \
    --prompt-lens 1024 --max-tokens 64 --concurrent $c
done
