# shellcheck shell=bash disable=SC2154  # work, pids and nginx_bin come from the caller
# Shared by bench/run.sh and bench/memory.sh (sourced, not run). The caller
# sets `work` (a temp dir for configs and logs), `pids` (an array of what to
# kill on exit) and `nginx_bin`.

# The result every fixed upstream answers a tools/call with.
FIXED_RESULT='{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"3"}],"isError":false}}'

# A registration token for the gateways' `initial_access_token` registration.
REGISTRATION_TOKEN=bench-registration-token-of-at-least-32-characters

wait_port() { # port: until something accepts there, else the logs and exit 1
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done
  echo "nothing listens on port $1:" >&2
  tail -n 20 "$work"/*.log "$work"/*/error.log >&2 2>/dev/null
  exit 1
}

start_nginx() { # name port server-body [upstream-port]: one worker process
  mkdir -p "$work/$1"
  cat >"$work/$1/nginx.conf" <<NGINX
worker_processes 1;
pid $work/$1/nginx.pid;
error_log $work/$1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/$1; proxy_temp_path $work/$1; fastcgi_temp_path $work/$1; uwsgi_temp_path $work/$1; scgi_temp_path $work/$1;
  ${4:+upstream mcp { server 127.0.0.1:$4; keepalive 64; \}}
  server { listen 127.0.0.1:$2; $3 }
}
NGINX
  "$nginx_bin" -c "$work/$1/nginx.conf" -g 'daemon off;' &
  pids+=($!)
  wait_port "$2"
}

start_fixed_upstream() { # name port: nginx answering every request with FIXED_RESULT
  start_nginx "$1" "$2" "location / { default_type application/json; return 200 '$FIXED_RESULT'; }"
}

register_client() { # gateway-port: sets client_id and client_secret (client_credentials)
  local client
  client=$(curl -fsS "http://127.0.0.1:$1/register" -H "Authorization: Bearer $REGISTRATION_TOKEN" \
    -H 'Content-Type: application/json' \
    -d '{"client_name":"bench","grant_types":["client_credentials"],"scope":"mcp:read mcp:math"}')
  client_id=$(sed 's/.*"client_id":"\([^"]*\)".*/\1/' <<<"$client")
  client_secret=$(sed 's/.*"client_secret":"\([^"]*\)".*/\1/' <<<"$client")
}

client_token() { # gateway-port resource-path: a client_credentials access token
  curl -fsS "http://127.0.0.1:$1/token" -u "$client_id:$client_secret" \
    -d grant_type=client_credentials -d "resource=http://127.0.0.1:$1$2" |
    sed 's/.*"access_token":"\([^"]*\)".*/\1/'
}
