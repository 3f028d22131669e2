//! The built-in authorization server under test: a gateway with it, a
//! browser's way through authorize, login and consent, the token requests a
//! client makes, and the checks the authorization-server tests share.

use super::browser::{pkce, query, AuthorizeRequest, Browser, Page};
use super::oauth_client::OAuthClient;
use super::{free_port, stateless_tool_call, status_headers_text, Gateway, Upstream};
use mcp_oauth_gateway::authserver::passwords::hash_password;
use serde_json::{json, Value};
use std::time::Duration;

pub const REDIRECT: &str = "http://127.0.0.1:9/callback";

pub const PASSWORD: &str = "correct horse battery staple";

pub struct Setup {
    pub upstream: Upstream,
    pub gw: Option<Gateway>,
    pub yaml: String,
    pub http: reqwest::Client,
    pub data_dir: std::path::PathBuf,
}

pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The test gateway's configuration: `extra` goes into the
/// `authorization_server` section (access tokens live 2 s unless it sets
/// `access_token_ttl`), `top_level` after everything else.
pub fn config(
    port: u16,
    upstream: std::net::SocketAddr,
    data_dir: &std::path::Path,
    extra: &str,
    top_level: &str,
) -> String {
    let hash = hash_password(PASSWORD).unwrap();
    let ttl = if extra.contains("access_token_ttl:") {
        ""
    } else {
        "  access_token_ttl: 2s\n"
    };
    format!(
        "public_url: http://127.0.0.1:{port}
listen: 127.0.0.1:{port}
authorization_server:
  data_dir: {dir}
{ttl}{extra}  users:
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
{top_level}",
        dir = data_dir.display()
    )
}

impl Setup {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    pub async fn start_with(extra: &str) -> Self {
        Self::start_with_top_level(extra, "").await
    }

    /// Starts with `extra` in the `authorization_server` section and
    /// `top_level` at the top level of the configuration.
    pub async fn start_with_top_level(extra: &str, top_level: &str) -> Self {
        let upstream = Upstream::start().await;
        let port = free_port();
        let data_dir = std::env::temp_dir().join(format!("mcpgw-as-{}-{port}", std::process::id()));
        let yaml = config(port, upstream.addr, &data_dir, extra, top_level);
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
    pub async fn restart(&mut self) {
        self.gw = None;
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.gw = Some(Gateway::start_yaml(&self.yaml).await);
    }

    pub fn url(&self, path: &str) -> String {
        self.gw.as_ref().expect("running").url(path)
    }

    /// The registered client `client_id` (sent back to `REDIRECT`, tokens
    /// for `/demo/mcp`).
    pub fn client(&self, client_id: &str) -> OAuthClient {
        OAuthClient::new(&self.url(""), &self.url("/demo/mcp"), client_id, REDIRECT)
    }

    pub async fn register(&self, body: Value) -> (u16, Value) {
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
    pub async fn register_as(&self, operator: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/register"))
            .bearer_auth(operator)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn public_client(&self) -> String {
        let (status, doc) = self
            .register(json!({"client_name": "Test <b>Client</b><script>alert(1)</script>", "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"],
                "application_type": "native"}))
            .await;
        assert_eq!(status, 201, "{doc}");
        doc["client_id"].as_str().unwrap().to_owned()
    }

    pub async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
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

pub fn authorize_url(s: &Setup, client_id: &str, challenge: &str, scope: &str) -> String {
    s.client(client_id)
        .authorize_url(challenge, scope, Some("xyz-state"))
}

/// Authorize, log in (unless the browser is signed in), consent; returns the
/// redirect back to the client.
pub async fn authorize(
    s: &Setup,
    browser: &mut Browser,
    client_id: &str,
    challenge: &str,
    scope: &str,
) -> url::Url {
    let url = authorize_url(s, client_id, challenge, scope);
    browser
        .approve(&s.http, &url, ("alice", PASSWORD), |page| {
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
        })
        .await
}

pub async fn code_for(
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

pub async fn exchange(s: &Setup, client_id: &str, code: &str, verifier: &str) -> (u16, Value) {
    s.client(client_id)
        .exchange_code(&s.http, code, verifier)
        .await
}

pub async fn call_tool(
    s: &Setup,
    token: &str,
    tool: &str,
) -> (u16, String, reqwest::header::HeaderMap) {
    let args = json!({"a": 40, "b": 2});
    let req = stateless_tool_call(&s.http, &s.url("/demo/mcp"), 5, tool, args, json!({}));
    let (status, headers, body) = status_headers_text(req.bearer_auth(token)).await;
    (status, body, headers)
}

/// Serves a client metadata document at `/client.json` (its `client_id` is
/// its own URL) and a redirect to the cloud metadata address at `/redirect`.
pub async fn metadata_document_server() -> std::net::SocketAddr {
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

pub async fn authorize_page(s: &Setup, client_id: &str) -> Page {
    let (_, challenge) = pkce();
    Browser::default()
        .send(s.http.get(authorize_url(s, client_id, &challenge, "mcp")))
        .await
}

/// How many requests race in each round of the race tests below.
pub const RACERS: usize = 8;

/// Fresh tokens from a whole code flow (the browser is signed in and the
/// consent remembered after the first).
pub async fn fresh_tokens(s: &Setup, browser: &mut Browser, client_id: &str) -> Value {
    let (code, verifier) = code_for(s, browser, client_id, "mcp").await;
    let (status, tokens) = exchange(s, client_id, &code, &verifier).await;
    assert_eq!(status, 200, "{tokens}");
    tokens
}

pub async fn refresh_with(s: &Setup, client_id: &str, refresh: &str) -> (u16, Value) {
    s.client(client_id).refresh(&s.http, refresh).await
}

/// Every token of a family is dead: the access token is refused at the
/// proxy, the refresh token at the token endpoint.
pub async fn assert_family_dead(s: &Setup, client_id: &str, tokens: &Value, what: &str) {
    let (status, body, _) = call_tool(s, tokens["access_token"].as_str().unwrap(), "echo").await;
    assert_eq!(status, 401, "{what}: access token still works: {body}");
    if let Some(refresh) = tokens["refresh_token"].as_str() {
        let (status, err) = refresh_with(s, client_id, refresh).await;
        assert_eq!(status, 400, "{what}: refresh token still works: {err}");
    }
}

/// The token answers of one race: at most one 200 (returned), every other
/// an invalid_grant, never a 500.
pub fn at_most_one_winner(answers: &[(u16, Value)], round: usize) -> Vec<&Value> {
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

/// The browser (signed in, consent remembered) is sent straight back.
pub async fn authorize_with(
    s: &Setup,
    browser: &mut Browser,
    request: &AuthorizeRequest<'_>,
) -> url::Url {
    let page = browser.send(s.http.get(request.url(&s.url("")))).await;
    assert_eq!(page.status, 303, "{}", page.body);
    page.location()
}
