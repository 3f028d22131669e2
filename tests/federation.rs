//! Sign-in through an identity provider (issue 13): the built-in
//! authorization server as the relying party of a real OpenID Provider
//! (`oidc-provider` from npm), people admitted by the `access` rules with
//! the scopes they give, subjects namespaced per provider, and every
//! hostile answer at the callback refused with a page and nothing issued.

mod common;

use common::authserver::no_redirects;
use common::browser::{pkce, query, Browser, Page};
use common::e2e::{node22, run_client};
use common::oauth_client::OAuthClient;
use common::oidc_idp::OidcIdp;
use common::{free_port, stateless_tool_call, status_headers_text, Gateway, Upstream};
use serde_json::{json, Value};
use std::time::Duration;

const REDIRECT: &str = "http://127.0.0.1:9/callback";

struct Setup {
    idp: OidcIdp,
    _upstream: Upstream,
    gw: Gateway,
    http: reqwest::Client,
    data_dir: std::path::PathBuf,
}

impl Setup {
    /// The IdP with four people, and the gateway with two providers on it
    /// (`corp`, and `twin`, the same IdP under another id) and no local
    /// users: `example.com` addresses get `mcp`, `mcp-admins` also `math`.
    async fn start() -> Self {
        Self::start_with("", true).await
    }

    /// [`Setup::start`] with `extra` in the `authorization_server` section,
    /// and without `twin` unless `twin`.
    async fn start_with(extra: &str, twin: bool) -> Self {
        let port = free_port();
        let gw_url = format!("http://127.0.0.1:{port}");
        let idp = OidcIdp::start(json!({
            "port": 0,
            "clients": [{
                "client_id": "gateway",
                "client_secret": "idp secret/with odd:chars",
                "redirect_uris": [format!("{gw_url}/callback/corp"), format!("{gw_url}/callback/twin")],
            }],
            "accounts": {
                "alice": {"email": "alice@example.com", "email_verified": true, "groups": ["mcp-admins"], "name": "Alice"},
                "bob": {"email": "bob@example.com", "email_verified": true, "groups": []},
                "eve": {"email": "eve@other.org", "email_verified": true},
                "mallory": {"email": "mallory@example.com", "email_verified": false},
            },
        }))
        .await;
        let upstream = Upstream::start().await;
        let data_dir =
            std::env::temp_dir().join(format!("mcpgw-fed-{}-{port}", std::process::id()));
        let provider = |id: &str| {
            format!(
                "    - {{ id: {id}, type: oidc, issuer: '{iss}', client_id: gateway, client_secret: 'idp secret/with odd:chars', scopes: [openid, email, profile, groups], display_name: Corp SSO }}\n",
                iss = idp.issuer
            )
        };
        let yaml = format!(
            "public_url: {gw_url}
listen: 127.0.0.1:{port}
authorization_server:
  data_dir: '{dir}'
{extra}  identity_providers:
{corp}{twin}  access:
    - when: {{ email_domain: example.com, email_verified: true }}
      scopes: [mcp]
    - when: {{ idp: corp, claim: {{ groups: mcp-admins }} }}
      scopes: [mcp, math]
upstreams:
  - name: demo
    path: /demo/mcp
    url: http://{up}/mcp
    scopes: [mcp, math]
    policy: {{ base_scopes: [mcp], tools: {{ add: [math], echo: [] }} }}
",
            dir = data_dir.display(),
            corp = provider("corp"),
            twin = if twin {
                provider("twin")
            } else {
                String::new()
            },
            up = upstream.addr,
        );
        let gw = Gateway::start_yaml(&yaml).await;
        Self {
            idp,
            _upstream: upstream,
            gw,
            http: no_redirects(),
            data_dir,
        }
    }

    fn url(&self, path: &str) -> String {
        self.gw.url(path)
    }

