#!/usr/bin/env bash
# Size of the release binary and its startup time: from exec to the first
# accepted connection, for `serve` with a minimal configuration (auth off,
# one upstream) and with the built-in authorization server (SQLite store
# opened, signing keys loaded). Median of N runs (default 5).
#
#   bench/startup.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
cargo build --release --locked --quiet --bin mcp-oauth-gateway
bin="${CARGO_TARGET_DIR:-target}/release/mcp-oauth-gateway"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

port=18480
cat >"$work/open.yaml" <<YAML
public_url: http://127.0.0.1:$port
listen: 127.0.0.1:$port
auth: { disabled: true }
upstreams: [{ name: up, path: /mcp, url: "http://127.0.0.1:9/mcp" }]
YAML
hash=$(echo -n startup-bench | "$bin" hash-password)
cat >"$work/as.yaml" <<YAML
public_url: http://127.0.0.1:$port
listen: 127.0.0.1:$port
authorization_server:
  data_dir: $work/data
  users: [{ username: u, password_hash: '$hash', scopes: [mcp] }]
upstreams: [{ name: up, path: /mcp, url: "http://127.0.0.1:9/mcp", scopes: [mcp] }]
YAML

# Milliseconds from exec until the port accepts a connection.
startup_ms() {
  local start pid
  start=$(date +%s%N)
  "$bin" serve --config "$1" >/dev/null 2>&1 &
  pid=$!
  until (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do sleep 0.002; done
  echo $(( ($(date +%s%N) - start) / 1000000 ))
  kill -INT "$pid"
  wait "$pid" 2>/dev/null || true
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "binary: $bin, $(stat -c %s "$bin") bytes ($(( $(stat -c %s "$bin") / 1048576 )) MiB)"
for name in open as; do
  startup_ms "$work/$name.yaml" >/dev/null   # the first run also creates the store and keys
  ms=$(for _ in $(seq "$runs"); do startup_ms "$work/$name.yaml"; done | median)
  echo "startup ($name): ${ms} ms (median of $runs)"
done
