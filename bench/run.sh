#!/usr/bin/env bash
# Measures an MCP tools/call sent (a) straight to the demo upstream, (b)
# through the gateway without auth, and (c) through the gateway verifying an
# ES256 JWT against a per-tool policy, in one run against one process, and
# prints the ratios.
#   bench/run.sh [duration-seconds] [connections] [rounds]
# With several rounds the three targets are measured in turn, round after
# round, and the totals are reported, so drifts of a shared machine spread
# over all three instead of landing on one.
# Needs wrk (apt-get install wrk). Builds the release example
# `bench_stack` (demo upstream + JWKS issuer + both gateways in one process).
# CPU-µs per request is that process's user+system CPU time over the run
# divided by the requests served, so (b) - (a) is the proxy's own cost and
# (c) - (b) what auth and policy add.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
conns=${2:-16}
rounds=${3:-1}
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

measure() { # url token -> "requests cpu_ticks p50_us p99_us errors"
  local before after line
  before=$(cpu_ticks)
  line=$(TOKEN=$2 wrk -t1 -c"$conns" -d"${duration}s" -s bench/tools_call.lua "$1" | grep '^RESULT')
  after=$(cpu_ticks)
  sed 's/.*requests=\([0-9]*\) errors=\([0-9]*\).*/\1 \2/' <<<"$line" | {
    read -r requests errors
    echo "$requests $((after - before)) $(sed 's/.*p50_us=\([0-9]*\) p99_us=\([0-9]*\).*/\1 \2/' <<<"$line") $errors"
  }
}

names=(direct gateway gateway+auth)
urls=("$upstream" "http://127.0.0.1:$open_port/demo/mcp" "http://127.0.0.1:$auth_port/demo/mcp")
tokens=("" "" "$token")
declare -a req=(0 0 0) cpu=(0 0 0) p50=("" "" "") p99=("" "" "") err=(0 0 0)
for i in 0 1 2; do TOKEN=${tokens[$i]} wrk -t1 -c"$conns" -d2s -s bench/tools_call.lua "${urls[$i]}" >/dev/null; done   # warm-up
for _ in $(seq "$rounds"); do
  for i in 0 1 2; do
    read -r r c a b e <<<"$(measure "${urls[$i]}" "${tokens[$i]}")"
    req[i]=$((req[i] + r)); cpu[i]=$((cpu[i] + c)); err[i]=$((err[i] + e))
    p50[i]="${p50[i]} $a"; p99[i]="${p99[i]} $b"
  done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
results=()
for i in 0 1 2; do
  seconds=$((duration * rounds))
  results[i]="${names[$i]} rps=$((req[i] / seconds)) p50_us=$(median "${p50[i]}") p99_us=$(median "${p99[i]}") requests=${req[i]} errors=${err[i]} cpu_us_per_req=$((cpu[i] * 1000000 / ticks / req[i]))"
done
a=${results[0]}; b=${results[1]}; c=${results[2]}
printf "%s\n" "${results[@]}"
field() { sed "s/.* $2=\([0-9]*\).*/\1/" <<<"$1"; }
awk -v ar="$(field "$a" rps)" -v br="$(field "$b" rps)" -v cr="$(field "$c" rps)" \
    -v a50="$(field "$a" p50_us)" -v b50="$(field "$b" p50_us)" -v c50="$(field "$c" p50_us)" \
    -v ac="$(field "$a" cpu_us_per_req)" -v bc="$(field "$b" cpu_us_per_req)" -v cc="$(field "$c" cpu_us_per_req)" 'BEGIN {
  printf "throughput: gateway/direct %.2f, gateway+auth/gateway %.2f\n", br / ar, cr / br
  printf "p50 latency: direct %d us, gateway %d us, gateway+auth %d us\n", a50, b50, c50
  printf "CPU per request: direct %d us, gateway %d us, gateway+auth %d us\n", ac, bc, cc
  printf "auth+policy adds %d us per request: %.1f%% of the unauthenticated proxy path (%d us), %.1f%% of the gateway share (%d us)\n", cc - bc, 100 * (cc - bc) / bc, bc, 100 * (cc - bc) / (bc - ac), bc - ac
}'
if grep -q 'errors=[1-9]' <<<"$a$b$c"; then echo "some requests failed (non-200 or socket errors)" >&2; exit 1; fi
