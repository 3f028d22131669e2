// The official TypeScript MCP SDK, unmodified, completing OAuth through the
// gateway's built-in authorization server: 401 -> PRM -> AS metadata -> DCR
// -> authorize -> login + consent (driven here as a person would, with
// plain HTTP) -> token -> tools -> 403 step-up -> expiry and refresh ->
// revocation. Usage: node ts_sdk_oauth.mjs <mcp-url> <username> <password>
// Prints one JSON line with what it saw; on failure prints the HTTP
// exchanges and exits non-zero.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { auth, UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";

const [mcpUrl, username, password] = process.argv.slice(2);
const exchanges = [];
let lastChallengedScope;

// Records every HTTP exchange the SDK makes, for the failure report, and the
// scope of the last 403 challenge.
const recordingFetch = async (input, init) => {
  const resp = await fetch(input, init);
  exchanges.push(`${init?.method ?? "GET"} ${input} -> ${resp.status}`);
  const challenge = resp.headers.get("www-authenticate") ?? "";
  const scope = challenge.match(/scope="([^"]*)"/);
  if (resp.status === 403 && scope) lastChallengedScope = scope[1];
  return resp;
};

class MemoryProvider {
  constructor() {
    this.authUrls = [];
  }
  get redirectUrl() {
    return "http://127.0.0.1:9/callback";
  }
  get clientMetadata() {
    return {
      client_name: "TypeScript SDK e2e",
      redirect_uris: [this.redirectUrl],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
      application_type: "native",
    };
  }
  state() {
    return "state-" + Math.random().toString(36).slice(2);
  }
  clientInformation() {
    return this.client;
  }
  saveClientInformation(info) {
    this.client = info;
  }
  tokens() {
    return this.savedTokens;
  }
  saveTokens(tokens) {
    this.savedTokens = tokens;
  }
  redirectToAuthorization(url) {
    this.authUrls.push(new URL(url));
  }
  saveCodeVerifier(verifier) {
    this.verifier = verifier;
  }
  codeVerifier() {
    return this.verifier;
  }
}

// The person at the browser: logs in and approves; returns the code.
async function userAuthorizes(authUrl) {
  const cookies = new Map();
  const send = async (url, init = {}) => {
    const headers = { ...(init.headers ?? {}), cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join("; ") };
    const resp = await fetch(url, { ...init, headers, redirect: "manual" });
    exchanges.push(`${init.method ?? "GET"} ${url} -> ${resp.status}`);
    for (const c of resp.headers.getSetCookie()) {
      const [pair] = c.split(";");
      const i = pair.indexOf("=");
      cookies.set(pair.slice(0, i), pair.slice(i + 1));
    }
    return resp;
  };
  const field = (html, name) => html.match(new RegExp(`name="${name}" value="([^"]*)"`))[1];
  const form = (fields) => ({
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(fields).toString(),
  });
  let resp = await send(authUrl);
  if (resp.status === 200) {
    const html = await resp.text();
    if (html.includes('name="password"')) {
      resp = await send(new URL("/login", authUrl), form({ flow: field(html, "flow"), csrf_token: field(html, "csrf_token"), username, password }));
    } else {
      resp = new Response(html, { status: 200 });
    }
  }
  if (resp.status === 200) {
    const html = await resp.text();
    resp = await send(new URL("/consent", authUrl), form({ flow: field(html, "flow"), csrf_token: field(html, "csrf_token"), action: "approve" }));
  }
  const back = new URL(resp.headers.get("location"));
  if (!back.searchParams.get("code")) throw new Error(`no code in ${back}`);
  return back.searchParams.get("code");
}

const provider = new MemoryProvider();

// Connects, going through authorization when the server asks for it.
async function connect() {
  for (let attempt = 0; attempt < 3; attempt++) {
    const client = new Client({ name: "gateway-ts-sdk-oauth", version: "1.0.0" });
    const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: recordingFetch });
    try {
      await client.connect(transport);
      return { client, transport };
    } catch (e) {
      if (!(e instanceof UnauthorizedError)) throw e;
      await transport.finishAuth(await userAuthorizes(provider.authUrls.at(-1)));
    }
  }
  throw new Error("could not connect after authorizing");
}

