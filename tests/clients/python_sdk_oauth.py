"""The official Python MCP SDK (`mcp` 2.x), unmodified, completing OAuth
through the gateway's built-in authorization server with its
OAuthClientProvider (which checks the PRM `resource`, the metadata `issuer`
and the `iss` response parameter). The "user" logs in and consents over
plain HTTP. Usage: python python_sdk_oauth.py <mcp-url> <username> <password>
Prints one JSON line; on failure prints the HTTP exchanges and exits 1."""

import asyncio
import json
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


async def redirect_handler(url: str) -> None:
    authorization_urls.append(url)


def field(html: str, name: str) -> str:
    return re.search(f'name="{name}" value="([^"]*)"', html).group(1)


async def callback_handler() -> AuthorizationCodeResult:
    """The person at the browser: logs in, approves, returns the redirect."""
    url = authorization_urls[-1]
    async with httpx2.AsyncClient(follow_redirects=False) as browser:
        resp = await browser.get(url)
        exchanges.append(f"GET {url} -> {resp.status_code}")
        if resp.status_code == 200 and 'name="password"' in resp.text:
            form = {"flow": field(resp.text, "flow"), "csrf_token": field(resp.text, "csrf_token"),
                    "username": USERNAME, "password": PASSWORD}
            resp = await browser.post(urljoin(url, "/login"), data=form)
            exchanges.append(f"POST /login -> {resp.status_code}")
        if resp.status_code == 200:
            form = {"flow": field(resp.text, "flow"), "csrf_token": field(resp.text, "csrf_token"), "action": "approve"}
            resp = await browser.post(urljoin(url, "/consent"), data=form)
            exchanges.append(f"POST /consent -> {resp.status_code}")
        query = parse_qs(urlparse(resp.headers["location"]).query)
        return AuthorizationCodeResult(code=query["code"][0], state=query.get("state", [None])[0],
                                       iss=query.get("iss", [None])[0])


async def log_response(resp: httpx2.Response) -> None:
    exchanges.append(f"{resp.request.method} {resp.request.url} -> {resp.status_code}")


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
    async with httpx2.AsyncClient(auth=provider, event_hooks={"response": [log_response]}, timeout=30) as http:
        async with streamable_http_client(MCP_URL, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = sorted(t.name for t in (await session.list_tools()).tools)
                echo = await session.call_tool("echo", {"text": "hi"})
                return {
                    "scope": storage.tokens.scope if storage.tokens else None,
                    "client_registered": storage.client is not None,
                    "tools": tools,
                    "echo": echo.content[0].text,
                    "authorizations": len(authorization_urls),
                }


try:
    print(json.dumps(asyncio.run(main())))
except BaseException:
    traceback.print_exc()
    print("HTTP exchanges:\n" + "\n".join(exchanges), file=sys.stderr)
    sys.exit(1)
