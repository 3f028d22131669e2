#!/usr/bin/env bash
# Sustained load through the gateway binary: keep-alive connections sending
# tools/call POSTs back to back against a threaded Python upstream at four
# paces (instant, 1 ms, 0-5 ms jitter, SSE), every pace for the same time.
# A request fails when it is not a 200 carrying a JSON-RPC result, when the
# gateway closes the connection, or on any socket error; the script exits 1
# if any failed.
#   bench/soak.sh [seconds-per-pace] [connections...]
#   bench/soak.sh 45 16 64      # the README's run: 6 minutes in all
# BACKLOG=n sets the upstream's listen backlog (Python's default is 5; 256 here).
# Needs wrk and python3. Uses the release binary when BUILD=release (the
# default is the debug build the tests use: this measures correctness, not
# speed, and a debug gateway is the slower, more race-prone one).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
conns=("$@")
[ ${#conns[@]} -gt 0 ] || conns=(16 64)
build=${BUILD:-debug}
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is not installed" >&2; exit 1; }
target=${CARGO_TARGET_DIR:-target}
if [ "$build" = release ]; then cargo build --release --quiet; else cargo build --quiet; fi
bin="$target/$build/mcp-oauth-gateway"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up_port=$(free_port)
gw_port=$(free_port)
work=$(mktemp -d)
python3 bench/paced_upstream.py "$up_port" &
up_pid=$!
cat >"$work/gateway.yaml" <<YAML
public_url: http://127.0.0.1:$gw_port
listen: 127.0.0.1:$gw_port
auth: { disabled: true }
logging: { level: warn }
upstreams:
  - { name: paced, path: /paced, url: "http://127.0.0.1:$up_port" }
YAML
"$bin" serve --config "$work/gateway.yaml" >"$work/gateway.out" 2>"$work/gateway.log" &
gw_pid=$!
trap 'kill $gw_pid $up_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  kill -0 $gw_pid 2>/dev/null || { echo "the gateway did not start:" >&2; cat "$work/gateway.log" >&2; exit 1; }
  (exec 3<>"/dev/tcp/127.0.0.1/$gw_port") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$up_port") 2>/dev/null && break
  sleep 0.1
done

total_failed=0
printf '%-8s %5s %9s %8s %8s %8s %7s %7s\n' pace conns requests req/s p50_us p99_us failed errors
for c in "${conns[@]}"; do
  for pace in instant 1ms jitter sse; do
    out=$(wrk -t2 -c"$c" -d"${seconds}s" --timeout 10s -s bench/soak.lua "http://127.0.0.1:$gw_port/paced/$pace")
    line=$(grep '^RESULT' <<<"$out")
    val() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$line"; }
    failed=$(( $(val failed) + $(val socket_errors) ))
    total_failed=$((total_failed + failed))
    printf '%-8s %5s %9s %8s %8s %8s %7s %7s\n' "$pace" "$c" "$(val requests)" "$(val rps)" \
      "$(val p50_us)" "$(val p99_us)" "$(val failed)" "$(val socket_errors)"
    grep -E "^FIRST_FAILURE|Socket errors" <<<"$out" || true
  done
done
if [ "$total_failed" -gt 0 ]; then
  echo "FAILED: $total_failed failed requests; gateway log:" >&2
  grep -v '^\s*$' "$work/gateway.log" | tail -20 >&2
  exit 1
fi
echo "OK: no failed request"