    /// A public client that may refresh.
    async fn client(&self) -> OAuthClient {
        let doc: Value = self
            .http
            .post(self.url("/register"))
            .json(&json!({"client_name": "Fed <b>App</b>", "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = doc["client_id"].as_str().expect("registered");
        OAuthClient::new(&self.url(""), &self.url("/demo/mcp"), id, REDIRECT)
    }

    /// GET `url`, following redirects with `browser` until a page, the
    /// client's redirect URI, or a gateway callback (`stop_at_callback`).
    async fn follow(
        &self,
        browser: &mut Browser,
        mut url: String,
        stop_at_callback: bool,
    ) -> (String, Page) {
        for _ in 0..10 {
            if url.starts_with(REDIRECT) || (stop_at_callback && url.contains("/callback/")) {
                return (url, empty_page());
            }
            let page = browser.send(self.http.get(&url)).await;
            if !(300..400).contains(&page.status) {
                return (url, page);
            }
            let location = page.headers["location"].to_str().unwrap();
            url = url::Url::parse(&url)
                .unwrap()
                .join(location)
                .unwrap()
                .to_string();
        }
        panic!("too many redirects at {url}");
    }

    /// Through the gateway's authorize to the IdP's login form and past
    /// it as `who`; the URL the IdP sends back to the gateway's callback.
    async fn to_callback(
        &self,
        browser: &mut Browser,
        app: &OAuthClient,
        challenge: &str,
        scope: &str,
        who: &str,
    ) -> String {
        let (at, page) = self
            .follow(
                browser,
                app.authorize_url(challenge, scope, Some("app-state")),
                true,
            )
            .await;
        assert_eq!(page.status, 200, "a login page: {at} {}", page.body);
        if page.body.contains("Sign in with") {
            // Two providers: pick corp's button.
            let href = corp_button(&page);
            let (at, login) = self.follow(browser, self.url(&href), true).await;
            return self.log_in(browser, &at, &login, who).await;
        }
        self.log_in(browser, &at, &page, who).await
    }

    /// A fresh browser through authorize and the provider as `who`, for
    /// `mcp`: the browser, and the answer the provider sends it back with.
    async fn fresh_answer(&self, app: &OAuthClient, who: &str) -> (Browser, String) {
        let mut browser = Browser::default();
        let (_, challenge) = pkce();
        let callback = self
            .to_callback(&mut browser, app, &challenge, "mcp", who)
            .await;
        (browser, callback)
    }

    /// Submits the IdP's login form at `at`.
    async fn log_in(&self, browser: &mut Browser, at: &str, page: &Page, who: &str) -> String {
        assert!(
            page.body.contains("name=\"login\""),
            "the IdP's form at {at}: {}",
            page.body
        );
        let action = url::Url::parse(at)
            .unwrap()
            .join(&format!("{}/login", url::Url::parse(at).unwrap().path()))
            .unwrap();
        let sent = browser
            .send(
                self.http
                    .post(action.clone())
                    .form(&[("login", who), ("password", "pw")]),
            )
            .await;
        assert_eq!(sent.status, 303, "{}", sent.body);
        let next = action
            .join(sent.headers["location"].to_str().unwrap())
            .unwrap()
            .to_string();
        let (callback, _) = self.follow(browser, next, true).await;
        callback
    }

    /// The whole way for `who`: returns the tokens.
    async fn tokens_for(&self, who: &str, scope: &str) -> (OAuthClient, Value) {
        let app = self.client().await;
        let mut browser = Browser::default();
        let (verifier, challenge) = pkce();
        let callback = self
            .to_callback(&mut browser, &app, &challenge, scope, who)
            .await;
        let (at, consent) = self.follow(&mut browser, callback, false).await;
        assert_eq!(
            consent.status, 200,
            "consent page at {at}: {}",
            consent.body
        );
        let approved = browser
            .send(
                self.http
                    .post(self.url("/consent"))
                    .form(&consent.consent_form("approve")),
            )
            .await;
        let back = approved.location();
        let (status, tokens) = app
            .exchange_code(&self.http, &query(&back)["code"], &verifier)
            .await;
        assert_eq!(status, 200, "{tokens}");
        (app, tokens)
    }

    async fn call(&self, token: &str, tool: &str) -> u16 {
        let req = stateless_tool_call(
            &self.http,
            &self.url("/demo/mcp"),
            3,
            tool,
            json!({"a": 1, "b": 2}),
            json!({}),
        );
        status_headers_text(req.bearer_auth(token)).await.0
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn empty_page() -> Page {
    Page {
        status: 0,
        headers: reqwest::header::HeaderMap::new(),
        body: String::new(),
    }
}

/// The first page `url` leads `browser` to through redirects (never the
/// client's redirect URI: these flows always ask for consent first).
async fn first_page(browser: &mut Browser, http: &reqwest::Client, mut url: String) -> Page {
    loop {
        let page = browser.send(http.get(&url)).await;
        if !(300..400).contains(&page.status) {
            return page;
        }
        url = url::Url::parse(&url)
            .unwrap()
            .join(page.headers["location"].to_str().unwrap())
            .unwrap()
            .to_string();
        assert!(
            !url.starts_with(REDIRECT),
            "back at the client before consent: {url}"
        );
    }
}

/// The URL of corp's button on a login page with several providers.
fn corp_button(page: &Page) -> String {
    let start = page.body.find("/login/corp?flow=").expect("corp's button");
    page.body[start..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&")
}

/// The `sub` of an access token.
fn subject_of(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()["sub"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_sign_in_at_their_provider_with_the_scopes_the_rules_give() {
    let s = Setup::start().await;
    let (_, alice) = s.tokens_for("alice", "mcp math").await;
    assert_eq!(alice["scope"], "mcp math");
    let token = alice["access_token"].as_str().unwrap();
    assert_eq!(subject_of(token), "corp|alice", "namespaced per provider");
    assert_eq!(s.call(token, "add").await, 200);

    // bob is in no admin group: `math` is not his to grant.
    let (app, bob) = s.tokens_for("bob", "mcp").await;
    assert_eq!(bob["scope"], "mcp");
    let token = bob["access_token"].as_str().unwrap();
    assert_eq!(s.call(token, "echo").await, 200);
    assert_eq!(s.call(token, "add").await, 403);
    let (status, refreshed) = app
        .refresh(&s.http, bob["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(status, 200, "{refreshed}");
}

/// At every refresh the provider is asked again (with its own refresh
/// token) and the rules applied to what it says now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_asks_the_provider_again() {
    let s = Setup::start().await;
    let (app, alice) = s.tokens_for("alice", "mcp math").await;
    assert_eq!(alice["scope"], "mcp math");
    // alice leaves the admin group at the provider: `math` goes at the
    // next refresh.
    s.idp
        .control(
            reqwest::Method::PATCH,
            "/accounts/alice",
            json!({"groups": []}),
        )
        .await;
    let (status, refreshed) = app
        .refresh(&s.http, alice["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(
        refreshed["scope"], "mcp",
        "the group rule no longer applies"
    );
    let token = refreshed["access_token"].as_str().unwrap();
    assert_eq!(s.call(token, "add").await, 403);
    assert_eq!(s.call(token, "echo").await, 200);

    // bob's account is removed at the provider: his grant ends.
    let (app, bob) = s.tokens_for("bob", "mcp").await;
    s.idp
        .control(reqwest::Method::DELETE, "/accounts/bob", json!({}))
        .await;
    let (status, err) = app
        .refresh(&s.http, bob["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"], "invalid_grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_no_rule_admits_are_refused_with_a_page_and_nothing_issued() {
    let s = Setup::start().await;
    let refused = || {
        mcp_oauth_gateway::metrics::metrics()
            .federated_logins
            .with_label_values(&["corp", "refused"])
            .get()
    };
    let before = refused();
    for (who, why) in [
        ("eve", "another domain"),
        ("mallory", "an unverified address"),
    ] {
        let app = s.client().await;
        let (mut browser, callback) = s.fresh_answer(&app, who).await;
        let (_, page) = s.follow(&mut browser, callback, false).await;
        assert_eq!(page.status, 403, "{who} ({why}): {}", page.body);
        assert!(
            page.body.contains("not allowed to use this server"),
            "{}",
            page.body
        );
    }
    assert!(refused() >= before + 2, "counted per provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_answers_at_the_callback_are_refused() {
    let s = Setup::start().await;
    let app = s.client().await;

    // A replayed answer: the first use signs in, the second is refused.
    let (mut browser, callback) = s.fresh_answer(&app, "alice").await;
    let (_, first) = s.follow(&mut browser, callback.clone(), false).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let (_, replay) = s.follow(&mut browser, callback, false).await;
    assert_eq!(replay.status, 400);
    assert!(replay.body.contains("already used"), "{}", replay.body);

    // Provider A's answer at provider B's callback (mix-up).
    let (mut browser, callback) = s.fresh_answer(&app, "alice").await;
    assert!(callback.contains("/callback/corp"));
    let mixed = callback.replace("/callback/corp", "/callback/twin");
    let (_, page) = s.follow(&mut browser, mixed, false).await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("another provider"), "{}", page.body);

    // An answer naming another issuer (RFC 9207).
    let (mut browser, callback) = s.fresh_answer(&app, "alice").await;
    let mut url = url::Url::parse(&callback).unwrap();
    let params: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "iss" {
                "https://evil.example".to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(params);
    let (_, page) = s.follow(&mut browser, url.to_string(), false).await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("another issuer"), "{}", page.body);

    // An answer for another browser: the flow cookie is not this one's.
    let (_starter, callback) = s.fresh_answer(&app, "alice").await;
    let (_, page) = s.follow(&mut Browser::default(), callback, false).await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("another browser"), "{}", page.body);

    // A made-up state.
    let (_, page) = s
        .follow(
            &mut Browser::default(),
            s.url("/callback/corp?code=x&state=made-up"),
            false,
        )
        .await;
    assert_eq!(page.status, 400);
    // The IdP refusing (the person cancelled) is a page too.
    let (_, page) = s
        .follow(
            &mut Browser::default(),
            s.url("/callback/corp?error=access_denied&state=made-up"),
            false,
        )
        .await;
    assert_eq!(page.status, 400, "unknown state first: {}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_is_down_gets_a_page_and_issued_tokens_keep_working() {
    let mut s = Setup::start().await;
    let (_, alice) = s.tokens_for("alice", "mcp").await;
    s.idp.stop().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let token = alice["access_token"].as_str().unwrap();
    assert_eq!(
        s.call(token, "echo").await,
        200,
        "issued tokens do not depend on the IdP"
    );
    // A new gateway has not discovered the provider yet: its login page
    // says the provider cannot be reached.
    let port = free_port();
    let yaml = format!(
        "public_url: http://127.0.0.1:{port}
listen: 127.0.0.1:{port}
authorization_server:
  data_dir: '{dir}-2'
  identity_providers:
    - {{ id: corp, type: oidc, issuer: '{iss}', client_id: gateway, client_secret: s }}
  access:
    - {{ when: {{ idp: corp }}, scopes: [mcp] }}
upstreams:
  - {{ name: demo, path: /demo/mcp, url: 'http://127.0.0.1:9/mcp', scopes: [mcp], policy: {{ base_scopes: [mcp] }} }}
",
        dir = s.data_dir.display(),
        iss = s.idp.issuer
    );
    let gw = Gateway::start_yaml(&yaml).await;
    let app = OAuthClient::register(&gw.url(""), &gw.url("/demo/mcp"), "app", REDIRECT).await;
    let (_, challenge) = pkce();
    let mut browser = Browser::default();
    let (_, page) = s
        .follow(
            &mut browser,
            app.authorize_url(&challenge, "mcp", None),
            true,
        )
        .await;
    assert_eq!(page.status, 502, "{}", page.body);
    assert!(page.body.contains("cannot be reached"), "{}", page.body);
    let _ = std::fs::remove_dir_all(format!("{}-2", s.data_dir.display()));
}

/// `prompt=login` reaches the provider: a browser signed in at both the
/// gateway and the provider is asked for the password again, and the
/// answer's `auth_time` must be new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_login_sends_the_person_through_the_provider_again() {
    let s = Setup::start().await;
    let app = s.client().await;
    let (mut browser, callback) = s.fresh_answer(&app, "alice").await;
    let (_, challenge) = pkce();
    let (_, consent) = s.follow(&mut browser, callback, false).await;
    let approved = browser
        .send(
            s.http
                .post(s.url("/consent"))
                .form(&consent.consent_form("approve")),
        )
        .await;
    assert_eq!(approved.status, 303);
    // Signed in everywhere: without a prompt the gateway answers at once.
    let (back, _) = s
        .follow(
            &mut browser,
            app.authorize_url(&challenge, "mcp", None),
            false,
        )
        .await;
    assert!(
        back.starts_with(REDIRECT) && back.contains("code="),
        "{back}"
    );
    // With prompt=login the provider's login form comes again (to_callback
    // fails if the provider signs the browser in silently).
    let mut app_prompt = app.authorize_url(&challenge, "mcp", None);
    app_prompt.push_str("&prompt=login");
    let (at, page) = s.follow(&mut browser, app_prompt, true).await;
    let href = corp_button(&page);
    let (at2, login) = s.follow(&mut browser, s.url(&href), true).await;
    assert!(
        at2.contains("/interaction/"),
        "the provider asks again, from {at}: {at2}"
    );
    let callback = s.log_in(&mut browser, &at2, &login, "alice").await;
    let (back, _) = s.follow(&mut browser, callback, false).await;
    assert!(
        back.starts_with(REDIRECT) && back.contains("code="),
        "{back}"
    );
}

/// After `max_session_age` since the sign-in, refreshes stop: the person
/// goes through the provider again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_older_than_max_session_age_refreshes_no_more() {
    let s = Setup::start_with("  max_session_age: 2s\n", true).await;
    let (app, bob) = s.tokens_for("bob", "mcp").await;
    let refresh = bob["refresh_token"].as_str().unwrap();
    let (status, fresh) = app.refresh(&s.http, refresh).await;
    assert_eq!(status, 200, "{fresh}");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (status, err) = app
        .refresh(&s.http, fresh["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"], "invalid_grant");
}

/// A person in Chromium: the gateway sends the browser straight to the
/// only provider, the person signs in on the provider's own page, reads
/// the gateway's consent page and allows; the client gets its code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_at_the_provider_in_chromium() {
    let s = Setup::start_with("", false).await;
    let redirect = format!("http://127.0.0.1:{}/callback", free_port());
    let doc: Value = s
        .http
        .post(s.url("/register"))
        .json(&json!({"client_name": "Browser app", "redirect_uris": [redirect], "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let app = OAuthClient::new(
        &s.url(""),
        &s.url("/demo/mcp"),
        doc["client_id"].as_str().unwrap(),
        &redirect,
    );
    let (verifier, challenge) = pkce();
    let url = app.authorize_url(&challenge, "mcp math", Some("st"));
    let dir = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/artifacts"));
    std::fs::create_dir_all(&dir).unwrap();
    let shots = dir.join("federated").display().to_string();
    let args = [
        "browser_consent.mjs",
        &url,
        "alice",
        "pw",
        "approve",
        &shots,
    ];
    let seen = run_client(node22(), args.iter().map(|a| a.to_string()).collect()).await;
    assert_eq!(seen["consoleErrors"], json!([]), "{seen}");
    assert_eq!(
        seen["loginTitle"], "Test IdP sign-in",
        "the provider's own page"
    );
    assert_eq!(seen["consentTitle"], "Allow access? · MCP gateway");
    assert_eq!(seen["scopes"], json!(["mcp", "math"]));
    for page in ["2-consent", "4-error"] {
        assert_eq!(seen["violations"][page], json!([]), "axe on {page}");
    }
    let back = url::Url::parse(seen["landedOn"].as_str().unwrap()).unwrap();
    let (status, tokens) = app
        .exchange_code(&s.http, &query(&back)["code"], &verifier)
        .await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(
        subject_of(tokens["access_token"].as_str().unwrap()),
        "corp|alice"
    );
}

/// The provider rotates its signing keys: the next sign-in's ID token
/// names a new `kid`, which the gateway fetches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_at_the_provider_is_followed() {
    let s = Setup::start().await;
    s.tokens_for("alice", "mcp").await;
    let rotated = s
        .idp
        .control(reqwest::Method::POST, "/rotate_keys", json!({}))
        .await;
    assert!(rotated.is_object(), "{rotated}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, bob) = s.tokens_for("bob", "mcp").await;
    assert_eq!(
        subject_of(bob["access_token"].as_str().unwrap()),
        "corp|bob"
    );
}

/// `type: github`: OAuth 2.0 without OpenID Connect. The person is who the
/// REST API says (subject `gh|<numeric id>`); `org` and `team` rules give
/// scopes; at each refresh the API is asked again: a team left drops its
/// scope, a revoked authorization ends the grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_people_sign_in_by_organisation_and_team() {
    use common::github::{FakeGithub, GhUser, CLIENT};
    let gh = FakeGithub::start(vec![
        GhUser {
            id: 583231,
            login: "octocat",
            email: ("octo@example.com", true),
            orgs: vec!["Example-Org"],
            teams: vec![("Example-Org", "admins")],
        },
        GhUser {
            id: 9,
            login: "stranger",
            email: ("s@example.net", true),
            orgs: vec!["other"],
            teams: vec![],
        },
    ])
    .await;
    let upstream = Upstream::start().await;
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("mcpgw-gh-{}-{port}", std::process::id()));
    let yaml = format!(
        "public_url: http://127.0.0.1:{port}
listen: 127.0.0.1:{port}
authorization_server:
  data_dir: '{dir}'
  identity_providers:
    - {{ id: gh, type: github, issuer: '{gh}', api_url: '{gh}', client_id: {cid}, client_secret: {secret} }}
  access:
    - {{ when: {{ idp: gh, org: example-org }}, scopes: [mcp] }}
    - {{ when: {{ idp: gh, team: EXAMPLE-ORG/admins }}, scopes: [mcp, math] }}
upstreams:
  - name: demo
    path: /demo/mcp
    url: http://{up}/mcp
    scopes: [mcp, math]
    policy: {{ base_scopes: [mcp], tools: {{ add: [math], echo: [] }} }}
",
        dir = dir.display(),
        gh = gh.url,
        cid = CLIENT.0,
        secret = CLIENT.1,
        up = upstream.addr,
    );
    let gw = Gateway::start_yaml(&yaml).await;
    let http = no_redirects();
    let doc: Value = http
        .post(gw.url("/register"))
        .json(&json!({"client_name": "gh app", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"]}))
        .send().await.unwrap().json().await.unwrap();
    let app = OAuthClient::new(
        &gw.url(""),
        &gw.url("/demo/mcp"),
        doc["client_id"].as_str().unwrap(),
        REDIRECT,
    );
    // Through authorize, GitHub (signed in already) and consent.
    let run = |who: &'static str| {
        let (gh, http, app, gw) = (&gh, &http, &app, &gw);
        async move {
            gh.sign_in(who);
            let mut browser = Browser::default();
            let (verifier, challenge) = pkce();
            let url = app.authorize_url(&challenge, "mcp math", None);
            let page = first_page(&mut browser, http, url).await;
            if page.status != 200 {
                return Err(page);
            }
            let approved = browser
                .send(
                    http.post(gw.url("/consent"))
                        .form(&page.consent_form("approve")),
                )
                .await;
            let (status, tokens) = app
                .exchange_code(http, &query(&approved.location())["code"], &verifier)
                .await;
            assert_eq!(status, 200, "{tokens}");
            Ok(tokens)
        }
    };
    let tokens = run("octocat")
        .await
        .unwrap_or_else(|p| panic!("{}", p.body));
    assert_eq!(tokens["scope"], "mcp math");
    assert_eq!(
        subject_of(tokens["access_token"].as_str().unwrap()),
        "gh|583231"
    );
    let refused = run("stranger").await.expect_err("not in the org");
    assert_eq!(refused.status, 403, "{}", refused.body);

    // octocat leaves the admins team: math goes at the next refresh.
    gh.set_teams("octocat", vec![]);
    let (status, refreshed) = app
        .refresh(&http, tokens["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(refreshed["scope"], "mcp");
    // The app's authorization is revoked at GitHub: the grant ends.
    gh.revoke_all();
    let (status, err) = app
        .refresh(&http, refreshed["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant")),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// OpenID Connect Core §3.1.3.7: an ID token wrong in any one way is
/// refused with a page, and nothing is issued; the same provider's correct
/// token passes (so each refusal is for its one flaw).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_id_tokens_are_refused() {
    use common::forging_idp::{Forgery, ForgingIdp, CLIENT};
    let idp = ForgingIdp::start().await;
    let upstream = Upstream::start().await;
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("mcpgw-forge-{}-{port}", std::process::id()));
    let yaml = format!(
        "public_url: http://127.0.0.1:{port}
listen: 127.0.0.1:{port}
authorization_server:
  data_dir: '{dir}'
  identity_providers:
    - {{ id: forge, type: oidc, issuer: '{iss}', client_id: {cid}, client_secret: '{secret}' }}
  access:
    - {{ when: {{ idp: forge }}, scopes: [mcp] }}
upstreams:
  - {{ name: demo, path: /demo/mcp, url: 'http://{up}/mcp', scopes: [mcp], policy: {{ base_scopes: [mcp] }} }}
",
        dir = dir.display(),
        iss = idp.issuer,
        cid = CLIENT.0,
        secret = CLIENT.1,
        up = upstream.addr,
    );
    let gw = Gateway::start_yaml(&yaml).await;
    let http = no_redirects();
    let app = OAuthClient::register(&gw.url(""), &gw.url("/demo/mcp"), "app", REDIRECT).await;
    for (forgery, why) in [
        (Forgery::WrongAudience, "audience"),
        (Forgery::WrongIssuer, "issuer"),
        (Forgery::WrongNonce, "nonce"),
        (Forgery::AlgNone, "unreadable id token"),
        (Forgery::Hmac, "does not publish"),
        (Forgery::Expired, "expired"),
        (Forgery::UnknownKey, "key"),
        (Forgery::None, ""),
    ] {
        idp.forge(forgery);
        let mut browser = Browser::default();
        let (_, challenge) = pkce();
        let url = app.authorize_url(&challenge, "mcp", None);
        let page = first_page(&mut browser, &http, url).await;
        if forgery == Forgery::None {
            assert_eq!(page.status, 200, "the correct token passes: {}", page.body);
            assert!(page.body.contains("name=\"action\""), "the consent page");
        } else {
            assert_eq!(page.status, 400, "{forgery:?}: {}", page.body);
            let body = page.body.to_lowercase();
            assert!(
                body.contains("was not accepted") && body.contains(why),
                "{forgery:?}: {}",
                page.body
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The official TypeScript SDK (2.x) through the whole flow with people
/// signing in at the identity provider: discovery, registration, the
/// provider's login, consent, tools, step-up to `math` (alice is in the
/// admins group), refresh (the provider asked again), revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_completes_oauth_through_the_provider() {
    use common::e2e::{Everything, EVERYTHING_POLICY};
    let everything = Everything::start().await;
    let port = free_port();
    let gw_url = format!("http://127.0.0.1:{port}");
    let idp = OidcIdp::start(json!({
        "port": 0,
        "clients": [{"client_id": "gateway", "client_secret": "s3cret", "redirect_uris": [format!("{gw_url}/callback/corp")]}],
        "accounts": {"alice": {"email": "alice@example.com", "email_verified": true, "groups": ["mcp-admins"]}},
    }))
    .await;
    let dir = std::env::temp_dir().join(format!("mcpgw-fed-sdk-{}-{port}", std::process::id()));
    let yaml = format!(
        "public_url: {gw_url}
listen: 127.0.0.1:{port}
authorization_server:
  data_dir: '{dir}'
  access_token_ttl: 2s
  identity_providers:
    - {{ id: corp, type: oidc, issuer: '{iss}', client_id: gateway, client_secret: s3cret, scopes: [openid, email, groups] }}
  access:
    - {{ when: {{ email_domain: example.com, email_verified: true }}, scopes: [mcp] }}
    - {{ when: {{ claim: {{ groups: mcp-admins }} }}, scopes: [mcp, math] }}
upstreams:
  - name: everything
    path: /everything/mcp
    url: http://{up}/mcp
    scopes: [mcp, math, admin]
    policy: {EVERYTHING_POLICY}
",
        dir = dir.display(),
        iss = idp.issuer,
        up = everything.addr,
    );
    let _gw = Gateway::start_yaml(&yaml).await;
    let mcp = format!("{gw_url}/everything/mcp");
    let args = ["ts_sdk_v2_oauth.mjs", &mcp, "alice", "pw"];
    let seen = run_client(node22(), args.iter().map(|a| a.to_string()).collect()).await;
    assert_eq!(seen["echo"], "Echo: hi", "{seen}");
    assert_eq!(seen["sum"], "The sum of 20 and 22 is 42.");
    assert_eq!(seen["stepUpAuthorizations"], 1);
    assert_eq!(seen["refreshed"], true);
    assert_eq!(seen["afterExpiry"], "The sum of 1 and 1 is 2.");
    let _ = std::fs::remove_dir_all(&dir);
}
