#!/usr/bin/env bash
# TLS handshakes per second (openssl s_time, new session each time, TLS 1.3) and HTTPS hello
# requests per second (wrk -t2 -c64 over kept-alive TLS connections to /api/v1/health) against
# `xyn serve --tls-cert/--tls-key`. Usage: bench/run-tls.sh [path/to/xyn] (default: the release
# binary, built when missing). Prints the figures; docs/tls.md records a run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/xyn-target}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
XYN="${1:-$CARGO_TARGET_DIR/release/xyn}"
[ -x "$XYN" ] || cargo build --release -p xyn
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
"$XYN" tls self-signed --out "$dir/tls" 2>/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$dir" && XYN_LOG=warn "$XYN" serve --listen "127.0.0.1:$port" --data-dir data \
  --blueprints none --tls-cert tls/cert.pem --tls-key tls/key.pem >/dev/null 2>&1) &
pid=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
echo "== TLS 1.3 handshakes (openssl s_time -new, 10 s)"
openssl s_time -connect "127.0.0.1:$port" -new -time 10 2>/dev/null | grep -E "connections in|connections/user sec" || true
echo "== HTTPS hello (wrk -t2 -c64 -d10s https://127.0.0.1:$port/api/v1/health)"
wrk -t2 -c64 -d10s "https://127.0.0.1:$port/api/v1/health" | grep -E "Requests/sec|Latency|Non-2xx" || true
