//! Resource-server auth over real HTTP: the gateway in front of the demo MCP
//! server, with a test IdP (metadata, rotating JWKS, counting introspection
//! endpoint). Spec items: ../shared/spec/mcp-authorization.md, "Resource
//! server" 1-9.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::idp::{now, rsa_public_pem, Idp, TestKey, INTROSPECTION_CLIENT};
use common::{client, free_port, mcp_post, rpc, Gateway, Upstream, INITIALIZE};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::Duration;

const HMAC_SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

struct Setup {
    upstream: Upstream,
    idp: Idp,
    gw: Gateway,
    ec1: TestKey,
}

impl Setup {
    async fn start() -> Self {
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

    fn resource(&self, path: &str) -> String {
        self.gw.url(path)
    }

    /// An ES256 token for the demo upstream.
    fn token(&self, subject: &str, scope: &str) -> String {
        self.token_for("/demo/mcp", subject, scope)
    }

    /// An ES256 token for the upstream at `path`.
    fn token_for(&self, path: &str, subject: &str, scope: &str) -> String {
        self.ec1
            .sign(&self.idp.claims(subject, &self.resource(path), scope))
    }

    /// POSTs `body` to `path` with `token`; returns status, headers, body.
    async fn post(
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
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.unwrap())
    }

    async fn call_tool(
        &self,
        token: &str,
        tool: &str,
        args: Value,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let body = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
            "name": tool, "arguments": args,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "auth-tests", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }});
        let c = client();
        let resp = mcp_post(&c, &self.gw.url("/demo/mcp"), body.to_string())
            .bearer_auth(token)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", tool)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.unwrap())
    }

    fn prm_url(&self, path: &str) -> String {
        self.gw
            .url(&format!("/.well-known/oauth-protected-resource{path}"))
    }
}

/// A gateway on a free loopback port with this `auth:` section body and
/// `upstreams:` list (YAML, indented as they go under their keys).
async fn gateway_with(auth: &str, upstreams: &str) -> Gateway {
    let port = free_port();
    Gateway::start_yaml(&format!(
        "public_url: http://127.0.0.1:{port}\nlisten: 127.0.0.1:{port}\nauth:\n{auth}upstreams:\n{upstreams}"
    ))
    .await
}

