//! Gateway replicas on one PostgreSQL store (issue 14), as real gateway
//! binaries on a throwaway cluster: what one replica registers, signs and
//! revokes is in the store every replica reads.

mod common;

use common::authserver::{self, code_for, Setup, REDIRECT};
use common::binary::Binary;
use common::browser::{pkce, query, Browser};
use common::oauth_client::OAuthClient;
use common::relay::Relay;
use common::{free_port, postgres, Upstream};
use serde_json::{json, Value};
use std::time::Duration;

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
/// token); the proxy keeps accepting its tokens while its copy of the
/// revocations is younger than `max_staleness`, then refuses them (503,
/// fail closed); once PostgreSQL is back the same gateway serves again, no
/// restart, nothing acknowledged lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_is_a_503_and_recovery_needs_no_restart() {
    let cluster = postgres::Postgres::start();
    let db = cluster.url("postgres");
    let upstream = Upstream::start().await;
    let port = free_port();
    let yaml = replica_yaml(port, port, upstream.addr, &db)
        .replace("pool_size: 4", "pool_size: 4, max_staleness: 8s");
    let (_gw, metrics_port) = Binary::serve_with_metrics(&yaml, port).await;
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
    let issued: Value = token().await.unwrap().json().await.unwrap();
    let access = issued["access_token"].as_str().unwrap().to_owned();
    assert_eq!(initialize(&http, port, &access).await, 200);
    assert_eq!(
        (health("/healthz").await, health("/readyz").await),
        (200, 200)
    );

    cluster.stop_server();
    let stopped = std::time::Instant::now();
    assert_eq!(
        initialize(&http, port, &access).await,
        200,
        "within max_staleness the proxy still accepts"
    );
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
    while initialize(&http, port, &access).await == 200 {
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "still accepted long after max_staleness"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        initialize(&http, port, &access).await,
        503,
        "fails closed, as unavailable (not 401: the token is fine)"
    );
    let metrics = common::get_text(&format!("http://127.0.0.1:{metrics_port}/metrics")).await;
    assert!(
        metrics.contains("mcpgw_store_errors_total{kind=\"unavailable\"}")
            || metrics.contains("mcpgw_store_errors_total{kind=\"pool_timeout\"}"),
        "store failures counted: {metrics}"
    );
    assert!(
        metrics.contains("mcpgw_store_pool_connections{state=\"max\"} 4"),
        "pool gauge"
    );
    assert!(
        metrics.contains("reason=\"revocations_stale\""),
        "the refusal's reason"
    );

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
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while initialize(&http, port, &access).await != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy did not recover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The secret the replicas seal MCP session ids with.
const SESSION_SECRET: &str = "a-session-secret-every-replica-shares-0123456789";

/// Three gateway binaries on one PostgreSQL database behind a round-robin
/// balancer (`public_url` is the balancer's), and the upstream they front.
struct ThreeReplicas {
    replicas: Vec<Option<Binary>>,
    ports: Vec<u16>,
    yaml: Vec<String>,
    balancer: Relay,
    _upstream: Upstream,
    dirs: Vec<std::path::PathBuf>,
}

