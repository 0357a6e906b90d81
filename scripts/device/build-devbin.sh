#!/usr/bin/env bash
# Builds, on the build machine, what scripts/device/cuda-check.sh runs on the GPU machine,
# into the ignored folder .devbin/ (pass it to the device call with `carry: [".devbin"]`):
#   .devbin/hmoe-cuda-check   the CUDA backend check (kernels vs CPU reference, bandwidth,
#                             overlap, OOM handling)
#   .devbin/hmoe-kernels.ptx  the kernels compiled by NVRTC here for sm_90: loaded through
#                             HMOE_CUDA_PTX if the GPU machine has no libnvrtc.so.13
#   .devbin/hmoe              the CLI with `--features cuda` (if --with-cli)
# The binaries load libcuda/libnvrtc at run time (cudarc dynamic loading): they start, and
# say why, on a machine without CUDA.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/targets/cuda}
# The toolchain is needed only for the PTX (NVRTC from the pinned CUDA 13.0 wheels).
# shellcheck disable=SC1091
source /work/shared/tools/cuda13-toolchain.sh
nvrtc_lib=$(dirname "$(readlink -f "$CUDA_HOME/libnvrtc.so")")
cargo build --release -p hmoe-cuda --features cuda --bin hmoe-cuda-check
mkdir -p .devbin
cp "$CARGO_TARGET_DIR/release/hmoe-cuda-check" .devbin/
LD_LIBRARY_PATH=$nvrtc_lib .devbin/hmoe-cuda-check ptx .devbin/hmoe-kernels.ptx
if [ "${1:-}" = "--with-cli" ]; then
  cargo build --release -p hmoe-cli --features cuda
  cp "$CARGO_TARGET_DIR/release/hmoe" .devbin/
fi
strip .devbin/hmoe-cuda-check
[ -f .devbin/hmoe ] && strip .devbin/hmoe
ls -la .devbin/
