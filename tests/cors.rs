//! CORS for browser-based MCP clients (issue 16 §3), per the Fetch
//! standard: a preflight is answered before authentication, only origins
//! in `allowed_origins` get `Access-Control-Allow-Origin` (their own, never
//! `*`, never with credentials, always with `Vary: Origin`), the headers an
//! MCP client sends are allowed and the ones it must read are exposed, and
//! an upstream's own CORS fields never reach the browser. The last test
//! runs a whole OAuth flow and tool call from a page in real Chromium.

mod common;

use common::authserver::Setup;
use common::e2e::{ensure_setup, node22, run_client};
use common::{free_port, mcp_post, Gateway, Upstream};
use reqwest::header::HeaderMap;
use reqwest::Method;

/// The page's origin the tests allow.
const PAGE: &str = "http://app.example.test:3000";
/// Another site's page.
const FOREIGN: &str = "http://evil.example.test";

/// What a browser-based MCP client sends besides the safelisted fields.
const CLIENT_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
];

async fn gateway() -> Setup {
    Setup::start_with_top_level("", &format!("allowed_origins: ['{PAGE}']\n")).await
}

/// A browser's preflight from `origin` for a `method` request to `path`
/// that carries every header an MCP client sends.
async fn preflight(s: &Setup, origin: &str, path: &str, method: &str) -> reqwest::Response {
    s.http
        .request(Method::OPTIONS, s.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", CLIENT_HEADERS.join(","))
        .send()
        .await
        .unwrap()
}

fn field<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map_or("", |v| v.to_str().expect("ASCII field"))
}

