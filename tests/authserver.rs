//! The built-in authorization server over real HTTP, driven as an MCP client
//! and a person would: register, authorize with PKCE, log in, consent,
//! exchange the code, call tools through the proxy, step up, refresh,
//! revoke. Spec items: ../shared/spec/mcp-authorization.md, "Authorization
//! server" 1-11.

mod common;

use common::browser::{pkce, query, AuthorizeRequest, Browser, Page};
use common::{free_port, mcp_post, Gateway, Upstream};
use mcp_oauth_gateway::authserver::passwords::hash_password;
use serde_json::{json, Value};
use std::time::Duration;

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const PASSWORD: &str = "correct horse battery staple";

struct Setup {
    upstream: Upstream,
    gw: Option<Gateway>,
    yaml: String,
    http: reqwest::Client,
    data_dir: std::path::PathBuf,
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn config(
    port: u16,
    upstream: std::net::SocketAddr,
    data_dir: &std::path::Path,
    extra: &str,
) -> String {
    let hash = hash_password(PASSWORD).unwrap();
    format!(
        "public_url: http://127.0.0.1:{port}
listen: 127.0.0.1:{port}
authorization_server:
  data_dir: {dir}
  access_token_ttl: 2s
{extra}  users:
    - {{ username: alice, password_hash: '{hash}', scopes: [mcp, math, time] }}
    - {{ username: bob, password_hash: '{hash}', scopes: [mcp] }}
upstreams:
  - name: demo
    path: /demo/mcp
    url: http://{upstream}/mcp
    scopes: [mcp, math, time]
    policy:
      base_scopes: [mcp]
      tools: {{ add: [math], 'get_*': [time], echo: [], countdown: [] }}
",
        dir = data_dir.display()
    )
}

impl Setup {
    async fn start() -> Self {
        Self::start_with("").await
    }

    async fn start_with(extra: &str) -> Self {
        let upstream = Upstream::start().await;
        let port = free_port();
        let data_dir = std::env::temp_dir().join(format!("mcpgw-as-{}-{port}", std::process::id()));
        let yaml = config(port, upstream.addr, &data_dir, extra);
        let gw = Gateway::start_yaml(&yaml).await;
        Self {
            upstream,
            gw: Some(gw),
            yaml,
            http: no_redirects(),
            data_dir,
        }
    }

    /// Stops the gateway and starts it again on the same data directory.
    async fn restart(&mut self) {
        self.gw = None;
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.gw = Some(Gateway::start_yaml(&self.yaml).await);
    }

    fn url(&self, path: &str) -> String {
        self.gw.as_ref().expect("running").url(path)
    }

    async fn register(&self, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url("/register"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Registers with the initial access token `operator`.
    async fn register_as(&self, operator: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/register"))
            .bearer_auth(operator)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn public_client(&self) -> String {
        let (status, doc) = self
            .register(json!({"client_name": "Test <b>Client</b><script>alert(1)</script>", "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"],
                "application_type": "native"}))
            .await;
        assert_eq!(status, 201, "{doc}");
        doc["client_id"].as_str().unwrap().to_owned()
    }

    async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url("/token"))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn authorize_url(s: &Setup, client_id: &str, challenge: &str, scope: &str) -> String {
    AuthorizeRequest {
        client_id,
        redirect_uri: REDIRECT,
        challenge,
        scope,
        state: Some("xyz-state"),
        resource: &s.url("/demo/mcp"),
    }
    .url(&s.url(""))
}

/// Authorize, log in (unless the browser is signed in), consent; returns the
/// redirect back to the client.
async fn authorize(
    s: &Setup,
    browser: &mut Browser,
    client_id: &str,
    challenge: &str,
    scope: &str,
) -> url::Url {
    let mut page = browser
        .send(s.http.get(authorize_url(s, client_id, challenge, scope)))
        .await;
    if page.status == 303 {
        return page.location(); // signed in, consent remembered
    }
    assert_eq!(page.status, 200, "{}", page.body);
    if page.body.contains("name=\"password\"") {
        let form = page.login_form("alice", PASSWORD);
        page = browser
            .submit(&s.http, s.http.post(s.url("/login")).form(&form))
            .await;
    }
    if page.status == 303 || page.status == 302 {
        return page.location();
    }
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Test &#60;b&#62;Client&#60;/b&#62;")
            && !page.body.contains("<b>Client"),
        "client name rendered inert: {}",
        page.body
    );
    assert!(page.body.contains("127.0.0.1"), "redirect host shown");
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert!(page.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let form = page.consent_form("approve");
    let done = browser
        .send(s.http.post(s.url("/consent")).form(&form))
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    done.location()
}

async fn code_for(
    s: &Setup,
    browser: &mut Browser,
    client_id: &str,
    scope: &str,
) -> (String, String) {
    let (verifier, challenge) = pkce();
    let back = authorize(s, browser, client_id, &challenge, scope).await;
    let q = query(&back);
    assert_eq!(q["state"], "xyz-state");
    assert_eq!(q["iss"], s.url(""), "RFC 9207 iss");
    (q["code"].clone(), verifier)
}

async fn exchange(s: &Setup, client_id: &str, code: &str, verifier: &str) -> (u16, Value) {
    s.token(&[
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("client_id", client_id),
        ("code_verifier", verifier),
        ("resource", &s.url("/demo/mcp")),
    ])
    .await
}

async fn call_tool(
    s: &Setup,
    token: &str,
    tool: &str,
) -> (u16, String, reqwest::header::HeaderMap) {
    let body = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": tool, "arguments": {"a": 40, "b": 2},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientInfo": {"name": "as-tests", "version": "1"},
                  "io.modelcontextprotocol/clientCapabilities": {}}}});
    let resp = mcp_post(&s.http, &s.url("/demo/mcp"), body.to_string())
        .bearer_auth(token)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.text().await.unwrap(), headers)
}

