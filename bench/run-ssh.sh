#!/usr/bin/env bash
# ssh.run latency per call (median and p90 of 50 calls of `true`) against a local OpenSSH
# server started here (sshd -D on a free loopback port, its own host key and authorized_keys,
# as root): the OpenSSH client (`ssh -o BatchMode=yes`, what ssh.run ran before russh), ssh.run
# with a new connection per call, and ssh.run over its pooled connection. Usage:
# bench/run-ssh.sh [runs]. Prints a Markdown table; docs/ssh.md records a run. Creates the
# system account xyn-ssh-bench (shell /bin/sh, no home) if it is missing.
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
# The commands run as an account of the benchmark's own whose shell is /bin/sh: a command sent
# over SSH runs under the account's login shell, and bash sources ~/.bashrc for it (root's on a
# developer machine may run `pyenv init`, ~85 ms per command), which is not what this measures.
user=xyn-ssh-bench
id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent --shell /bin/sh "$user"
usermod -p '*' "$user"                       # not locked: sshd refuses locked accounts
chmod 755 "$dir"; chmod 644 "$dir/authorized_keys"   # sshd reads it as the user
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
  --known-hosts "$dir/known_hosts" --runs "$runs" --user "$user"
