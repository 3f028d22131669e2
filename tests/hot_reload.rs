//! Hot reload (issue 16 §4), through the real binary (and, for the users
//! of the built-in authorization server, a gateway loaded from a file in
//! this process): SIGHUP and a change of the file reload the configuration; it is validated in full first
//! (an invalid edit changes nothing and is counted), then swapped whole,
//! while requests and streams under way finish on the configuration they
//! started with. Changes that need a restart are reported and not applied.

mod common;

use common::authserver::{self, exchange, fresh_tokens, no_redirects, refresh_with, PASSWORD};
use common::binary::Binary;
use common::browser::{pkce, query, Browser};
use common::idp::{Idp, TestKey};
use common::{
    await_metric, client, free_port, get_json, metric, status_headers_text, wait_for_port, Gateway,
    Upstream,
};
use futures_util::StreamExt;
use mcp_oauth_gateway::metrics::metrics;
use serde_json::json;
use std::time::{Duration, Instant};

const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#;

/// What the gateway runs in front of, and on which ports.
struct Spec {
    upstream: Upstream,
    idp: Idp,
    key: TestKey,
    port: u16,
    metrics_port: u16,
    watch: &'static str,
}

struct Setup {
    spec: Spec,
    gw: Binary,
}

impl std::ops::Deref for Setup {
    type Target = Spec;
    fn deref(&self) -> &Spec {
        &self.spec
    }
}

impl Setup {
    /// The binary in front of the upstream's raw routes, `echo` open to
    /// the base scope, the file checked every `watch` (`0s`: SIGHUP only).
    async fn start(watch: &'static str) -> Self {
        let key = TestKey::ec1();
        let idp = Idp::start(&[&key]).await;
        let upstream = Upstream::start().await;
        let (port, metrics_port) = (free_port(), free_port());
        let spec = Spec {
            upstream,
            idp,
            key,
            port,
            metrics_port,
            watch,
        };
        let gw = Binary::serve(&spec.yaml("echo: []", ""), port).await;
        wait_for_port(format!("127.0.0.1:{metrics_port}").parse().unwrap()).await;
        Self { spec, gw }
    }
}

impl Spec {
    /// The configuration with `tools` as the raw upstream's tool rules and
    /// `extra` at the top level.
    fn yaml(&self, tools: &str, extra: &str) -> String {
        format!(
            "public_url: http://127.0.0.1:{port}
listen: 127.0.0.1:{port}
server: {{ config_watch_interval: {watch} }}
metrics: {{ listen: '127.0.0.1:{metrics}' }}
auth:
  jwt_issuers: [{{ issuer: {iss} }}]
upstreams:
  - name: raw
    path: /raw
    url: http://{up}
    policy:
      base_scopes: [mcp]
      tools: {{ {tools} }}
{extra}",
            port = self.port,
            watch = self.watch,
            metrics = self.metrics_port,
            iss = self.idp.issuer,
            up = self.upstream.addr,
        )
    }

    fn token(&self) -> String {
        self.key
            .sign(&self.idp.claims("alice", &self.gw_url("/raw"), "mcp"))
    }