/// Authorization server 2: metadata whose issuer is byte-identical to the
/// PRM's authorization server.
#[tokio::test]
async fn metadata_issuer_matches_the_protected_resource_metadata() {
    let s = Setup::start().await;
    let prm: Value = s
        .http
        .get(s.url("/.well-known/oauth-protected-resource/demo/mcp"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let meta: Value = s
            .http
            .get(s.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(meta["issuer"], prm["authorization_servers"][0], "{path}");
        assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
        assert_eq!(meta["token_endpoint"], s.url("/token"));
    }
    let jwks: Value = s
        .http
        .get(s.url("/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert!(jwks["keys"][0].get("d").is_none(), "no private part");
}

/// The whole flow: register, authorize, login, consent, token, call, 403
/// step-up, re-authorize, refresh, revoke.
#[tokio::test]
async fn full_flow_from_registration_to_revocation() {
    let s = Setup::start().await;
    let client_id = s.public_client().await;
    let mut browser = Browser::default();
    let (code, verifier) = code_for(&s, &mut browser, &client_id, "mcp time").await;
    let (status, tokens) = exchange(&s, &client_id, &code, &verifier).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(tokens["scope"], "mcp time");

    let (status, body, _) = call_tool(&s, &access, "get_time").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, headers) = call_tool(&s, &access, "add").await;
    assert_eq!(status, 403);
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("scope=\"mcp math time\""), "{challenge}");

    // Step-up: the browser is signed in, the wider scope needs consent.
    let (code, verifier) = code_for(&s, &mut browser, &client_id, "mcp math time").await;
    let (_, wider) = exchange(&s, &client_id, &code, &verifier).await;
    let access = wider["access_token"].as_str().unwrap().to_owned();
    let (status, body, _) = call_tool(&s, &access, "add").await;
    assert_eq!(status, 200);
    assert!(body.contains("42"), "{body}");

    // The access token expires (2 s in this config); the refresh token works.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (status, _, _) = call_tool(&s, &access, "add").await;
    assert_eq!(status, 401, "expired");
    let refresh = wider["refresh_token"].as_str().unwrap().to_owned();
    let (status, renewed) = s
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client_id),
            ("resource", &s.url("/demo/mcp")),
        ])
        .await;
    assert_eq!(status, 200, "{renewed}");
    let access = renewed["access_token"].as_str().unwrap().to_owned();
    assert_ne!(renewed["refresh_token"], wider["refresh_token"], "rotated");
    let (status, _, _) = call_tool(&s, &access, "add").await;
    assert_eq!(status, 200);

    // Revoking the refresh token revokes its family, access token included.
    let resp = s
        .http
        .post(s.url("/revoke"))
        .form(&[
            ("token", renewed["refresh_token"].as_str().unwrap()),
            ("client_id", &client_id),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (status, body, _) = call_tool(&s, &access, "add").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("revoked"), "{body}");
    let (status, err) = s
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", renewed["refresh_token"].as_str().unwrap()),
            ("client_id", &client_id),
        ])
        .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert!(s.upstream.count() >= 3);
}

