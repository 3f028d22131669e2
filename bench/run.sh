#!/usr/bin/env bash
# Measures an MCP tools/call sent (a) straight to the demo upstream, (b)
# through the gateway without auth, and (c) through the gateway verifying an
# ES256 JWT against a per-tool policy, in one run against one process, and
# prints the ratios.
#   bench/run.sh [duration-seconds] [connections]
# Needs wrk (apt-get install wrk). Builds the release example
# `bench_stack` (demo upstream + JWKS issuer + both gateways in one process).
# CPU-µs per request is that process's user+system CPU time over the run
# divided by the requests served, so (b) - (a) is the proxy's own cost and
# (c) - (b) what auth and policy add.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
conns=${2:-16}
open_port=${BENCH_PORT:-18089}
auth_port=$((open_port + 1))
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --quiet --example bench_stack
log=$(mktemp)
target/release/examples/bench_stack "$open_port" "$auth_port" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q READY "$log" && break; sleep 0.1; done
upstream=$(sed -n 's/^UPSTREAM=//p' "$log")
token=$(sed -n 's/^TOKEN=//p' "$log")
ticks=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }

run() { # name url token
  TOKEN=$3 wrk -t1 -c"$conns" -d2s -s bench/tools_call.lua "$2" >/dev/null   # warm-up
  local before after line
  before=$(cpu_ticks)
  line=$(TOKEN=$3 wrk -t1 -c"$conns" -d"${duration}s" -s bench/tools_call.lua "$2" | grep '^RESULT')
  after=$(cpu_ticks)
  local requests
  requests=$(sed 's/.*requests=\([0-9]*\).*/\1/' <<<"$line")
  local cpu_us=$(( (after - before) * 1000000 / ticks / requests ))
  echo "$1 $line cpu_us_per_req=$cpu_us"
}

a=$(run direct "$upstream" "")
b=$(run gateway "http://127.0.0.1:$open_port/demo/mcp" "")
c=$(run gateway+auth "http://127.0.0.1:$auth_port/demo/mcp" "$token")
printf '%s\n%s\n%s\n' "$a" "$b" "$c"
field() { sed "s/.* $2=\([0-9]*\).*/\1/" <<<"$1"; }
awk -v ar="$(field "$a" rps)" -v br="$(field "$b" rps)" -v cr="$(field "$c" rps)" \
    -v a50="$(field "$a" p50_us)" -v b50="$(field "$b" p50_us)" -v c50="$(field "$c" p50_us)" \
    -v ac="$(field "$a" cpu_us_per_req)" -v bc="$(field "$b" cpu_us_per_req)" -v cc="$(field "$c" cpu_us_per_req)" 'BEGIN {
  printf "throughput: gateway/direct %.2f, gateway+auth/gateway %.2f\n", br / ar, cr / br
  printf "p50 latency: direct %d us, gateway %d us, gateway+auth %d us\n", a50, b50, c50
  printf "CPU per request: direct %d us, gateway %d us, gateway+auth %d us\n", ac, bc, cc
  printf "proxy share %d us; auth+policy adds %d us = %.1f%% of the gateway share\n", bc - ac, cc - bc, 100 * (cc - bc) / (bc - ac)
}'
if grep -q 'errors=[1-9]' <<<"$a$b$c"; then echo "some requests failed (non-200 or socket errors)" >&2; exit 1; fi
