// A browser-based MCP client in headless Chromium (Debian's, driven by
// playwright-core): a page on its own origin talks to the gateway across
// origins with fetch, as a web client does. It reads the 401 challenge,
// fetches the protected resource and authorization server metadata,
// registers (DCR), sends its user through login and consent, exchanges the
// code (PKCE S256), initializes and calls `add`. A page on a second origin,
// not allowed, tries the same first calls and must be refused by the
// browser. Records the app page's console errors.
// Usage: node browser_cors.mjs <mcp-url> <app-port> <foreign-port> <username> <password>
// Prints one JSON line; on failure prints the HTTP exchanges and exits 1.
import { createServer } from "node:http";
import { chromium } from "playwright-core";

const [mcpUrl, appPort, foreignPort, username, password] = process.argv.slice(2);
const exchanges = [];
const consoleErrors = [];
// The browser reports the status of the deliberate unauthenticated call
// (step 1) on the console; it is the challenge being read, not an error.
const expectedChallenge = /Failed to load resource: the server responded with a status of 401/;

// Each origin serves an empty page at every path (its callback included).
function site(port) {
  const server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>app</title><p>web MCP client</p>");
  });
  return new Promise((ok) => server.listen(Number(port), "127.0.0.1", () => ok(server)));
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const servers = [await site(appPort), await site(foreignPort)];

// Steps 1-3 in the page: challenge, discovery, registration, PKCE.
async function discoverAndRegister(mcpUrl) {
  const init = { jsonrpc: "2.0", id: 1, method: "initialize",
    params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "web", version: "1" } } };
  const first = await fetch(mcpUrl, { method: "POST", body: JSON.stringify(init),
    headers: { "content-type": "application/json", accept: "application/json, text/event-stream" } });
  const challenge = first.headers.get("www-authenticate") ?? "";
  const prmUrl = /resource_metadata="([^"]+)"/.exec(challenge)?.[1];
  const prm = await (await fetch(prmUrl)).json();
  const issuer = prm.authorization_servers[0];
  const meta = await (await fetch(`${issuer}/.well-known/oauth-authorization-server`)).json();
  const redirectUri = `${location.origin}/callback`;
  const registration = await fetch(meta.registration_endpoint, { method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ client_name: "Web MCP client", redirect_uris: [redirectUri], token_endpoint_auth_method: "none" }) });
  const client = await registration.json();
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  const b64url = (b) => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const verifier = b64url(bytes);
  const codeChallenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const authorize = new URL(meta.authorization_endpoint);
  for (const [k, v] of Object.entries({ response_type: "code", client_id: client.client_id, redirect_uri: redirectUri,
    code_challenge: codeChallenge, code_challenge_method: "S256", scope: "mcp math", state: "web-state", resource: mcpUrl })) {
    authorize.searchParams.set(k, v);
  }
  return { challengeStatus: first.status, challenge, registered: registration.status === 201,
    clientId: client.client_id, redirectUri, verifier, tokenEndpoint: meta.token_endpoint, authorizeUrl: authorize.href };
}

// Steps 5-6 in the page: code exchange, initialize, a tool call.
async function exchangeAndCall({ mcpUrl, flow, code }) {
  const tokenAnswer = await fetch(flow.tokenEndpoint, { method: "POST", body: new URLSearchParams({
    grant_type: "authorization_code", code, redirect_uri: flow.redirectUri, client_id: flow.clientId,
    code_verifier: flow.verifier, resource: mcpUrl }) });
  const tokens = await tokenAnswer.json();
  const headers = { "content-type": "application/json", accept: "application/json, text/event-stream",
    authorization: `Bearer ${tokens.access_token}` };
  const messages = async (resp) => {
    const text = await resp.text();
    if (!(resp.headers.get("content-type") ?? "").startsWith("text/event-stream")) return [JSON.parse(text)];
    return text.split("\n").filter((l) => l.startsWith("data:") && l.slice(5).trim()).map((l) => JSON.parse(l.slice(5)));
  };
  const init = await fetch(mcpUrl, { method: "POST", headers, body: JSON.stringify({ jsonrpc: "2.0", id: 1,
    method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "web", version: "1" } } }) });
  await messages(init);
  const session = init.headers.get("mcp-session-id");
  const inSession = { ...headers, "mcp-session-id": session, "mcp-protocol-version": "2025-06-18" };
  await fetch(mcpUrl, { method: "POST", headers: inSession, body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }) });
  const call = await fetch(mcpUrl, { method: "POST", headers: inSession, body: JSON.stringify({ jsonrpc: "2.0", id: 2,
    method: "tools/call", params: { name: "add", arguments: { a: 40, b: 2 } } }) });
  const answer = (await messages(call)).find((m) => m.id === 2);
  return { tokenType: tokens.token_type, initializeStatus: init.status, hasSessionId: Boolean(session),
    toolResult: answer?.result?.content?.[0]?.text ?? JSON.stringify(answer) };
}

// The foreign page's attempts: each must fail in the browser (TypeError).
async function tryFromForeignOrigin(mcpUrl) {
  const attempt = (p) => p.then((r) => `read ${r.status}`, (e) => e.name);
  const origin = new URL(mcpUrl).origin;
  return {
    mcp: await attempt(fetch(mcpUrl, { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }) })),
    metadata: await attempt(fetch(`${origin}/.well-known/oauth-authorization-server`)),
  };
}

try {
  const page = await browser.newPage();
  page.on("console", (m) => m.type() === "error" && !expectedChallenge.test(m.text()) && consoleErrors.push(m.text()));
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  page.on("response", (r) => exchanges.push(`${r.request().method()} ${r.url()} -> ${r.status()}`));
  await page.goto(`http://127.0.0.1:${appPort}/`);
  const flow = await page.evaluate(discoverAndRegister, mcpUrl);

  // Step 4: the user signs in and allows, as a person does.
  await page.goto(flow.authorizeUrl);
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await Promise.all([page.waitForURL((u) => u.pathname === "/consent"), page.getByRole("button", { name: "Sign in" }).click()]);
  await Promise.all([page.waitForURL((u) => u.port === String(appPort)), page.getByRole("button", { name: "Allow" }).click()]);
  const code = new URL(page.url()).searchParams.get("code");
  const called = await page.evaluate(exchangeAndCall, { mcpUrl, flow, code });

  const foreignPage = await browser.newPage();
  await foreignPage.goto(`http://127.0.0.1:${foreignPort}/`);
  const foreign = await foreignPage.evaluate(tryFromForeignOrigin, mcpUrl);

  const app = { challengeStatus: flow.challengeStatus, challenge: flow.challenge, registered: flow.registered,
    ...called, consoleErrors };
  console.log(JSON.stringify({ app, foreign }));
} catch (e) {
  console.error(`FAILED: ${e.stack ?? e}\nHTTP exchanges:\n${exchanges.join("\n")}\nconsole errors:\n${consoleErrors.join("\n")}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  for (const s of servers) s.close();
}