/// Authorization server 8: a rotated refresh token used again revokes the
/// family; a reused code revokes what it issued.
#[tokio::test]
async fn reuse_of_a_refresh_token_or_a_code_revokes_what_they_issued() {
    let s = Setup::start().await;
    let client_id = s.public_client().await;
    let mut browser = Browser::default();
    let (code, verifier) = code_for(&s, &mut browser, &client_id, "mcp").await;
    let (_, first) = exchange(&s, &client_id, &code, &verifier).await;
    let (status, again) = exchange(&s, &client_id, &code, &verifier).await;
    assert_eq!(
        (status, again["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, body, _) = call_tool(&s, first["access_token"].as_str().unwrap(), "echo").await;
    assert_eq!(
        status, 401,
        "tokens from a replayed code are revoked: {body}"
    );

    let (code, verifier) = code_for(&s, &mut browser, &client_id, "mcp").await;
    let (_, tokens) = exchange(&s, &client_id, &code, &verifier).await;
    let old = tokens["refresh_token"].as_str().unwrap();
    let refresh = |t: String| {
        let s = &s;
        let client_id = client_id.clone();
        async move {
            s.token(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &t),
                ("client_id", &client_id),
            ])
            .await
        }
    };
    let (status, newer) = refresh(old.to_owned()).await;
    assert_eq!(status, 200);
    let (status, reuse) = refresh(old.to_owned()).await;
    assert_eq!(
        (status, reuse["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, _) = refresh(newer["refresh_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(status, 400, "the whole family is revoked");

    let (code, verifier) = code_for(&s, &mut browser, &client_id, "mcp").await;
    let (_, tokens) = exchange(&s, &client_id, &code, &verifier).await;
    let (status, wider) = s
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", &client_id),
            ("scope", "mcp math"),
        ])
        .await;
    assert_eq!(
        (status, wider["error"].as_str()),
        (400, Some("invalid_scope"))
    );
}

/// Authorization server 3, 5, 6: PKCE, resource and redirect checks.
#[tokio::test]
async fn token_and_authorize_errors_follow_rfc_6749() {
    let s = Setup::start().await;
    let client_id = s.public_client().await;
    let mut browser = Browser::default();
    let (code, verifier) = code_for(&s, &mut browser, &client_id, "mcp").await;
    let (status, e) = exchange(&s, &client_id, &code, &format!("{verifier}x")).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "wrong verifier"
    );
    let (status, e) = s
        .token(&[("grant_type", "password"), ("client_id", &client_id)])
        .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (status, e) = s
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", "nobody"),
        ])
        .await;
    assert_eq!((status, e["error"].as_str()), (401, Some("invalid_client")));
    let (status, e) = s
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("client_id", &client_id),
        ])
        .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("invalid_request")),
        "repeated parameter"
    );

    let other = s.public_client().await;
    let (code, verifier) = code_for(&s, &mut browser, &client_id, "mcp").await;
    let (status, e) = exchange(&s, &other, &code, &verifier).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "code of another client"
    );

    // Authorize errors that redirect (with iss and state).
    let (_, challenge) = pkce();
    let base = authorize_url(&s, &client_id, &challenge, "mcp");
    for (edit, error) in [
        (
            base.replace("code_challenge_method=S256", "code_challenge_method=plain"),
            "invalid_request",
        ),
        (
            base.replace(&format!("code_challenge={challenge}"), ""),
            "invalid_request",
        ),
        (base.replace("scope=mcp", "scope=admin"), "invalid_scope"),
        (
            base.replace("resource=", "resource=https%3A%2F%2Fevil.example%2F&x="),
            "invalid_target",
        ),
        (
            base.replace("response_type=code", "response_type=token"),
            "unsupported_response_type",
        ),
    ] {
        let page = browser.send(s.http.get(&edit)).await;
        assert_eq!(page.status, 303, "{edit}: {}", page.body);
        let q = query(&page.location());
        assert_eq!(q["error"], error, "{edit}");
        assert_eq!(q["iss"], s.url(""));
        assert_eq!(q["state"], "xyz-state");
    }
    // Unknown client or unregistered redirect URI: an error page, no redirect.
    for edit in [
        base.replace(&format!("client_id={client_id}"), "client_id=unknown"),
        base.replace(
            "redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcallback",
            "redirect_uri=https%3A%2F%2Fevil.example%2Fcb",
        ),
    ] {
        let page = browser.send(s.http.get(&edit)).await;
        assert_eq!(page.status, 400, "{edit}");
        assert!(page.headers.get("location").is_none());
    }
}

/// Authorization server 10: consent needs the CSRF token and the browser
/// that started the flow; deny returns access_denied.
#[tokio::test]
async fn consent_needs_its_csrf_token_and_deny_returns_access_denied() {
    let s = Setup::start().await;
    let client_id = s.public_client().await;
    let mut browser = Browser::default();
    let (_, challenge) = pkce();
    let login = browser
        .send(s.http.get(authorize_url(&s, &client_id, &challenge, "mcp")))
        .await;
    let flow = login.field("flow");
    let csrf = login.field("csrf_token");
    let login_post = s.http.post(s.url("/login")).form(&[
        ("flow", flow.as_str()),
        ("csrf_token", csrf.as_str()),
        ("username", "alice"),
        ("password", PASSWORD),
    ]);
    let consent = browser.submit(&s.http, login_post).await;
    assert_eq!(consent.status, 200);
    for bad in ["", "wrong-token"] {
        let page = browser
            .send(s.http.post(s.url("/consent")).form(&[
                ("flow", flow.as_str()),
                ("csrf_token", bad),
                ("action", "approve"),
            ]))
            .await;
        assert_eq!(page.status, 400, "csrf `{bad}`");
    }
    // Another browser (no flow cookie) with the right token is refused too.
    let mut other = Browser::default();
    let page = other
        .send(s.http.post(s.url("/consent")).form(&[
            ("flow", flow.as_str()),
            ("csrf_token", csrf.as_str()),
            ("action", "approve"),
        ]))
        .await;
    assert_eq!(page.status, 400);
    let page = browser
        .send(s.http.post(s.url("/consent")).form(&[
            ("flow", flow.as_str()),
            ("csrf_token", csrf.as_str()),
            ("action", "deny"),
        ]))
        .await;
    assert_eq!(page.status, 303);
    let q = query(&page.location());
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["iss"], s.url(""));
}

