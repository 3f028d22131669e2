//! Caller identity for upstreams (issue 16 §5): an upstream is told who
//! called, as the headers it configured and/or a short-lived JWT the
//! gateway signs (key published at its identity JWKS URL), and sees
//! exactly that: nothing a client tried to inject under those names, and
//! never the client's token (spec: Resource server 4, no passthrough).

mod common;

use common::idp::{Idp, TestKey, INTROSPECTION_CLIENT};
use common::{client, free_port, get_json, status_headers_text, Gateway, Upstream};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use mcp_oauth_gateway::identity::IDENTITY_JWKS_PATH;
use serde_json::{json, Value};

const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#;

struct Setup {
    upstream: Upstream,
    idp: Idp,
    gw: Gateway,
    key: TestKey,
}

impl Setup {
    /// `facts` gets every fact as a header plus the JWT under its default
    /// header; `signed` gets only the JWT, in `Authorization`; `plain`
    /// gets nothing. `top_level` is added to the config.
    async fn start(top_level: &str) -> Self {
        let key = TestKey::ec1();
        let idp = Idp::start(&[&key]).await;
        let upstream = Upstream::start().await;
        let port = free_port();
        let yaml = format!(
            "public_url: http://127.0.0.1:{port}
listen: 127.0.0.1:{port}
{top_level}
auth:
  jwt_issuers: [{{ issuer: {iss} }}]
  introspection:
    - url: {iss}/introspect
      issuer: {iss}/opaque
      client_id: {cid}
      client_secret: '{secret}'
upstreams:
  - name: facts
    path: /facts
    url: http://{up}
    policy: {{ base_scopes: [mcp], unlisted_tools: base }}
    forward_identity:
      headers:
        subject: X-Auth-Subject
        issuer: x-auth-issuer
        client_id: x-auth-client
        scopes: x-auth-scopes
        email: x-auth-email
        groups: x-auth-groups
      jwt: {{}}
  - name: signed
    path: /signed
    url: http://{up}
    policy: {{ base_scopes: [mcp], unlisted_tools: base }}
    forward_identity:
      jwt: {{ header: authorization, audience: 'urn:example:inspector', ttl: 30s }}
  - name: plain
    path: /plain
    url: http://{up}
    policy: {{ base_scopes: [mcp], unlisted_tools: base }}
",
            iss = idp.issuer,
            up = upstream.addr,
            cid = INTROSPECTION_CLIENT.0,
            secret = INTROSPECTION_CLIENT.1,
        );
        let gw = Gateway::start_yaml(&yaml).await;
        Self {
            upstream,
            idp,
            gw,
            key,
        }
    }

    /// Alice's token for the upstream at `path`, with an email and groups
    /// (one of them with a comma and a non-ASCII letter).
    fn token(&self, path: &str) -> String {
        let mut claims = self.idp.claims("alice", &self.gw.url(path), "mcp extra");
        claims["email"] = json!("alice@example.com");
        claims["groups"] = json!(["ops", "CN=Zoë,OU=b"]);
        self.key.sign(&claims)
    }

    /// POSTs a tool call to the upstream's inspector at `path` with
    /// `token` and the client's own `extra` headers; the headers the
    /// upstream received.
    async fn seen(&self, path: &str, token: &str, extra: &[(&str, &str)]) -> Value {
        let mut req = client()
            .post(self.gw.url(&format!("{path}/inspect")))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .bearer_auth(token)
            .body(CALL);
        for (name, value) in extra {
            req = req.header(*name, *value);
        }
        let (status, _, body) = status_headers_text(req).await;
        assert_eq!(status, 200, "{body}");
        let seen: Value = serde_json::from_str(&body).unwrap();
        seen["headers"].clone()
    }

    /// The gateway's identity JWKS, fetched as an upstream would.
    async fn jwks(&self) -> JwkSet {
        let resp = client()
            .get(self.gw.url(IDENTITY_JWKS_PATH))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        resp.json().await.unwrap()
    }

    /// Verifies `jwt` as an upstream would: signature from the published
    /// JWKS, issuer the gateway, audience `audience`.
    async fn verify(&self, jwt: &str, audience: &str) -> Value {
        let jwks = self.jwks().await;
        let kid = jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap();
        let jwk = jwks.find(&kid).expect("the JWT's key is published");
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[self.gw.url("")]);
        jsonwebtoken::decode::<Value>(jwt, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .unwrap_or_else(|e| panic!("identity JWT does not verify: {e}"))
            .claims
    }
}