async fn get_json(url: &str) -> Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn challenge(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn error_of(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    (
        v["error"].as_str().unwrap_or_default().to_owned(),
        v["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

const TOOLS_LIST: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"t","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}"#;

/// Resource server 2: no token -> 401 naming the PRM and the base scopes.
#[tokio::test]
async fn missing_token_gets_401_with_resource_metadata_and_base_scope() {
    let s = Setup::start().await;
    let (status, headers, body) = s.post("/demo/mcp", None, INITIALIZE).await;
    assert_eq!(status, 401);
    assert_eq!(
        challenge(&headers),
        format!(
            "Bearer scope=\"mcp\", resource_metadata=\"{}\"",
            s.prm_url("/demo/mcp")
        )
    );
    assert_eq!(error_of(&body).0, "invalid_token");
    assert_eq!(s.upstream.count(), 0);
}

/// Resource server 1: PRM per upstream, built from public_url; no root
/// document when several upstreams are configured.
#[tokio::test]
async fn protected_resource_metadata_is_served_per_upstream() {
    let s = Setup::start().await;
    let c = client();
    let doc = get_json(&s.prm_url("/demo/mcp")).await;
    assert_eq!(
        doc,
        json!({
            "resource": s.resource("/demo/mcp"),
            "authorization_servers": [s.idp.issuer, format!("{}/hs", s.idp.issuer), format!("{}/opaque", s.idp.issuer)],
            "scopes_supported": ["mcp", "math", "time"],
            "bearer_methods_supported": ["header"],
            "resource_name": "demo",
        })
    );
    let root = c.get(s.prm_url("")).send().await.unwrap();
    assert_eq!(root.status(), 404, "three upstreams: no root document");
    let post = c.post(s.prm_url("/demo/mcp")).send().await.unwrap();
    assert_eq!(post.status(), 405);
}

#[tokio::test]
async fn single_upstream_also_gets_the_root_metadata_document() {
    let idp = Idp::start(&[&TestKey::ec1()]).await;
    let port = free_port();
    let yaml = format!(
        "public_url: https://mcp.example.com/base
listen: 127.0.0.1:{port}
auth:
  jwt_issuers:
    - issuer: {}
upstreams:
  - {{ name: only, path: /mcp, url: 'http://127.0.0.1:1/mcp', scopes: [a, offline_access] }}
",
        idp.issuer
    );
    let gw = Gateway::start_yaml(&yaml).await;
    let doc = get_json(&gw.url("/.well-known/oauth-protected-resource")).await;
    assert_eq!(doc["resource"], "https://mcp.example.com/base/mcp");
    assert_eq!(
        doc["scopes_supported"],
        json!(["a"]),
        "offline_access is not published"
    );
}

/// Resource server 3 and 4: a valid token reaches the upstream, which never
/// sees the client's Authorization header.
#[tokio::test]
async fn valid_es256_token_is_forwarded_without_its_authorization_header() {
    let s = Setup::start().await;
    let token = s.token_for("/raw", "alice", "mcp");
    let (status, _, body) = s
        .post(
            "/raw/inspect",
            Some(&token),
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert!(seen["headers"].get("authorization").is_none(), "{seen}");
    assert!(!body.contains(&token));
}

#[tokio::test]
async fn rsa_eddsa_and_configured_hmac_tokens_are_accepted() {
    let s = Setup::start().await;
    let aud = s.resource("/demo/mcp");
    for key in [TestKey::rsa(), TestKey::ed()] {
        let token = key.sign(&s.idp.claims("bob", &aud, "mcp"));
        let (status, _, body) = s.post("/demo/mcp", Some(&token), INITIALIZE).await;
        assert_eq!(status, 200, "{:?}: {body}", key.alg);
    }
    let mut claims = s.idp.claims("carol", &aud, "mcp");
    claims["iss"] = json!(format!("{}/hs", s.idp.issuer));
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(HMAC_SECRET.as_bytes()),
    )
    .unwrap();
    let (status, _, body) = s.post("/demo/mcp", Some(&token), INITIALIZE).await;
    assert_eq!(status, 200, "{body}");
}

fn forge(header: Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// Hostile tokens: each gets 401 invalid_token and never reaches the upstream.
#[tokio::test]
async fn hostile_tokens_get_401_invalid_token() {
    let s = Setup::start().await;
    let aud = s.resource("/demo/mcp");
    let good = s.idp.claims("mallory", &aud, "mcp math time");
    let valid = s.ec1.sign(&good);

    let alg_none = forge(json!({"alg": "none", "typ": "JWT"}), &good, "");
    let hs_with_rsa_public_key = jsonwebtoken::encode(
        &Header {
            kid: Some("rsa".into()),
            ..Header::new(Algorithm::HS256)
        },
        &good,
        &EncodingKey::from_secret(&rsa_public_pem()),
    )
    .unwrap();
    let tampered = {
        let parts: Vec<&str> = valid.split('.').collect();
        let mut claims = good.clone();
        claims["sub"] = json!("admin");
        format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            parts[2]
        )
    };
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        f(&mut c);
        s.ec1.sign(&c)
    };
    let expired = with(&|c| c["exp"] = json!(now() - 120));
    let not_yet_valid = with(&|c| c["nbf"] = json!(now() + 300));
    let wrong_iss = with(&|c| c["iss"] = json!("https://evil.example"));
    let wrong_aud = with(&|c| c["aud"] = json!("https://evil.example/mcp"));
    let other_upstream = with(&|c| c["aud"] = json!(s.resource("/other/mcp")));
    let no_exp = with(&|c| {
        c.as_object_mut().unwrap().remove("exp");
    });

    for (name, token, reason) in [
        ("alg none", alg_none, "algorithm `none`"),
        (
            "HS256 keyed with the RSA public key",
            hs_with_rsa_public_key,
            "algorithm `HS256`",
        ),
        ("tampered payload", tampered, "signature"),
        ("expired", expired, "expired"),
        ("not yet valid", not_yet_valid, "not valid yet"),
        ("wrong issuer", wrong_iss, "not active"),
        ("wrong audience", wrong_aud, "not issued for this resource"),
        (
            "token for another upstream",
            other_upstream,
            "not issued for this resource",
        ),
        ("no exp", no_exp, "`exp`"),
    ] {
        let (status, headers, body) = s.post("/demo/mcp", Some(&token), INITIALIZE).await;
        assert_eq!(status, 401, "{name}: {body}");
        let (error, description) = error_of(&body);
        assert_eq!(error, "invalid_token", "{name}");
        assert!(description.contains(reason), "{name}: {description}");
        let c = challenge(&headers);
        assert!(
            c.starts_with("Bearer error=\"invalid_token\""),
            "{name}: {c}"
        );
        assert!(
            c.contains(&format!("resource_metadata=\"{}\"", s.prm_url("/demo/mcp"))),
            "{c}"
        );
    }
    assert_eq!(
        s.upstream.count(),
        0,
        "no refused request reached the upstream"
    );
    // The token for `other` is fine there.
    let (status, _, _) = s
        .post(
            "/other/mcp",
            Some(&with(&|c| c["aud"] = json!(s.resource("/other/mcp")))),
            INITIALIZE,
        )
        .await;
    assert_eq!(status, 200);
}

/// Issue 11.6, RFC 7515 §4.1.11 and RFC 8725 §3.11: a JWS naming critical
/// extensions (or with a malformed `crit`), a JWT typed as something other
/// than an access token, and a token with an empty `sub` are refused; the
/// usual access-token types and tokens without `typ` pass.
#[tokio::test]
async fn crit_typ_and_empty_subject_are_checked() {
    let s = Setup::start().await;
    let aud = s.resource("/demo/mcp");
    let claims = s.idp.claims("alice", &aud, "mcp");
    let signed = |header: Value| s.ec1.sign_with_header(header, &claims);
    let refused = [
        ("unknown critical extension", signed(json!({"kid": "ec1", "crit": ["exp-ext"], "exp-ext": 1})), "critical extension `exp-ext`"),
        ("empty crit", signed(json!({"kid": "ec1", "crit": []})), "non-empty list"),
        ("crit not a list", signed(json!({"kid": "ec1", "crit": "b64"})), "non-empty list"),
        ("crit naming a registered header", signed(json!({"kid": "ec1", "crit": ["kid"]})), "registered header `kid`"),
        ("crit naming an absent header", signed(json!({"kid": "ec1", "crit": ["b64"]})), "which the header lacks"),
        ("ID token", signed(json!({"kid": "ec1", "typ": "id_token+jwt"})), "not an access token"),
        ("logout token", signed(json!({"kid": "ec1", "typ": "logout+jwt"})), "not an access token"),
        ("security event", signed(json!({"kid": "ec1", "typ": "secevent+jwt"})), "not an access token"),
        ("DPoP proof", signed(json!({"kid": "ec1", "typ": "dpop+jwt"})), "not an access token"),
        ("typ not a string", signed(json!({"kid": "ec1", "typ": 7})), "not an access token"),
        ("empty sub", s.ec1.sign(&json!({"sub": "", "iss": claims["iss"], "aud": claims["aud"], "scope": "mcp", "exp": claims["exp"]})), "`sub` is empty"),
    ];
    for (name, token, reason) in refused {
        let (status, _, body) = s.post("/demo/mcp", Some(&token), INITIALIZE).await;
        assert_eq!(status, 401, "{name}: {body}");
        let (error, description) = error_of(&body);
        assert_eq!(error, "invalid_token", "{name}");
        assert!(description.contains(reason), "{name}: {description}");
    }
    for typ in [
        json!("at+jwt"),
        json!("JWT"),
        json!("application/at+JWT"),
        Value::Null,
    ] {
        let mut header = json!({"kid": "ec1"});
        if !typ.is_null() {
            header["typ"] = typ.clone();
        }
        let (status, _, body) = s.post("/demo/mcp", Some(&signed(header)), INITIALIZE).await;
        assert_eq!(status, 200, "typ {typ}: {body}");
    }
    assert_eq!(
        s.upstream.count(),
        4,
        "only the accepted tokens reached the upstream"
    );
}

/// Issue 11.6: `kid` is optional (RFC 7515 §4.1.4); without one, the
/// issuer's keys of the token's `alg` are tried.
#[tokio::test]
async fn tokens_without_kid_are_verified_against_the_keys_of_their_alg() {
    let s = Setup::start().await;
    let (ec1, ec2, rsa) = (TestKey::ec1(), TestKey::ec2(), TestKey::rsa());
    s.idp.publish(&[&ec2, &ec1, &rsa]);
    // Past jwks_min_refresh_interval (1 s) since the fetch at start.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let aud = s.resource("/demo/mcp");
    // A token naming ec2 makes the gateway fetch the new key set.
    let named = ec2.sign(&s.idp.claims("alice", &aud, "mcp"));
    let (status, _, body) = s.post("/demo/mcp", Some(&named), INITIALIZE).await;
    assert_eq!(status, 200, "{body}");
    for key in [&ec1, &ec2] {
        let token = key.sign_with_header(json!({"typ": "JWT"}), &s.idp.claims("bob", &aud, "mcp"));
        let (status, _, body) = s.post("/demo/mcp", Some(&token), INITIALIZE).await;
        assert_eq!(status, 200, "no kid, signed by {}: {body}", key.kid);
    }
    let stranger = TestKey::load("ec-unknown", "ec3.pem", Algorithm::ES256);
    let token = stranger.sign_with_header(json!({}), &s.idp.claims("eve", &aud, "mcp"));
    let (status, _, body) = s.post("/demo/mcp", Some(&token), INITIALIZE).await;
    assert_eq!(status, 401, "no kid, unknown key: {body}");
}

/// Issue 11.6: a method an upstream could trim or case-fold into a known
/// one is refused before the policy (it would pass as an unknown method
/// with only the base scopes); well-formed unknown methods follow the
/// upstream's `unlisted_methods`.
#[tokio::test]
async fn lookalike_methods_are_refused_and_unlisted_methods_follow_the_policy() {
    let s = Setup::start().await;
    let base_only = s.token("alice", "mcp");
    for method in ["Tools/Call", "tools/call ", "tools/call\\u0000"] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":3,"method":"{method}","params":{{"name":"add","arguments":{{"a":1,"b":2}}}}}}"#
        );
        let (status, _, text) = s.post("/demo/mcp", Some(&base_only), &body).await;
        assert_eq!(status, 400, "{method}: {text}");
        assert!(text.contains("-32600"), "{method}: {text}");
    }
    assert_eq!(s.upstream.count(), 0, "no look-alike reached the upstream");

    let vendor = r#"{"jsonrpc":"2.0","id":4,"method":"vendor/extension","params":{}}"#;
    let raw = s.token_for("/raw", "alice", "mcp");
    let (status, _, text) = s.post("/raw/inspect", Some(&raw), vendor).await;
    assert_eq!(status, 200, "unlisted_methods: base (the default): {text}");
    let other = s.token_for("/other/mcp", "alice", "mcp");
    let (status, headers, text) = s.post("/other/mcp", Some(&other), vendor).await;
    assert_eq!(status, 403, "unlisted_methods: deny: {text}");
    assert!(challenge(&headers).contains("method `vendor/extension` is not allowed"));
}

/// Resource server 2 and 8: malformed Authorization or a token in the query
/// string is a 400.
#[tokio::test]
async fn malformed_authorization_and_query_tokens_get_400() {
    let s = Setup::start().await;
    let token = s.token("alice", "mcp");
    let c = client();
    let url = s.gw.url("/demo/mcp");
    let cases = [
        (
            "empty bearer",
            mcp_post(&c, &url, INITIALIZE).header("authorization", "Bearer "),
        ),
        (
            "bad characters",
            mcp_post(&c, &url, INITIALIZE).header("authorization", "Bearer a b\"c"),
        ),
        (
            "two headers",
            mcp_post(&c, &url, INITIALIZE)
                .header("authorization", format!("Bearer {token}"))
                .header("authorization", format!("Bearer {token}")),
        ),
        (
            "token in query",
            mcp_post(&c, &format!("{url}?access_token={token}"), INITIALIZE).bearer_auth(&token),
        ),
    ];
    for (name, req) in cases {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 400, "{name}");
        let body = resp.text().await.unwrap();
        assert_eq!(error_of(&body).0, "invalid_request", "{name}");
    }
    // Another scheme is simply no bearer token: a plain challenge.
    let resp = mcp_post(&c, &url, INITIALIZE)
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(s.upstream.count(), 0);
}