/// Wrong passwords are throttled per user (and address).
#[tokio::test]
async fn login_brute_force_is_throttled() {
    let s = Setup::start().await;
    let client_id = s.public_client().await;
    let mut browser = Browser::default();
    let (_, challenge) = pkce();
    let login = browser
        .send(s.http.get(authorize_url(&s, &client_id, &challenge, "mcp")))
        .await;
    let (flow, csrf) = (login.field("flow"), login.field("csrf_token"));
    let attempt = |password: &'static str| {
        let form = [
            ("flow", flow.clone()),
            ("csrf_token", csrf.clone()),
            ("username", "alice".into()),
            ("password", password.into()),
        ];
        s.http.post(s.url("/login")).form(&form)
    };
    for _ in 0..6 {
        // Answered with a redirect to the login page (POST-redirect-GET),
        // which says what went wrong.
        let posted = browser.send(attempt("wrong")).await;
        assert_eq!(posted.status, 303);
        assert_eq!(posted.location().path(), "/login");
        let page = browser.send(s.http.get(posted.location().as_str())).await;
        assert!(
            page.body.contains("Wrong username or password")
                || page.body.contains("Too many failed attempts"),
            "{}",
            page.body
        );
    }
    let page = browser.submit(&s.http, attempt(PASSWORD)).await;
    assert!(
        page.body.contains("Too many failed attempts") && page.body.contains("name=\"password\""),
        "throttled even with the right password: {}",
        page.body
    );
}