// Calls a tool. On an authorization demand the user authorizes and the call
// is retried. SDK 1.32 answers 403 insufficient_scope by refreshing its token
// (which cannot widen the scope) and then gives up with "Server returned 403
// after trying upscoping"; an application then has to start a new
// authorization with the challenged scope itself, which is what happens
// here, reported as `stepUp: "application"`.
async function callTool(session, name, args, options) {
  try {
    return { session, result: await session.client.callTool({ name, arguments: args }, undefined, options) };
  } catch (e) {
    let how = "sdk";
    if (!(e instanceof UnauthorizedError)) {
      if (!String(e.message).includes("after trying upscoping")) throw e;
      how = "application";
      provider.savedTokens = undefined;
      const result = await auth(provider, { serverUrl: new URL(mcpUrl), scope: lastChallengedScope, fetchFn: recordingFetch });
      if (result !== "REDIRECT") throw new Error(`expected a new authorization, got ${result}`);
    }
    const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: recordingFetch });
    await transport.finishAuth(await userAuthorizes(provider.authUrls.at(-1)));
    const again = await connect();
    return { session: again, result: await again.client.callTool({ name, arguments: args }, undefined, options), stepUp: how };
  }
}

try {
  let session = await connect();
  const firstScope = provider.savedTokens.scope;
  const tools = (await session.client.listTools()).tools.map((t) => t.name).sort();
  const echo = await callTool(session, "echo", { text: "hi" });
  const stepUp = await callTool(echo.session, "add", { a: 20, b: 22 });
  session = stepUp.session;
  const progress = [];
  const countdown = await callTool(session, "countdown", { steps: 3, interval_ms: 100 }, { onprogress: (p) => progress.push(p.progress) });
  // Let the access token expire; the SDK refreshes after the 401.
  const accessBefore = provider.savedTokens.access_token;
  await new Promise((r) => setTimeout(r, 2500));
  const afterExpiry = await callTool(session, "add", { a: 1, b: 1 });
  const refreshed = provider.savedTokens.access_token !== accessBefore;
  // Revoke the refresh token: the next call cannot get in without the user.
  const revoke = await fetch(new URL("/revoke", mcpUrl), {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ token: provider.savedTokens.refresh_token, client_id: provider.client.client_id }).toString(),
  });
  let afterRevoke = "allowed";
  const authsBefore = provider.authUrls.length;
  await new Promise((r) => setTimeout(r, 2500));
  try {
    await afterExpiry.session.client.callTool({ name: "echo", arguments: { text: "x" } });
  } catch (e) {
    // The SDK meets the 401, tries its (revoked) refresh token, and either
    // asks for a new authorization or surfaces the AS's invalid_grant.
    const refused = e instanceof UnauthorizedError || e.constructor?.name === "InvalidGrantError" || provider.authUrls.length > authsBefore;
    afterRevoke = refused ? `refused (${e.constructor?.name})` : `error: ${e.message}`;
  }
  console.log(JSON.stringify({
    firstScope,
    tools,
    echo: echo.result.content[0].text,
    add: stepUp.result.content[0].text,
    stepUp: stepUp.stepUp ?? "none",
    scopeAfterStepUp: provider.savedTokens?.scope ?? null,
    countdown: countdown.result.content[0].text,
    progress,
    refreshed,
    afterExpiry: afterExpiry.result.content[0].text,
    revokeStatus: revoke.status,
    afterRevoke,
  }));
  // Open SSE streams would keep the process alive.
  process.exit(0);
} catch (e) {
  console.error(`FAILED: ${e.stack ?? e}\nHTTP exchanges:\n${exchanges.join("\n")}`);
  process.exit(1);
}
