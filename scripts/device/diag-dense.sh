#!/usr/bin/env bash
# Where does a decode token's time go on the GPU machine's CPU? Thread sweep, rayon pool
# size, and a perf profile if perf exists. Usage: diag-dense.sh HMOE WORK OUT
set -uo pipefail
hmoe=$1; work=$2; out=$3; root_bin=$(dirname "$hmoe")
mkdir -p "$out" "$work"
m=$work/qwen3-30b-a3b-q4_k_m-l4.gguf
[ -f "$m" ] || "$hmoe" synth --preset qwen3-30b-a3b --dtype q4_k_m --layers 4 --seed 7 -o "$m" 2>/dev/null
cat > "$work/fmt.py" <<'PY'
import sys, json
r = json.load(sys.stdin)
print("pp %.1f tg %.2f experts %.1f GB/s share %.2f" % (r["prefill_tok_s"], r["decode_tok_s"], r["expert_gb_s"], r["expert_time_share"]))
PY
b() { "$hmoe" bench -m "$m" --device cpu --prompt-len 128 --gen 48 --json "$@" 2>/dev/null | python3 "$work/fmt.py"; }
for t in 1 4 8 16; do echo "threads $t: $(b --threads $t)"; done
echo "threads 16, RAYON_NUM_THREADS=1: $(RAYON_NUM_THREADS=1 b --threads 16)"
echo "threads 16, RAYON_NUM_THREADS=4: $(RAYON_NUM_THREADS=4 b --threads 16)"
echo "threads 15: $(b --threads 15)"
"$root_bin"/cpu-bench --threads 4,8,16 --latency 2>&1 | tail -12
if command -v perf >/dev/null; then
  perf record -F 1999 -g -o "$work/perf.data" "$hmoe" bench -m "$m" --device cpu --threads 16 --prompt-len 16 --gen 96 >/dev/null 2>&1
  perf report -i "$work/perf.data" --stdio --no-children --percent-limit 1 2>/dev/null | grep -v "^$" | head -120 > "$out/perf-decode.txt"
  perf report -i "$work/perf.data" --stdio --no-children --sort dso,sym --percent-limit 0.7 -g none 2>/dev/null | head -60
else
  echo "no perf on this machine"
fi
