//! Resource-server auth over real HTTP: challenges, protected-resource
//! metadata, accepted and hostile tokens, malformed Authorization headers.
//! Spec items: ../shared/spec/mcp-authorization.md, "Resource server" 1-9.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::idp::{now, rsa_public_pem, Idp, TestKey};
use common::resource_server::*;
use common::{client, free_port, mcp_post, rpc, Gateway, INITIALIZE};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

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