/// Resource server 5: a valid token without the tool's scope gets 403 with
/// the scopes needed plus the granted ones still relevant.
#[tokio::test]
async fn missing_tool_scope_gets_403_insufficient_scope_with_step_up_scope() {
    let s = Setup::start().await;
    let token = s.token("alice", "mcp time openid");
    let (status, headers, body) = s.call_tool(&token, "add", json!({"a": 1, "b": 2})).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        challenge(&headers),
        format!(
            "Bearer error=\"insufficient_scope\", error_description=\"tools/call of `add` needs scope math\", scope=\"mcp math time\", resource_metadata=\"{}\"",
            s.prm_url("/demo/mcp")
        )
    );
    assert_eq!(error_of(&body).0, "insufficient_scope");
    let (status, _, body) = s.call_tool(&token, "get_time", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.upstream.count(),
        1,
        "only the allowed call reached the upstream"
    );

    let wider = s.token("alice", "mcp math time");
    let (status, _, body) = s.call_tool(&wider, "add", json!({"a": 40, "b": 2})).await;
    assert_eq!(status, 200);
    assert!(body.contains("42"), "{body}");
}

#[tokio::test]
async fn a_token_without_the_base_scope_is_refused_everywhere() {
    let s = Setup::start().await;
    let token = s.token("alice", "math");
    let (status, headers, _) = s.post("/demo/mcp", Some(&token), INITIALIZE).await;
    assert_eq!(status, 403);
    assert!(challenge(&headers).contains("scope=\"mcp math\""));
    let resp = client()
        .get(s.gw.url("/demo/mcp"))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

/// Tool names are matched literally: case and look-alike characters name
/// other (unlisted, denied) tools; a batch is refused as a whole.
#[tokio::test]
async fn lookalike_names_and_batches_hiding_a_forbidden_call_are_refused() {
    let s = Setup::start().await;
    let token = s.token("alice", "mcp math time");
    for name in ["ADD", "\u{430}dd", "add\u{200b}"] {
        let (status, _, body) = s.call_tool(&token, name, json!({"a": 1, "b": 2})).await;
        assert_eq!(status, 403, "{name:?}: {body}");
        assert!(error_of(&body).1.contains("not allowed"), "{body}");
    }
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 1, "b": 1}}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "shutdown", "arguments": {}}}
    ]);
    let (status, _, body) = s.post("/demo/mcp", Some(&token), &batch.to_string()).await;
    assert_eq!(status, 403, "{body}");
    let dup = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add","name":"shutdown","arguments":{}}}"#;
    let (status, _, body) = s.post("/demo/mcp", Some(&token), dup).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(s.upstream.count(), 0);
}

