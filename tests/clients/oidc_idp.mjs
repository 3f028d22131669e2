// Test OpenID Provider for integration tests, built on oidc-provider (panva).
//
//   node oidc_idp.mjs <config.json>
//
// Prints exactly ONE JSON line on stdout once listening, e.g.
//   {"issuer":"http://127.0.0.1:40123","port":40123,...}
// Everything else (oidc-provider notices/warnings, logs) goes to stderr.
//
// See README.md next to this file for the config / control / login contract.

// oidc-provider prints some NOTICEs with console.info (=> stdout). Route all
// console output to stderr BEFORE loading oidc-provider so that stdout only
// ever carries the single ready line. (Static imports are hoisted, hence the
// dynamic import below.)
for (const m of ['log', 'info', 'debug']) console[m] = (...a) => console.error(...a);

const { readFileSync } = await import('node:fs');
const http = await import('node:http');
const crypto = await import('node:crypto');
const { default: Provider } = await import('oidc-provider');

const log = (...a) => console.error('[oidc_idp]', ...a);

// ---------------------------------------------------------------- config ---
const cfgPath = process.argv[2];
if (!cfgPath) {
  console.error('usage: node oidc_idp.mjs <config.json>');
  process.exit(2);
}
const cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));

const bindHost = cfg.host ?? '127.0.0.1';
const issuerHost = cfg.issuer_host ?? bindHost; // e.g. "localhost"
const password = cfg.password ?? 'pw';
const requirePkce = cfg.require_pkce ?? true;
const signingAlgs = cfg.signing_algs ?? ['RS256', 'ES256'];
const accounts = new Map(Object.entries(cfg.accounts ?? {}));
let autoLogin = cfg.auto_login ?? null; // account id => skip the login form

const claimsConfig = cfg.claims ?? {
  openid: ['sub'],
  email: ['email', 'email_verified'],
  profile: ['name', 'preferred_username', 'given_name', 'family_name'],
  groups: ['groups'],
};

const ttl = {
  AccessToken: 3600,
  AuthorizationCode: 60,
  ClientCredentials: 600,
  IdToken: 3600,
  RefreshToken: 86400,
  Interaction: 600,
  Session: 86400,
  Grant: 86400,
  ...(cfg.ttl ?? {}),
};

const clients = (cfg.clients ?? []).map((c) => {
  const out = {
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...c, // any other client metadata is passed through verbatim
  };
  if (out.token_endpoint_auth_method === 'none') delete out.client_secret;
  return out;
});

// Cookie signing keys: random per process, but stable across key rotations
// (the provider object is rebuilt on rotation, sessions must survive).
const cookieKeys = cfg.cookie_keys ?? [crypto.randomBytes(32).toString('base64url')];

// ------------------------------------------------------------------ keys ---
let kidCounter = 0;
function genKey(alg) {
  const kid = `k${++kidCounter}-${alg.toLowerCase()}-${crypto.randomBytes(4).toString('hex')}`;
  let kp;
  switch (alg) {
    case 'RS256': case 'PS256': kp = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }); break;
    case 'ES256': kp = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }); break;
    case 'ES384': kp = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' }); break;
    case 'EdDSA': case 'Ed25519': kp = crypto.generateKeyPairSync('ed25519'); break;
    default: throw new Error(`unsupported signing alg ${alg}`);
  }
  return { ...kp.privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}
const genKeySet = () => signingAlgs.map(genKey);
let currentKeys = genKeySet();
let retiredKeys = []; // still published (verification only) if rotate keep_old=true

// ------------------------------------------------------------- accounts ----
function findAccount(_ctx, id) {
  const claims = accounts.get(id);
  if (!claims) return undefined;
  return {
    accountId: id,
    // Read the live map on every call so control-channel updates are visible
    // to userinfo and to ID tokens issued on refresh.
    async claims() {
      return { ...(accounts.get(id) ?? {}), sub: id };
    },
  };
}

// Auto-consent: every requested OIDC scope / claim is granted.
async function loadExistingGrant(ctx) {
  const { oidc } = ctx;
  const accountId = oidc.account.accountId;
  const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
  let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
  if (grant && (grant.accountId !== accountId || grant.clientId !== oidc.client.clientId)) grant = undefined;
  grant ??= new oidc.provider.Grant({ accountId, clientId: oidc.client.clientId });
  const scopes = [...oidc.requestParamOIDCScopes];
  if (scopes.length) grant.addOIDCScope(scopes.join(' '));
  const claims = [...oidc.requestParamClaims];
  if (claims.length) grant.addOIDCClaims(claims);
  await grant.save();
  return grant;
}

