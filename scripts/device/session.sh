#!/usr/bin/env bash
# One device call that checks and times as much as fits (the GPU machine has no Rust:
# build first with scripts/device/build-devbin.sh --with-cli, carry .devbin):
#   run(command="bash scripts/device/session.sh [STAGES]", carry=[".devbin/pack.tar.xz"])
# STAGES (default: check correctness bench cpu serve; also sweep-q4 replay-q4 sweep-q8 serve-full): each runs under its own timeout and
# is skipped once the call's time is nearly spent. Everything lands in $OUT.
# The dense path runs on the GPU by default; stages named *cpudense / cpu-ab set
# HMOE_CUDA_DENSE=0 (dense path on the CPU) for comparison.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD
[ -f .devbin/pack.tar.xz ] && (cd .devbin && tar xJf pack.tar.xz)
OUT=${OUT:-$root/.devbin/out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[ -f .devbin/hmoe-kernels.ptx ] && export HMOE_CUDA_PTX_FALLBACK=$root/.devbin/hmoe-kernels.ptx
hmoe=$root/.devbin/hmoe
work=${HMOE_WORK:-/tmp/hmoe-work}
mkdir -p "$work"
start=$(date +%s)
LIMIT=${HMOE_SESSION_LIMIT:-560}
left() { echo $((LIMIT - ($(date +%s) - start))); }
stage() { # name timeout command...
  local name=$1 t=$2; shift 2
  local l; l=$(left)
  if [ "$l" -lt 20 ]; then echo "SKIP $name (time spent)"; return; fi
  [ "$t" -gt "$l" ] && t=$l
  # A stage named twice (interleaved A/B pairs) keeps each run's log.
  local i=2 base=$name
  while [ -f "$OUT/$name.log" ]; do name=$base.$i; i=$((i + 1)); done
  echo "=== $name (timeout ${t}s, $(left)s left)"
  local s=$(date +%s)
  timeout "$t" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  grep -E '^(PASS|FAIL|SKIP)|rel err|differs|GPU dense path|sweep took|gen took|prefill mix|^\| (model|replay) \| (cpu-only|value)|AMX|rc=|test result' "$OUT/$name.log" | head -40
  echo "=== $name rc=$rc in $(($(date +%s) - s))s"
}
{ nvidia-smi; lscpu | head -20; free -g; } > "$work/machine.txt" 2>&1
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1
stages=${*:-check correctness bench cpu serve}
# The Q4_K_M model takes ~15 s to synthesise on a fresh machine: do it before the stages
# that read it, outside their timeouts (session 9's first A/B stage timed out on it).
case " $stages " in
  *" ab"*|*" delay:"*|*" hookdelay:"*|*" final-q4"*|*" pp-"*|*" ncu-"*|*" profile"*|*" quick-q4"*|*" sweep-q4"*)
    m4=$work/qwen3-30b-a3b-q4_k_m.gguf
    [ -f "$m4" ] || { "$hmoe" synth --preset qwen3-30b-a3b --dtype q4_k_m --seed 7 -o "$m4" 2>&1 | tail -1; } ;;
