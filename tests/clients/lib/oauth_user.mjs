// What the TypeScript client scripts share: an in-memory OAuthClientProvider
// (the interface is the same in SDK 1.x and 2.x), a fetch that records every
// HTTP exchange for the failure report, and the person at the browser who
// logs in and approves (or denies) over plain HTTP.

/** HTTP exchanges seen so far, one line each: method, URL, status, body excerpt on errors. */
export const exchanges = [];

async function record(method, url, resp) {
  let line = `${method} ${url} -> ${resp.status}`;
  if (resp.status >= 400) {
    const body = await resp.clone().text().catch(() => "");
    line += ` ${resp.headers.get("www-authenticate") ?? ""} ${body.slice(0, 300)}`;
  }
  exchanges.push(line);
}

/** How many recorded exchanges got `status` with `text` in the line (challenge, body). */
export const countExchanges = (status, text) => exchanges.filter((l) => l.includes(` -> ${status} `) && l.includes(text)).length;

/** The status of the first request to `url` recorded at or after position `from`. */
function firstStatusAfter(from, url) {
  const line = exchanges.slice(from).find((l) => l.split(" ")[1] === String(url));
  return line ? Number(line.split(" -> ")[1].split(" ")[0]) : null;
}

/** A fetch for the SDK transports that records each exchange. */
export async function recordingFetch(input, init) {
  const resp = await fetch(input, init);
  await record(init?.method ?? "GET", input, resp);
  return resp;
}

/** Fails the script: the error, then every HTTP exchange that led to it. */
export function failWithExchanges(error) {
  console.error(`FAILED: ${error?.stack ?? error}\nHTTP exchanges:\n${exchanges.join("\n")}`);
  process.exit(1);
}

/** Keeps the client registration, tokens and PKCE verifier in memory. */
export class MemoryProvider {
  constructor(clientName) {
    this.clientName = clientName;
    this.authUrls = [];
  }
  get redirectUrl() {
    return "http://127.0.0.1:9/callback";
  }
  get clientMetadata() {
    return {
      client_name: this.clientName,
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
  // SDK 2.x binds the callback to the authorization server it discovered.
  saveDiscoveryState(state) {
    this.discovery = state;
  }
  discoveryState() {
    return this.discovery;
  }
}

/**
 * The person at the browser: opens the authorization URL, logs in if asked,
 * and approves. Returns the redirect back to the client as a URL (with
 * `code`, `state` and `iss`).
 */
export async function userAuthorizes(authUrl, username, password) {
  const cookies = new Map();
  const send = async (url, init = {}) => {
    const headers = { ...(init.headers ?? {}), cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join("; ") };
    const resp = await fetch(url, { ...init, headers, redirect: "manual" });
    await record(init.method ?? "GET", url, resp);
    for (const c of resp.headers.getSetCookie()) {
      const [pair] = c.split(";");
      const i = pair.indexOf("=");
      cookies.set(pair.slice(0, i), pair.slice(i + 1));
    }
    return resp;
  };
  const field = (html, name) => {
    const found = html.match(new RegExp(`name="${name}" value="([^"]*)"`));
    if (!found) throw new Error(`no ${name} field in the page:\n${html.slice(0, 500)}`);
    return found[1];
  };
  const form = (fields) => ({
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(fields).toString(),
  });
  // Redirects are followed until a page, or until the browser is sent
  // back to the client: through an identity provider the gateway signs
  // people in with, and back from it.
  const clientRedirect = new URL(new URL(authUrl).searchParams.get("redirect_uri"));
  const backAtClient = (u) => u.origin === clientRedirect.origin && u.pathname === clientRedirect.pathname;
  const follow = async (resp, from) => {
    let at = from;
    while ((resp.status === 302 || resp.status === 303) && !backAtClient(new URL(resp.headers.get("location"), at))) {
      at = new URL(resp.headers.get("location"), at);
      resp = await send(at);
    }
    return [resp, at];
  };
  let [resp, at] = await follow(await send(authUrl), new URL(authUrl));
  if (resp.status === 200) {
    const html = await resp.text();
    if (html.includes('name="password"') && !html.includes('name="flow"')) {
      // An identity provider's own login form (username field `login` or
      // `username`): sign in there, and follow its answer back.
      const action = new URL(html.match(/<form[^>]*action="([^"]*)"/)[1].replaceAll("&amp;", "&"), at);
      const user = html.includes('name="login"') ? "login" : "username";
      [resp, at] = await follow(await send(action, form({ [user]: username, password })), action);
    } else if (html.includes('name="password"')) {
      resp = await send(new URL("/login", authUrl), form({ flow: field(html, "flow"), csrf_token: field(html, "csrf_token"), username, password }));
      // POST-redirect-GET: the login answers with a redirect to the consent page.
      const next = resp.status === 303 ? new URL(resp.headers.get("location")) : null;
      if (next && next.origin === new URL(authUrl).origin && next.pathname === "/consent") resp = await send(next);
    } else {
      resp = new Response(html, { status: 200 });
    }
  }
  if (resp.status === 200) {
    const html = await resp.text();
    resp = await send(new URL("/consent", authUrl), form({ flow: field(html, "flow"), csrf_token: field(html, "csrf_token"), action: "approve" }));
  }
  if (resp.status !== 303 && resp.status !== 302) throw new Error(`authorization ended with ${resp.status}, not a redirect`);
  const back = new URL(resp.headers.get("location"));
  if (!back.searchParams.get("code")) throw new Error(`no code in ${back}`);
  return back;
}

/** Waits `ms` milliseconds. */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Revokes the provider's refresh token, then runs `call`: its family's
 * access tokens go with it, so the call meets a 401 at once, the SDK's
 * refresh is refused, and it cannot get in without the user. `refusal(e)`
 * names the SDK error that says so (else null). Returns the revocation's
 * status, the status of the next request to `mcpUrl`, and the outcome.
 */
export async function revokeThenCall(mcpUrl, provider, call, refusal) {
  const revokeStatus = await revoke(mcpUrl, provider.savedTokens.refresh_token, provider.client.client_id);
  const revokedAt = exchanges.length;
  const authsBefore = provider.authUrls.length;
  let afterRevoke = "allowed";
  try {
    await call();
  } catch (e) {
    const reason = refusal(e) ?? (provider.authUrls.length > authsBefore ? "authorization needed" : null);
    afterRevoke = reason ? `refused (${reason})` : `error: ${e.message}`;
  }
  return { revokeStatus, firstStatusAfterRevoke: firstStatusAfter(revokedAt, mcpUrl), afterRevoke };
}

/** Revokes a token at the authorization server (RFC 7009), as a public client. */
async function revoke(mcpUrl, token, clientId) {
  const resp = await fetch(new URL("/revoke", mcpUrl), {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ token, client_id: clientId }).toString(),
  });
  await record("POST", new URL("/revoke", mcpUrl), resp);
  return resp.status;
}