/// Resource server 9: `Mcp-Name` that lies about the tool gets -32020.
#[tokio::test]
async fn mcp_name_header_lying_about_the_tool_gets_32020() {
    let s = Setup::start().await;
    let token = s.token("alice", "mcp time");
    let body = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "add", "arguments": {}}});
    let c = client();
    let (status, messages, _) = rpc(mcp_post(&c, &s.gw.url("/demo/mcp"), body.to_string())
        .bearer_auth(&token)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "get_time"))
    .await;
    assert_eq!(status, 400);
    assert_eq!(messages[0]["error"]["code"], -32020);
    assert_eq!(s.upstream.count(), 0);
}

async fn initialize_session(s: &Setup, token: &str) -> String {
    let c = client();
    let (status, _, headers) =
        rpc(mcp_post(&c, &s.gw.url("/demo/mcp"), INITIALIZE).bearer_auth(token)).await;
    assert_eq!(status, 200);
    headers["mcp-session-id"].to_str().unwrap().to_owned()
}

fn session_post(s: &Setup, token: &str, session: &str, body: &str) -> reqwest::RequestBuilder {
    mcp_post(&client(), &s.gw.url("/demo/mcp"), body.to_owned())
        .bearer_auth(token)
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", "2025-06-18")
}

/// Resource server 6: a session belongs to the subject that created it.
#[tokio::test]
async fn session_id_replayed_by_another_subject_gets_404() {
    let s = Setup::start().await;
    let alice = s.token("alice", "mcp");
    let eve = s.token("eve", "mcp");
    let session = initialize_session(&s, &alice).await;
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let resp = session_post(&s, &alice, &session, initialized)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let before = s.upstream.count();

    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let (status, messages, _) = rpc(session_post(&s, &eve, &session, list)).await;
    assert_eq!(status, 404);
    assert!(messages[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("session not found"));
    let (status, _, _) = rpc(session_post(&s, &eve, "made-up-session", list)).await;
    assert_eq!(status, 404, "a session the gateway never saw created");
    let get = client()
        .get(s.gw.url("/demo/mcp"))
        .bearer_auth(&eve)
        .header("mcp-session-id", &session)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 404);
    assert_eq!(s.upstream.count(), before, "eve reached nothing");

    let (status, _, _) = rpc(session_post(&s, &alice, &session, list)).await;
    assert_eq!(status, 200, "alice keeps her session");
}

