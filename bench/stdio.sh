#!/usr/bin/env bash
# Stdio upstreams (issue 15): tools/call through the gateway's own stdio
# bridge against the same server behind third-party stdio-to-HTTP bridges,
# in the same run, and the memory each idle session costs.
#
#   bench/stdio.sh [seconds] [connections] [rounds] [sessions]
#
# The server: @modelcontextprotocol/server-everything in stdio mode, its
# `echo` tool, one MCP session per target. The bridges, installed pinned
# into bench/.cache from the registries: FastMCP's proxy (fastmcp 4.2.3,
# `create_proxy` over stdio, SSE answers), mcp-proxy 0.13.0 and
# supergateway 4.0.0 (`--stateful`). The official TypeScript SDK ships no
# such bridge. Each target gets wrk with `connections` keep-alive
# connections for `seconds`, in interleaved rounds; the script prints req/s
# and p50/p99 (medians over rounds) and RSS of each bridge with its server
# processes, then opens `sessions` idle sessions through the gateway and
# prints the RSS each one adds. Exits non-zero if any call failed.
# Needs wrk, node, python3 and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
conns=${2:-16}
rounds=${3:-3}
sessions=${4:-20}
base=${BENCH_PORT:-18190}
for tool in wrk node python3 curl; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
tests/e2e/setup.sh
cache=bench/.cache
mkdir -p "$cache"
[ -x "$cache/fastmcp/bin/python" ] || {
  python3 -m venv "$cache/fastmcp" && "$cache/fastmcp/bin/pip" install -q fastmcp==4.2.3
}
[ -x "$cache/mcp-proxy/bin/mcp-proxy" ] || {
  python3 -m venv "$cache/mcp-proxy" && "$cache/mcp-proxy/bin/pip" install -q mcp-proxy==0.13.0
}
[ -x "$cache/npm/node_modules/.bin/supergateway" ] ||
  npm install -s --no-audit --no-fund --prefix "$cache/npm" supergateway@4.0.0
cargo build --release --quiet --bin mcp-oauth-gateway
bin=${CARGO_TARGET_DIR:-target}/release
server=tests/clients/node_modules/@modelcontextprotocol/server-everything/dist/index.js
node=$(command -v node)
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

# shellcheck source=bench/lib.sh
. bench/lib.sh

cat >"$work/gateway.yaml" <<YAML
public_url: http://127.0.0.1:$base
listen: 127.0.0.1:$base
server: { worker_threads: 1, config_watch_interval: 0s }
logging: { level: warn }
limits: { max_connections_per_address: 0 }
auth: { disabled: true }
upstreams:
  - name: everything
    path: /mcp
    command: ['$node', '$PWD/$server', stdio]
    max_processes: $((sessions + 5))
YAML
"$bin/mcp-oauth-gateway" serve --config "$work/gateway.yaml" >"$work/gateway.log" 2>&1 &
pids+=($!)
cat >"$work/fastmcp_proxy.py" <<PY
from fastmcp.client.transports import StdioTransport
from fastmcp.server import create_proxy

proxy = create_proxy(StdioTransport(command="$node", args=["$PWD/$server", "stdio"]), name="bench")
proxy.run(transport="http", host="127.0.0.1", port=$((base + 1)), path="/mcp",
          show_banner=False, uvicorn_config={"access_log": False, "log_level": "warning"})
PY
"$cache/fastmcp/bin/python" "$work/fastmcp_proxy.py" >"$work/fastmcp.log" 2>&1 &
pids+=($!)
"$cache/mcp-proxy/bin/mcp-proxy" --host 127.0.0.1 --port $((base + 2)) -- "$node" "$PWD/$server" stdio \
  >"$work/mcp-proxy.log" 2>&1 &
pids+=($!)
"$cache/npm/node_modules/.bin/supergateway" --stdio "$node $PWD/$server stdio" \
  --outputTransport streamableHttp --stateful --port $((base + 3)) --logLevel none \
  >"$work/supergateway.log" 2>&1 &
pids+=($!)
names=(gateway fastmcp-proxy mcp-proxy supergateway)
procs=("${pids[@]}")
for i in 0 1 2 3; do wait_port $((base + i)); done

open_session() { # port -> a new session's id (initialize + initialized)
  local sid
  sid=$(curl -fsS -D - -o /dev/null "http://127.0.0.1:$1/mcp" -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' \
    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}' |
    tr -d '\r' | sed -n 's/^mcp-session-id: *//Ip')
  curl -fsS -o /dev/null "http://127.0.0.1:$1/mcp" -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' -H "mcp-session-id: $sid" \
    -d '{"jsonrpc":"2.0","method":"notifications/initialized"}'
  echo "$sid"
}

descendants() { # pid -> the pids of its children, their children...
  local c
  for c in $(pgrep -P "$1" || true); do echo "$c"; descendants "$c"; done
}

rss_kb() { # pid -> RSS of it and its descendants, in kB
  local total=0 p
  for p in "$1" $(descendants "$1"); do
    total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

declare -a sid
for i in 0 1 2 3; do sid[i]=$(open_session $((base + i))); done
measure() { # target -> "rps p50 p99 errors"
  SID=${sid[$1]} wrk -t2 -c"$conns" -d"${duration}s" -s bench/stdio_call.lua "http://127.0.0.1:$((base + $1))/mcp" |
    grep '^RESULT' | sed 's/.*rps=\([0-9]*\) p50_us=\([0-9]*\) p99_us=\([0-9]*\).*errors=\([0-9]*\)/\1 \2 \3 \4/'
}
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
declare -a rps p50 p99 err
for i in 0 1 2 3; do   # warm-up, and a check that every target answers
  read -r _ _ _ e <<<"$(measure "$i")"
  [ "$e" = 0 ] || { echo "${names[$i]} failed its warm-up ($e bad calls; logs in $work)" >&2; exit 1; }
  rps[i]=""; p50[i]=""; p99[i]=""; err[i]=0
done
for _ in $(seq "$rounds"); do
  for i in 0 1 2 3; do
    read -r r a b e <<<"$(measure "$i")"
    rps[i]="${rps[i]} $r"; p50[i]="${p50[i]} $a"; p99[i]="${p99[i]} $b"; err[i]=$((err[i] + e))
  done
done

echo "# $(date -u +%F), $(nproc) cores, $duration s x $rounds rounds, $conns connections, one session each"
printf '%-14s %8s %9s %9s %12s %7s\n' target req/s p50_us p99_us rss_MB errors
failed=0
for i in 0 1 2 3; do
  printf '%-14s %8s %9s %9s %12s %7s\n' "${names[$i]}" "$(median "${rps[$i]}")" "$(median "${p50[$i]}")" \
    "$(median "${p99[$i]}")" "$(( $(rss_kb "${procs[$i]}") / 1024 ))" "${err[$i]}"
  [ "${err[$i]}" = 0 ] || failed=1
done

# Memory per idle session: each is a server-everything process of its own.
own_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
before=$(rss_kb "${procs[0]}") own_before=$(own_kb "${procs[0]}")
for _ in $(seq "$sessions"); do open_session "$base" >/dev/null; done
sleep 2
after=$(rss_kb "${procs[0]}") own_after=$(own_kb "${procs[0]}")
echo "gateway: $sessions idle sessions add $(( (after - before) / 1024 )) MB, $(( (after - before) / sessions )) kB each" \
  "(of which the gateway process itself: $(( (own_after - own_before) / sessions )) kB each)"
exit "$failed"
