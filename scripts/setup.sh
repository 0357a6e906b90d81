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

if ! command -v cargo >/dev/null; then
  echo "setup: Rust is missing; install it from https://rustup.rs (stable toolchain)" >&2
  exit 1
fi
if ! command -v node >/dev/null || (( $(node -p 'process.versions.node.split(".")[0]') < 20 )); then
  echo "setup: installing Node.js (>= 20 needed)"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm
fi
command -v tauri-driver >/dev/null || cargo install tauri-driver --locked
echo "setup: done"
