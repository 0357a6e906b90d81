#!/usr/bin/env bash
# Benchmark of the scheduler panel (not a test): UI frame rate with the panel open while a
# reply streams, and decode tok/s with the panel open vs closed, same app, same demo model.
# Needs a built UI (ui/dist) and Xvfb + tauri-driver as for scripts/app-tests.sh.
# Env: HMOE_PROFILE=release|dev (default release), BENCH_ROUNDS (default 3).
# Serialised with the e2e tests (one WebDriver session at a time): flock /tmp/hmoe-e2e.lock.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PROFILE="${HMOE_PROFILE:-release}"
if [[ "$PROFILE" == "release" ]]; then CARGO_CFG=(--release); OUT=release; else CARGO_CFG=(); OUT=debug; fi
(cd ui && npx vite build)
cargo build "${CARGO_CFG[@]}" -p hmoe-studio --bin hmoe-studio
export HMOE_APP="$CARGO_TARGET_DIR/$OUT/hmoe-studio"
export E2E_ARTIFACTS="${E2E_ARTIFACTS:-$ROOT/target/e2e-artifacts}"
export NO_AT_BRIDGE=1
exec flock /tmp/hmoe-e2e.lock xvfb-run -a -s "-screen 0 1440x900x24" dbus-run-session -- node ui/e2e/bench-panel.mjs
