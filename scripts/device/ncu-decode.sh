#!/usr/bin/env bash
# Per-kernel GPU times of decode layers under Nsight Compute (ncu serialises kernels, so
# each time is the kernel alone: what a decode layer's graph costs kernel by kernel).
#   ncu-decode.sh HMOE WORK OUT [SKIP] [COUNT]
# Q4_K_M, 16 GiB `value`, a 1024-token prompt then decode (the attention at the
# benchmark's context); SKIP kernels (prefill, warm-up)
# are let through unprofiled, the next COUNT are timed. Rows go to $OUT/ncu-decode.csv and
# a per-kernel summary (median µs, count) to stdout.
set -uo pipefail
hmoe=$1; work=$2; out=$3; skip=${4:-9000}; count=${5:-400}
export HMOE_CUDA_HOST=${HMOE_CUDA_HOST:-registered}
m=$work/qwen3-30b-a3b-q4_k_m.gguf
if [ ! -f "$m" ]; then
  "$hmoe" synth --preset qwen3-30b-a3b --dtype q4_k_m --seed 7 -o "$m" 2>&1 | tail -1
fi
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
[ -n "$ncu" ] || { echo "FAIL ncu not found"; exit 2; }
"$ncu" --version | tail -1
if [ "${NCU_DETAIL:-0}" = 1 ]; then
  # NCU_DETAIL=1: the full section set (stall reasons, memory, occupancy) of NCU_COUNT
  # decode launches of the kernels NCU_KERNELS names (each takes ~40 replay passes with
  # memory save and restore: session 8's five kernels did not fit 200 s).
  "$ncu" --clock-control none --set full --print-details all \
    -k regex:"${NCU_KERNELS:-route_resident|attend_split}" \
    --launch-skip 2000 --launch-count "${NCU_COUNT:-2}" \
    "$hmoe" bench -m "$m" --device cuda --threads 16 --vram-budget 70GiB --sweep --routing model \
    --budgets 16GiB --policies value --gen 16 --prompt-len 1024 --warmup 4 \
    > "$out/ncu-detail.txt" 2> "$out/ncu-detail.err"
  echo "ncu rc=$?"
  grep -E "^  [a-z_]+.*\(|Duration|Warp Cycles Per|Achieved Occupancy|Registers Per|stalled|Stall|Memory Throughput|DRAM Throughput|Estimated Speedup|L2 Hit|Theoretical Occ|Block Limit Reg" "$out/ncu-detail.txt" | head -150
  exit 0
fi
# NCU_PREFILL=1: the first prompt's kernels instead (skip 0): where a 512-row prefill
# chunk's time goes.
gen=32; warm=4; name=ncu-decode
if [ "${NCU_PREFILL:-0}" = 1 ]; then gen=1; warm=0; name=ncu-prefill; fi
"$ncu" --clock-control none --cache-control none --metrics gpu__time_duration.sum \
  --csv --page raw --print-units base --launch-skip "$skip" --launch-count "$count" \
  "$hmoe" bench -m "$m" --device cuda --threads 16 --vram-budget 70GiB --sweep --routing model \
  --budgets 16GiB --policies value --gen $gen --prompt-len 1024 --warmup $warm \
  > "$out/$name.csv" 2> "$out/$name.err"
echo "ncu rc=$?"
python3 - "$out/$name.csv" <<'PY'
import csv, sys, statistics as st
rows = list(csv.reader(open(sys.argv[1], errors="replace")))
hdr = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
if hdr is None:
    print("no kernel rows"); print("".join(open(sys.argv[1], errors="replace").readlines()[:20])); sys.exit()
h = rows[hdr]; ki = h.index("Kernel Name"); ti = h.index("gpu__time_duration.sum")
gi = h.index("Grid Size") if "Grid Size" in h else None
bi = h.index("Block Size") if "Block Size" in h else None
by = {}
seq = []
for r in rows[hdr + 1:]:
    if len(r) <= ti: continue
    try: t = float(r[ti].replace(",", "")) / 1000.0
    except ValueError: continue
    key = (r[ki].split("(")[0], r[gi] if gi is not None else "", r[bi] if bi is not None else "")
    by.setdefault(key, []).append(t); seq.append((key, t))
tot = sum(t for _, t in seq)
print(f"{len(seq)} kernels, {tot:.1f} us in all")
print(f"{'kernel':34} {'grid':>16} {'block':>12} {'n':>5} {'median us':>10} {'min us':>8} {'total us':>10} {'share':>6}")
for k, v in sorted(by.items(), key=lambda kv: -st.median(kv[1]) * len(kv[1])):
    print(f"{k[0][:34]:34} {k[1]:>16} {k[2]:>12} {len(v):5d} {st.median(v):10.2f} {min(v):8.2f} {sum(v):10.1f} {100*sum(v)/max(tot,1e-9):5.1f}%")
print("sequence (first 40):")
for k, t in seq[:int(__import__("os").environ.get("NCU_SEQ", "40"))]: print(f"  {k[0][:40]:40} {k[1]:>16} {t:8.2f}")
PY
