#!/usr/bin/env bash
# Builds, on the build machine, what scripts/device/cuda-check.sh runs on the GPU machine,
# into the ignored folder .devbin/ (pass it to the device call with `carry: [".devbin"]`):
#   .devbin/hmoe-cuda-check   the CUDA backend check (kernels vs CPU reference, bandwidth,
#                             overlap, OOM handling)
#   .devbin/hmoe-kernels.ptx  the kernels compiled by NVRTC here for sm_90: loaded through
#                             HMOE_CUDA_PTX if the GPU machine has no libnvrtc.so.13
#   .devbin/hmoe-engine-tests the engine's unit tests with `--features cuda`; on the GPU
#                             machine HMOE_CUDA_DEVICE_TESTS=1 runs the GPU executor
#                             against the reference executor on synthetic models
#   .devbin/cpu-bench         the CPU expert kernel bandwidth sweep
#   .devbin/hmoe              the CLI with `--features cuda` (if --with-cli)
# The binaries load libcuda/libnvrtc at run time (cudarc dynamic loading): they start, and
# say why, on a machine without CUDA.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/targets/cuda}
# The Rust build needs no CUDA (cudarc loads libcuda/libnvrtc at run time). The toolchain
# is used only for the PTX (NVRTC from the pinned CUDA 13.0 wheels), in a subshell so its
# RUSTFLAGS do not invalidate the build cache.
# shellcheck disable=SC1091
nvrtc_lib=$(source /work/shared/tools/cuda13-toolchain.sh >/dev/null 2>&1 && dirname "$(readlink -f "$CUDA_HOME/libnvrtc.so")")
[ -f "$nvrtc_lib/libnvrtc.so.13" ] || { echo "libnvrtc.so.13 not found (cuda13-toolchain.sh failed?)" >&2; exit 1; }
cargo build --release -p hmoe-cuda --features cuda --bin hmoe-cuda-check
mkdir -p .devbin
cp "$CARGO_TARGET_DIR/release/hmoe-cuda-check" .devbin/
LD_LIBRARY_PATH=$nvrtc_lib .devbin/hmoe-cuda-check ptx .devbin/hmoe-kernels.ptx
exe=$(cargo test --release -p hmoe-engine --features cuda --lib --no-run --message-format=json \
  | python3 -c 'import sys, json
for l in sys.stdin:
    try: m = json.loads(l)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "hmoe_engine": print(m["executable"])')
cp "$exe" .devbin/hmoe-engine-tests
strip .devbin/hmoe-engine-tests
if [ "${1:-}" = "--with-cli" ]; then
  cargo build --release -p hmoe-cli --features cuda
  cp "$CARGO_TARGET_DIR/release/hmoe" .devbin/
fi
# The CPU expert kernels' bandwidth sweep (issue 8's 16-core numbers).
cargo build --release -p hmoe-cpu --bin cpu-bench
cp "$CARGO_TARGET_DIR/release/cpu-bench" .devbin/
# The CPU kernel crates' unit tests (AMX and the Q4_K kernels run only on the GPU machine's CPU).
for crate in hmoe-quant hmoe-cpu; do
  exe=$(cargo test --release -p "$crate" --lib --no-run --message-format=json \
    | python3 -c 'import sys, json
for l in sys.stdin:
    try: m = json.loads(l)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["lib"]: print(m["executable"])')
  cp "$exe" ".devbin/${crate}-tests"
  strip ".devbin/${crate}-tests"
done
strip .devbin/hmoe-cuda-check .devbin/cpu-bench
[ -f .devbin/hmoe ] && strip .devbin/hmoe
ls -la .devbin/
# The device call carries at most 64 MiB with the working tree: send one xz archive
# (run(..., carry=[".devbin/pack.tar.xz"]); session.sh unpacks it).
# A baseline CLI for same-machine A/B (session.sh's abold stage) goes along when
# HMOE_OLD_CLI names one.
[ -n "${HMOE_OLD_CLI:-}" ] && cp "$HMOE_OLD_CLI" .devbin/hmoe-old
(cd .devbin && tar cJf pack.tar.xz --exclude pack.tar.xz --exclude out hmoe-cuda-check hmoe-kernels.ptx hmoe-engine-tests cpu-bench hmoe-quant-tests hmoe-cpu-tests $( [ -f hmoe ] && echo hmoe ) $( [ -n "${HMOE_OLD_CLI:-}" ] && echo hmoe-old ))
ls -la .devbin/pack.tar.xz