esac
for s in $stages; do
  case $s in
    check) stage check 150 bash scripts/device/cuda-check.sh --quick ;;
    gemm) stage gemm 150 env HMOE_SKIP_ENGINE_TESTS=1 bash scripts/device/cuda-check.sh gemm ;;
    dense) stage dense 90 env HMOE_SKIP_ENGINE_TESTS=1 bash scripts/device/cuda-check.sh dense ;;
    # The int8 mma tables alone; mma:NAME=V compiles the kernels with -DNAME=V (A/B).
    mma) stage mma 90 env HMOE_SKIP_ENGINE_TESTS=1 bash scripts/device/cuda-check.sh mma ;;
    mma:*) kv=${s#mma:}; stage "mma-${kv//=/-}" 90 env "HMOE_CUDA_DEFINES=$kv" HMOE_SKIP_ENGINE_TESTS=1 bash scripts/device/cuda-check.sh mma ;;
    decode) stage decode 120 env HMOE_SKIP_ENGINE_TESTS=1 bash scripts/device/cuda-check.sh decode ;;
    attention) stage attention 120 env HMOE_SKIP_ENGINE_TESTS=1 bash scripts/device/cuda-check.sh attention ;;
    logits) stage logits 120 env CORRECTNESS_LOGITS_ONLY=1 bash scripts/device/cuda-correctness.sh "$hmoe" "$work" "$OUT/logits" ;;
    correctness) stage correctness 420 bash scripts/device/cuda-correctness.sh "$hmoe" "$work" "$OUT/correctness" ;;
    bench) stage bench 150 bash scripts/device/quick-bench.sh "$hmoe" "$work" "$OUT/bench" ;;
    cpu) stage cpu 90 .devbin/cpu-bench --threads 1,2,4,8,12,16 ;;
    serve) stage serve 150 bash scripts/device/serve-bench.sh "$hmoe" "$work" "$OUT/serve" ;;
    sweep-q4) stage sweep-q4 480 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT" q4_k_m model ;;
    quick-q4) stage quick-q4 330 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT" q4_k_m model 64 512 8GiB,16GiB,all ;;
    replay-q4) stage replay-q4 300 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT" q4_k_m replay 256 ;;
    sweep-q8) stage sweep-q8 400 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT" q8_0 model 128 1024 16GiB,all cpu-only,static,value ;;
    serve-full) stage serve-full 200 bash scripts/device/serve-bench.sh "$hmoe" "$work" "$OUT/serve" "$work/qwen3-30b-a3b-q4_k_m.gguf" --device cuda --threads 16 ;;
    diag) stage diag 150 bash scripts/device/diag-dense.sh "$hmoe" "$work" "$OUT" ;;
    replay-q4s) stage replay-q4s 260 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT" q4_k_m replay 48 16 8GiB,16GiB,all ;;
    grid-q4) stage grid-q4 330 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT" q4_k_m model 64 512 8GiB,16GiB,24GiB,all cpu-only,static,lru,mrs,value 32 ;;
    grid-q4-replay) stage grid-q4-replay 300 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT" q4_k_m replay 64 16 8GiB,16GiB,24GiB,all cpu-only,static,lru,mrs,value 64 ;;
    spec-q4) stage spec-q4 300 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT/spec" q4_k_m model 256 1024 16GiB cpu-only,static,value 64 ;;
    registered) stage registered 150 env HMOE_CUDA_HOST=registered bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT/registered" q4_k_m model 64 512 16GiB value ;;
    correctness-cpudense) stage correctness-cpudense 240 env HMOE_CUDA_DENSE=0 bash scripts/device/cuda-correctness.sh "$hmoe" "$work" "$OUT/correctness-cpudense" ;;
    profile-kernels) stage profile-kernels 160 env HMOE_DENSE_PROFILE=1 HMOE_MOE_PROFILE=1 HMOE_CUDA_GRAPHS=0 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT/profile-kernels" q4_k_m model 64 1024 16GiB value 32 ;;
    # Host and stream profiles of prefill (and decode): everything on the GPU (static, all)
    # and the hybrid case (value, 16 GiB); few decode tokens.
    pp-static) stage pp-static 90 env HMOE_DENSE_PROFILE=1 HMOE_MOE_PROFILE=1 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT/pp-static" q4_k_m model 8 1024 all static 4 ;;
    # The 8 GiB hybrid case (about half the experts streamed or on the CPU per step) at
    # 512- and 1024-token steps.
    pp-value8) stage pp-value8 90 env HMOE_DENSE_PROFILE=1 HMOE_MOE_PROFILE=1 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT/pp-value8" q4_k_m model 8 1024 8GiB value 4 ;;
    pp-value8c) stage pp-value8c 90 env HMOE_DENSE_PROFILE=1 HMOE_MOE_PROFILE=1 BENCH_EXTRA="--prefill-chunk 1024" bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT/pp-value8c" q4_k_m model 8 1024 8GiB value 4 ;;
    pp-value) stage pp-value 90 env HMOE_DENSE_PROFILE=1 HMOE_MOE_PROFILE=1 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT/pp-value" q4_k_m model 8 1024 16GiB value 4 ;;
    profile) stage profile 160 env HMOE_DENSE_PROFILE=1 HMOE_MOE_PROFILE=1 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT/profile" q4_k_m model 64 1024 16GiB value 32 ;;
    correctness-dense) stage correctness-dense 200 env HMOE_CUDA_DENSE=1 bash scripts/device/cuda-correctness.sh "$hmoe" "$work" "$OUT/correctness-dense" ;;
    spec-dense) stage spec-dense 240 env HMOE_CUDA_DENSE=1 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT/spec-dense" q4_k_m model 256 1024 16GiB cpu-only,static,value 64 ;;
    grid-dense) stage grid-dense 240 env HMOE_CUDA_DENSE=1 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT" q4_k_m model 64 512 8GiB,16GiB,24GiB,all cpu-only,static,lru,mrs,value 32 ;;
    replay-dense) stage replay-dense 150 env HMOE_CUDA_DENSE=1 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT" q4_k_m replay 64 16 8GiB,16GiB,all cpu-only,static,lru,value 64 ;;
    serve-dense) stage serve-dense 120 env HMOE_CUDA_DENSE=1 bash scripts/device/serve-bench.sh "$hmoe" "$work" "$OUT" "$work/qwen3-30b-a3b-q4_k_m-l4.gguf" --device cuda --threads 16 ;;
    dense-ab) stage dense-ab 160 env HMOE_CUDA_DENSE=1 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT/dense-ab" q4_k_m model 64 1024 16GiB cpu-only,value 32 ;;
    cpu-ab) stage cpu-ab 160 env HMOE_CUDA_DENSE=0 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT/cpu-ab" q4_k_m model 64 1024 16GiB cpu-only,value 32 ;;
    amx) stage amx 200 bash -c '.devbin/hmoe-quant-tests amx --nocapture --test-threads 1; echo "rc=$?"; .devbin/hmoe-cpu-tests amx --nocapture; echo "rc=$?"; HMOE_AMX=0 .devbin/hmoe-quant-tests amx_device --nocapture; .devbin/hmoe-quant-tests -q; echo "quant suite rc=$?"; .devbin/hmoe-cpu-tests -q; echo "cpu suite rc=$?"; .devbin/cpu-bench --amx --threads 1,16' ;;
    ncu-decode) stage ncu-decode 240 bash scripts/device/ncu-decode.sh "$hmoe" "$work" "$OUT" ;;
    ncu-prefill) stage ncu-prefill 240 env NCU_PREFILL=1 NCU_SEQ=80 bash scripts/device/ncu-decode.sh "$hmoe" "$work" "$OUT" 0 1400 ;;
    ncu-detail) stage ncu-detail 300 env NCU_DETAIL=1 bash scripts/device/ncu-decode.sh "$hmoe" "$work" "$OUT" ;;
    # The engine's GPU executor tests (reference executor, reused staging slots, dense path).
    engine-gpu:*) kv=${s#engine-gpu:}; stage "engine-gpu-${kv//=/-}" 150 env "HMOE_CUDA_DEFINES=$kv" HMOE_CUDA_DEVICE_TESTS=1 .devbin/hmoe-engine-tests backend::cuda --nocapture --test-threads 1 ;;
    engine-gpu) stage engine-gpu 150 env HMOE_CUDA_DEVICE_TESTS=1 .devbin/hmoe-engine-tests backend::cuda --nocapture --test-threads 1 ;;
    dense-test) stage dense-test 120 env HMOE_CUDA_DEVICE_TESTS=1 .devbin/hmoe-engine-tests gpu_dense --nocapture --test-threads 1 ;;
    cpu4) stage cpu4 90 bash scripts/device/cpu4-bench.sh "$hmoe" "$work" ;;
    mma-q4) stage mma-q4 100 env HMOE_CUDA_MMA=1 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT/mma" q4_k_m model 64 1024 8GiB,16GiB static,value 32 ;;
    mma-q8) stage mma-q8 100 env HMOE_CUDA_MMA=1 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT/mma" q8_0 model 64 1024 16GiB static,value 32 ;;
    final-q4) stage final-q4 130 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT" q4_k_m model 64 1024 8GiB,16GiB,all cpu-only,static,lru,value 32 ;;
    final-replay) stage final-replay 80 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT" q4_k_m replay 64 16 8GiB,16GiB cpu-only,static,lru,value 64 ;;
    final-q8) stage final-q8 110 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT" q8_0 model 64 1024 16GiB cpu-only,static,value 32 ;;
    final-q4full) stage final-q4full 240 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT" q4_k_m model 64 1024 8GiB,16GiB,24GiB,all cpu-only,static,lru,mrs,value 32 ;;
    final-q8full) stage final-q8full 300 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT" q8_0 model 64 1024 8GiB,16GiB,24GiB,all cpu-only,static,value 32 ;;
    final-q8b) stage final-q8b 110 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT" q8_0 model 64 1024 8GiB,24GiB,all static,value 32 ;;
    q4k) stage q4k 240 bash scripts/device/q4k-variants.sh .devbin/cpu-bench .devbin/hmoe-quant-tests ;;
    serve-cpu) stage serve-cpu 120 bash scripts/device/serve-bench.sh "$hmoe" "$work" "$OUT" "$work/qwen3-30b-a3b-q4_k_m-l4.gguf" --device cpu --threads 16 ;;
    # ab:VAR=VALUE: Q4_K_M value at 8 and 16 GiB (prefetch off and on) with one setting changed.
    ab:*) kv=${s#ab:}; stage "ab-${kv//=/-}" 70 env "$kv" bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT/ab" q4_k_m model 64 1024 8GiB,16GiB value 32 ;;
    # abnew / abold: the same rows with this build and with the baseline CLI .devbin/hmoe-old
    # (build-devbin.sh with HMOE_OLD_CLI); interleave them for a same-machine A/B.
    # One greedy generation's wall time, new and old binary interleaved (3 each).
    gentime) stage gentime 120 bash -c 'for i in 1 2 3; do for b in "$0" .devbin/hmoe-old; do s=$(date +%s%N); "$b" generate -m "$1/qwen3-30b-a3b-q4_k_m-l2.gguf" --device cuda --policy value --vram-budget 77713624 --temperature 0 -n 24 --seed 1 -p "The quick brown fox" > /dev/null 2>&1; echo "$b gen took $((($(date +%s%N) - s) / 1000000)) ms"; done; done' "$hmoe" "$work" ;;
    # delay:US: decode rows (value, 8 and 16 GiB, prefetch off and on) with US µs of busy
    # host time after every plan (HMOE_PLACE_DELAY_US): is planning on the critical path?
    delay:*) us=${s#delay:}; stage "delay-$us" 80 env "HMOE_PLACE_DELAY_US=$us" bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT/delay" q4_k_m model 128 128 8GiB,16GiB value 32 ;;
    # hookdelay:US: the same rows with US µs more busy host time in every dense call's
    # hook (HMOE_HOOK_DELAY_US): does the scheduler's work there hide behind the GPU?
    hookdelay:*) us=${s#hookdelay:}; stage "hookdelay-$us" 80 env "HMOE_HOOK_DELAY_US=$us" bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT/delay" q4_k_m model 128 128 8GiB,16GiB value 32 ;;
    abnew) stage abnew 80 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT/ab" q4_k_m model 64 1024 8GiB,16GiB value 32 ;;
    # abchunk: abnew's rows with 1024-token prefill steps instead of 512.
    abchunk) stage abchunk 80 env BENCH_EXTRA="--prefill-chunk 1024" bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT/ab" q4_k_m model 64 1024 8GiB,16GiB value 32 ;;
    # abold1024: the baseline CLI with 1024-token prefill steps (isolates other changes
    # from the step size).
    abold1024) stage abold1024 80 env BENCH_EXTRA="--prefill-chunk 1024" bash scripts/device/cuda-bench.sh "$root/.devbin/hmoe-old" "$work" "$OUT/ab" q4_k_m model 64 1024 8GiB,16GiB value 32 ;;
    # ab8new / ab8old: static, lru and value at 8 GiB (prefetch off and on), new and baseline.
    ab8new) stage ab8new 110 bash scripts/device/cuda-bench.sh "$hmoe" "$work" "$OUT/ab" q4_k_m model 64 1024 8GiB static,lru,value 32 ;;
    ab8old) stage ab8old 110 bash scripts/device/cuda-bench.sh "$root/.devbin/hmoe-old" "$work" "$OUT/ab" q4_k_m model 64 1024 8GiB static,lru,value 32 ;;
    abold) stage abold 70 bash scripts/device/cuda-bench.sh "$root/.devbin/hmoe-old" "$work" "$OUT/ab" q4_k_m model 64 1024 8GiB,16GiB value 32 ;;
    *) echo "unknown stage $s" ;;
  esac
done
echo "session done in $(($(date +%s) - start))s"
# The device call brings back only a few files (session 8 lost its final tables to that
# limit): everything goes back as one archive.
(cd "$OUT" && find . -maxdepth 3 -type f ! -name logs.tar.gz | tar czf logs.tar.gz -T - --remove-files 2>/dev/null)
