//! Where tokens are verified: introspection (once per token, cached, fail
//! closed) and JWKS (fetched at start and on schedule, rotation, tokens
//! without `kid`).

mod common;

use common::idp::{now, Idp, TestKey};
use common::resource_server::*;
use common::{client, free_port, mcp_post, INITIALIZE};
use jsonwebtoken::{Algorithm, Header};
use serde_json::json;
use std::time::Duration;

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