    fn gw_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The status of a call to `echo`.
    async fn echo(&self) -> (u16, String) {
        let req = client()
            .post(self.gw_url("/raw/inspect"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .bearer_auth(self.token())
            .body(CALL);
        let (status, _, body) = status_headers_text(req).await;
        (status, body)
    }
}

impl Setup {
    /// `mcpgw_config_reloads_total{outcome}`.
    async fn reloads(&self, outcome: &str) -> u64 {
        metric(self.metrics_port, &reload_series(outcome)).await as u64
    }

    /// Waits until `outcome` has been counted `n` times.
    async fn await_reloads(&self, outcome: &str, n: u64) {
        await_metric(self.metrics_port, &reload_series(outcome), n as f64, || {
            self.gw.log()
        })
        .await;
    }
}

fn reload_series(outcome: &str) -> String {
    format!("mcpgw_config_reloads_total{{outcome=\"{outcome}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_applies_to_the_next_request_while_an_open_stream_continues() {
    let s = Setup::start("200ms").await;
    assert_eq!(s.echo().await.0, 200);
    let resp = client()
        .get(s.gw_url("/raw/held"))
        .header("accept", "text/event-stream")
        .bearer_auth(s.token())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: one"));

    s.gw.rewrite(&s.yaml("echo: [admin]", ""));
    s.await_reloads("applied", 1).await;
    let (status, body) = s.echo().await;
    assert_eq!(status, 403, "the new policy on the next request: {body}");
    assert!(body.contains("admin"), "{body}");

    // The stream opened before the reload is still the old one's, open.
    s.upstream.release_held();
    let mut rest = String::new();
    while let Some(chunk) = stream.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(
        rest.contains("event: two"),
        "stream cut by the reload: {rest:?}"
    );
    assert_eq!(s.reloads("invalid").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_edit_changes_nothing_is_logged_with_its_path_and_counted() {
    let mut s = Setup::start("200ms").await;
    // A typo in a field name, then a bad value: each refused in full.
    let typo = s
        .yaml("echo: [admin]", "")
        .replace("base_scopes", "base_scope");
    s.gw.rewrite(&typo);
    s.await_reloads("invalid", 1).await;
    assert_eq!(s.echo().await.0, 200, "the running policy stays");
    let bad_value = s.yaml("echo: [admin]", "limits: { max_body_bytes: 5 }\n");
    s.gw.rewrite(&bad_value);
    s.await_reloads("invalid", 2).await;
    assert_eq!(s.echo().await.0, 200);
    assert_eq!(s.reloads("applied").await, 0);
    let log = s.gw.log();
    assert!(log.contains("configuration reload refused"), "{log}");
    assert!(log.contains("upstreams[0].policy"), "the YAML path: {log}");
    assert!(log.contains("limits.max_body_bytes"), "{log}");
    // A broken file is read once, not once per check.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(s.reloads("invalid").await, 2);
    // Fixing it applies it.
    s.gw.rewrite(&s.yaml("echo: [admin]", ""));
    s.await_reloads("applied", 1).await;
    assert_eq!(s.echo().await.0, 403);
    assert!(s.gw.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_changes_needing_a_restart_are_reported_not_applied() {
    let mut s = Setup::start("0s").await;
    let other_port = free_port();
    let edited = s
        .yaml("echo: [admin]", "")
        .replace(
            &format!("listen: 127.0.0.1:{}", s.port),
            &format!("listen: 127.0.0.1:{other_port}"),
        )
        .replace(
            "config_watch_interval: 0s",
            "config_watch_interval: 0s, worker_threads: 1",
        );
    s.gw.rewrite(&edited);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.echo().await.0,
        200,
        "with watching off, only SIGHUP reloads"
    );
    s.gw.signal("HUP");
    s.await_reloads("applied", 1).await;
    assert!(s.gw.running(), "SIGHUP does not stop the gateway");
    assert_eq!(s.echo().await.0, 403, "the policy change is applied");
    let log = s.gw.log();
    for path in ["listen", "server.worker_threads"] {
        assert!(
            log.contains(&format!("path=\"{path}\"")),
            "{path} reported as needing a restart: {log}"
        );
    }
    assert!(log.contains("needs a restart"), "{log}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", other_port)).is_err(),
        "the listener is not moved"
    );
    // SIGHUP with nothing changed is counted as such.
    s.gw.signal("HUP");
    s.await_reloads("unchanged", 1).await;
    // A new public_url is refused whole: it is in every published URL.
    let moved = edited.replace(
        &format!("public_url: http://127.0.0.1:{}", s.port),
        "public_url: https://mcp.example.com",
    );
    s.gw.rewrite(&moved.replace("echo: [admin]", "echo: []"));
    s.gw.signal("HUP");
    s.await_reloads("invalid", 1).await;
    assert_eq!(s.echo().await.0, 403, "nothing of that edit applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_sessions_and_verified_tokens_and_adds_upstreams() {
    let s = Setup::start("200ms").await;
    let token = s.token();
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let (status, headers, body) = status_headers_text(
        client()
            .post(s.gw_url("/raw/mcp"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .bearer_auth(&token)
            .body(init),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let session = headers["mcp-session-id"].to_str().unwrap().to_owned();
    // Add an upstream; the JWKS is not fetched again (same token sources).
    let fetches = s.idp.jwks_fetches();
    let more = format!(
        "  - name: second\n    path: /second\n    url: http://{}\n    policy: {{ base_scopes: [mcp], unlisted_tools: base }}\n",
        s.upstream.addr
    );
    s.gw.rewrite(&s.yaml("echo: []", &more));
    s.await_reloads("applied", 1).await;
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let (status, _, body) = status_headers_text(
        client()
            .post(s.gw_url("/raw/mcp"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-06-18")
            .bearer_auth(&token)
            .body(list),
    )
    .await;
    assert_eq!(status, 200, "the session survives the reload: {body}");
    let second_token = s
        .key
        .sign(&s.idp.claims("alice", &s.gw_url("/second"), "mcp"));
    let (status, _, body) = status_headers_text(
        client()
            .post(s.gw_url("/second/inspect"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .bearer_auth(second_token)
            .body(CALL),
    )
    .await;
    assert_eq!(status, 200, "the new upstream serves: {body}");
    let prm = get_json(&s.gw_url("/.well-known/oauth-protected-resource/second")).await;
    assert_eq!(prm["resource"], json!(s.gw_url("/second")));
    assert_eq!(s.idp.jwks_fetches(), fetches, "token sources kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuers_swap_tokens_of_a_new_one_pass_and_of_a_removed_one_stop() {
    let s = Setup::start("200ms").await;
    let key2 = TestKey::ec2();
    let idp2 = Idp::start(&[&key2]).await;
    let call = |token: String| {
        let req = client()
            .post(s.gw_url("/raw/inspect"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .bearer_auth(token)
            .body(CALL);
        async move { status_headers_text(req).await.0 }
    };
    let second = || key2.sign(&idp2.claims("bob", &s.gw_url("/raw"), "mcp"));
    assert_eq!(call(second()).await, 401);
    let both = format!(
        "jwt_issuers: [{{ issuer: {} }}, {{ issuer: {} }}]",
        s.idp.issuer, idp2.issuer
    );
    let yaml = s.yaml("echo: []", "");
    let old = format!("jwt_issuers: [{{ issuer: {} }}]", s.idp.issuer);
    s.gw.rewrite(&yaml.replace(&old, &both));
    s.await_reloads("applied", 1).await;
    assert_eq!(call(second()).await, 200, "the new issuer is trusted");
    assert_eq!(call(s.token()).await, 200);
    let only_second = format!("jwt_issuers: [{{ issuer: {} }}]", idp2.issuer);
    s.gw.rewrite(&yaml.replace(&old, &only_second));
    s.await_reloads("applied", 2).await;
    assert_eq!(
        call(s.token()).await,
        401,
        "the removed issuer's tokens stop"
    );
    assert_eq!(call(second()).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_identity_key_file_is_picked_up() {
    let s = Setup::start("200ms").await;
    let keys = format!("{}/tests/fixtures/keys", env!("CARGO_MANIFEST_DIR"));
    let key_file = std::env::temp_dir().join(format!("mcpgw-identity-{}.pem", s.port));
    std::fs::copy(format!("{keys}/ec3.pem"), &key_file).unwrap();
    let yaml = s
        .yaml(
            "echo: []",
            &format!("identity_key_file: '{}'\n", key_file.display()),
        )
        .replace(
            "    policy:\n",
            "    forward_identity: { jwt: {} }\n    policy:\n",
        );
    s.gw.rewrite(&yaml);
    s.await_reloads("applied", 1).await;
    let jwks_url = s.gw_url(mcp_oauth_gateway::identity::IDENTITY_JWKS_PATH);
    let first = get_json(&jwks_url).await["keys"][0]["kid"].clone();
    // The file is replaced; the configuration is not touched.
    std::fs::copy(format!("{keys}/ec2.pem"), &key_file).unwrap();
    s.await_reloads("applied", 2).await;
    let second = get_json(&jwks_url).await["keys"][0]["kid"].clone();
    assert_ne!(first, second, "the new key is published");
    let seen: serde_json::Value = serde_json::from_str(&s.echo().await.1).unwrap();
    let jwt = seen["headers"]["x-gateway-identity"].as_str().unwrap();
    let kid = jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap();
    assert_eq!(json!(kid), second, "and signs");
    let _ = std::fs::remove_file(&key_file);
}

/// Users swap with the rest: a removed user's grants stop refreshing, a
/// new user signs in, all without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_of_the_authorization_server_reload() {
    let upstream = Upstream::start().await;
    let port = free_port();
    let data_dir = std::env::temp_dir().join(format!("mcpgw-reload-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&data_dir).unwrap();
    let yaml = authserver::config(
        port,
        upstream.addr,
        &data_dir,
        "",
        "server: { config_watch_interval: 200ms }\n",
    );
    let file = data_dir.join("gateway.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let s = authserver::Setup {
        gw: Some(Gateway::start_file(&file).await),
        upstream,
        yaml: yaml.clone(),
        http: no_redirects(),
        data_dir,
    };
    let app = s.public_client().await;
    let tokens = fresh_tokens(&s, &mut Browser::default(), &app).await;

    let applied = || {
        metrics()
            .config_reloads
            .with_label_values(&["applied"])
            .get()
    };
    let before = applied();
    let next = file.with_extension("next");
    std::fs::write(&next, yaml.replace("username: alice,", "username: carol,")).unwrap();
    std::fs::rename(&next, &file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while applied() == before {
        assert!(Instant::now() < deadline, "no reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (status, err) = refresh_with(&s, &app, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400, "alice is gone: {err}");
    assert_eq!(err["error"], "invalid_grant");
    let (verifier, challenge) = pkce();
    let url = authserver::authorize_url(&s, &app, &challenge, "mcp math");
    let back = Browser::default()
        .approve(&s.http, &url, ("carol", PASSWORD), |_| {})
        .await;
    let (status, carol) = exchange(&s, &app, &query(&back)["code"], &verifier).await;
    assert_eq!(status, 200, "carol signs in: {carol}");
    assert_eq!(carol["scope"], "mcp math");
}
