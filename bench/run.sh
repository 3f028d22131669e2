#!/usr/bin/env bash
# Measures an MCP tools/call sent (a) straight to the demo upstream and (b)
# through the gateway, in one run against one process, and prints the ratios.
#   bench/run.sh [duration-seconds] [connections]
# Needs wrk (apt-get install wrk). Builds the release binary if needed.
# CPU-µs per request is the process's user+system CPU time over the run
# divided by the requests served: the process holds both the demo upstream
# and the gateway, so (b) - (a) is the gateway's own cost.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
conns=${2:-16}
port=${BENCH_PORT:-18089}
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --quiet
bin=target/release/mcp-oauth-gateway
log=$(mktemp)
RUST_LOG=warn "$bin" demo --listen "127.0.0.1:$port" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q "Connect your MCP client" "$log" && break; sleep 0.1; done
upstream=$(grep -o 'http://127.0.0.1:[0-9]*/mcp' "$log" | head -1)
gateway="http://127.0.0.1:$port/demo/mcp"
ticks=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }

run() { # name url
  wrk -t1 -c"$conns" -d2s -s bench/tools_call.lua "$2" >/dev/null   # warm-up
  local before after line
  before=$(cpu_ticks)
  line=$(wrk -t1 -c"$conns" -d"${duration}s" -s bench/tools_call.lua "$2" | grep '^RESULT')
  after=$(cpu_ticks)
  local requests
  requests=$(sed 's/.*requests=\([0-9]*\).*/\1/' <<<"$line")
  local cpu_us=$(( (after - before) * 1000000 / ticks / requests ))
  echo "$1 $line cpu_us_per_req=$cpu_us"
}

a=$(run direct "$upstream")
b=$(run gateway "$gateway")
echo "$a"
echo "$b"
field() { sed "s/.* $2=\([0-9]*\).*/\1/" <<<"$1"; }
awk -v ar="$(field "$a" rps)" -v br="$(field "$b" rps)" \
    -v a50="$(field "$a" p50_us)" -v b50="$(field "$b" p50_us)" \
    -v a99="$(field "$a" p99_us)" -v b99="$(field "$b" p99_us)" \
    -v ac="$(field "$a" cpu_us_per_req)" -v bc="$(field "$b" cpu_us_per_req)" 'BEGIN {
  printf "throughput gateway/direct: %.2f\n", br / ar
  printf "p50 latency: direct %d us, gateway %d us (+%d us)\n", a50, b50, b50 - a50
  printf "p99 latency: direct %d us, gateway %d us (+%d us)\n", a99, b99, b99 - a99
  printf "CPU per request: direct %d us, gateway %d us (gateway share %d us)\n", ac, bc, bc - ac
}'
if grep -q 'errors=[1-9]' <<<"$a$b"; then echo "some requests failed (non-200 or socket errors)" >&2; exit 1; fi
