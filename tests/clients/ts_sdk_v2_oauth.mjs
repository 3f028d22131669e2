// The official TypeScript MCP SDK 2.x (`@modelcontextprotocol/client`),
// unmodified, completing OAuth through the gateway in front of
// server-everything: 401 -> PRM -> AS metadata -> DCR -> authorize -> login +
// consent -> token -> initialize -> tools/list (filtered) -> allowed call ->
// 403 insufficient_scope and the SDK's own step-up re-authorization ->
// access-token expiry -> refresh -> call -> revoke -> refused. A long-running
// tool's progress notifications are timed as they arrive.
// Usage: node ts_sdk_v2_oauth.mjs <mcp-url> <username> <password>
// Prints one JSON line with what it saw; on failure prints the HTTP
// exchanges and exits non-zero.
import { Client, OAuthError, StreamableHTTPClientTransport, UnauthorizedError } from "@modelcontextprotocol/client";
import { MemoryProvider, countExchanges, failWithExchanges, recordingFetch, revokeThenCall, sleep, userAuthorizes } from "./lib/oauth_user.mjs";

const [mcpUrl, username, password] = process.argv.slice(2);
const provider = new MemoryProvider("TypeScript SDK 2.x e2e");
const newTransport = () => new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: recordingFetch });
const client = new Client({ name: "gateway-ts-sdk-v2", version: "1.0.0" });
let transport = newTransport();

// Runs `step`; when the SDK stops for the user (UnauthorizedError after it
// called redirectToAuthorization), the user authorizes, the SDK finishes
// with the redirect's parameters (state and iss checked), and `step` runs
// again. Returns the result and how many authorizations it took.
async function withUser(step) {
  const before = provider.authUrls.length;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return { result: await step(), authorizations: provider.authUrls.length - before };
    } catch (e) {
      if (!(e instanceof UnauthorizedError) || provider.authUrls.length === before + attempt) throw e;
      const back = await userAuthorizes(provider.authUrls.at(-1), username, password);
      await transport.finishAuth(back.searchParams);
    }
  }
  throw new Error("still unauthorized after authorizing three times");
}

const toolNames = async () => (await client.listTools()).tools.map((t) => t.name).sort();
const text = (result) => result.content[0].text;

try {
  // A transport starts once: each connection attempt gets a new one.
  await withUser(() => client.connect((transport = newTransport())));
  const firstScope = provider.savedTokens.scope;
  const tools = await toolNames();
  const echo = await client.callTool({ name: "echo", arguments: { message: "hi" } });

  // get-sum needs `math`: 403 insufficient_scope, then the SDK re-authorizes
  // with the wider scope by itself and the call is retried.
  const stepUp = await withUser(() => client.callTool({ name: "get-sum", arguments: { a: 20, b: 22 } }));
  const scopeAfterStepUp = provider.savedTokens.scope;
  const toolsAfterStepUp = await toolNames();

  // Progress notifications, timed on arrival.
  const started = Date.now();
  const progress = [];
  const longRun = await client.callTool(
    { name: "trigger-long-running-operation", arguments: { duration: 1.5, steps: 3 } },
    { onprogress: (p) => progress.push({ progress: p.progress, atMs: Date.now() - started }) },
  );
  const resultAtMs = Date.now() - started;

  // Let the access token expire; the SDK refreshes on the 401.
  const accessBefore = provider.savedTokens.access_token;
  await sleep(2500);
  const afterExpiry = await client.callTool({ name: "get-sum", arguments: { a: 1, b: 1 } });
  const refreshed = provider.savedTokens.access_token !== accessBefore;

  // The SDK meets the 401, its refresh is refused with invalid_grant, and it
  // surfaces that (or asks for a new authorization).
  const revocation = await revokeThenCall(
    mcpUrl,
    provider,
    () => client.callTool({ name: "echo", arguments: { message: "x" } }),
    (e) => (e instanceof OAuthError && e.code === "invalid_grant" ? "invalid_grant" : e instanceof UnauthorizedError ? "authorization needed" : null),
  );
  console.log(JSON.stringify({
    firstScope,
    tools,
    echo: text(echo),
    sum: text(stepUp.result),
    stepUpAuthorizations: stepUp.authorizations,
    scopeAfterStepUp,
    toolsAfterStepUp,
    longRun: text(longRun),
    progress,
    resultAtMs,
    refreshed,
    afterExpiry: text(afterExpiry),
    insufficientScope403s: countExchanges(403, 'error="insufficient_scope"'),
    ...revocation,
  }));
  process.exit(0);
} catch (e) {
  failWithExchanges(e);
}