/// The comma-separated list in `name`, lowercased.
fn list(headers: &HeaderMap, name: &str) -> Vec<String> {
    field(headers, name)
        .split(',')
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The response lets a page on `PAGE` read it, and only that page.
fn assert_readable_by_page(headers: &HeaderMap, what: &str) {
    assert_eq!(
        field(headers, "access-control-allow-origin"),
        PAGE,
        "{what}"
    );
    assert!(list(headers, "vary").contains(&"origin".into()), "{what}");
    assert!(
        headers.get("access-control-allow-credentials").is_none(),
        "{what}: no credentials"
    );
}

#[tokio::test]
async fn preflight_on_an_mcp_path_is_answered_before_authentication() {
    let s = gateway().await;
    let resp = preflight(&s, PAGE, "/demo/mcp", "POST").await;
    assert_eq!(resp.status(), 204);
    let headers = resp.headers();
    assert_readable_by_page(headers, "preflight");
    let methods = list(headers, "access-control-allow-methods");
    for method in ["get", "post", "delete"] {
        assert!(methods.contains(&method.into()), "{methods:?}");
    }
    let allowed = list(headers, "access-control-allow-headers");
    for name in CLIENT_HEADERS {
        assert!(allowed.contains(&(*name).into()), "{name} in {allowed:?}");
    }
    assert!(field(headers, "access-control-max-age")
        .parse::<u32>()
        .is_ok());
    assert_eq!(
        s.upstream.count(),
        0,
        "a preflight never reaches the upstream"
    );
}

#[tokio::test]
async fn preflight_from_a_foreign_origin_is_refused() {
    let s = gateway().await;
    for path in ["/demo/mcp", "/token", "/register"] {
        let resp = preflight(&s, FOREIGN, path, "POST").await;
        assert_eq!(resp.status(), 403, "{path}");
        assert!(list(resp.headers(), "vary").contains(&"origin".into()));
        assert!(
            resp.headers().get("access-control-allow-origin").is_none(),
            "{path}"
        );
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(
            body.to_string().contains("evil.example.test"),
            "names the origin: {body}"
        );
    }
}

#[tokio::test]
async fn the_401_challenge_is_readable_by_an_allowed_page() {
    let s = gateway().await;
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
    let resp = mcp_post(&s.http, &s.url("/demo/mcp"), init)
        .header("origin", PAGE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let headers = resp.headers();
    assert_readable_by_page(headers, "401");
    let exposed = list(headers, "access-control-expose-headers");
    for name in ["www-authenticate", "mcp-session-id", "x-request-id"] {
        assert!(exposed.contains(&name.into()), "{name} in {exposed:?}");
    }
}

#[tokio::test]
async fn every_public_endpoint_answers_an_allowed_page() {
    let s = gateway().await;
    let documents = [
        "/.well-known/oauth-protected-resource/demo/mcp",
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/jwks.json",
    ];
    for path in documents {
        let resp = s
            .http
            .get(s.url(path))
            .header("origin", PAGE)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_readable_by_page(resp.headers(), path);
    }
    for path in ["/register", "/token", "/revoke"] {
        let resp = preflight(&s, PAGE, path, "POST").await;
        assert_eq!(resp.status(), 204, "{path}");
        assert_readable_by_page(resp.headers(), path);
        let resp = s
            .http
            .post(s.url(path))
            .header("origin", PAGE)
            .form(&[("grant_type", "nonsense")])
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_client_error(), "{path}: {}", resp.status());
        assert_readable_by_page(resp.headers(), path);
    }
}

#[tokio::test]
async fn pages_for_people_and_foreign_origins_get_no_cors_fields() {
    let s = gateway().await;
    for path in [
        "/authorize?client_id=x",
        "/login",
        "/consent",
        "/introspect",
    ] {
        let resp = s
            .http
            .get(s.url(path))
            .header("origin", PAGE)
            .send()
            .await
            .unwrap();
        assert!(
            resp.headers().get("access-control-allow-origin").is_none(),
            "{path} is not for scripts"
        );
        let resp = preflight(&s, PAGE, path, "POST").await;
        assert_ne!(resp.status(), 204, "{path}: no preflight");
        assert!(resp.headers().get("access-control-allow-origin").is_none());
    }
    let resp = s
        .http
        .get(s.url("/.well-known/oauth-authorization-server"))
        .header("origin", FOREIGN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    assert!(list(resp.headers(), "vary").contains(&"origin".into()));
}

#[tokio::test]
async fn an_upstreams_own_cors_fields_never_reach_the_browser() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(&upstream, "", &format!("allowed_origins: ['{PAGE}']")).await;
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let http = common::client();
    let from_page = mcp_post(&http, &gw.url("/raw/own-cors"), call)
        .header("origin", PAGE)
        .send()
        .await
        .unwrap();
    assert_eq!(from_page.status(), 200);
    let headers = from_page.headers();
    assert_readable_by_page(headers, "relayed");
    assert!(!list(headers, "access-control-expose-headers").contains(&"x-upstream-secret".into()));
    assert!(headers.get("access-control-allow-methods").is_none());
    let from_tool = mcp_post(&http, &gw.url("/raw/own-cors"), call)
        .send()
        .await
        .unwrap();
    assert_eq!(from_tool.status(), 200);
    let leaked: Vec<_> = from_tool
        .headers()
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");
}

/// Issue 16 §3 in Chromium: a page on an allowed origin reads the 401
/// challenge, discovers, registers, sends its user through login and
/// consent, exchanges the code and calls tools, all by `fetch` across
/// origins, without a console error; a page on another origin is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_an_allowed_origin_is_an_mcp_client_in_chromium() {
    ensure_setup();
    let (app_port, foreign_port) = (free_port(), free_port());
    let app = format!("http://127.0.0.1:{app_port}");
    let s = Setup::start_with_top_level(
        "  access_token_ttl: 5m\n",
        &format!("allowed_origins: ['{app}']\n"),
    )
    .await;
    let args = [
        "browser_cors.mjs".to_owned(),
        s.url("/demo/mcp"),
        app_port.to_string(),
        foreign_port.to_string(),
        "alice".into(),
        common::authserver::PASSWORD.into(),
    ];
    let seen = run_client(node22(), args.to_vec()).await;
    println!("{seen}");
    let page = &seen["app"];
    assert_eq!(page["challengeStatus"], 401);
    assert!(
        page["challenge"]
            .as_str()
            .unwrap()
            .contains("resource_metadata="),
        "{page}"
    );
    assert_eq!(page["registered"], true, "{page}");
    assert_eq!(page["tokenType"], "Bearer", "{page}");
    assert_eq!(page["initializeStatus"], 200, "{page}");
    assert_eq!(page["hasSessionId"], true, "Mcp-Session-Id exposed");
    assert_eq!(page["toolResult"], "42", "{page}");
    assert_eq!(page["consoleErrors"], serde_json::json!([]), "{page}");
    let foreign = &seen["foreign"];
    assert_eq!(foreign["mcp"], "TypeError", "{foreign}");
    assert_eq!(foreign["metadata"], "TypeError", "{foreign}");
}
