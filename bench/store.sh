#!/usr/bin/env bash
# The store benchmark of issue 14: the authorization server on SQLite and
# on PostgreSQL, one replica and three behind a round-robin balancer (nginx,
# one worker), in one run:
#   bench/store.sh [refresh-seconds] [flows] [workers]
# For each setup, bench/store_load.py runs `flows` authorization-code flows
# (browser session kept, consent remembered: authorize, redirect, code
# exchange) and then rotates refresh tokens for `refresh-seconds`, with
# `workers` browsers at once; it prints flows/s, refreshes/s and the p50/p99
# of POST /token. Then the proxy's tools/call throughput (wrk, 16
# connections, a client_credentials JWT) on one SQLite and one PostgreSQL
# replica: the hot path must not touch the database, so the two should
# match. Every gateway runs one worker thread; PostgreSQL is a throwaway
# cluster (initdb in a temp dir, fsync on). Exits non-zero if a request
# failed.
# Needs wrk, nginx and PostgreSQL (apt-get install -y wrk nginx-light postgresql).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
flows=${2:-400}
workers=${3:-4}
base=${BENCH_PORT:-18190}
for tool in wrk nginx curl; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] ||
    { echo "$tool is not installed: apt-get install -y wrk nginx-light curl" >&2; exit 1; }
done
initdb=$(command -v initdb || compgen -G '/usr/lib/postgresql/*/bin/initdb' | head -1 || true)
[ -n "$initdb" ] || { echo "PostgreSQL is not installed: apt-get install -y postgresql" >&2; exit 1; }
pg_bin=$(dirname "$(readlink -f "$initdb")")
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
cargo build --release --quiet --bin mcp-oauth-gateway
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  [ -d "$work/pg/data" ] && as_pg "$pg_bin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
. bench/lib.sh

# PostgreSQL refuses to run as root: the cluster belongs to `postgres` then.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

pg_port=$((base + 90))
mkdir -p "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres "$work/pg"
as_pg "$pg_bin/initdb" -D "$work/pg/data" -U bench --auth=trust >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
  -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
database() { # name: a new database; its URL
  "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U bench -d postgres -q -c "CREATE DATABASE $1"
  echo "postgres://bench@127.0.0.1:$pg_port/$1"
}

start_fixed_upstream upstream "$base"
hash=$(printf 'bench-password' | "$bin/mcp-oauth-gateway" hash-password)

start_replica() { # name port public-port store-yaml
  cat >"$work/$1.yaml" <<YAML
public_url: http://127.0.0.1:$3
listen: 127.0.0.1:$2
server: { worker_threads: 1, config_watch_interval: 0s }
logging: { level: warn }
limits: { max_connections_per_address: 0 }
authorization_server:
  data_dir: $work/data-$1
  registration: initial_access_token
  initial_access_token: $REGISTRATION_TOKEN
  access_token_ttl: 1h
  $4
  users: [{ username: bench, password_hash: '$hash', scopes: [mcp:read, mcp:math] }]
upstreams:
  - name: bench
    path: /mcp
    url: http://127.0.0.1:$base/mcp
    scopes: [mcp:read, mcp:math]
    policy: { base_scopes: [mcp:read], tools: { add: [mcp:math] } }
YAML
  "$bin/mcp-oauth-gateway" serve --config "$work/$1.yaml" >"$work/$1.log" 2>&1 &
  pids+=($!)
  wait_port "$2"
}

public_client() { # port: registers a public client for the browser flows; prints its id
  curl -fsS "http://127.0.0.1:$1/register" -H "Authorization: Bearer $REGISTRATION_TOKEN" \
    -H 'Content-Type: application/json' \
    -d '{"client_name":"bench","redirect_uris":["http://127.0.0.1:9/callback"],"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"]}' |
    sed 's/.*"client_id":"\([^"]*\)".*/\1/'
}

failed=0
results=()
measure_as() { # label public-port
  local id line
  id=$(public_client "$2")
  line=$(python3 bench/store_load.py "http://127.0.0.1:$2" "$id" bench bench-password \
    "$flows" "$seconds" "$workers" | grep '^RESULT') || failed=1
  results+=("$(printf '%-20s %s' "$1" "${line#RESULT }")")
}

measure_proxy() { # label port token
  local line
  line=$(TOKEN=$3 wrk -t1 -c16 -d"${seconds}s" -s bench/tools_call.lua \
    "http://127.0.0.1:$2/mcp" | grep '^RESULT')
  grep -q ' errors=0$' <<<"$line" || failed=1
  results+=("$(printf '%-20s %s' "$1" "${line#RESULT }")")
}

# Ports from base + 2 on, one each (not in a subshell: it counts).
p=$((base + 1))

# One replica on SQLite, one on PostgreSQL.
p=$((p + 1)); sqlite=$p; start_replica sqlite "$p" "$p" ""
measure_as "sqlite x1" "$p"
p=$((p + 1)); pg1=$p; start_replica pg1 "$p" "$p" "store: { url: '$(database one)', pool_size: 10 }"
measure_as "postgres x1" "$p"
# The proxy's tools/call on each, in interleaved rounds (this machine's
# noise is larger than one run).
register_client "$sqlite"; sqlite_token=$(client_token "$sqlite" /mcp)
register_client "$pg1"; pg1_token=$(client_token "$pg1" /mcp)
for round in 1 2 3; do
  measure_proxy "proxy sqlite #$round" "$sqlite" "$sqlite_token"
  measure_proxy "proxy postgres #$round" "$pg1" "$pg1_token"
done

# Three replicas on one PostgreSQL behind nginx (round robin, keep-alive).
lb=$((p + 1)); p=$lb
db=$(database three)
servers=""
for i in 1 2 3; do
  p=$((p + 1))
  start_replica "pg3-$i" "$p" "$lb" "store: { url: '$db', pool_size: 10 }"
  servers+="server 127.0.0.1:$p; "
done
mkdir -p "$work/lb"
cat >"$work/lb/nginx.conf" <<NGINX
worker_processes 1;
pid $work/lb/nginx.pid;
error_log $work/lb/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/lb; proxy_temp_path $work/lb; fastcgi_temp_path $work/lb; uwsgi_temp_path $work/lb; scgi_temp_path $work/lb;
  upstream replicas { $servers keepalive 64; }
  server { listen 127.0.0.1:$lb; location / { proxy_pass http://replicas; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host \$http_host; } }
}
NGINX
"$nginx_bin" -c "$work/lb/nginx.conf" -g 'daemon off;' &
pids+=($!)
wait_port "$lb"
measure_as "postgres x3 (nginx)" "$lb"

echo "store benchmark: $(nproc) cores, ${seconds}s of refreshes, $flows flows, $workers browsers at once"
printf '%s\n' "${results[@]}"
exit "$failed"
