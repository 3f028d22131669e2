//! The authorization server's login and consent pages in a real browser:
//! Debian's headless Chromium driven by playwright-core (installed by
//! `tests/e2e/setup.sh`), typing and clicking as a person would. Each page
//! is saved as a screenshot under `tests/e2e/artifacts/` (gitignored).

mod common;

use common::browser::{pkce, query};
use common::e2e::*;
use common::oauth_client::OAuthClient;
use serde_json::Value;
use std::path::PathBuf;

fn artifacts(name: &str) -> String {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/artifacts"));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).display().to_string()
}

/// The operator's branding: a product name (markup in it stays text) and
/// a logo.
fn branding() -> String {
    let logo = artifacts("logo.svg");
    std::fs::write(
        &logo,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"><rect width="32" height="32" rx="6" fill="#1f5fd1"/></svg>"##,
    )
    .unwrap();
    format!("  branding: {{ product_name: 'Acme <Notes>', logo_file: '{logo}' }}\n")
}

/// A loopback redirect URI on a free port, where the script listens as the
/// native client would.
fn redirect_uri() -> String {
    format!("http://127.0.0.1:{}/callback", common::free_port())
}

/// Runs the browser through login and consent, clicking `decision`;
/// returns what the page showed and where the browser landed.
async fn person_decides(
    client: &OAuthClient,
    challenge: &str,
    decision: &str,
) -> (Value, url::Url) {
    let url = client.authorize_url(challenge, "mcp math", Some("state-from-the-client"));
    let shots = artifacts(&format!("consent-{decision}"));
    let args = ["browser_consent.mjs", &url, "alice", "pw", decision, &shots];
    let seen = run_client(node22(), args.iter().map(|s| s.to_string()).collect()).await;
    println!("{seen}");
    for page in [
        "1-login",
        "1-login-phone",
        "2-consent",
        "2-consent-phone",
        "3-redirect",
        "4-error",
        "4-error-phone",
    ] {
        let shot = format!("{shots}-{page}.png");
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "screenshot {shot} saved ({size} bytes)");
    }
    assert_eq!(
        seen["consoleErrors"],
        serde_json::json!([]),
        "no console errors"
    );
    for page in ["1-login", "2-consent", "4-error"] {
        assert_eq!(
            seen["violations"][page],
            serde_json::json!([]),
            "axe-core: no serious or critical accessibility violations on {page}"
        );
    }
    assert_eq!(
        seen["product"], "Acme <Notes>",
        "the operator's product, as text"
    );
    assert_eq!(seen["loginTitle"], "Sign in · Acme <Notes>");
    assert_eq!(seen["consentTitle"], "Allow access? · Acme <Notes>");
    assert_eq!(seen["errorTitle"], "Cannot continue · Acme <Notes>");
    assert_eq!(seen["resourceName"], "everything");
    assert_eq!(
        seen["approveFocused"], true,
        "Allow is the focused, primary action"
    );
    assert_eq!(
        seen["clientName"], "Claude <Desktop> & Co",
        "shown as text, not markup"
    );
    assert_eq!(seen["redirectHost"], "127.0.0.1");
    assert_eq!(
        seen["scopes"],
        serde_json::json!(["mcp", "Do arithmetic with your numbers\nmath"]),
        "scope descriptions from the configuration"
    );
    let landed = url::Url::parse(seen["landedOn"].as_str().expect("back at the client")).unwrap();
    assert!(
        landed.as_str().starts_with(&client.redirect_uri),
        "{landed}"
    );
    (seen, landed)
}

/// Authorization server 10 in Chromium: the person signs in, reads who
/// asks for what, clicks Allow and lands on the redirect URI with a code
/// (plus `state` and `iss`, RFC 9207) that the client then exchanges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_and_allows_in_chromium() {
    let everything = Everything::start().await;
    let oauth = OAuthGateway::behind_relay(&everything, &branding()).await;
    let client = oauth
        .register_client("Claude <Desktop> & Co", &redirect_uri())
        .await;
    let (verifier, challenge) = pkce();
    let (_, landed) = person_decides(&client, &challenge, "approve").await;
    let back = query(&landed);
    assert_eq!(back["state"], "state-from-the-client");
    assert_eq!(back["iss"], oauth.url(""));
    let (status, tokens) = client
        .exchange_code(&reqwest::Client::new(), &back["code"], &verifier)
        .await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["scope"], "mcp math");
}

/// Clicking Deny sends the browser back with `error=access_denied`, the
/// client's `state` and `iss`, and no code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_denies_in_chromium_and_the_client_gets_access_denied() {
    let everything = Everything::start().await;
    let oauth = OAuthGateway::behind_relay(&everything, &branding()).await;
    let client = oauth
        .register_client("Claude <Desktop> & Co", &redirect_uri())
        .await;
    let (_, challenge) = pkce();
    let (_, landed) = person_decides(&client, &challenge, "deny").await;
    let back = query(&landed);
    assert_eq!(back["error"], "access_denied");
    assert_eq!(back["state"], "state-from-the-client");
    assert_eq!(back["iss"], oauth.url(""));
    assert!(!back.contains_key("code"), "{landed}");
}
