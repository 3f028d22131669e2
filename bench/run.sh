#!/usr/bin/env bash
# Measures an MCP tools/call sent (a) straight to the demo upstream, (b)
# through the gateway without auth, and (c) through the gateway verifying an
# ES256 JWT against a per-tool policy, in one run against one process, and
# prints the ratios.
#   bench/run.sh [duration-seconds] [connections] [rounds]
# With several rounds the targets are measured in turn, round after
# round, and the totals are reported, so drifts of a shared machine spread
# over all of them instead of landing on one.
# Needs wrk (apt-get install wrk). Builds the release example
# `bench_stack` (demo upstream + JWKS issuer + both gateways in one process).
# CPU-µs per request is that process's user+system CPU time over the run
# divided by the requests served, so (b) - (a) is the proxy's own cost and
# (c) - (b) what auth and policy add. When nginx is installed, (d) nginx as a
# plain reverse proxy (one worker, keep-alive) to the same upstream is
# measured too, its CPU counted over its own processes, and compared with
# the gateway's share (c) - (a). Exits non-zero if any request failed.
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

cpu_ticks() { # pids -> their user + system CPU ticks
  local total=0 p
  for p in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$total"
}

measure() { # url token pids... -> "requests cpu_ticks p50_us p99_us errors"
  local before after line url=$1 tok=$2
  shift 2
  before=$(cpu_ticks "$@")
  line=$(TOKEN=$tok wrk -t1 -c"$conns" -d"${duration}s" -s bench/tools_call.lua "$url" | grep '^RESULT')
  after=$(cpu_ticks "$@")
  sed 's/.*requests=\([0-9]*\) errors=\([0-9]*\).*/\1 \2/' <<<"$line" | {
    read -r requests errors
    echo "$requests $((after - before)) $(sed 's/.*p50_us=\([0-9]*\) p99_us=\([0-9]*\).*/\1 \2/' <<<"$line") $errors"
  }
}

names=(direct gateway gateway+auth)
urls=("$upstream" "http://127.0.0.1:$open_port/demo/mcp" "http://127.0.0.1:$auth_port/demo/mcp")
tokens=("" "" "$token")
pids=("$pid" "$pid" "$pid")
declare -a req=(0 0 0 0) cpu=(0 0 0 0) p50=("" "" "" "") p99=("" "" "" "") err=(0 0 0 0)

# nginx as a plain reverse proxy to the same upstream (one worker process,
# keep-alive to the upstream), when it is installed: its CPU is measured
# alone, against the gateway's own share (gateway process minus direct).
nginx_bin=$(command -v nginx || ls /usr/sbin/nginx 2>/dev/null || true)
if [ -n "$nginx_bin" ]; then
  ngx=$(mktemp -d)
  nginx_port=$((open_port + 2))
  up_hostport=$(sed 's|^http://\([^/]*\).*|\1|' <<<"$upstream")
  up_path=$(sed 's|^http://[^/]*||' <<<"$upstream")
  cat >"$ngx/nginx.conf" <<NGINX
worker_processes 1;
pid $ngx/nginx.pid;
error_log $ngx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $ngx; proxy_temp_path $ngx; fastcgi_temp_path $ngx; uwsgi_temp_path $ngx; scgi_temp_path $ngx;
  upstream mcp { server $up_hostport; keepalive 32; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / { proxy_pass http://mcp; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $up_hostport; proxy_buffering off; }
  }
}
NGINX
  "$nginx_bin" -c "$ngx/nginx.conf" -g 'daemon off;' &
  nginx_pid=$!
  trap 'kill $pid $nginx_pid 2>/dev/null; rm -rf "$log" "$ngx"' EXIT
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$nginx_port") 2>/dev/null && break; sleep 0.1; done
  names+=(nginx); urls+=("http://127.0.0.1:$nginx_port$up_path"); tokens+=("")
  pids+=("$nginx_pid $(pgrep -P "$nginx_pid" | tr '\n' ' ')")
fi
targets=$(seq 0 $((${#names[@]} - 1)))
for i in $targets; do TOKEN=${tokens[$i]} wrk -t1 -c"$conns" -d2s -s bench/tools_call.lua "${urls[$i]}" >/dev/null; done   # warm-up
for _ in $(seq "$rounds"); do
  for i in $targets; do
    # shellcheck disable=SC2086 # a target's pids are a list
    read -r r c a b e <<<"$(measure "${urls[$i]}" "${tokens[$i]}" ${pids[$i]})"
    req[i]=$((req[i] + r)); cpu[i]=$((cpu[i] + c)); err[i]=$((err[i] + e))
    p50[i]="${p50[i]} $a"; p99[i]="${p99[i]} $b"
  done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
results=()
for i in $targets; do
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
if [ -n "$nginx_bin" ]; then
  n=${results[3]}
  awk -v nc="$(field "$n" cpu_us_per_req)" -v nr="$(field "$n" rps)" -v cr="$(field "$c" rps)" \
      -v ac="$(field "$a" cpu_us_per_req)" -v cc="$(field "$c" cpu_us_per_req)" 'BEGIN {
    printf "nginx: %d us CPU per request (its own processes); gateway+auth share %d us: %.1fx nginx; throughput gateway+auth/nginx %.2f\n", nc, cc - ac, (cc - ac) / nc, cr / nr
  }'
else
  echo "nginx is not installed (apt-get install -y nginx-light): no nginx comparison" >&2
fi
if grep -q 'errors=[1-9]' <<<"${results[*]}"; then echo "some requests failed (non-200 or socket errors)" >&2; exit 1; fi
