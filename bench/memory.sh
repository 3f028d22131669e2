#!/usr/bin/env bash
# The memory runs of issue 17, against the release gateway with its
# authorization server and a per-tool policy (two worker threads):
#  1. TOKENS distinct valid tokens (client_credentials JWTs from the
#     built-in authorization server) used round-robin by wrk in four 10 s
#     passes against an nginx upstream answering a fixed result: the
#     gateway's RSS after start, after the first pass (every token verified
#     and cached) and after each later pass, which should stay flat;
#  2. STREAMS SSE streams held open at once for SECONDS (a Python asyncio
#     upstream sends a progress event every 5 s, then the result): the RSS
#     before, at its peak while all are open, and after; RSS per stream; and
#     a check that every stream got every event in order.
#   bench/memory.sh [tokens] [streams] [seconds]      (10000 1000 60)
# Exits non-zero if any request or stream failed. Needs wrk, nginx, curl and
# python3.
set -euo pipefail
cd "$(dirname "$0")/.."
tokens=${1:-10000}
streams=${2:-1000}
seconds=${3:-60}
interval=5
events=$((seconds / interval))
base=${BENCH_PORT:-18110}
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
for tool in wrk curl python3 "$nginx_bin"; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed: apt-get install -y wrk nginx-light curl python3" >&2; exit 1; }
done
cargo build --release --quiet --bin mcp-oauth-gateway
bin=${CARGO_TARGET_DIR:-target}/release/mcp-oauth-gateway
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

# shellcheck source=bench/lib.sh
. bench/lib.sh
rss_mb() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$gateway/status"; }

start_fixed_upstream upstream "$base"
python3 bench/sse_streams.py upstream $((base + 1)) "$events" "$interval" >"$work/sse.log" 2>&1 &
pids+=($!)
port=$((base + 2))
cat >"$work/gateway.yaml" <<YAML
public_url: http://127.0.0.1:$port
listen: 127.0.0.1:$port
server: { worker_threads: 2, config_watch_interval: 0s }
logging: { level: warn }
limits: { max_connections_per_address: 0 }
authorization_server:
  data_dir: $work/as
  registration: initial_access_token
  initial_access_token: $REGISTRATION_TOKEN
  users: []
upstreams:
  - name: fixed
    path: /fixed/mcp
    url: http://127.0.0.1:$base/mcp
    scopes: [mcp:read, mcp:math]
    policy: { base_scopes: [mcp:read], tools: { add: [mcp:math] } }
  - name: sse
    path: /sse/mcp
    url: http://127.0.0.1:$((base + 1))/mcp
    scopes: [mcp:read, mcp:math]
    policy: { base_scopes: [mcp:read], tools: { add: [mcp:math] } }
YAML
"$bin" serve --config "$work/gateway.yaml" >"$work/gateway.log" 2>&1 &
gateway=$!
pids+=("$gateway")
wait_port $((base + 1)); wait_port "$port"

register_client "$port"

# The tokens, minted over one keep-alive connection.
python3 - "$port" "$client_id" "$client_secret" "$tokens" "$work/tokens" <<'PY'
import base64, http.client, json, sys, urllib.parse
port, cid, secret, count, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
auth = "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()
form = urllib.parse.urlencode({"grant_type": "client_credentials",
                               "resource": f"http://127.0.0.1:{port}/fixed/mcp"})
conn = http.client.HTTPConnection("127.0.0.1", int(port))
with open(out, "w") as f:
    for _ in range(count):
        conn.request("POST", "/token", form, {"Authorization": auth,
                     "Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            sys.exit(f"/token answered {resp.status}: {body[:200]!r}")
        f.write(json.loads(body)["access_token"] + "\n")
PY
sse_token=$(client_token "$port" /sse/mcp)

failed=0
echo "# $(date -u +%F), $(nproc) cores, release build, gateway RSS in MB"
echo "1. $tokens distinct tokens round-robin, 16 connections, 10 s passes"
start=$(rss_mb)
echo "  after start: $start"
for pass in 1 2 3 4; do
  line=$(TOKENS_FILE=$work/tokens wrk -t1 -c16 -d10s -s bench/tokens_call.lua "http://127.0.0.1:$port/fixed/mcp" | grep '^RESULT')
  grep -q ' errors=0' <<<"$line" || failed=1
  rss=$(rss_mb)
  [ "$pass" = 1 ] && warm=$rss
  echo "  after pass $pass: $rss ($line)"
done
awk -v s="$start" -v w="$warm" -v r="$rss" 'BEGIN {printf "  the first pass added %.1f MB (every token verified and cached); later passes %+.1f MB\n", w - s, r - w}'

echo "2. $streams SSE streams held open for $seconds s ($events events each, one per $interval s)"
before=$(rss_mb)
python3 bench/sse_streams.py clients "http://127.0.0.1:$port/sse/mcp" "$sse_token" "$streams" "$events" >"$work/clients.out" 2>&1 &
clients=$!
peak=$before
while kill -0 "$clients" 2>/dev/null; do
  rss=$(rss_mb)
  peak=$(awk -v a="$peak" -v b="$rss" 'BEGIN {print (b > a) ? b : a}')
  sleep 1
done
wait "$clients" || failed=1
sleep 1
echo "  $(cat "$work/clients.out")"
awk -v b="$before" -v p="$peak" -v a="$(rss_mb)" -v n="$streams" 'BEGIN {
  printf "  before: %.1f, peak while open: %.1f, after: %.1f; %.1f KB per open stream\n", b, p, a, (p - b) * 1024 / n
}'
[ "$failed" = 0 ] || { echo "some requests or streams failed" >&2; exit 1; }
