#!/usr/bin/env bash
# Sourced by setup.sh, run.sh and test-all.sh: puts the toolchains that setup.sh may have
# installed (rustup's cargo, the pinned Node.js) on PATH. Safe to source more than once.
[[ -f "$HOME/.cargo/env" ]] && . "$HOME/.cargo/env"
HMOE_NODE_DIR="${HMOE_NODE_DIR:-/opt/hmoe-node}"
if [[ -x "$HMOE_NODE_DIR/bin/node" ]]; then
  case ":$PATH:" in *":$HMOE_NODE_DIR/bin:"*) ;; *) export PATH="$HMOE_NODE_DIR/bin:$PATH" ;; esac
fi
