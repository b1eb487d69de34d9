#!/usr/bin/env bash
# Pack install benchmark: a pack of 20 blueprints + 5 Lua actions, installed N times
# (alternating two versions, so every install writes 20 new blueprint versions and replaces
# 5 actions) with `xyn pack install` on a stopped node and with POST /api/v1/packs on a
# running one. Prints the median and slowest wall time of each.
#   bench/run-packs.sh [ROUNDS]         (XYN_BIN=path to use a given binary; default:
#                                         the release build, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-9}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/xyn-target}"
if [ -z "${XYN_BIN:-}" ]; then
  cargo build --release -p xyn
  XYN_BIN="$CARGO_TARGET_DIR/release/xyn"
fi
W="$(mktemp -d)"
trap 'kill "${NODE_PID:-}" 2>/dev/null || true; rm -rf "$W"' EXIT
cd "$W"
make_pack() { # DIR VERSION
  local d="$1" v="$2"
  mkdir -p "$d/blueprints"
  printf 'id = "bench.pack"\nversion = "%s"\nxyn = ">=0.1"\ndescription = "install benchmark"\n' "$v" > "$d/xyn-pack.toml"
  for a in 1 2 3 4 5; do
    mkdir -p "$d/actions/bench.act$a"
    printf 'name = "bench.act%s"\nruntime = "lua"\nentry = "main.lua"\ndescription = "bench %s"\n\n[capabilities]\ntime = false\ncrypto = false\n' "$a" "$v" > "$d/actions/bench.act$a/xyn-action.toml"
    printf 'function handle(input)\n  return {v = "%s", n = %s}\nend\n' "$v" "$a" > "$d/actions/bench.act$a/main.lua"
  done
  for b in $(seq 1 20); do
    a=$(( (b - 1) % 5 + 1 ))
    cat > "$d/blueprints/bp$b.yaml" <<YAML
id: bench.bp$b
name: "bench blueprint $b ($v)"
trigger:
  event_type: bench.e$b
plan:
  - kind: transform
    id: t
    expr: '{v: "$v"}'
  - kind: action_task
    id: a
    action: bench.act$a
    with: {}
YAML
  done
}
PUB=$("$XYN_BIN" key new bench --data-dir pub | tail -1)
for v in 1.0.0 2.0.0; do
  make_pack "src-$v" "$v"
  "$XYN_BIN" pack build "src-$v" -o "p-$v.xynpack" >/dev/null
  "$XYN_BIN" pack sign "p-$v.xynpack" --key bench --data-dir pub >/dev/null
done
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "median %.3f s, slowest %.3f s (%d rounds)\n", m, a[NR], NR}'; }
now() { date +%s.%N; }

"$XYN_BIN" trust add bench "$PUB" --data-dir cli >/dev/null
for i in $(seq 1 "$ROUNDS"); do
  f="p-1.0.0.xynpack"; [ $((i % 2)) -eq 0 ] && f="p-2.0.0.xynpack"
  t0=$(now); "$XYN_BIN" pack install "$f" --data-dir cli >/dev/null; t1=$(now)
  echo "$t1 - $t0" | bc
done | { printf 'CLI  xyn pack install (20 blueprints + 5 actions): '; median; }

"$XYN_BIN" trust add bench "$PUB" --data-dir api >/dev/null
PORT=$(( 20000 + RANDOM % 20000 ))
"$XYN_BIN" serve --data-dir api --listen "127.0.0.1:$PORT" --allow-weak-sandbox >/dev/null 2>&1 &
NODE_PID=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/api/v1/health" >/dev/null && break; sleep 0.1; done
for v in 1.0.0 2.0.0; do
  python3 - "$v" > "body-$v.json" <<'PY'
import base64, json, sys
v = sys.argv[1]
print(json.dumps({"archive": base64.b64encode(open(f"p-{v}.xynpack", "rb").read()).decode(),
                  "signature": json.load(open(f"p-{v}.xynpack.sig.json"))}))
PY
done
for i in $(seq 1 "$ROUNDS"); do
  b="body-1.0.0.json"; [ $((i % 2)) -eq 0 ] && b="body-2.0.0.json"
  t0=$(now)
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' --data-binary "@$b" "http://127.0.0.1:$PORT/api/v1/packs")
  t1=$(now)
  [ "$code" = 201 ] || { echo "POST /api/v1/packs answered $code" >&2; exit 1; }
  echo "$t1 - $t0" | bc
done | { printf 'API  POST /api/v1/packs (20 blueprints + 5 actions): '; median; }
