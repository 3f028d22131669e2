//! Gateway replicas on one PostgreSQL store (issue 14), as real gateway
//! binaries on a throwaway cluster: what one replica registers, signs and
//! revokes is in the store every replica reads.

mod common;

use common::authserver::{code_for, Setup, REDIRECT};
use common::binary::Binary;
use common::browser::Browser;
use common::oauth_client::OAuthClient;
use common::{free_port, postgres, Upstream};
use serde_json::{json, Value};

const OPERATOR: &str = "an-initial-access-token-for-the-replica-tests";

/// A replica listening on `port`, published as `public` (every replica of
/// a deployment publishes the load balancer's URL), storing in `db`.
fn replica_yaml(port: u16, public: u16, upstream: std::net::SocketAddr, db: &str) -> String {
    format!(
        "public_url: http://127.0.0.1:{public}
listen: 127.0.0.1:{port}
authorization_server:
  registration: initial_access_token
  initial_access_token: {OPERATOR}
  store: {{ url: '{db}', pool_size: 4 }}
upstreams:
  - name: demo
    path: /demo/mcp
    url: http://{upstream}/mcp
    policy: {{ base_scopes: [mcp], unlisted_tools: base }}
"
    )
}

/// The status of an MCP `initialize` with `token` on the replica at `port`.
async fn initialize(http: &reqwest::Client, port: u16, token: &str) -> u16 {
    http.post(format!("http://127.0.0.1:{port}/demo/mcp"))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "replica-test", "version": "1"}}}),
        )
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_postgres_share_clients_keys_and_revocations() {
    let db = postgres::fresh_database();
    let upstream = Upstream::start().await;
    let (a_port, b_port) = (free_port(), free_port());
    let a = Binary::serve(&replica_yaml(a_port, a_port, upstream.addr, &db), a_port).await;
    let b = Binary::serve(&replica_yaml(b_port, a_port, upstream.addr, &db), b_port).await;
    let http = reqwest::Client::new();

    // Registered on A ...
    let client: Value = http
        .post(format!("http://127.0.0.1:{a_port}/register"))
        .bearer_auth(OPERATOR)
        .json(&json!({"client_name": "replica test", "grant_types": ["client_credentials"], "scope": "mcp"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, secret) = (
        client["client_id"].as_str().unwrap(),
        client["client_secret"].as_str().unwrap(),
    );
    // ... a token from B ...
    let tokens: Value = http
        .post(format!("http://127.0.0.1:{b_port}/token"))
        .basic_auth(id, Some(secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", &format!("http://127.0.0.1:{a_port}/demo/mcp")),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = tokens["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("B knows A's client: {tokens}"));
    // ... accepted by both: one signing key set, in the store.
    assert_eq!(initialize(&http, a_port, token).await, 200);
    assert_eq!(initialize(&http, b_port, token).await, 200);

    // Revoked on A: refused there at once, and on B as soon as B hears of
    // it (PostgreSQL's NOTIFY; B reads the revocations again every 5 s in
    // any case, so 3 s shows the announcement did it).
    let revoked = http
        .post(format!("http://127.0.0.1:{a_port}/revoke"))
        .basic_auth(id, Some(secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(initialize(&http, a_port, token).await, 401);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while initialize(&http, b_port, token).await != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "B still accepts the token A revoked"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop((a, b));
}

/// `migrate` brings a database to the binary's schema and says so; a
/// database URL that is not PostgreSQL's is refused by the config check.
#[tokio::test]
async fn the_migrate_command_applies_the_schema() {
    let db = postgres::fresh_database();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let config = dir.join(format!("migrate-{}.yaml", std::process::id()));
    let port = free_port();
    std::fs::write(
        &config,
        replica_yaml(port, port, "127.0.0.1:9".parse().unwrap(), &db),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-oauth-gateway"))
        .args(["migrate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("version 3"), "{stdout}");
    assert!(!stdout.contains(postgres::PASSWORD));

    std::fs::write(
        &config,
        replica_yaml(port, port, "127.0.0.1:9".parse().unwrap(), "mysql://x@y/z"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-oauth-gateway"))
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("authorization_server.store.url"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(&config);
}

/// A code issued by one replica is exchanged on another (it is in the
/// store), once: its replay on the first is refused and revokes the tokens
/// the exchange issued (RFC 9700 §4.5.3 / OAuth 2.1 §4.1.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_from_one_replica_is_exchanged_once_on_any() {
    let db = postgres::fresh_database();
    let s = Setup::start_with(&format!("  store: {{ url: '{db}' }}\n")).await;
    let a_url = s.url("");
    let a_port: u16 = a_url.rsplit(':').next().unwrap().parse().unwrap();
    let b_port = free_port();
    let b_yaml = s.yaml.replace(
        &format!("listen: 127.0.0.1:{a_port}"),
        &format!("listen: 127.0.0.1:{b_port}"),
    );
    let _b = Binary::serve(&b_yaml, b_port).await;
    let client_id = s.public_client().await;
    let mut browser = Browser::default();
    let (code, verifier) = code_for(&s, &mut browser, &client_id, "mcp").await;

    let on_b = OAuthClient::new(
        &format!("http://127.0.0.1:{b_port}"),
        &s.url("/demo/mcp"),
        &client_id,
        REDIRECT,
    );
    let (status, tokens) = on_b.exchange_code(&s.http, &code, &verifier).await;
    assert_eq!(status, 200, "B exchanges A's code: {tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(initialize(&s.http, a_port, access).await, 200);

    let (status, error) = s
        .client(&client_id)
        .exchange_code(&s.http, &code, &verifier)
        .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (400, Some("invalid_grant")),
        "a replay on A: {error}"
    );
    assert_eq!(
        initialize(&s.http, a_port, access).await,
        401,
        "the replay revoked what B issued"
    );
    let (status, _) = on_b
        .refresh(&s.http, tokens["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(status, 400, "and its refresh token, on B too");
}

/// PostgreSQL down under a running gateway: its endpoints answer 503
/// `temporarily_unavailable` with `Retry-After` (never a 500, never a
/// token), and once PostgreSQL is back the same gateway serves again, no
/// restart, nothing acknowledged lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_is_a_503_and_recovery_needs_no_restart() {
    let cluster = postgres::Postgres::start();
    let db = cluster.url("postgres");
    let upstream = Upstream::start().await;
    let port = free_port();
    let _gw = Binary::serve(&replica_yaml(port, port, upstream.addr, &db), port).await;
    let http = reqwest::Client::new();
    let register = || {
        http.post(format!("http://127.0.0.1:{port}/register"))
            .bearer_auth(OPERATOR)
            .json(&json!({"client_name": "outage test", "grant_types": ["client_credentials"], "scope": "mcp"}))
            .send()
    };
    let client: Value = register().await.unwrap().json().await.unwrap();
    let (id, secret) = (
        client["client_id"].as_str().unwrap().to_owned(),
        client["client_secret"].as_str().unwrap().to_owned(),
    );
    let token = || {
        http.post(format!("http://127.0.0.1:{port}/token"))
            .basic_auth(&id, Some(&secret))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", &format!("http://127.0.0.1:{port}/demo/mcp")),
            ])
            .send()
    };
    let health = |path: &'static str| {
        let http = http.clone();
        async move {
            http.get(format!("http://127.0.0.1:{port}{path}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(token().await.unwrap().status(), 200);
    assert_eq!(
        (health("/healthz").await, health("/readyz").await),
        (200, 200)
    );

    cluster.stop_server();
    assert_eq!(
        (health("/healthz").await, health("/readyz").await),
        (200, 503),
        "alive, not ready"
    );
    for resp in [token().await.unwrap(), register().await.unwrap()] {
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "5");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    }

    cluster.start_server();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = token().await.unwrap().status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "only 503 while it reconnects");
        assert!(std::time::Instant::now() < deadline, "no recovery");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(health("/readyz").await, 200, "ready again");
}
