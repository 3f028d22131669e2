//! The built-in authorization server over real HTTP, driven as an MCP client
//! and a person would: register, authorize with PKCE, log in, consent,
//! exchange the code, call tools through the proxy, step up, refresh,
//! revoke. Spec items: ../shared/spec/mcp-authorization.md, "Authorization
//! server" 1-11.

mod common;

use common::authserver::*;
use common::browser::{pkce, query, Browser};
use serde_json::{json, Value};
use std::time::Duration;

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
        assert!(page.body.contains("wants to use"), "{}", page.body);
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

/// OpenID Connect `prompt`: `none` answers without a page (a code when the
/// browser is signed in and consent remembered, else `login_required` or
/// `consent_required`), `consent` shows the consent page anyway, `login`
/// asks for the password again, and `none` with another value is refused.
#[tokio::test]
async fn prompt_none_consent_and_login_are_honoured() {
    let s = Setup::start().await;
    let client_id = s.public_client().await;
    let (_, challenge) = pkce();
    let url = |scope: &str, prompt: &str| {
        format!(
            "{}&prompt={prompt}",
            authorize_url(&s, &client_id, &challenge, scope)
        )
    };
    let error_of = |page: &common::browser::Page| query(&page.location())["error"].clone();

    let mut browser = Browser::default();
    let page = browser.send(s.http.get(url("mcp", "none"))).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(error_of(&page), "login_required");

    code_for(&s, &mut browser, &client_id, "mcp").await;
    let page = browser.send(s.http.get(url("mcp", "none"))).await;
    assert_eq!(page.status, 303);
    assert!(
        query(&page.location()).contains_key("code"),
        "signed in, consent remembered"
    );
    let page = browser.send(s.http.get(url("mcp math", "none"))).await;
    assert_eq!(
        error_of(&page),
        "consent_required",
        "math was never consented to"
    );

    let page = browser.send(s.http.get(url("mcp", "consent"))).await;
    assert_eq!(page.status, 200, "the consent page, though remembered");
    assert!(page.body.contains("name=\"action\""), "{}", page.body);
    let page = browser.send(s.http.get(url("mcp", "login"))).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("name=\"password\""),
        "asked to sign in again"
    );
    let page = browser.send(s.http.get(url("mcp", "none%20login"))).await;
    assert_eq!(error_of(&page), "invalid_request");
}

/// "Not you? Sign out" on the consent page ends the browser's session and
/// shows the flow's login page; the session no longer signs anyone in.
#[tokio::test]
async fn signing_out_from_the_consent_page_shows_the_login_page() {
    let s = Setup::start().await;
    let client_id = s.public_client().await;
    let mut browser = Browser::default();
    code_for(&s, &mut browser, &client_id, "mcp").await;
    let (_, challenge) = pkce();
    let consent = browser
        .send(s.http.get(format!(
            "{}&prompt=consent",
            authorize_url(&s, &client_id, &challenge, "mcp")
        )))
        .await;
    assert_eq!(consent.status, 200);
    let start = consent.body.find("/logout?flow=").expect("a sign-out link");
    let href: String = consent.body[start..].split('"').next().unwrap().to_owned();
    let out = browser.send(s.http.get(s.url(&href))).await;
    assert_eq!(out.status, 303, "{}", out.body);
    let login = browser.send(s.http.get(out.location().as_str())).await;
    assert_eq!(login.status, 200);
    assert!(login.body.contains("name=\"password\""), "{}", login.body);
    // The old session signs in no one: prompt=none needs a login now.
    let page = browser
        .send(s.http.get(format!(
            "{}&prompt=none",
            authorize_url(&s, &client_id, &challenge, "mcp")
        )))
        .await;
    assert_eq!(query(&page.location())["error"], "login_required");
}
