#!/usr/bin/env bash
# Every test of the project, headless (what CI runs): formatting, all Rust tests in
# release mode (reference comparisons, parsers, kernels, scheduler, server, app back end),
# the OpenAI-client tests against `hmoe serve`, the UI unit tests and the end-to-end test
# of the real app under Xvfb, and a bounded fuzzing run of the GGUF parser.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. "$ROOT/scripts/lib/toolchain.sh"
# Outside the clone so repeated runs on one machine reuse the build; a cold build fits CI.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/hmoe-target}"
mkdir -p "$CARGO_TARGET_DIR"
start=$(date +%s)
step() { echo; echo "=== $* ($(( $(date +%s) - start )) s)"; }

step "format"
cargo fmt --all -- --check

step "ui build (embedded into the app at compile time)"
(cd ui && npm ci --no-audit --no-fund && npx vite build)

step "rust tests (release)"
cargo test --workspace --release

step "server: official openai client against hmoe serve"
bash scripts/server-tests.sh

step "app: ui unit tests, app tests, end to end under Xvfb"
SKIP_RUST=1 HMOE_PROFILE=release bash scripts/app-tests.sh

step "fuzz the GGUF parser"
bash engine/crates/gguf/fuzz/run.sh "${HMOE_FUZZ_SECONDS:-60}"

step "all tests passed"
