#!/usr/bin/env bash
# Runs on the GPU machine in ONE device call (build first: scripts/device/build-devbin.sh):
#   run(command="bash scripts/device/cuda-check.sh", carry=[".devbin"])
# Only prebuilt binaries from .devbin/ run here (the GPU machine has no Rust). Results go to
# $OUT: cuda-check.json (summary), cuda-check.log (PASS/FAIL lines and timings),
# nvidia-smi.txt. Exit status: the check's (0 = every check passed).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${OUT:-$PWD/.devbin/out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
bin=.devbin/hmoe-cuda-check
if [ ! -x "$bin" ]; then
  echo "FAIL $bin missing: run scripts/device/build-devbin.sh and carry .devbin" | tee "$OUT/cuda-check.log"
  exit 2
fi
{ nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv; } > "$OUT/nvidia-smi.txt" 2>&1 || true
ls -la /usr/local/cuda/lib64/libnvrtc* >> "$OUT/nvidia-smi.txt" 2>&1 || true
# NVRTC from the machine's CUDA; if it is missing or its PTX does not load, the PTX that
# NVRTC 13.0 compiled on the build machine (the backend says which it used).
[ -f .devbin/hmoe-kernels.ptx ] && export HMOE_CUDA_PTX_FALLBACK=$PWD/.devbin/hmoe-kernels.ptx
# Every backend instance the check starts (the OOM checks, each GpuDense, the attention
# bench) loads the same 6 MB PTX, which the driver JIT-compiles to SASS (tens of seconds)
# unless its compute cache has it: keep that cache on and large enough, in its default
# place (shared with the session's other stages) when that is writable.
unset CUDA_CACHE_DISABLE
if [ -z "${CUDA_CACHE_PATH:-}" ] && ! { mkdir -p "${HOME:-/nonexistent}/.nv/ComputeCache" && [ -w "$HOME/.nv/ComputeCache" ]; } 2>/dev/null; then
  export CUDA_CACHE_PATH=/tmp/hmoe-cuda-jit-cache
fi
export CUDA_CACHE_MAXSIZE=${CUDA_CACHE_MAXSIZE:-4294967296}
scratch=$(mktemp -d)
# `--quick` (session.sh's check stage) skips the kernel variant sweep: `bash
# scripts/device/cuda-check.sh variants` runs it alone. Each part prints `section <name>:
# <s> s`; the last lines say the total.
t0=$(date +%s)
timeout 400 "$bin" --out "$OUT" --scratch "$scratch" "$@" 2>&1 | tee -a "$OUT/cuda-check.log"
rc=${PIPESTATUS[0]}
echo "hmoe-cuda-check $* took $(($(date +%s) - t0)) s (rc=$rc)" | tee -a "$OUT/cuda-check.log"
rm -rf "$scratch"
# The engine's GPU executor against its reference executor on synthetic GGUF models.
if [ -x .devbin/hmoe-engine-tests ] && [ -z "${HMOE_SKIP_ENGINE_TESTS:-}" ]; then
  echo "== engine tests (backend::cuda, with the GPU)" | tee -a "$OUT/cuda-check.log"
  if HMOE_CUDA_DEVICE_TESTS=1 timeout 150 .devbin/hmoe-engine-tests backend::cuda --nocapture --test-threads 1 2>&1 | tee "$OUT/engine-tests.log"; then
    echo "PASS engine backend::cuda tests" | tee -a "$OUT/cuda-check.log"
  else
    echo "FAIL engine backend::cuda tests (see engine-tests.log)" | tee -a "$OUT/cuda-check.log"
    rc=1
  fi
fi
echo "PASS: $(grep -c '^PASS' "$OUT/cuda-check.log")  FAIL: $(grep -c '^FAIL' "$OUT/cuda-check.log")"
echo "hmoe-cuda-check exit status $rc"
exit "$rc"