// -------------------------------------------------------------- storage ----
// Own in-memory adapter. The store lives at module level so that it survives
// provider rebuilds (key rotation): sessions, grants, codes and refresh tokens
// stay valid. (oidc-provider's built-in MemoryAdapter gives every Provider
// instance a fresh store, and logs a warning.)
const store = new Map(); // "Model:id" -> { payload, exp (ms) }
const sessionUids = new Map(); // uid -> session id
const userCodes = new Map(); // userCode -> id
const grantMembers = new Map(); // grantId -> Set("Model:id")
const grantable = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode']);

class TestAdapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  static get(key) {
    const e = store.get(key);
    if (!e) return undefined;
    if (e.exp !== undefined && e.exp <= Date.now()) { store.delete(key); return undefined; }
    return e.payload;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    store.set(key, { payload, exp: typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined });
    if (this.model === 'Session' && payload.uid) sessionUids.set(payload.uid, id);
    if (payload.userCode) userCodes.set(payload.userCode, id);
    if (grantable.has(this.model) && payload.grantId) {
      if (!grantMembers.has(payload.grantId)) grantMembers.set(payload.grantId, new Set());
      grantMembers.get(payload.grantId).add(key);
    }
  }

  async find(id) { return TestAdapter.get(this.key(id)); }

  async findByUid(uid) { const id = sessionUids.get(uid); return id ? this.find(id) : undefined; }

  async findByUserCode(code) { const id = userCodes.get(code); return id ? this.find(id) : undefined; }

  async consume(id) { const p = TestAdapter.get(this.key(id)); if (p) p.consumed = Math.floor(Date.now() / 1000); }

  async destroy(id) { store.delete(this.key(id)); }

  async revokeByGrantId(grantId) {
    for (const key of grantMembers.get(grantId) ?? []) store.delete(key);
    grantMembers.delete(grantId);
  }
}

// ------------------------------------------------------------- provider ----
let issuer; // known after listen()
let provider;
let providerCallback;

function buildProvider() {
  const p = new Provider(issuer, {
    adapter: TestAdapter,
    clients: structuredClone(clients),
    jwks: { keys: [...currentKeys, ...retiredKeys].map((k) => ({ ...k })) },
    findAccount,
    claims: claimsConfig,
    conformIdTokenClaims: false, // scope-requested claims go into the ID token too
    responseTypes: cfg.response_types ?? ['code'],
    loadExistingGrant,
    cookies: { keys: cookieKeys },
    pkce: { required: () => requirePkce },
    features: {
      devInteractions: { enabled: false }, // own interaction handler below
      userinfo: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: !!cfg.introspection },
      rpInitiatedLogout: { enabled: true },
      ...(cfg.features ?? {}),
    },
    enabledJWA: { idTokenSigningAlgValues: signingAlgs },
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    ttl,
    clockTolerance: cfg.clock_tolerance ?? 5,
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    clientBasedCORS: () => true,
    renderError: async (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  });
  p.on('server_error', (_ctx, err) => log('server_error', err));
  if (cfg.verbose) {
    for (const ev of ['authorization.error', 'grant.error', 'userinfo.error', 'backchannel.error']) {
      p.on(ev, (_ctx, err) => log(ev, err?.message, err?.error_description ?? ''));
    }
  }
  provider = p;
  providerCallback = p.callback();
}

// ---------------------------------------------------------------- helpers --
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res, status, body, type = 'application/json') {
  const data = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(data);
}

function publicJwks() {
  return [...currentKeys, ...retiredKeys].map(({ kid, alg, kty }) => ({ kid, alg, kty }));
}

function state() {
  return {
    issuer,
    signing_kids: currentKeys.map((k) => k.kid),
    published_kids: publicJwks().map((k) => k.kid),
    accounts: Object.fromEntries(accounts),
    auto_login: autoLogin,
  };
}

function loginPage(uid, params, error) {
  return `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Test IdP sign-in</title></head><body><main>
<h1>Test IdP sign-in</h1>
${error ? `<p id="error" role="alert" style="color:#a4161a">${esc(error)}</p>` : ''}
<p>client: ${esc(params.client_id)}</p>
<form id="login" method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
  <label for="idp-login">Username</label>
  <input type="text" id="idp-login" name="login" value="${esc(params.login_hint)}" autofocus>
  <label for="idp-password">Password</label>
  <input type="password" id="idp-password" name="password">
  <button type="submit">Sign in</button>
</form>
<p><a href="/interaction/${esc(uid)}/abort">Cancel</a></p>
</main></body></html>`;
}

