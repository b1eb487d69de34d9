#!/usr/bin/env bash
# A/B of durable ingest between two xyn binaries on this machine, in one run: alternating
# rounds, a fresh data dir per round, wrk -t2 -c32 for 10 s on POST /api/v1/events
# (bench/lua/post_event.lua, after a 3 s warm-up), then 5 s of GET /api/v1/health.
#   bench/ab-ingest.sh OLD_XYN NEW_XYN [rounds]
# Build an older commit with its own target dir, e.g.
#   git worktree add /tmp/old 42ea5ea && (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target cargo build --release -p xyn)
set -euo pipefail
old=$1 new=$2 rounds=${3:-3}
lua="$(cd "$(dirname "$0")" && pwd)/lua/post_event.lua"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
for round in $(seq 1 "$rounds"); do
  for which in old new; do
    bin=$old; [ "$which" = new ] && bin=$new
    d=$(mktemp -d)
    (cd "$d" && exec "$bin" serve --listen "127.0.0.1:$port" --data-dir ./data > node.log 2>&1) &
    pid=$!
    for _ in $(seq 1 100); do curl -s -o /dev/null "127.0.0.1:$port/api/v1/health" && break; sleep 0.1; done
    wrk -t2 -c32 -d3s -s "$lua" "http://127.0.0.1:$port/api/v1/events" > /dev/null 2>&1
    r=$(wrk -t2 -c32 -d10s --latency -s "$lua" "http://127.0.0.1:$port/api/v1/events")
    h=$(wrk -t2 -c32 -d5s "http://127.0.0.1:$port/api/v1/health" | awk '/Requests\/sec/{print $2}')
    echo "round $round $which: ingest $(echo "$r" | awk '/Requests\/sec/{print $2}') events/s, p99 $(echo "$r" | awk '$1=="99%"{print $2}'), health $h req/s"
    kill "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$d"
  done
done