/// Whatever a client sends: forged identity headers, a forged JWT.
const FORGED: &[(&str, &str)] = &[
    ("x-auth-subject", "root"),
    ("X-Auth-Email", "root@example.com"),
    ("x-auth-groups", "admins"),
    ("x-auth-scopes", "everything"),
    (
        "x-gateway-identity",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0.",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_sees_exactly_the_verified_identity_and_nothing_injected() {
    let s = Setup::start("").await;
    let token = s.token("/facts");
    let h = s.seen("/facts", &token, FORGED).await;
    for (name, value) in [
        ("x-auth-subject", "alice".to_owned()),
        ("x-auth-issuer", s.idp.issuer.clone()),
        ("x-auth-client", "test-client".to_owned()),
        ("x-auth-scopes", "extra mcp".to_owned()),
        ("x-auth-email", "alice@example.com".to_owned()),
        ("x-auth-groups", "ops,CN=Zo%C3%AB%2COU=b".to_owned()),
    ] {
        assert_eq!(h[name], json!(value), "{name} in {h:#}");
    }
    assert!(h.get("authorization").is_none(), "client token passed: {h}");
    let jwt = h["x-gateway-identity"].as_str().unwrap();
    assert!(!jwt.contains(&token), "never the client's token");
    let claims = s.verify(jwt, &format!("http://{}", s.upstream.addr)).await;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["token_issuer"], json!(s.idp.issuer));
    assert_eq!(claims["client_id"], "test-client");
    assert_eq!(claims["scope"], "extra mcp");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["groups"], json!(["ops", "CN=Zoë,OU=b"]));
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 60, "the default lifetime");

    // The GET stream path tells the upstream the same.
    let mut get = client()
        .get(s.gw.url("/facts/inspect"))
        .header("accept", "text/event-stream")
        .bearer_auth(&token);
    for (name, value) in FORGED {
        get = get.header(*name, *value);
    }
    let (status, _, body) = status_headers_text(get).await;
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["method"], "GET");
    let got = &seen["headers"];
    assert_eq!(got["x-auth-subject"], "alice");
    assert_eq!(got["x-auth-groups"], h["x-auth-groups"]);
    assert!(got.get("authorization").is_none(), "{got:#}");
    s.verify(
        got["x-gateway-identity"].as_str().unwrap(),
        &format!("http://{}", s.upstream.addr),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facts_a_token_does_not_carry_stay_absent_even_when_a_client_sends_them() {
    let s = Setup::start("").await;
    // An opaque token whose introspection answer has no email or groups.
    s.idp.activate(
        "opaque-bob",
        json!({"active": true, "sub": "bob", "client_id": "c9", "scope": "mcp",
               "aud": s.gw.url("/facts"), "exp": common::idp::now() + 600}),
    );
    // Underscored look-alikes too: CGI-style servers read `X_Auth_Email`
    // as `HTTP_X_AUTH_EMAIL`, the same variable as `x-auth-email`.
    let forged: Vec<(&str, &str)> = FORGED
        .iter()
        .copied()
        .chain([
            ("X_Auth_Email", "ceo@example.com"),
            ("x_auth-groups", "admins"),
        ])
        .collect();
    let h = s.seen("/facts", "opaque-bob", &forged).await;
    assert_eq!(h["x-auth-subject"], "bob");
    assert_eq!(
        h["x-auth-issuer"],
        json!(format!("{}/opaque", s.idp.issuer))
    );
    assert_eq!(h["x-auth-client"], "c9");
    for absent in [
        "x-auth-email",
        "x-auth-groups",
        "authorization",
        "x_auth_email",
        "x_auth-groups",
    ] {
        assert!(h.get(absent).is_none(), "{absent} in {h:#}");
    }
    // Introspection answers carry them too when the IdP knows them.
    s.idp.activate(
        "opaque-carol",
        json!({"active": true, "sub": "carol", "scope": "mcp", "email": "carol@example.com",
               "groups": "auditors", "aud": s.gw.url("/facts"), "exp": common::idp::now() + 600}),
    );
    let h = s.seen("/facts", "opaque-carol", &[]).await;
    assert_eq!(h["x-auth-email"], "carol@example.com");
    assert_eq!(h["x-auth-groups"], "auditors");
    assert!(h.get("x-auth-client").is_none(), "no client id known");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwt_can_replace_authorization_and_other_upstreams_get_nothing() {
    let s = Setup::start("").await;
    let token = s.token("/signed");
    let h = s.seen("/signed", &token, &[]).await;
    let bearer = h["authorization"].as_str().unwrap();
    let jwt = bearer.strip_prefix("Bearer ").expect("a bearer JWT");
    assert_ne!(jwt, token, "never the client's token");
    let claims = s.verify(jwt, "urn:example:inspector").await;
    assert_eq!(claims["sub"], "alice");
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 30);
    assert!(h.get("x-gateway-identity").is_none(), "{h:#}");

    let h = s.seen("/plain", &s.token("/plain"), &[]).await;
    for absent in ["authorization", "x-gateway-identity", "x-auth-subject"] {
        assert!(h.get(absent).is_none(), "{absent} in {h:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_a_key_file_publish_the_same_key() {
    let key = format!(
        "identity_key_file: {}/tests/fixtures/keys/ec3.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let (a, b) = (Setup::start(&key).await, Setup::start(&key).await);
    let (ka, kb) = (a.jwks().await, b.jwks().await);
    assert_eq!(ka.keys.len(), 1);
    assert_eq!(ka.keys[0].common.key_id, kb.keys[0].common.key_id);
    // A JWT from replica a verifies with replica b's published key.
    let h = a.seen("/facts", &a.token("/facts"), &[]).await;
    let jwt = h["x-gateway-identity"].as_str().unwrap();
    let kid = jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap();
    assert!(kb.find(&kid).is_some());
    // Without a file each process has its own key.
    let (c, d) = (Setup::start("").await, Setup::start("").await);
    assert_ne!(
        c.jwks().await.keys[0].common.key_id,
        d.jwks().await.keys[0].common.key_id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_jwks_is_a_public_get_only_document() {
    let s = Setup::start("").await;
    let jwks = s.jwks().await;
    let jwk = &jwks.keys[0];
    assert!(jwk.common.key_id.is_some());
    let raw = get_json(&s.gw.url(IDENTITY_JWKS_PATH)).await;
    assert_eq!(raw["keys"][0]["alg"], "ES256");
    assert!(raw["keys"][0].get("d").is_none(), "no private part");
    let (status, headers, body) =
        status_headers_text(client().post(s.gw.url(IDENTITY_JWKS_PATH)).body("{}")).await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    // Gateways whose upstreams get no JWT publish nothing.
    let up = Upstream::start().await;
    let plain = Gateway::start(&up).await;
    let resp = client()
        .get(plain.url(IDENTITY_JWKS_PATH))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}
