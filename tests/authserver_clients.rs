//! Clients of the built-in authorization server: dynamic registration (its
//! validation, policies and rate limit), Client ID Metadata Documents, and
//! the redirect URIs native and web clients may use.

mod common;

use common::authserver::*;
use common::browser::{pkce, query, AuthorizeRequest, Browser};
use serde_json::{json, Value};

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