impl ThreeReplicas {
    /// `extra`: more of the `authorization_server` section.
    async fn start(db: &str, extra: &str) -> Self {
        let upstream = Upstream::start().await;
        let (listener, balancer_addr) = Relay::bind().await;
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut replicas = Vec::new();
        let (mut yaml, mut dirs) = (Vec::new(), Vec::new());
        for &port in &ports {
            let dir =
                std::env::temp_dir().join(format!("mcpgw-replica-{}-{port}", std::process::id()));
            let config = authserver::config(
                port,
                upstream.addr,
                &dir,
                &format!("  store: {{ url: '{db}' }}\n  access_token_ttl: 60s\n{extra}"),
                &format!("auth:\n  sessions: {{ secret: '{SESSION_SECRET}' }}\n"),
            )
            .replace(
                &format!("public_url: http://127.0.0.1:{port}"),
                &format!("public_url: http://{balancer_addr}"),
            );
            replicas.push(Some(Binary::serve(&config, port).await));
            yaml.push(config);
            dirs.push(dir);
        }
        let balancer = Relay::start_balancing(
            listener,
            ports
                .iter()
                .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], *p)))
                .collect(),
        );
        Self {
            replicas,
            ports,
            yaml,
            balancer,
            _upstream: upstream,
            dirs,
        }
    }

    /// Registers a public client (code and refresh grants) through the
    /// balancer; its id.
    async fn register_public_client(&self) -> String {
        let grants = ["authorization_code", "refresh_token"];
        let resource = format!("{}/demo/mcp", self.public());
        OAuthClient::register_for(&self.public(), &resource, "replica test", REDIRECT, &grants)
            .await
            .id
    }

    /// The client `client_id` talking to replica `i` directly.
    fn client_on(&self, i: usize, client_id: &str) -> OAuthClient {
        OAuthClient::new(
            &format!("http://127.0.0.1:{}", self.ports[i]),
            &format!("{}/demo/mcp", self.public()),
            client_id,
            REDIRECT,
        )
    }

    fn public(&self) -> String {
        format!("http://{}", self.balancer.addr)
    }

    fn client(&self, client_id: &str) -> OAuthClient {
        OAuthClient::new(
            &self.public(),
            &format!("{}/demo/mcp", self.public()),
            client_id,
            REDIRECT,
        )
    }

    /// Replicas (by index) answering the exchanges from the `from`th on.
    fn replicas_since(&self, from: usize) -> Vec<usize> {
        self.balancer.exchanges()[from..]
            .iter()
            .filter_map(|line| common::relay::replica_of(line))
            .collect()
    }

    /// Waits (at most `within`) until every running replica refuses
    /// `token`, checked on each replica directly.
    async fn refused_everywhere(&self, http: &reqwest::Client, token: &str, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        for (i, port) in self.ports.iter().enumerate() {
            if self.replicas[i].is_none() {
                continue;
            }
            while initialize(http, *port, token).await != 401 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "replica {i} still accepts the token after {within:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

impl Drop for ThreeReplicas {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Signs in as alice in `browser` and gets the code for `client`; every
/// request of it goes through the balancer.
async fn browser_code(
    http: &reqwest::Client,
    browser: &mut Browser,
    client: &OAuthClient,
) -> (String, String) {
    let (verifier, challenge) = pkce();
    let url = client.authorize_url(&challenge, "mcp math", Some("st"));
    let back = browser
        .approve(http, &url, ("alice", authserver::PASSWORD), |_| {})
        .await;
    (query(&back)["code"].clone(), verifier)
}

fn kid_of(jwt: &str) -> String {
    use base64::Engine;
    let header = jwt.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

/// Issue 14's replica test: three replicas behind a round-robin balancer,
/// every request of every step on the next replica. A browser sign-in
/// (authorize, login, consent: each on another replica) ends in a code
/// exchanged on yet another; an MCP session made on one replica is used
/// on the others and refused to another user; a code replayed, a refresh
/// token reused or a token revoked on one replica is refused by all within
/// a second; a replica killed mid-flow leaves the flow to the others; a key
/// rotation reaches every replica within a second and its tokens are
/// accepted by all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_behind_a_round_robin_balancer_are_interchangeable() {
    let db = postgres::fresh_database();
    let mut r = ThreeReplicas::start(&db, "").await;
    let http = authserver::no_redirects();
    let client_id = r.register_public_client().await;
    let client = r.client(&client_id);

    // A browser sign-in, one replica per request.
    let from = r.balancer.exchanges().len();
    let mut browser = Browser::default();
    let (code, verifier) = browser_code(&http, &mut browser, &client).await;
    let (status, tokens) = client.exchange_code(&http, &code, &verifier).await;
    assert_eq!(status, 200, "{tokens}");
    let served = r.replicas_since(from);
    assert!(
        served.len() >= 5,
        "authorize, login, consent page, consent, token: {served:?}"
    );
    assert!(
        served.windows(2).all(|w| w[0] != w[1]),
        "every request on another replica: {served:?}"
    );
    let access = tokens["access_token"].as_str().unwrap().to_owned();

    // An MCP session, made on one replica, used on every other.
    let mcp = format!("{}/demo/mcp", r.public());
    let init = http
        .post(&mcp)
        .bearer_auth(&access)
        .header("accept", "application/json, text/event-stream")
        .body(common::INITIALIZE)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let list = |token: &str| {
        http.post(&mcp)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-session-id", &session)
            .body(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(
            list(&access).await.unwrap().status(),
            200,
            "the session on every replica"
        );
    }

    // Another user's token with alice's session: not found, on any replica.
    let bob_client = r.client(&client_id);
    let (verifier_b, challenge_b) = pkce();
    let back = Browser::default()
        .approve(
            &http,
            &bob_client.authorize_url(&challenge_b, "mcp", Some("st")),
            ("bob", authserver::PASSWORD),
            |_| {},
        )
        .await;
    let (_, bob) = bob_client
        .exchange_code(&http, &query(&back)["code"], &verifier_b)
        .await;
    let bob_access = bob["access_token"].as_str().unwrap();
    for _ in 0..3 {
        assert_eq!(
            list(bob_access).await.unwrap().status(),
            404,
            "not bob's session"
        );
    }

    // The code replayed (on another replica): refused, and what it issued
    // is refused by every replica within a second.
    let (status, error) = client.exchange_code(&http, &code, &verifier).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    r.refused_everywhere(&http, &access, Duration::from_secs(1))
        .await;

    // A refresh token reused on another replica revokes its family.
    let (code, verifier) = browser_code(&http, &mut browser, &client).await;
    let (_, first) = client.exchange_code(&http, &code, &verifier).await;
    let old_refresh = first["refresh_token"].as_str().unwrap();
    let (status, rotated) = client.refresh(&http, old_refresh).await;
    assert_eq!(status, 200, "{rotated}");
    let (status, _) = client.refresh(&http, old_refresh).await;
    assert_eq!(status, 400, "reuse");
    let (status, _) = client
        .refresh(&http, rotated["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(status, 400, "the family is revoked");
    r.refused_everywhere(
        &http,
        rotated["access_token"].as_str().unwrap(),
        Duration::from_secs(1),
    )
    .await;

    // Revoked on replica 0: refused by 1 and 2 within a second.
    let (code, verifier) = browser_code(&http, &mut browser, &client).await;
    let (_, tokens) = client.exchange_code(&http, &code, &verifier).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(initialize(&http, r.ports[2], access).await, 200);
    let revoked = http
        .post(format!("http://127.0.0.1:{}/revoke", r.ports[0]))
        .form(&[("token", access), ("client_id", &client_id)])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    r.refused_everywhere(&http, access, Duration::from_secs(1))
        .await;

    // A replica killed mid-flow: the balancer skips it, the flow finishes.
    let (verifier, challenge) = pkce();
    let mut fresh = Browser::default();
    let page = fresh
        .send(http.get(client.authorize_url(&challenge, "mcp", Some("st"))))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    r.replicas[1] = None;
    let login = format!("{}/login", r.public());
    let page = fresh
        .submit(
            &http,
            http.post(&login)
                .form(&page.login_form("alice", authserver::PASSWORD)),
        )
        .await;
    let back = if page.status == 200 {
        let consent = format!("{}/consent", r.public());
        fresh
            .send(http.post(&consent).form(&page.consent_form("approve")))
            .await
            .location()
    } else {
        page.location()
    };
    let (status, tokens) = client
        .exchange_code(&http, &query(&back)["code"], &verifier)
        .await;
    assert_eq!(status, 200, "{tokens}");

    // A key rotation (the `keys` command, on the shared store) is published
    // by every replica within a second; once it signs, the others accept
    // its tokens.
    let config = std::env::temp_dir().join(format!("mcpgw-replica-{}.yaml", std::process::id()));
    std::fs::write(&config, &r.yaml[0]).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-oauth-gateway"))
        .args(["keys", "rotate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kids = |port: u16| async move {
        common::get_json(&format!("http://127.0.0.1:{port}/jwks.json")).await["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let live = [r.ports[0], r.ports[2]];
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    for port in live {
        while kids(port).await.len() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the new key is not published on {port}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let new_kid = kids(live[0]).await.last().unwrap().clone();
    // Time passes: the new key has been published long enough to sign.
    let cluster = postgres::cluster();
    let db_name = db.rsplit('/').next().unwrap();
    cluster.psql_in(
        db_name,
        &format!("UPDATE signing_keys SET created_at = created_at - 3600 WHERE kid = '{new_kid}'; SELECT pg_notify('mcpgw_keys', '')"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    let access = loop {
        let (code, verifier) = browser_code(&http, &mut browser, &client).await;
        let (_, tokens) = client.exchange_code(&http, &code, &verifier).await;
        let access = tokens["access_token"].as_str().unwrap().to_owned();
        if kid_of(&access) == new_kid {
            break access;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new key does not sign"
        );
    };
    for port in live {
        assert_eq!(
            initialize(&http, port, &access).await,
            200,
            "accepted on {port}"
        );
    }
}

/// Two replicas receiving the same refresh token at once (a client's retry
/// through the balancer, or two egress addresses): never both rotate it.
/// Without a grace window the second is reuse and revokes the family; with
/// `refresh_reuse_grace` the exact same request gets the first answer
/// again and the family lives, while a different request with the used
/// token is still reuse (RFC 9700 §4.14.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_refresh_on_two_replicas_at_once() {
    let http = authserver::no_redirects();
    for grace in [None, Some("  refresh_reuse_grace: 5s\n")] {
        let db = postgres::fresh_database();
        let r = ThreeReplicas::start(&db, grace.unwrap_or_default()).await;
        let client_id = r.register_public_client().await;
        let client = r.client(&client_id);
        let mut browser = Browser::default();
        let (code, verifier) = browser_code(&http, &mut browser, &client).await;
        let (_, tokens) = client.exchange_code(&http, &code, &verifier).await;
        let refresh = tokens["refresh_token"].as_str().unwrap();
        let (a, b) = (r.client_on(0, &client_id), r.client_on(1, &client_id));
        let ((sa, ta), (sb, tb)) =
            tokio::join!(a.refresh(&http, refresh), b.refresh(&http, refresh));
        let family_alive = |t: &Value| t["refresh_token"].as_str().map(str::to_owned);
        match grace {
            None => {
                // One rotates; the other is reuse and revokes the family,
                // which also refuses the winner's tokens if the revocation
                // lands before they are recorded (then both get 400).
                assert!(
                    [sa, sb].contains(&400) && [sa, sb].iter().all(|s| [200, 400].contains(s)),
                    "never both: {sa} {ta} / {sb} {tb}"
                );
                if let Some(winner) = [(sa, &ta), (sb, &tb)].iter().find(|(s, _)| *s == 200) {
                    let (status, _) = client
                        .refresh(&http, &family_alive(winner.1).unwrap())
                        .await;
                    assert_eq!(status, 400, "the loser's reuse revoked the family");
                }
            }
            Some(_) => {
                assert_eq!((sa, sb), (200, 200), "{ta} {tb}");
                assert_eq!(ta, tb, "the same answer twice");
                let (status, next) = client.refresh(&http, &family_alive(&ta).unwrap()).await;
                assert_eq!(status, 200, "the family lives: {next}");
                // The used token with other parameters, in the window: reuse.
                let (status, _) = client
                    .refresh_with(&http, refresh, &[("scope", "mcp")])
                    .await;
                assert_eq!(status, 400);
                let (status, _) = client
                    .refresh(&http, next["refresh_token"].as_str().unwrap())
                    .await;
                assert_eq!(status, 400, "revoked by that reuse");
            }
        }
    }
}