/// Authorization server 4 (DCR): metadata validation and size limit.
#[tokio::test]
async fn registration_refuses_bad_metadata_and_oversized_requests() {
    let s = Setup::start().await;
    for (body, error) in [
        (
            json!({"redirect_uris": ["http://example.com/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["https://app.example/cb#frag"]}),
            "invalid_redirect_uri",
        ),
        (json!({"redirect_uris": []}), "invalid_redirect_uri"),
        (
            json!({"redirect_uris": [REDIRECT], "grant_types": ["implicit"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": [REDIRECT], "response_types": ["token"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt"}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": [REDIRECT], "application_type": "desktop"}),
            "invalid_client_metadata",
        ),
    ] {
        let (status, doc) = s.register(body.clone()).await;
        assert_eq!(
            (status, doc["error"].as_str()),
            (400, Some(error)),
            "{body}"
        );
    }
    let huge = json!({"redirect_uris": [REDIRECT], "client_name": "x".repeat(20_000)});
    let (status, _) = s.register(huge).await;
    assert_eq!(status, 413);
    let dup = s
        .http
        .post(s.url("/register"))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"redirect_uris":["{REDIRECT}"],"redirect_uris":["https://evil.example/cb"]}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), 400, "duplicate keys");

    let (status, confidential) = s
        .register(json!({"redirect_uris": ["https://app.example/cb"], "client_name": "Server app"}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        confidential["token_endpoint_auth_method"],
        "client_secret_basic"
    );
    assert!(confidential["client_secret"].as_str().unwrap().len() >= 40);
}

/// Authorization server 9: a restart keeps clients, keys and refresh tokens.
#[tokio::test]
async fn a_restart_keeps_clients_keys_and_refresh_tokens() {
    let mut s = Setup::start().await;
    let client_id = s.public_client().await;
    let mut browser = Browser::default();
    let (code, verifier) = code_for(&s, &mut browser, &client_id, "mcp").await;
    let (_, tokens) = exchange(&s, &client_id, &code, &verifier).await;
    let jwks_before: Value = s
        .http
        .get(s.url("/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    s.restart().await;
    let jwks_after: Value = s
        .http
        .get(s.url("/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks_before, jwks_after, "same keys after restart");
    let (status, renewed) = s
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", &client_id),
        ])
        .await;
    assert_eq!(status, 200, "{renewed}");
    let (status, _, _) = call_tool(&s, renewed["access_token"].as_str().unwrap(), "echo").await;
    assert_eq!(status, 200);
    let resp = s
        .http
        .get(s.url("/.well-known/oauth-protected-resource/demo/mcp"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// A confidential client registered by the operator gets tokens for itself
/// with client_credentials (client_secret_basic), limited to the scopes it
/// registered; open registration cannot create such clients.
#[tokio::test]
async fn client_credentials_for_a_confidential_client() {
    let open = Setup::start().await;
    let body = json!({"client_name": "batch job", "grant_types": ["client_credentials"], "scope": "mcp time"});
    let (status, e) = open.register(body.clone()).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("invalid_client_metadata")),
        "not with open registration"
    );
    drop(open);
    let operator = "a-registration-token-of-at-least-32-characters";
    let s = Setup::start_with(&format!(
        "  registration: initial_access_token\n  initial_access_token: {operator}\n"
    ))
    .await;
    let resp = s.register_as(operator, &body).await;
    assert_eq!(resp.status(), 201);
    let client: Value = resp.json().await.unwrap();
    let (id, secret) = (
        client["client_id"].as_str().unwrap(),
        client["client_secret"].as_str().unwrap(),
    );
    let token = |scope: Option<&'static str>, secret: String| {
        let mut form = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("resource", s.url("/demo/mcp")),
        ];
        if let Some(sc) = scope {
            form.push(("scope", sc.to_owned()));
        }
        s.http
            .post(s.url("/token"))
            .basic_auth(id, Some(secret))
            .form(&form)
            .send()
    };
    let resp = token(None, secret.to_owned()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let tokens: Value = resp.json().await.unwrap();
    assert_eq!(tokens["scope"], "mcp time");
    assert!(tokens.get("refresh_token").is_none());
    let (status, _, _) = call_tool(&s, tokens["access_token"].as_str().unwrap(), "get_time").await;
    assert_eq!(status, 200);
    let resp = token(Some("mcp math"), secret.to_owned()).await.unwrap();
    assert_eq!(resp.status(), 400, "math was not registered");
    let resp = token(None, "wrong-secret".to_owned()).await.unwrap();
    assert_eq!(resp.status(), 401);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"], "invalid_client");
}

/// Registration policy `disabled`: 403 for everyone.
#[tokio::test]
async fn registration_can_be_disabled() {
    let s = Setup::start_with("  registration: disabled\n").await;
    let (status, e) = s.register(json!({"redirect_uris": [REDIRECT]})).await;
    assert_eq!((status, e["error"].as_str()), (403, Some("access_denied")));
}

/// Registration policy `initial_access_token`: only with the token.
#[tokio::test]
async fn registration_can_require_an_initial_access_token() {
    let token = "a-registration-token-of-at-least-32-characters";
    let s = Setup::start_with(&format!(
        "  registration: initial_access_token\n  initial_access_token: {token}\n"
    ))
    .await;
    let body = json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"});
    let (status, e) = s.register(body.clone()).await;
    assert_eq!((status, e["error"].as_str()), (401, Some("invalid_token")));
    let resp = s
        .http
        .post(s.url("/register"))
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = s.register_as(token, &body).await;
    assert_eq!(resp.status(), 201);
}

/// Authorization server 8: `keys rotate` publishes a new key at once and
/// keeps signing with the old one until the new one has been published
/// long enough; tokens of the old key keep working.
#[tokio::test]
async fn keys_rotate_publishes_a_new_key_before_it_signs() {
    let mut s = Setup::start().await;
    let client_id = s.public_client().await;
    let mut browser = Browser::default();
    let (code, verifier) = code_for(&s, &mut browser, &client_id, "mcp").await;
    let (_, tokens) = exchange(&s, &client_id, &code, &verifier).await;
    let config = s.data_dir.with_extension("yaml");
    std::fs::write(&config, &s.yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-oauth-gateway"))
        .args(["keys", "rotate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&config);
    s.restart().await;
    let jwks: Value = s
        .http
        .get(s.url("/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2, "{jwks}");
    let (status, _, _) = call_tool(&s, tokens["access_token"].as_str().unwrap(), "echo").await;
    assert_eq!(status, 200, "a token of the old key still works");
    let (status, renewed) = s
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", &client_id),
        ])
        .await;
    assert_eq!(status, 200);
    let header = jsonwebtoken::decode_header(renewed["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(
        header.kid.as_deref(),
        Some(kids[0]),
        "the new key does not sign yet"
    );
}

/// Serves a client metadata document at `/client.json` (its `client_id` is
/// its own URL) and a redirect to the cloud metadata address at `/redirect`.
async fn metadata_document_server() -> std::net::SocketAddr {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let doc = json!({"client_id": format!("http://{addr}/client.json"), "client_name": "Doc <i>Client</i>",
        "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"});
    let app = axum::Router::new()
        .route("/client.json", get(move || async move { axum::Json(doc) }))
        .route(
            "/redirect",
            get(|| async {
                axum::response::Redirect::temporary("http://169.254.169.254/latest/meta-data")
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn authorize_page(s: &Setup, client_id: &str) -> Page {
    let (_, challenge) = pkce();
    Browser::default()
        .send(s.http.get(authorize_url(s, client_id, &challenge, "mcp")))
        .await
}

/// Authorization server 4 (CIMD): a URL client id is fetched, validated and
/// used for the whole flow.
#[tokio::test]
async fn a_client_metadata_document_url_works_as_client_id() {
    let docs = metadata_document_server().await;
    let s = Setup::start_with(
        "  client_metadata_documents: { allow_private_addresses: true, allow_http: true }\n",
    )
    .await;
    let meta: Value = s
        .http
        .get(s.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["client_id_metadata_document_supported"], true);
    let client_id = format!("http://{docs}/client.json");
    let mut browser = Browser::default();
    let (verifier, challenge) = pkce();
    let login = browser
        .send(s.http.get(authorize_url(&s, &client_id, &challenge, "mcp")))
        .await;
    assert_eq!(login.status, 200, "{}", login.body);
    assert!(
        login.body.contains("Doc &#60;i&#62;Client"),
        "{}",
        login.body
    );
    let form = login.login_form("alice", PASSWORD);
    let consent = browser
        .submit(&s.http, s.http.post(s.url("/login")).form(&form))
        .await;
    let form = consent.consent_form("approve");
    let back = browser
        .send(s.http.post(s.url("/consent")).form(&form))
        .await
        .location();
    let code = query(&back)["code"].clone();
    let (status, tokens) = exchange(&s, &client_id, &code, &verifier).await;
    assert_eq!(status, 200, "{tokens}");
}

/// CIMD SSRF guard: loopback and the cloud metadata address are refused
/// with an error page, and a redirect (here to the metadata address) is
/// never followed.
#[tokio::test]
async fn client_metadata_documents_on_private_addresses_are_refused() {
    let docs = metadata_document_server().await;
    let strict = Setup::start().await;
    for (client_id, why) in [
        (
            format!("https://127.0.0.1:{}/client.json", docs.port()),
            "127.0.0.1",
        ),
        (
            "https://169.254.169.254/latest/meta-data".to_owned(),
            "169.254.169.254",
        ),
        (
            format!("https://localhost:{}/client.json", docs.port()),
            "loopback",
        ),
    ] {
        let page = authorize_page(&strict, &client_id).await;
        assert_eq!(page.status, 400, "{client_id}");
        assert!(page.headers.get("location").is_none());
        assert!(page.body.contains(why), "{client_id}: {}", page.body);
    }
    let dev = Setup::start_with(
        "  client_metadata_documents: { allow_private_addresses: true, allow_http: true }\n",
    )
    .await;
    let page = authorize_page(&dev, &format!("http://{docs}/redirect")).await;
    assert_eq!(page.status, 400);
    assert!(
        page.body.contains("redirects are not followed"),
        "{}",
        page.body
    );
}

/// invalid_grant for an expired code and for a redirect URI that differs
/// from the authorization request's.
#[tokio::test]
async fn expired_codes_and_other_redirect_uris_are_invalid_grants() {
    let s = Setup::start_with("  code_ttl: 1s\n").await;
    let client_id = s.public_client().await;
    let mut browser = Browser::default();
    let (code, verifier) = code_for(&s, &mut browser, &client_id, "mcp").await;
    let (status, e) = s
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/other"),
            ("client_id", &client_id),
            ("code_verifier", &verifier),
        ])
        .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "other redirect_uri"
    );
    let (code, verifier) = code_for(&s, &mut browser, &client_id, "mcp").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, e) = exchange(&s, &client_id, &code, &verifier).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "expired code: {e}"
    );
}

/// `signing_algorithm: EdDSA`: Ed25519 keys sign, the proxy verifies them.
#[tokio::test]
async fn eddsa_signing_keys_work_end_to_end() {
    let s = Setup::start_with("  signing_algorithm: EdDSA\n").await;
    let jwks: Value = s
        .http
        .get(s.url("/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    let client_id = s.public_client().await;
    let mut browser = Browser::default();
    let (code, verifier) = code_for(&s, &mut browser, &client_id, "mcp").await;
    let (_, tokens) = exchange(&s, &client_id, &code, &verifier).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(access).unwrap().alg,
        jsonwebtoken::Algorithm::EdDSA
    );
    let (status, _, _) = call_tool(&s, access, "echo").await;
    assert_eq!(status, 200);
}

/// How many requests race in each round of the race tests below.
const RACERS: usize = 8;

/// Fresh tokens from a whole code flow (the browser is signed in and the
/// consent remembered after the first).
async fn fresh_tokens(s: &Setup, browser: &mut Browser, client_id: &str) -> Value {
    let (code, verifier) = code_for(s, browser, client_id, "mcp").await;
    let (status, tokens) = exchange(s, client_id, &code, &verifier).await;
    assert_eq!(status, 200, "{tokens}");
    tokens
}

async fn refresh_with(s: &Setup, client_id: &str, refresh: &str) -> (u16, Value) {
    s.token(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh),
        ("client_id", client_id),
    ])
    .await
}

/// Every token of a family is dead: the access token is refused at the
/// proxy, the refresh token at the token endpoint.
async fn assert_family_dead(s: &Setup, client_id: &str, tokens: &Value, what: &str) {
    let (status, body, _) = call_tool(s, tokens["access_token"].as_str().unwrap(), "echo").await;
    assert_eq!(status, 401, "{what}: access token still works: {body}");
    if let Some(refresh) = tokens["refresh_token"].as_str() {
        let (status, err) = refresh_with(s, client_id, refresh).await;
        assert_eq!(status, 400, "{what}: refresh token still works: {err}");
    }
}

/// The token answers of one race: at most one 200 (returned), every other
/// an invalid_grant, never a 500.
fn at_most_one_winner(answers: &[(u16, Value)], round: usize) -> Vec<&Value> {
    let winners: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == 200)
        .map(|(_, tokens)| tokens)
        .collect();
    assert!(winners.len() <= 1, "round {round}: {answers:?}");
    for (status, body) in answers.iter().filter(|(status, _)| *status != 200) {
        assert_eq!(
            (*status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "round {round}: {body}"
        );
    }
    winners
}

/// Issue 11.3: eight simultaneous revocations of eight families all take
/// effect (RFC 7009 §2.2), round after round, with no 500 from a locked
/// database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revocations_of_different_families_all_take_effect() {
    let s = Setup::start().await;
    let client_id = s.public_client().await;
    let mut browser = Browser::default();
    for round in 0..4 {
        let mut families = Vec::new();
        for _ in 0..RACERS {
            families.push(fresh_tokens(&s, &mut browser, &client_id).await);
        }
        let revocations = families.iter().map(|tokens| {
            s.http
                .post(s.url("/revoke"))
                .form(&[
                    ("token", tokens["refresh_token"].as_str().unwrap()),
                    ("client_id", &client_id),
                ])
                .send()
        });
        for resp in futures_util::future::join_all(revocations).await {
            let resp = resp.unwrap();
            let status = resp.status().as_u16();
            assert_eq!(status, 200, "round {round}: {}", resp.text().await.unwrap());
        }
        for tokens in &families {
            assert_family_dead(&s, &client_id, tokens, &format!("round {round}")).await;
        }
    }
}

/// Issue 11.3, Authorization server 8: one code raced eight times is
/// redeemed at most once; the losers get invalid_grant (never 500), and the
/// reuse revokes whatever the winner got, even when issued concurrently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_raced_eight_times_is_single_use_and_revokes_the_winner() {
    let s = Setup::start().await;
    let client_id = s.public_client().await;
    let mut browser = Browser::default();
    for round in 0..6 {
        let (code, verifier) = code_for(&s, &mut browser, &client_id, "mcp").await;
        let answers = futures_util::future::join_all(
            (0..RACERS).map(|_| exchange(&s, &client_id, &code, &verifier)),
        )
        .await;
        let winners = at_most_one_winner(&answers, round);
        for tokens in winners {
            assert_family_dead(&s, &client_id, tokens, &format!("round {round}")).await;
        }
    }
}

/// Issue 11.3: one refresh token raced eight times: at most one new pair,
/// no 500, and the reuse revokes the family including that pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_raced_eight_times_revokes_the_whole_family() {
    let s = Setup::start().await;
    let client_id = s.public_client().await;
    let mut browser = Browser::default();
    for round in 0..6 {
        let tokens = fresh_tokens(&s, &mut browser, &client_id).await;
        let refresh = tokens["refresh_token"].as_str().unwrap();
        let answers = futures_util::future::join_all(
            (0..RACERS).map(|_| refresh_with(&s, &client_id, refresh)),
        )
        .await;
        let winners = at_most_one_winner(&answers, round);
        assert_family_dead(&s, &client_id, &tokens, &format!("round {round}")).await;
        for tokens in winners {
            assert_family_dead(&s, &client_id, tokens, &format!("round {round}")).await;
        }
    }
}

/// Issue 11.4, RFC 6749 §6: a refresh refused for its scope or resource
/// issues nothing, so it rotates nothing: the client's corrected retry
/// works and the family is not revoked as a reuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_leaves_the_refresh_token_usable() {
    let s = Setup::start().await;
    let client_id = s.public_client().await;
    let mut browser = Browser::default();
    let tokens = fresh_tokens(&s, &mut browser, &client_id).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, err) = s
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", &client_id),
            ("scope", "mcp math"),
        ])
        .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    let (status, err) = s
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", &client_id),
            ("resource", "http://elsewhere.example/mcp"),
        ])
        .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_target"))
    );
    let (status, renewed) = refresh_with(&s, &client_id, refresh).await;
    assert_eq!(status, 200, "the corrected retry works: {renewed}");
    let (status, body, _) = call_tool(&s, tokens["access_token"].as_str().unwrap(), "echo").await;
    assert_eq!(status, 200, "the family was not revoked: {body}");
}

