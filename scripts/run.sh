#!/usr/bin/env bash
# The main job. With a display: builds and starts the desktop app (it creates its demo
# model on first start). Without one: builds the `hmoe` CLI, writes the tiny demo model
# and chats with it in the terminal (pass a model path to use your own GGUF).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. "$ROOT/scripts/lib/toolchain.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" && "${HMOE_CLI:-0}" != "1" ]]; then
  (cd ui && npm ci --no-audit --no-fund && npx vite build)
  cargo build --release -p hmoe-studio
  exec "$CARGO_TARGET_DIR/release/hmoe-studio"
fi
cargo build --release -p hmoe-cli --bin hmoe
HMOE="$CARGO_TARGET_DIR/release/hmoe"
MODEL="${1:-}"
if [[ -z "$MODEL" ]]; then
  MODEL="$ROOT/target/demo-tiny-q8_0.gguf"
  [[ -f "$MODEL" ]] || "$HMOE" synth --preset tiny --dtype q8_0 --seed 1 --out "$MODEL"
fi
"$HMOE" info "$MODEL"
exec "$HMOE" chat --model "$MODEL"
