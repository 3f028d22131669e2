// Lists and calls the demo tools through the gateway with the official
// TypeScript MCP SDK, unmodified, without auth (the gateway's `auth:
// { disabled: true }`). Usage: node ts_sdk_client.mjs <mcp-url>
// Prints one JSON line with what it saw; on failure prints the HTTP
// exchanges and exits non-zero.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { failWithExchanges, recordingFetch } from "./lib/oauth_user.mjs";

try {
  const url = new URL(process.argv[2]);
  const client = new Client({ name: "gateway-ts-sdk-test", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(url, { fetch: recordingFetch });
  await client.connect(transport);
  const tools = (await client.listTools()).tools.map((t) => t.name);
  const add = await client.callTool({ name: "add", arguments: { a: 20, b: 22 } });
  const progress = [];
  const countdown = await client.callTool(
    { name: "countdown", arguments: { steps: 3, interval_ms: 100 } },
    undefined,
    { onprogress: (p) => progress.push(p.progress) },
  );
  await transport.terminateSession();
  await client.close();
  console.log(JSON.stringify({
    protocol: transport.protocolVersion ?? null,
    tools,
    add: add.content[0].text,
    countdown: countdown.content[0].text,
    progress,
  }));
} catch (e) {
  failWithExchanges(e);
}
