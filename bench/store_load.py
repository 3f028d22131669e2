#!/usr/bin/env python3
"""Authorization-server load for bench/store.sh: browser flows, then
refresh-token rotations, through one URL (a gateway, or a balancer in front
of replicas).

    store_load.py BASE CLIENT_ID USER PASSWORD FLOWS SECONDS WORKERS

Each of WORKERS threads is one browser: it signs in once (its first flow
logs in; the password check is deliberately slow, so later flows reuse the
browser session, as a person's browser does), then runs its share of FLOWS
authorization-code flows (authorize with PKCE, remembered consent, redirect
with the code, code exchange). Then each worker rotates its own refresh
token as fast as it can for SECONDS (every request uses the token the last
one returned). Prints one line:

    RESULT flows=N flows_per_s=X refreshes=N refreshes_per_s=X
           token_p50_ms=X token_p99_ms=X failures=N

(`token_*`: every POST /token, code exchanges and refreshes). Exits 1 if
any step failed. Standard library only.
"""
import base64
import hashlib
import http.client
import json
import re
import secrets
import sys
import threading
import time
import urllib.parse

REDIRECT = "http://127.0.0.1:9/callback"


class Browser:
    """One keep-alive connection with a cookie jar."""

    def __init__(self, base):
        url = urllib.parse.urlsplit(base)
        self.host, self.port = url.hostname, url.port
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        self.cookies = {}
        self.token_ms = []

    def request(self, method, path, form=None):
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        started = time.perf_counter()
        try:
            self.conn.request(method, path, body=body, headers=headers)
            resp = self.conn.getresponse()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            self.conn.request(method, path, body=body, headers=headers)
            resp = self.conn.getresponse()
        data = resp.read()
        if path == "/token":
            self.token_ms.append((time.perf_counter() - started) * 1000)
        for value in resp.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return resp.status, resp.headers, data.decode("utf-8", "replace")


def field(page, name):
    match = re.search(r'name="%s" value="([^"]*)"' % re.escape(name), page)
    if not match:
        raise RuntimeError(f"no {name} field on the page")
    return match.group(1)


def location(headers):
    return urllib.parse.urlsplit(headers["Location"])


def one_flow(b, client_id, user, password):
    """An authorization-code flow; returns the token answer."""
    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
        "code_challenge": challenge, "code_challenge_method": "S256", "scope": "mcp:read",
        "state": "s", "resource": f"http://{b.host}:{b.port}/mcp",
    })
    status, headers, page = b.request("GET", "/authorize?" + query)
    if status == 200 and 'name="password"' in page:
        status, headers, page = b.request("POST", "/login", {
            "flow": field(page, "flow"), "csrf_token": field(page, "csrf_token"),
            "username": user, "password": password,
        })
        if status == 303 and location(headers).path == "/consent":
            status, headers, page = b.request("GET", location(headers).path + "?" + location(headers).query)
    if status == 200 and 'name="action"' in page:
        status, headers, page = b.request("POST", "/consent", {
            "flow": field(page, "flow"), "csrf_token": field(page, "csrf_token"), "action": "approve",
        })
    if status not in (302, 303):
        raise RuntimeError(f"authorization ended with {status}: {page[:200]}")
    code = urllib.parse.parse_qs(location(headers).query)["code"][0]
    status, _, body = b.request("POST", "/token", {
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "code_verifier": verifier, "client_id": client_id,
    })
    if status != 200:
        raise RuntimeError(f"code exchange: {status} {body[:200]}")
    return json.loads(body)


def main():
    base, client_id, user, password = sys.argv[1:5]
    flows, seconds, workers = int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
    browsers = [Browser(base) for _ in range(workers)]
    refresh = [None] * workers
    failures = []
    counts = {"flows": 0, "refreshes": 0}
    lock = threading.Lock()

    def flow_worker(i):
        b = browsers[i]
        try:
            for _ in range(flows // workers):
                refresh[i] = one_flow(b, client_id, user, password)["refresh_token"]
                with lock:
                    counts["flows"] += 1
        except Exception as e:  # noqa: BLE001 - reported, then exit 1
            failures.append(f"flow: {e}")

    def refresh_worker(i, until):
        b = browsers[i]
        token = refresh[i]
        try:
            while time.perf_counter() < until:
                status, _, body = b.request("POST", "/token", {
                    "grant_type": "refresh_token", "refresh_token": token, "client_id": client_id,
                })
                if status != 200:
                    raise RuntimeError(f"{status} {body[:200]}")
                token = json.loads(body)["refresh_token"]
                with lock:
                    counts["refreshes"] += 1
        except Exception as e:  # noqa: BLE001
            failures.append(f"refresh: {e}")

    # Each browser signs in first, one at a time (the server runs only a
    # couple of password checks at once): not timed.
    for b in browsers:
        one_flow(b, client_id, user, password)
        b.token_ms.clear()
    threads = [threading.Thread(target=flow_worker, args=(i,)) for i in range(workers)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flow_time = time.perf_counter() - began
    began = time.perf_counter()
    threads = [threading.Thread(target=refresh_worker, args=(i, began + seconds)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refresh_time = time.perf_counter() - began
    token_ms = sorted(ms for b in browsers for ms in b.token_ms)
    pct = lambda p: token_ms[min(len(token_ms) - 1, int(len(token_ms) * p))] if token_ms else 0.0
    print(f"RESULT flows={counts['flows']} flows_per_s={counts['flows'] / flow_time:.1f} "
          f"refreshes={counts['refreshes']} refreshes_per_s={counts['refreshes'] / refresh_time:.1f} "
          f"token_p50_ms={pct(0.50):.2f} token_p99_ms={pct(0.99):.2f} failures={len(failures)}")
    for f in failures[:5]:
        print(f, file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
