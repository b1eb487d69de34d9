#!/usr/bin/env bash
# Metrics on versus off, in the same run: GET /api/v1/health req/s (wrk) and run throughput
# (bench.flow3 runs completed per second while wrk posts events), alternating off/on for
# ROUNDS rounds; then the /metrics render time with 1,000 blueprints.
# Usage: bash bench/run-metrics.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/xyn-target}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
command -v sqlite3 >/dev/null || { apt-get update -qq && apt-get install -y -qq sqlite3; }
cargo build --release -p xyn
XYN="$CARGO_TARGET_DIR/release/xyn"
ROUNDS="${1:-3}"
SECS="${2:-5}"
ROOT="$(pwd)"

one() { # $1 = 0|1 (metrics off|on)
  local dir port pid url health events runs span
  dir="$(mktemp -d)"
  mkdir -p "$dir/blueprints"
  cp bench/blueprints/flow3.yaml "$dir/blueprints/"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  (cd "$dir" && XYN_METRICS="$1" XYN_LOG=warn "$XYN" serve --listen "127.0.0.1:$port" \
      --data-dir data --blueprints blueprints >/dev/null 2>"$dir/stderr") &
  pid=$!
  url="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do curl -fs "$url/api/v1/health" >/dev/null 2>&1 && break; sleep 0.1; done
  health=$(wrk -t2 -c32 -d"${SECS}s" "$url/api/v1/health" | awk '/Requests\/sec/ {print $2}')
  XYN_BENCH_EVENT=bench.flow wrk -t2 -c32 -d"${SECS}s" -s "$ROOT/bench/lua/post_event.lua" "$url/api/v1/events" >/dev/null
  for _ in $(seq 1 600); do
    [ "$(curl -fs "$url/api/internal/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["busy_runs"])')" = 0 ] && break
    sleep 0.1
  done
  read -r runs span < <(sqlite3 -separator ' ' "file:$dir/data/xyn.db?mode=ro" \
    "SELECT COUNT(*), MAX(completed_at) - MIN(created_at) FROM runs WHERE status = 'completed'")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
  python3 -c "print(f'metrics={\"on\" if $1 else \"off\"} health_rps={$health:.0f} runs={$runs} runs_per_s={$runs / ($span / 1e6):.0f}')"
}

for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  one 0
  one 1
done
cargo run -q --release -p xyn-metrics --example render
