#!/usr/bin/env bash
# Builds the release binary and runs the kernel benchmark. Installs wrk if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/xyn-target}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release -p xyn -p xyn-bench
"$CARGO_TARGET_DIR/release/xyn-bench" --xyn "$CARGO_TARGET_DIR/release/xyn" "$@"
