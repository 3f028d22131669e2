#!/usr/bin/env bash
# The proxy benchmark of issue 17: one MCP `tools/call` (a ~100-byte body)
# sent by wrk over keep-alive connections through each proxy in turn, in
# the same run and in interleaved rounds, against one upstream: nginx
# answering a fixed JSON-RPC result (so the upstream costs the same for all).
#   bench/run.sh [seconds] [connections] [rounds]
# Targets, each its own process, its CPU (user + system, /proc) counted
# alone over its runs and divided by the requests it served:
#   direct       the upstream itself (no proxy; its CPU is the upstream's)
#   nginx        nginx `proxy_pass`, one worker process, keep-alive upstream
#   pingora      examples/bare_pingora.rs: pingora's proxy loop, nothing else
#   gw-open      the gateway, `auth: { disabled: true }`
#   gw-jwt       the gateway with its authorization server: an ES256 JWT it
#                issued (client_credentials) and a per-tool scope policy
#   gw-introspect the gateway checking the same token by RFC 7662
#                introspection at gw-jwt's /introspect (cached after first use)
#   gw-jwt-2w    gw-jwt's configuration with two worker threads
# Every proxy runs one worker thread or process but gw-jwt-2w. Each round
# also runs every target at one connection, for the latency a single client
# sees (medians over the rounds). Prints req/s, p50, p99 and CPU-µs per
# request, the ratios to nginx and the latency each proxy adds over direct;
# exits non-zero if any request failed.
# Needs wrk and nginx (apt-get install -y wrk nginx-light).
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
conns=${2:-16}
rounds=${3:-3}
base=${BENCH_PORT:-18090}
for tool in wrk nginx curl; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] ||
    { echo "$tool is not installed: apt-get install -y wrk nginx-light curl" >&2; exit 1; }
done
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
cargo build --release --quiet --bin mcp-oauth-gateway --example bare_pingora
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
ticks=$(getconf CLK_TCK)

# shellcheck source=bench/lib.sh
. bench/lib.sh

start_gateway() { # name port yaml-tail [public-port] [workers] [logging]: a gateway process on port
  cat >"$work/$1.yaml" <<YAML
public_url: http://127.0.0.1:${4:-$2}
listen: 127.0.0.1:$2
server: { worker_threads: ${5:-1}, config_watch_interval: 0s }
logging: ${6:-{ level: warn \}}
limits: { max_connections_per_address: 0 }
$3
YAML
  "$bin/mcp-oauth-gateway" serve --config "$work/$1.yaml" >"$work/$1.log" 2>&1 &
  pids+=($!)
  wait_port "$2"
}

# The upstream: a fixed JSON-RPC result for every POST.
start_fixed_upstream upstream "$base"
upstream_pid=${pids[-1]}
start_nginx nginx $((base + 1)) "location / { proxy_pass http://mcp; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; }" "$base"
nginx_pid=${pids[-1]}
"$bin/examples/bare_pingora" "127.0.0.1:$((base + 2))" "127.0.0.1:$base" 1 >"$work/pingora.log" 2>&1 &
pids+=($!)
pingora_pid=$!
wait_port $((base + 2))

upstream="upstreams:
  - name: demo
    path: /demo/mcp
    url: http://127.0.0.1:$base/mcp"
policy="$upstream
    scopes: [mcp:read, mcp:math]
    policy: { base_scopes: [mcp:read], tools: { add: [mcp:math] } }"
start_gateway gw-open $((base + 3)) "auth: { disabled: true }
$upstream"
open_pid=${pids[-1]}
jwt_port=$((base + 4))
# The token must outlive the whole run (the default 10 minutes does not).
start_gateway gw-jwt "$jwt_port" "authorization_server:
  data_dir: $work/as
  registration: initial_access_token
  initial_access_token: $REGISTRATION_TOKEN
  access_token_ttl: 2h
  users: []
$policy"
jwt_pid=${pids[-1]}

# A confidential client of gw-jwt, its client_credentials token for the
# demo upstream, and the same client as gw-introspect's introspection client.
register_client "$jwt_port"
token=$(client_token "$jwt_port" /demo/mcp)

# Tokens name gw-jwt's public URL as their audience, so the other two
# gateways with auth publish the same public URL.
start_gateway gw-introspect $((base + 5)) "auth:
  introspection:
    - url: http://127.0.0.1:$jwt_port/introspect
      issuer: http://127.0.0.1:$jwt_port
      client_id: $client_id
      client_secret: $client_secret
$policy" "$jwt_port"
introspect_pid=${pids[-1]}
start_gateway gw-jwt-2w $((base + 6)) "authorization_server:
  data_dir: $work/as
  registration: disabled
  users: []
$policy" "$jwt_port" 2
jwt2_pid=${pids[-1]}
start_gateway gw-jwt-audit $((base + 7)) "authorization_server:
  data_dir: $work/as
  registration: disabled
  users: []
$policy" "$jwt_port" 1 "{ level: info, format: json }"
audit_pid=${pids[-1]}

