#!/usr/bin/env bash
# The official `openai` Python client against a real `hmoe serve` with the synthetic
# tiny model: builds hmoe, synthesizes the model, starts the server on a free port
# with an API key, runs pytest (engine/crates/server/tests/python), stops the server.
# Env: CARGO_TARGET_DIR (default ./target), HMOE_PYVENV (default $CARGO_TARGET_DIR/pyvenv),
# HMOE_BIN (use this hmoe binary instead of building one).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
VENV=${HMOE_PYVENV:-$TARGET/pyvenv}
WORK=$(mktemp -d)
PID=""
cleanup() {
    if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -n "${HMOE_BIN:-}" ]]; then
    HMOE="$HMOE_BIN"
else
    cargo build --release -p hmoe-cli --bin hmoe
    HMOE="$TARGET/release/hmoe"
fi
"$HMOE" synth --preset tiny --dtype q8_0 --out "$WORK/tiny.gguf"

if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c "import openai, pytest" 2>/dev/null || "$VENV/bin/pip" install -q openai pytest
PY="$VENV/bin/python"

PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
KEY="test-key-$RANDOM$RANDOM"
"$HMOE" serve --model "$WORK/tiny.gguf" --port "$PORT" --api-key "$KEY" --max-concurrent 8 --max-queue 16 \
    >"$WORK/server.log" 2>&1 &
PID=$!
BASE="http://127.0.0.1:$PORT"
up=0
for _ in $(seq 1 600); do
    if "$PY" -c "import urllib.request; urllib.request.urlopen('$BASE/health', timeout=2)" 2>/dev/null; then
        up=1
        break
    fi
    if ! kill -0 "$PID" 2>/dev/null; then
        break
    fi
    sleep 0.2
done
if [[ $up -ne 1 ]]; then
    echo "server-tests: the server did not come up:" >&2
    cat "$WORK/server.log" >&2
    exit 1
fi
MODEL=$("$PY" -c "
import json, urllib.request
req = urllib.request.Request('$BASE/v1/models', headers={'Authorization': 'Bearer $KEY'})
print(json.load(urllib.request.urlopen(req))['data'][0]['id'])")
status=0
HMOE_BASE_URL="$BASE" HMOE_MODEL="$MODEL" HMOE_API_KEY="$KEY" \
    "$PY" -m pytest -q -p no:cacheprovider "$ROOT/engine/crates/server/tests/python" || status=$?
if [[ $status -ne 0 ]]; then
    echo "--- server log (tail) ---" >&2
    tail -50 "$WORK/server.log" >&2
fi
exit $status
