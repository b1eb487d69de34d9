#!/usr/bin/env bash
# Builds the release binaries and runs the web benchmark (health vs bare hyper, UI render times
# with 100,000 runs); rewrites docs/benchmarks/web.md. Installs wrk if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/xyn-target}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release -p xyn -p xyn-bench
"$CARGO_TARGET_DIR/release/web-bench" --xyn "$CARGO_TARGET_DIR/release/xyn" --hello "$CARGO_TARGET_DIR/release/hello" "$@"
