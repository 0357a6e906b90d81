#!/usr/bin/env bash
# Issue 8 on the GPU machine: Q4_K/Q6_K decode kernels at 1-16 threads against the measured
# read bandwidth, for each kernel variant (runtime switches of one build; see
# docs/notes/bench-q4k.md). Usage: scripts/device/q4k-variants.sh CPU_BENCH QUANT_TESTS
set -uo pipefail
B=$1; T=$2
"$T" q4k_gfni -q 2>&1 | tail -2
A="--threads 1,4,8,16 --types q4_k --set-mb 2048 --bw-mb 4096 --no-prefill"
for v in HMOE_Q4K_GFNI=off HMOE_Q4K_PACK=1 HMOE_Q4K_PACK=0 HMOE_Q4K_PREFETCH=16384 \
         HMOE_CPU_GEMM_MIN_TOKENS=1 "HMOE_CPU_GEMM_MIN_TOKENS=1 HMOE_Q4K_PREFETCH=16384"; do
  echo "== $v"; env $v "$B" $A
done
for v in off on; do echo "== HMOE_Q6K_GFNI=$v"; HMOE_Q6K_GFNI=$v "$B" --threads 1,16 --types q6_k --set-mb 2048 --bw-mb 4096 --no-prefill; done
echo "== q8_0 reference"; "$B" --threads 1,16 --types q8_0 --set-mb 2048 --bw-mb 4096 --no-prefill
