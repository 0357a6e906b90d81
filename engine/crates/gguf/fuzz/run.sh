#!/usr/bin/env bash
# Fuzz the GGUF parser for a bounded time: `engine/crates/gguf/fuzz/run.sh [seconds]`
# (default 60). Exits non-zero if libFuzzer finds a crash; the input is left in
# fuzz/artifacts/parse/. Works on stable Rust: RUSTC_BOOTSTRAP=1 unlocks the -Z flags
# cargo-fuzz passes to rustc.
set -euo pipefail
secs="${1:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
crate="$(dirname "$here")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

corpus="$here/corpus/parse"
mkdir -p "$corpus"
# Seeds made by the writer, so they follow the format this crate writes today.
(cd "$crate" && cargo run --quiet --example fuzz_seeds -- "$corpus")

cd "$here"
# -malloc_limit_mb: any single allocation above it counts as a crash (a parser must never
# reserve what a 4 KiB input cannot justify). -timeout: a slow input counts as a crash.
cargo fuzz run parse "$corpus" -- \
    -max_total_time="$secs" -max_len=4096 -timeout=10 \
    -rss_limit_mb=2048 -malloc_limit_mb=64 -print_final_stats=1
