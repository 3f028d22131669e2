//! The resource server under test: the gateway in front of the demo MCP
//! server with a test IdP (metadata, rotating JWKS, counting introspection
//! endpoint), and the requests and checks the auth tests share.

use super::idp::{Idp, TestKey, INTROSPECTION_CLIENT};
use super::{
    client, free_port, mcp_post, rpc, stateless_tool_call, status_headers_text, Gateway, Upstream,
    INITIALIZE,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

pub const HMAC_SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

pub struct Setup {
    pub upstream: Upstream,
    pub idp: Idp,
    pub gw: Gateway,
    pub ec1: TestKey,
}

impl Setup {
    pub async fn start() -> Self {
        let (ec1, rsa, ed) = (TestKey::ec1(), TestKey::rsa(), TestKey::ed());
        let idp = Idp::start(&[&ec1, &rsa, &ed]).await;
        let upstream = Upstream::start().await;
        let port = free_port();
        let yaml = format!(
            "public_url: http://127.0.0.1:{port}
listen: 127.0.0.1:{port}
auth:
  jwt_issuers:
    - issuer: {iss}
      leeway: 5s
      jwks_min_refresh_interval: 1s
    - issuer: {iss}/hs
      algorithms: [HS256]
      hmac_secret: {HMAC_SECRET}
  introspection:
    - url: {iss}/introspect
      issuer: {iss}/opaque
      client_id: {cid}
      client_secret: '{secret}'
      inactive_cache_ttl: 1s
      timeout: 2s
upstreams:
  - name: demo
    path: /demo/mcp
    url: http://{up}/mcp
    scopes: [mcp, math, time]
    policy:
      base_scopes: [mcp]
      tools:
        add: [math]
        'get_*': [time]
        echo: []
        countdown: []
  - name: other
    path: /other/mcp
    url: http://{up}/mcp
    policy:
      base_scopes: [mcp]
      unlisted_tools: base
      unlisted_methods: deny
  - name: raw
    path: /raw
    url: http://{up}
    policy:
      base_scopes: [mcp]
      tools:
        'secret_*': [admin]
      unlisted_tools: base
",
            iss = idp.issuer,
            cid = INTROSPECTION_CLIENT.0,
            secret = INTROSPECTION_CLIENT.1,
            up = upstream.addr,
        );
        let gw = Gateway::start_yaml(&yaml).await;
        Self {
            upstream,
            idp,
            gw,
            ec1,
        }
    }

    pub fn resource(&self, path: &str) -> String {
        self.gw.url(path)
    }

    /// An ES256 token for the demo upstream.
    pub fn token(&self, subject: &str, scope: &str) -> String {
        self.token_for("/demo/mcp", subject, scope)
    }

    /// An ES256 token for the upstream at `path`.
    pub fn token_for(&self, path: &str, subject: &str, scope: &str) -> String {
        self.ec1
            .sign(&self.idp.claims(subject, &self.resource(path), scope))
    }

    /// POSTs `body` to `path` with `token`; returns status, headers, body.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let c = client();
        let mut req = mcp_post(&c, &self.gw.url(path), body.to_owned());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        status_headers_text(req).await
    }

    pub async fn call_tool(
        &self,
        token: &str,
        tool: &str,
        args: Value,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let url = self.gw.url("/demo/mcp");
        let req = stateless_tool_call(&client(), &url, 5, tool, args, json!({}));
        status_headers_text(req.bearer_auth(token)).await
    }

    pub fn prm_url(&self, path: &str) -> String {
        self.gw
            .url(&format!("/.well-known/oauth-protected-resource{path}"))
    }
}

/// A gateway on a free loopback port with this `auth:` section body and
/// `upstreams:` list (YAML, indented as they go under their keys).
pub async fn gateway_with(auth: &str, upstreams: &str) -> Gateway {
    let port = free_port();
    Gateway::start_yaml(&format!(
        "public_url: http://127.0.0.1:{port}\nlisten: 127.0.0.1:{port}\nauth:\n{auth}upstreams:\n{upstreams}"
    ))
    .await
}

pub async fn get_json(url: &str) -> Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub fn challenge(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

pub fn error_of(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    (
        v["error"].as_str().unwrap_or_default().to_owned(),
        v["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

pub const TOOLS_LIST: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"t","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}"#;

pub fn forge(header: Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

pub async fn initialize_session(s: &Setup, token: &str) -> String {
    let c = client();
    let (status, _, headers) =
        rpc(mcp_post(&c, &s.gw.url("/demo/mcp"), INITIALIZE).bearer_auth(token)).await;
    assert_eq!(status, 200);
    headers["mcp-session-id"].to_str().unwrap().to_owned()
}

pub fn session_post(s: &Setup, token: &str, session: &str, body: &str) -> reqwest::RequestBuilder {
    mcp_post(&client(), &s.gw.url("/demo/mcp"), body.to_owned())
        .bearer_auth(token)
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", "2025-06-18")
}

pub fn tool_names(messages: &[Value]) -> Vec<String> {
    let list = messages
        .iter()
        .find(|m| m["id"] == 2)
        .expect("the tools/list response");
    let mut names: Vec<String> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}