fn tool_names(messages: &[Value]) -> Vec<String> {
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

/// tools/list hides tools the caller could not call, in an SSE session
/// response and in a stateless one.
#[tokio::test]
async fn tools_list_shows_only_callable_tools() {
    let s = Setup::start().await;
    let token = s.token("alice", "mcp math");
    let session = initialize_session(&s, &token).await;
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let (status, messages, headers) = rpc(session_post(&s, &token, &session, list)).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(tool_names(&messages), vec!["add", "countdown", "echo"]);

    let c = client();
    let (status, messages, headers) = rpc(mcp_post(&c, &s.gw.url("/demo/mcp"), TOOLS_LIST)
        .bearer_auth(&token)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list"))
    .await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(tool_names(&messages), vec!["add", "countdown", "echo"]);

    let time_only = s.token("bob", "mcp time");
    let (_, messages, _) = rpc(mcp_post(&c, &s.gw.url("/demo/mcp"), TOOLS_LIST)
        .bearer_auth(&time_only)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list"))
    .await;
    assert_eq!(tool_names(&messages), vec!["countdown", "echo", "get_time"]);
}

#[tokio::test]
async fn tools_list_json_response_is_filtered_and_reframed() {
    let s = Setup::start().await;
    let token = s.token_for("/raw", "alice", "mcp");
    let c = client();
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let resp = mcp_post(&c, &s.gw.url("/raw/tools-json"), list)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let length: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = resp.text().await.unwrap();
    assert_eq!(length, body.len());
    let messages = vec![serde_json::from_str::<Value>(&body).unwrap()];
    assert_eq!(tool_names(&messages), vec!["add", "get_time"]);

    let admin = s.token_for("/raw", "root", "mcp admin");
    let (_, messages, _) =
        rpc(mcp_post(&c, &s.gw.url("/raw/tools-json"), list).bearer_auth(&admin)).await;
    assert_eq!(
        tool_names(&messages),
        vec!["add", "get_time", "secret_admin"]
    );
}

/// A GET stream can replay a `tools/list` response (`Last-Event-ID`
/// resumption): it is filtered too.
#[tokio::test]
async fn tools_list_replayed_on_a_get_stream_is_filtered() {
    let s = Setup::start().await;
    let token = s.token_for("/raw", "alice", "mcp");
    let resp = client()
        .get(s.gw.url("/raw/tools-sse"))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .header("last-event-id", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let messages = common::rpc_messages("text/event-stream", &body);
    let list = messages
        .iter()
        .find(|m| m["id"] == 7)
        .expect("the replayed response");
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["add", "get_time"]);
    assert!(
        body.contains(
            "id: 2\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\n"
        ),
        "{body}"
    );
}

/// Opaque tokens: introspected once, cached, coalesced; inactive answers
/// cached briefly.
#[tokio::test]
async fn opaque_tokens_are_introspected_once_for_concurrent_and_repeated_use() {
    let s = Setup::start().await;
    s.idp.activate(
        "opaque-token-1",
        json!({"active": true, "sub": "olivia", "client_id": "c1", "scope": "mcp", "aud": s.resource("/demo/mcp"), "exp": now() + 600}),
    );
    s.idp.set_introspection_delay(Duration::from_millis(300));
    let calls = (0..8).map(|_| s.post("/demo/mcp", Some("opaque-token-1"), INITIALIZE));
    for (status, _, body) in futures_util::future::join_all(calls).await {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        s.idp.introspections(),
        1,
        "eight concurrent uses, one introspection"
    );
    let (status, _, _) = s
        .post("/demo/mcp", Some("opaque-token-1"), INITIALIZE)
        .await;
    assert_eq!(status, 200);
    assert_eq!(s.idp.introspections(), 1, "cached");

    s.idp.set_introspection_delay(Duration::ZERO);
    s.idp.activate(
        "a-refresh-token",
        json!({"active": true, "token_type": "refresh_token", "sub": "olivia", "scope": "mcp", "aud": s.resource("/demo/mcp")}),
    );
    let (status, _, _) = s
        .post("/demo/mcp", Some("a-refresh-token"), INITIALIZE)
        .await;
    assert_eq!(status, 401, "a refresh token is not an access token");
    for _ in 0..3 {
        let (status, _, body) = s
            .post("/demo/mcp", Some("unknown-opaque"), INITIALIZE)
            .await;
        assert_eq!(status, 401);
        assert!(error_of(&body).1.contains("not active"));
    }
    assert_eq!(s.idp.introspections(), 3, "inactive answer cached");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    s.post("/demo/mcp", Some("unknown-opaque"), INITIALIZE)
        .await;
    assert_eq!(
        s.idp.introspections(),
        4,
        "inactive answer expired after 1s"
    );
}

/// Fail closed: introspection down -> 503 for unknown tokens; tokens already
/// verified keep working.
#[tokio::test]
async fn introspection_down_gets_503_but_cached_tokens_keep_working() {
    let s = Setup::start().await;
    s.idp.activate(
        "known",
        json!({"active": true, "sub": "olivia", "scope": "mcp", "aud": s.resource("/demo/mcp")}),
    );
    let (status, _, _) = s.post("/demo/mcp", Some("known"), INITIALIZE).await;
    assert_eq!(status, 200);
    s.idp.set_introspection_down(true);
    let (status, headers, body) = s.post("/demo/mcp", Some("never-seen"), INITIALIZE).await;
    assert_eq!(status, 503, "{body}");
    let (error, description) = error_of(&body);
    assert_eq!(error, "temporarily_unavailable");
    assert!(
        !description.contains("127.0.0.1"),
        "internal URLs stay in the log: {description}"
    );
    assert!(headers.get("www-authenticate").is_none());
    let (status, _, _) = s.post("/demo/mcp", Some("known"), INITIALIZE).await;
    assert_eq!(status, 200);
}

/// JWKS: an unknown kid triggers one rate-limited refresh, so a rotated-in
/// key works and a flood of bogus kids costs one fetch per interval.
#[tokio::test]
async fn key_rotation_is_picked_up_and_unknown_kids_are_rate_limited() {
    let s = Setup::start().await;
    let token = s.token("alice", "mcp");
    let (status, _, _) = s.post("/demo/mcp", Some(&token), INITIALIZE).await;
    assert_eq!(status, 200);
    let ec2 = TestKey::ec2();
    let rotated = ec2.sign(&s.idp.claims("alice", &s.resource("/demo/mcp"), "mcp"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fetches = s.idp.jwks_fetches();
    let (status, _, body) = s.post("/demo/mcp", Some(&rotated), INITIALIZE).await;
    assert_eq!(status, 401, "not published yet");
    assert!(error_of(&body).1.contains("unknown key"));
    assert_eq!(s.idp.jwks_fetches(), fetches + 1);
    for i in 0..20 {
        let mut claims = s.idp.claims("x", &s.resource("/demo/mcp"), "mcp");
        claims["jti"] = json!(i);
        let bogus = jsonwebtoken::encode(
            &Header {
                kid: Some(format!("bogus-{i}")),
                ..Header::new(Algorithm::ES256)
            },
            &claims,
            &ec2.encoding,
        )
        .unwrap();
        let (status, _, _) = s.post("/demo/mcp", Some(&bogus), INITIALIZE).await;
        assert_eq!(status, 401);
    }
    assert_eq!(
        s.idp.jwks_fetches(),
        fetches + 1,
        "bogus kids are rate-limited"
    );

    s.idp.publish(&[&s.ec1, &ec2]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, body) = s.post("/demo/mcp", Some(&rotated), INITIALIZE).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn jwks_unreachable_at_start_gets_503_for_jwts() {
    let s = Setup::start().await;
    // A second gateway whose issuer points at a port nothing listens on.
    let dead = free_port();
    let gw = gateway_with(
        &format!(
            "  jwt_issuers:\n    - {{ issuer: '{}', jwks_uri: 'http://127.0.0.1:{dead}/jwks.json' }}\n",
            s.idp.issuer
        ),
        &format!(
            "  - {{ name: demo, path: /demo/mcp, url: 'http://{}/mcp', policy: {{ unlisted_tools: base }} }}\n",
            s.upstream.addr
        ),
    )
    .await;
    let token = s.ec1.sign(&s.idp.claims("alice", &gw.url("/demo/mcp"), ""));
    let resp = mcp_post(&client(), &gw.url("/demo/mcp"), INITIALIZE)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body = resp.text().await.unwrap();
    assert!(
        error_of(&body).1.contains("cannot check tokens right now"),
        "{body}"
    );
}

/// Keys are loaded at start and refreshed on schedule, without any request.
#[tokio::test]
async fn jwks_is_fetched_at_start_and_on_schedule() {
    let idp = Idp::start(&[&TestKey::ec1()]).await;
    let _gw = gateway_with(
        &format!(
            "  jwt_issuers:\n    - {{ issuer: '{}', jwks_refresh_interval: 1s }}\n",
            idp.issuer
        ),
        "  - { name: demo, path: /demo/mcp, url: 'http://127.0.0.1:1/mcp' }\n",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(idp.jwks_fetches() >= 2, "{} fetches", idp.jwks_fetches());
}

#[tokio::test]
async fn tools_list_filtering_can_be_switched_off_per_upstream() {
    let idp = Idp::start(&[&TestKey::ec1()]).await;
    let upstream = Upstream::start().await;
    let gw = gateway_with(
        &format!("  jwt_issuers: [{{ issuer: '{}' }}]\n", idp.issuer),
        &format!(
            "  - name: raw\n    path: /raw\n    url: http://{}\n    policy: {{ tools: {{ 'secret_*': [admin] }}, unlisted_tools: base, filter_tools_list: false }}\n",
            upstream.addr
        ),
    )
    .await;
    let token = TestKey::ec1().sign(&idp.claims("alice", &gw.url("/raw"), ""));
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let (status, messages, _) =
        rpc(mcp_post(&client(), &gw.url("/raw/tools-json"), list).bearer_auth(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(
        tool_names(&messages),
        vec!["add", "get_time", "secret_admin"]
    );
}

/// Oversized tokens and names, and repeated single-valued headers, are
/// refused before any lookup.
#[tokio::test]
async fn oversized_tokens_names_and_repeated_mcp_headers_are_refused() {
    let s = Setup::start().await;
    let (status, _, body) = s
        .post("/demo/mcp", Some(&"a".repeat(9000)), INITIALIZE)
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(error_of(&body).1.contains("longer than 8192 bytes"));
    assert_eq!(s.idp.introspections(), 0);

    let token = s.token("alice", "mcp math time");
    let long_name = "a".repeat(3000);
    let body =
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": long_name}});
    let (status, messages, _) =
        rpc(mcp_post(&client(), &s.gw.url("/demo/mcp"), body.to_string()).bearer_auth(&token))
            .await;
    assert_eq!(status, 400);
    assert_eq!(messages[0]["error"]["code"], -32602);

    let session = initialize_session(&s, &token).await;
    let before = s.upstream.count();
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let (status, messages, _) =
        rpc(session_post(&s, &token, &session, list).header("mcp-session-id", "someone-elses"))
            .await;
    assert_eq!(status, 400);
    assert!(messages[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("mcp-session-id"));
    assert_eq!(s.upstream.count(), before);
}