/// Issue 11.5, RFC 8252 §7.3: a native client registered with a loopback
/// redirect may come back on any port (it picks a free one per login); the
/// consent page says the redirect stays on this computer; the token request
/// names the port the authorization request used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_redirects_may_use_any_port() {
    let s = Setup::start().await;
    let (status, doc) = s
        .register(
            json!({"client_name": "Desktop", "redirect_uris": ["http://127.0.0.1:5000/cb"],
            "token_endpoint_auth_method": "none", "application_type": "native"}),
        )
        .await;
    assert_eq!(status, 201, "{doc}");
    let client_id = doc["client_id"].as_str().unwrap();
    let (verifier, challenge) = pkce();
    let redirect = "http://127.0.0.1:5001/cb";
    let request = AuthorizeRequest {
        client_id,
        redirect_uri: redirect,
        challenge: &challenge,
        scope: "mcp",
        state: Some("s1"),
        resource: &s.url("/demo/mcp"),
    };
    let mut browser = Browser::default();
    let page = browser.send(s.http.get(request.url(&s.url("")))).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let form = page.login_form("alice", PASSWORD);
    let consent = browser
        .submit(&s.http, s.http.post(s.url("/login")).form(&form))
        .await;
    assert!(
        consent.body.contains("an application on this computer"),
        "{}",
        consent.body
    );
    let form = consent.consent_form("approve");
    let back = browser
        .send(s.http.post(s.url("/consent")).form(&form))
        .await
        .location();
    assert_eq!(back.port(), Some(5001));
    let code = query(&back)["code"].clone();
    let (status, err) = s
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:5000/cb"),
            ("client_id", client_id),
            ("code_verifier", &verifier),
        ])
        .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant")),
        "the token request must repeat the port actually used"
    );

    let (verifier, challenge) = pkce();
    let request = AuthorizeRequest {
        challenge: &challenge,
        ..request
    };
    let back = authorize_with(&s, &mut browser, &request).await;
    let (status, tokens) = s
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &query(&back)["code"]),
            ("redirect_uri", redirect),
            ("client_id", client_id),
            ("code_verifier", &verifier),
        ])
        .await;
    assert_eq!(status, 200, "{tokens}");

    for other in ["http://127.0.0.1:5001/other", "http://localhost:5000/cb"] {
        let request = AuthorizeRequest {
            redirect_uri: other,
            ..request
        };
        let page = browser.send(s.http.get(request.url(&s.url("")))).await;
        assert_eq!(page.status, 400, "{other}: {}", page.body);
    }
}

