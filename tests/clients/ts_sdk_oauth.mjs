// The official TypeScript MCP SDK 1.x (`@modelcontextprotocol/sdk`),
// unmodified, completing OAuth through the gateway in front of
// server-everything: 401 -> PRM -> AS metadata -> DCR -> authorize -> login +
// consent -> token -> tools -> 403 step-up -> expiry and refresh ->
// revocation. Usage: node ts_sdk_oauth.mjs <mcp-url> <username> <password>
// Prints one JSON line with what it saw; on failure prints the HTTP
// exchanges and exits non-zero.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { auth, UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import { MemoryProvider, countExchanges, exchanges, failWithExchanges, recordingFetch, revokeThenCall, sleep, userAuthorizes } from "./lib/oauth_user.mjs";

const [mcpUrl, username, password] = process.argv.slice(2);
const provider = new MemoryProvider("TypeScript SDK 1.x e2e");

// The scope of the last 403 challenge the SDK met.
const lastChallengedScope = () => {
  const line = exchanges.findLast((l) => / -> 403 /.test(l));
  return line?.match(/scope="([^"]*)"/)?.[1];
};

const newTransport = () => new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: recordingFetch });

// Connects, going through authorization when the server asks for it.
async function connect() {
  for (let attempt = 0; attempt < 3; attempt++) {
    const client = new Client({ name: "gateway-ts-sdk-1", version: "1.0.0" });
    const transport = newTransport();
    try {
      await client.connect(transport);
      return client;
    } catch (e) {
      if (!(e instanceof UnauthorizedError)) throw e;
      const back = await userAuthorizes(provider.authUrls.at(-1), username, password);
      await transport.finishAuth(back.searchParams.get("code"));
    }
  }
  throw new Error("could not connect after authorizing");
}

// Calls a tool; on an authorization demand the user authorizes and the call
// is retried on a new connection. SDK 1.x answers 403 insufficient_scope by
// refreshing its token when it holds a refresh token (a refresh cannot
// widen the scope, RFC 6749 section 6) and then gives up with "Server
// returned 403 after trying upscoping" (typescript-sdk issue 2255, fixed in
// 2.x): the application then starts the authorization with the challenged
// scope itself, reported as `stepUp: "application"`.
async function callTool(client, name, args, options) {
  try {
    return { client, result: await client.callTool({ name, arguments: args }, undefined, options), stepUp: "none" };
  } catch (e) {
    let how = "sdk";
    if (!(e instanceof UnauthorizedError)) {
      if (!String(e.message).includes("after trying upscoping")) throw e;
      how = "application";
      provider.savedTokens = undefined;
      const result = await auth(provider, { serverUrl: new URL(mcpUrl), scope: lastChallengedScope(), fetchFn: recordingFetch });
      if (result !== "REDIRECT") throw new Error(`expected a new authorization, got ${result}`);
    }
    const back = await userAuthorizes(provider.authUrls.at(-1), username, password);
    await newTransport().finishAuth(back.searchParams.get("code"));
    const again = await connect();
    return { client: again, result: await again.callTool({ name, arguments: args }, undefined, options), stepUp: how };
  }
}

const text = (r) => r.result.content[0].text;

try {
  let client = await connect();
  const firstScope = provider.savedTokens.scope;
  const tools = (await client.listTools()).tools.map((t) => t.name).sort();
  const echo = await callTool(client, "echo", { message: "hi" });
  const stepUp = await callTool(echo.client, "get-sum", { a: 20, b: 22 });
  client = stepUp.client;
  const progress = [];
  const longRun = await callTool(client, "trigger-long-running-operation", { duration: 0.6, steps: 3 }, { onprogress: (p) => progress.push(p.progress) });
  // Let the access token expire; the SDK refreshes after the 401.
  const accessBefore = provider.savedTokens.access_token;
  await sleep(2500);
  const afterExpiry = await callTool(client, "get-sum", { a: 1, b: 1 });
  const refreshed = provider.savedTokens.access_token !== accessBefore;
  // The SDK meets the 401, tries its revoked refresh token, and either asks
  // for a new authorization or surfaces the AS's invalid_grant.
  const revocation = await revokeThenCall(
    mcpUrl,
    provider,
    () => afterExpiry.client.callTool({ name: "echo", arguments: { message: "x" } }),
    (e) => (e instanceof UnauthorizedError || e.constructor?.name === "InvalidGrantError" ? e.constructor.name : null),
  );
  console.log(JSON.stringify({
    firstScope,
    tools,
    echo: text(echo),
    sum: text(stepUp),
    stepUp: stepUp.stepUp,
    scopeAfterStepUp: provider.savedTokens?.scope ?? null,
    longRun: text(longRun),
    progress,
    refreshed,
    afterExpiry: text(afterExpiry),
    expiryStepUp: afterExpiry.stepUp,
    insufficientScope403s: countExchanges(403, 'error="insufficient_scope"'),
    ...revocation,
  }));
  // Open SSE streams would keep the process alive.
  process.exit(0);
} catch (e) {
  failWithExchanges(e);
}