names=(direct nginx pingora gw-open gw-jwt gw-introspect gw-jwt-2w gw-jwt-audit)
urls=("http://127.0.0.1:$base/mcp")
for port in $(seq $((base + 1)) $((base + 7))); do urls+=("http://127.0.0.1:$port/demo/mcp"); done
urls[1]="http://127.0.0.1:$((base + 1))/mcp"
urls[2]="http://127.0.0.1:$((base + 2))/mcp"
tokens=("" "" "" "" "$token" "$token" "$token" "$token")
procs=("$upstream_pid" "$nginx_pid" "$pingora_pid" "$open_pid" "$jwt_pid" "$introspect_pid" "$jwt2_pid" "$audit_pid")

cpu_ticks() { # pid (and, for nginx, its worker) -> user + system ticks
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$total"
}

measure() { # target connections -> "requests ticks p50_us p99_us errors"
  local before after line
  before=$(cpu_ticks "${procs[$1]}")
  line=$(TOKEN=${tokens[$1]} wrk -t1 -c"$2" -d"${duration}s" -s bench/tools_call.lua "${urls[$1]}" | grep '^RESULT')
  after=$(cpu_ticks "${procs[$1]}")
  sed 's/.*requests=\([0-9]*\) errors=\([0-9]*\).*/\1 \2/' <<<"$line" | {
    read -r requests errors
    echo "$requests $((after - before)) $(sed 's/.*p50_us=\([0-9]*\) p99_us=\([0-9]*\).*/\1 \2/' <<<"$line") $errors"
  }
}

targets=$(seq 0 $((${#names[@]} - 1)))
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
for i in $targets; do   # warm-up, and a check that every target answers 200
  line=$(TOKEN=${tokens[$i]} wrk -t1 -c"$conns" -d2s -s bench/tools_call.lua "${urls[$i]}" | grep '^RESULT')
  grep -q ' errors=0' <<<"$line" || { echo "${names[$i]} failed its warm-up: $line (logs in $work)" >&2; exit 1; }
done
declare -a req cpu p50 p99 err lat50 lat99
for i in $targets; do req[i]=0; cpu[i]=0; err[i]=0; p50[i]=""; p99[i]=""; lat50[i]=""; lat99[i]=""; done
for _ in $(seq "$rounds"); do
  for i in $targets; do
    read -r r c a b e <<<"$(measure "$i" "$conns")"
    req[i]=$((req[i] + r)); cpu[i]=$((cpu[i] + c)); err[i]=$((err[i] + e))
    p50[i]="${p50[i]} $a"; p99[i]="${p99[i]} $b"
  done
  for i in $targets; do
    read -r _ _ a b e <<<"$(measure "$i" 1)"
    lat50[i]="${lat50[i]} $a"; lat99[i]="${lat99[i]} $b"; err[i]=$((err[i] + e))
  done
done
for i in $targets; do lat50[i]=$(median "${lat50[$i]}"); lat99[i]=$(median "${lat99[$i]}"); done

seconds=$((duration * rounds))
echo "# $(date -u +%F), $(nproc) cores, $duration s x $rounds rounds, $conns connections (latency: 1 connection)"
printf "%-14s %8s %8s %8s %8s %7s %8s %8s %8s %8s\n" target req/s p50_us p99_us cpu_us "x nginx" "rps/ngx" "c1_p50" "c1_p99" errors
nginx_cpu=$(awk -v c="${cpu[1]}" -v r="${req[1]}" -v t="$ticks" 'BEGIN {print c * 1e6 / t / r}')
nginx_rps=$((req[1] / seconds))
for i in $targets; do
  awk -v name="${names[$i]}" -v r="${req[$i]}" -v c="${cpu[$i]}" -v t="$ticks" -v s="$seconds" \
      -v p50="$(median "${p50[$i]}")" -v p99="$(median "${p99[$i]}")" -v l50="${lat50[$i]}" -v l99="${lat99[$i]}" \
      -v e="${err[$i]}" -v ncpu="$nginx_cpu" -v nrps="$nginx_rps" 'BEGIN {
    cpu = c * 1e6 / t / r
    printf "%-14s %8d %8d %8d %8.1f %7.2f %8.2f %8d %8d %8d\n", name, r / s, p50, p99, cpu, cpu / ncpu, r / s / nrps, l50, l99, e
  }'
done
echo "latency added over direct (p50/p99, us):"
for i in $(seq 1 $((${#names[@]} - 1))); do
  printf "  %-14s 1 connection %+d/%+d, %d connections %+d/%+d\n" "${names[$i]}" \
    $((lat50[i] - lat50[0])) $((lat99[i] - lat99[0])) "$conns" \
    $(($(median "${p50[$i]}") - $(median "${p50[0]}"))) $(($(median "${p99[$i]}") - $(median "${p99[0]}")))
done
awk -v o="${cpu[3]}" -v oreq="${req[3]}" -v j="${cpu[4]}" -v jr="${req[4]}" -v t="$ticks" \
    -v r1="${req[4]}" -v r2="${req[6]}" 'BEGIN {
  printf "auth + policy add %.1f us per request over gw-open; two workers serve %.2fx one\n", j * 1e6 / t / jr - o * 1e6 / t / oreq, r2 / r1
}'
failed=0
for i in $targets; do [ "${err[$i]}" = 0 ] || failed=1; done
[ "$failed" = 0 ] || { echo "some requests failed (non-200 or socket errors); logs in $work" >&2; exit 1; }
