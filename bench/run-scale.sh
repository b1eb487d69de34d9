#!/usr/bin/env bash
# Builds the release binary and runs the scale-out benchmark against the PostgreSQL on
# 127.0.0.1:5432 and the NATS on 127.0.0.1:4222 (see .ci/run for starting them).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/xyn-target}"
cargo build --release -p xyn -p xyn-bench
"$CARGO_TARGET_DIR/release/xyn-bench-scale" --xyn "$CARGO_TARGET_DIR/release/xyn" "$@"
