"""The official Python MCP SDK (`mcp` 2.x), unmodified, completing OAuth
through the gateway in front of server-everything with its
OAuthClientProvider (which checks the PRM `resource`, the metadata `issuer`
and the `iss` response parameter): tools/list (filtered), an allowed call,
a 403 insufficient_scope answered by the SDK's own re-authorization with the
wider scope, access-token expiry and the SDK's refresh, then revocation,
after which the SDK cannot get in without the user. The "user" logs in and
consents over plain HTTP.
With `--mix-up`, the callback reports another authorization server's `iss`
(the mix-up attack of RFC 9207), and the script reports whether the SDK
refused it before sending the code to the token endpoint.
Usage: python python_sdk_oauth.py <mcp-url> <username> <password> [--mix-up]
Prints one JSON line; on failure prints the HTTP exchanges and exits 1."""

import asyncio
import json
import time
import re
import sys
import traceback
from urllib.parse import parse_qs, urljoin, urlparse

import httpx2
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

MCP_URL, USERNAME, PASSWORD = sys.argv[1:4]
MIX_UP = sys.argv[4:5] == ["--mix-up"]
REDIRECT = "http://127.0.0.1:9/callback"
exchanges: list[str] = []


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


authorization_urls: list[str] = []
# Set once the tokens are revoked: the user then declines to log in again.
user_declines = False


async def redirect_handler(url: str) -> None:
    authorization_urls.append(url)


def field(html: str, name: str) -> str:
    return re.search(f'name="{name}" value="([^"]*)"', html).group(1)


async def callback_handler() -> AuthorizationCodeResult:
    """The person at the browser: logs in, approves, returns the redirect."""
    if user_declines:
        raise PermissionError("the user declined a new authorization")
    url = authorization_urls[-1]
    async with httpx2.AsyncClient(follow_redirects=False) as browser:
        resp = await browser.get(url)
        exchanges.append(f"GET {url} -> {resp.status_code}")
        if resp.status_code == 200 and 'name="password"' in resp.text:
            form = {"flow": field(resp.text, "flow"), "csrf_token": field(resp.text, "csrf_token"),
                    "username": USERNAME, "password": PASSWORD}
            resp = await browser.post(urljoin(url, "/login"), data=form)
            exchanges.append(f"POST /login -> {resp.status_code}")
            # POST-redirect-GET: the login answers with a redirect to the consent page.
            if resp.status_code == 303 and urlparse(resp.headers["location"]).path == "/consent":
                resp = await browser.get(resp.headers["location"])
                exchanges.append(f"GET /consent -> {resp.status_code}")
        if resp.status_code == 200:
            form = {"flow": field(resp.text, "flow"), "csrf_token": field(resp.text, "csrf_token"), "action": "approve"}
            resp = await browser.post(urljoin(url, "/consent"), data=form)
            exchanges.append(f"POST /consent -> {resp.status_code}")
        query = parse_qs(urlparse(resp.headers["location"]).query)
        iss = "https://attacker.example" if MIX_UP else query.get("iss", [None])[0]
        return AuthorizationCodeResult(code=query["code"][0], state=query.get("state", [None])[0], iss=iss)


async def log_response(resp: httpx2.Response) -> None:
    line = f"{resp.request.method} {resp.request.url} -> {resp.status_code}"
    if resp.status_code >= 400:
        await resp.aread()
        line += f" {resp.headers.get('www-authenticate', '')} {resp.text[:300]}"
    exchanges.append(line)


async def revoke(token: str, client_id: str) -> int:
    """RFC 7009 revocation at the gateway's authorization server."""
    async with httpx2.AsyncClient() as http:
        resp = await http.post(urljoin(MCP_URL, "/revoke"), data={"token": token, "client_id": client_id})
        exchanges.append(f"POST /revoke -> {resp.status_code}")
        return resp.status_code


async def main() -> dict:
    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=MCP_URL,
        client_metadata=OAuthClientMetadata(
            client_name="Python SDK e2e",
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    seen: dict = {}
    if MIX_UP:
        try:
            async with httpx2.AsyncClient(auth=provider, event_hooks={"response": [log_response]}) as http:
                async with streamable_http_client(MCP_URL, http_client=http) as (read, write):
                    async with ClientSession(read, write) as session:
                        await session.initialize()
            seen["mix_up"] = "accepted"
        except BaseException as e:
            seen["mix_up"] = f"refused: {e!r}"
        seen["token_requests"] = sum("/token -> " in line for line in exchanges)
        seen["authorizations"] = len(authorization_urls)
        return seen
    try:
        await run_flow(provider, storage, seen)
    except BaseException as e:
        if not user_declines:
            raise
        seen["after_revoke"] = f"refused ({type(e).__name__})"
    seen["authorizations_after_revoke"] = len(authorization_urls)
    return seen


async def run_flow(provider: OAuthClientProvider, storage: MemoryStorage, seen: dict) -> None:
    """The session: every step records what it saw in `seen`."""
    global user_declines
    async with httpx2.AsyncClient(auth=provider, event_hooks={"response": [log_response]}, timeout=30) as http:
        async with streamable_http_client(MCP_URL, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                seen["scope"] = storage.tokens.scope
                seen["client_registered"] = storage.client is not None
                seen["tools"] = sorted(t.name for t in (await session.list_tools()).tools)
                seen["echo"] = (await session.call_tool("echo", {"message": "hi"})).content[0].text

                # get-sum needs `math`: 403, the SDK re-authorizes with the
                # challenged scope and retries.
                seen["sum"] = (await session.call_tool("get-sum", {"a": 20, "b": 22})).content[0].text
                seen["authorizations_after_step_up"] = len(authorization_urls)
                seen["scope_after_step_up"] = storage.tokens.scope
                seen["tools_after_step_up"] = sorted(t.name for t in (await session.list_tools()).tools)

                progress: list[float] = []

                async def on_progress(value: float, total: float | None, message: str | None) -> None:
                    progress.append(value)

                await session.call_tool("trigger-long-running-operation", {"duration": 0.6, "steps": 3},
                                        progress_callback=on_progress)
                seen["progress"] = progress

                # The access token expires; the SDK refreshes before the next request.
                access_before = storage.tokens.access_token
                await asyncio.sleep(2.5)
                seen["after_expiry"] = (await session.call_tool("get-sum", {"a": 1, "b": 1})).content[0].text
                seen["refreshed"] = storage.tokens.access_token != access_before
                seen["authorizations_after_refresh"] = len(authorization_urls)

                # Revoke the refresh token: its family's access tokens go with
                # it, so the next request gets a 401 at once; the SDK has to
                # ask the user, who declines, and its transport fails.
                seen["revoke_status"] = await revoke(storage.tokens.refresh_token, storage.client.client_id)
                revoked_at = len(exchanges)
                seen["insufficient_scope_403s"] = sum(
                    " -> 403 " in line and 'error="insufficient_scope"' in line for line in exchanges)
                user_declines = True
                try:
                    await session.call_tool("echo", {"message": "x"}, read_timeout_seconds=20)
                finally:
                    seen["first_status_after_revoke"] = next(
                        (int(line.split(" -> ")[1].split(" ")[0]) for line in exchanges[revoked_at:]
                         if line.split(" ")[1] == MCP_URL), None)
                seen["after_revoke"] = "allowed"


try:
    print(json.dumps(asyncio.run(main())))
except BaseException:
    traceback.print_exc()
    print("HTTP exchanges:\n" + "\n".join(exchanges), file=sys.stderr)
    sys.exit(1)
