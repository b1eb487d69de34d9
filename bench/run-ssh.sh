#!/usr/bin/env bash
# ssh.run latency per call (median and p90 of 50 calls of `true`) against a local OpenSSH
# server started here (sshd -D on a free loopback port, its own host key and authorized_keys,
# as root): the OpenSSH client (`ssh -o BatchMode=yes`, what ssh.run ran before russh), ssh.run
# with a new connection per call, and ssh.run over its pooled connection. Usage:
# bench/run-ssh.sh [runs]. Prints a Markdown table; docs/ssh.md records a run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/xyn-target}"
[ -x /usr/sbin/sshd ] || { apt-get update -qq && apt-get install -y -qq openssh-server; }
runs="${1:-50}"
# The dev profile: dependencies (russh, its ciphers) are optimised there too (Cargo.toml,
# profile.dev.package."*"), and it shares the test build's cache.
cargo build -q -p xyn-bench --bin ssh-bench
dir=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
ssh-keygen -q -N '' -t ed25519 -f "$dir/host_key"
ssh-keygen -q -N '' -t ed25519 -f "$dir/client_key"
cp "$dir/client_key.pub" "$dir/authorized_keys"
mkdir -p /run/sshd
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$dir/sshd_config" <<CONF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_key
AuthorizedKeysFile $dir/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
PidFile none
MaxStartups 100
CONF
/usr/sbin/sshd -D -e -f "$dir/sshd_config" 2>"$dir/sshd.log" &
pid=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
echo "[127.0.0.1]:$port $(cat "$dir/host_key.pub")" > "$dir/known_hosts"
"$CARGO_TARGET_DIR/debug/ssh-bench" --port "$port" --key "$dir/client_key" \
  --known-hosts "$dir/known_hosts" --runs "$runs"