/// The browser (signed in, consent remembered) is sent straight back.
async fn authorize_with(
    s: &Setup,
    browser: &mut Browser,
    request: &AuthorizeRequest<'_>,
) -> url::Url {
    let page = browser.send(s.http.get(request.url(&s.url("")))).await;
    assert_eq!(page.status, 303, "{}", page.body);
    page.location()
}

/// Issue 11.5, RFC 8252 §7.1: native clients may register private-use
/// schemes in reverse-DNS form; nobody may register executable or local
/// schemes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_clients_may_register_private_use_schemes_only() {
    let s = Setup::start().await;
    let native = |uri: &str, application_type: &str| {
        json!({"client_name": "App", "redirect_uris": [uri], "token_endpoint_auth_method": "none",
               "application_type": application_type})
    };
    let (status, doc) = s
        .register(native("com.example.app:/oauth/cb", "native"))
        .await;
    assert_eq!(status, 201, "{doc}");
    for (uri, kind) in [
        ("com.example.app:/oauth/cb", "web"),
        ("myapp:/cb", "native"),
        ("javascript:alert(1)", "native"),
        ("data:text/html,x", "native"),
        ("file:///tmp/x", "native"),
    ] {
        let (status, doc) = s.register(native(uri, kind)).await;
        assert_eq!(
            (status, doc["error"].as_str()),
            (400, Some("invalid_redirect_uri")),
            "{uri} as {kind}: {doc}"
        );
    }
}