// ----------------------------------------------------------- interactions --
async function handleInteraction(req, res, uid, action) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    return send(res, 400, { error: 'interaction_not_found', error_description: err.message });
  }
  if (details.uid !== uid) {
    return send(res, 400, { error: 'interaction_mismatch', error_description: 'uid does not match interaction cookie' });
  }
  const { prompt, params } = details;

  if (action === 'abort') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }

  if (prompt.name === 'consent') {
    // Normally avoided by loadExistingGrant; handled anyway (e.g. prompt=consent).
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [ind, sc] of Object.entries(d.missingResourceScopes ?? {})) grant.addResourceScope(ind, sc.join(' '));
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }

  if (prompt.name !== 'login') {
    return send(res, 501, { error: 'unsupported_prompt', prompt: prompt.name });
  }

  if (req.method === 'GET') {
    if (autoLogin && accounts.has(autoLogin)) {
      return provider.interactionFinished(req, res, { login: { accountId: autoLogin } }, { mergeWithLastSubmission: false });
    }
    return send(res, 200, loginPage(uid, params), 'text/html; charset=utf-8');
  }

  // POST login
  const form = new URLSearchParams(await readBody(req));
  const login = form.get('login') ?? '';
  const pw = form.get('password') ?? '';
  if (!accounts.has(login) || pw !== password) {
    return send(res, 401, loginPage(uid, params, 'invalid account or password'), 'text/html; charset=utf-8');
  }
  return provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
}

// --------------------------------------------------------- control channel --
async function handleControl(req, res, path) {
  const body = ['POST', 'PUT', 'PATCH'].includes(req.method) ? await readBody(req) : '';
  const json = body ? JSON.parse(body) : {};
  let m;
  if (req.method === 'GET' && path === '/_control/state') return send(res, 200, state());

  if (req.method === 'POST' && path === '/_control/rotate_keys') {
    const old = currentKeys;
    currentKeys = genKeySet();
    retiredKeys = json.keep_old ? [...old, ...retiredKeys] : [];
    buildProvider();
    log('rotated signing keys ->', currentKeys.map((k) => k.kid).join(','));
    return send(res, 200, state());
  }

  if (req.method === 'POST' && path === '/_control/auto_login') {
    autoLogin = json.account ?? null;
    return send(res, 200, state());
  }

  if (req.method === 'GET' && path === '/_control/accounts') return send(res, 200, Object.fromEntries(accounts));

  if ((m = path.match(/^\/_control\/accounts\/([^/]+)$/))) {
    const id = decodeURIComponent(m[1]);
    switch (req.method) {
      case 'GET':
        return accounts.has(id) ? send(res, 200, accounts.get(id)) : send(res, 404, { error: 'not_found' });
      case 'PUT': // replace (or create)
        accounts.set(id, json);
        return send(res, 200, accounts.get(id));
      case 'PATCH': { // shallow merge, null deletes the claim
        if (!accounts.has(id)) return send(res, 404, { error: 'not_found' });
        const next = { ...accounts.get(id) };
        for (const [k, v] of Object.entries(json)) {
          if (v === null) delete next[k]; else next[k] = v;
        }
        accounts.set(id, next);
        return send(res, 200, next);
      }
      case 'DELETE':
        accounts.delete(id);
        return send(res, 200, { deleted: id });
      default:
    }
  }
  return send(res, 404, { error: 'unknown_control_endpoint' });
}

// ----------------------------------------------------------------- server --
const server = http.createServer(async (req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  try {
    let m;
    if (path.startsWith('/_control/')) return await handleControl(req, res, path);
    if ((m = path.match(/^\/interaction\/([^/]+)(?:\/(login|abort))?$/))) {
      const action = m[2] ?? (req.method === 'POST' ? 'login' : 'show');
      if (!['GET', 'POST'].includes(req.method)) return send(res, 405, { error: 'method_not_allowed' });
      return await handleInteraction(req, res, m[1], action);
    }
    return providerCallback(req, res);
  } catch (err) {
    log('handler error', err);
    if (!res.headersSent) send(res, 500, { error: 'server_error', error_description: String(err?.message ?? err) });
    else res.end();
  }
});

server.listen(cfg.port ?? 0, bindHost, () => {
  const { port } = server.address();
  issuer = `http://${issuerHost.includes(':') ? `[${issuerHost}]` : issuerHost}:${port}`;
  buildProvider();
  const ready = {
    issuer,
    port,
    pid: process.pid,
    discovery: `${issuer}/.well-known/openid-configuration`,
    authorization_endpoint: `${issuer}/auth`,
    token_endpoint: `${issuer}/token`,
    userinfo_endpoint: `${issuer}/me`,
    jwks_uri: `${issuer}/jwks`,
    control: `${issuer}/_control`,
    signing_kids: currentKeys.map((k) => k.kid),
  };
  process.stdout.write(`${JSON.stringify(ready)}\n`);
});

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => { server.close(); process.exit(0); });
// If the parent (test harness) closes our stdin, exit too. Only when stdin is a pipe.
if (cfg.exit_on_stdin_close) {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}