/// Issue 11.7: registrations per address and hour are configurable; over
/// the limit the answer is 429 with `Retry-After` and an RFC 7591-shaped
/// body; loopback can be exempted (what `demo` does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_rate_limited_per_address_with_retry_after() {
    let client = json!({"client_name": "c", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"});
    let s = Setup::start_with("  registration_rate_limit: { per_hour: 2 }\n").await;
    for _ in 0..2 {
        assert_eq!(s.register(client.clone()).await.0, 201);
    }
    let resp = s
        .http
        .post(s.url("/register"))
        .json(&client)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&wait), "{wait}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("more than 2 registrations"));

    let exempt =
        Setup::start_with("  registration_rate_limit: { per_hour: 2, exempt_loopback: true }\n")
            .await;
    for _ in 0..3 {
        assert_eq!(exempt.register(client.clone()).await.0, 201);
    }
}

/// Issue 11.7: every form post is answered with a redirect
/// (POST-redirect-GET), so Back never resubmits a form; `GET /login` and
/// `GET /consent` of a flow that has ended (a bookmark, Back after Allow)
/// or that another browser started explain how to start over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_consent_pages_survive_back_reload_and_bookmarks() {
    let s = Setup::start().await;
    let client_id = s.public_client().await;
    let mut browser = Browser::default();
    for page in [
        "/login",
        "/consent",
        "/login?flow=nope",
        "/consent?flow=nope",
    ] {
        let bookmark = browser.send(s.http.get(s.url(page))).await;
        assert_eq!(bookmark.status, 400, "{page}");
        assert!(
            bookmark.body.contains("connect again"),
            "{page}: {}",
            bookmark.body
        );
    }
    let (_, challenge) = pkce();
    let login = browser
        .send(s.http.get(authorize_url(&s, &client_id, &challenge, "mcp")))
        .await;
    let posted = browser
        .send(
            s.http
                .post(s.url("/login"))
                .form(&login.login_form("alice", PASSWORD)),
        )
        .await;
    assert_eq!(posted.status, 303, "{}", posted.body);
    let consent_url = posted.location();
    assert_eq!(consent_url.path(), "/consent");
    // Reloading the consent page shows it again; another browser cannot.
    for _ in 0..2 {
        let page = browser.send(s.http.get(consent_url.as_str())).await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("wants to access your MCP tools"));
    }
    let stranger = Browser::default()
        .send(s.http.get(consent_url.as_str()))
        .await;
    assert_eq!(stranger.status, 400);
    let page = browser.send(s.http.get(consent_url.as_str())).await;
    let back = browser
        .send(
            s.http
                .post(s.url("/consent"))
                .form(&page.consent_form("approve")),
        )
        .await;
    assert_eq!(back.status, 303);
    assert!(query(&back.location()).contains_key("code"));
    // Back after Allow: the flow is over.
    let again = browser.send(s.http.get(consent_url.as_str())).await;
    assert_eq!(again.status, 400);
    assert!(again.body.contains("connect again"), "{}", again.body);
}
