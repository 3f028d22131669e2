//! The shipped dashboard and alert rules against a real Prometheus (Debian's
//! `prometheus`, installed by `.ci/run`): a gateway with every token source
//! and the built-in authorization server takes traffic that touches every
//! metric (each kind of auth failure among it), Prometheus scrapes it, and
//! every PromQL expression of `dashboards/` must be valid and return series.

mod common;

use common::browser::{self, pkce, AuthorizeRequest, Browser};
use common::idp::{Idp, TestKey, INTROSPECTION_CLIENT};
use common::{free_port, mcp_post, wait_for_port, Gateway, Upstream, INITIALIZE};
use mcp_oauth_gateway::authserver::passwords::hash_password;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

const DASHBOARDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards");
const REDIRECT: &str = "http://127.0.0.1:9/cb";
const OPERATOR: &str = "an-operator-registration-token-0123456789";

fn binary(name: &str) -> PathBuf {
    ["/usr/bin", "/usr/local/bin", "/usr/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: `apt-get install -y prometheus` (.ci/run does it)")
        })
}

struct Prometheus(Child, PathBuf);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

async fn start_prometheus(target: u16) -> (Prometheus, String) {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("mcpgw-prom-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nrule_files: ['{DASHBOARDS}/alerts.yml']\nscrape_configs:\n  - job_name: gateway\n    static_configs: [{{ targets: ['127.0.0.1:{target}'] }}]\n"
        ),
    )
    .unwrap();
    let child = Command::new(binary("prometheus"))
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(format!("127.0.0.1:{port}").parse().unwrap()).await;
    (Prometheus(child, dir), format!("http://127.0.0.1:{port}"))
}

/// The result of an instant query, or the error Prometheus gave.
async fn query(http: &reqwest::Client, prom: &str, expr: &str) -> Result<Vec<Value>, String> {
    let encoded: String = url::form_urlencoded::byte_serialize(expr.as_bytes()).collect();
    let resp: Value = http
        .get(format!("{prom}/api/v1/query?query={encoded}"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    if resp["status"] != "success" {
        return Err(resp.to_string());
    }
    Ok(resp["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// Every PromQL expression of the dashboard, with Grafana's variables set.
fn dashboard_expressions() -> Vec<(String, String)> {
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{DASHBOARDS}/mcp-oauth-gateway.json")).unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$upstream", ".*")
                .replace("$__rate_interval", "1m")
                .replace("$__range", "5m");
            out.push((panel["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    out
}

/// Every alert's expression without its threshold (`<expr> > <threshold>`):
/// healthy traffic would leave the full alert empty.
fn alert_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(format!("{DASHBOARDS}/alerts.yml")).unwrap();
    let mut out = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        if let Some(n) = line.trim().strip_prefix("- alert:") {
            name = n.trim().to_owned();
        }
        if let Some(expr) = line.trim().strip_prefix("expr:") {
            let (left, _) = expr
                .rsplit_once(" > ")
                .expect("alerts are `<expr> > <threshold>`");
            out.push((name.clone(), left.trim().to_owned()));
        }
    }
    out
}

/// Drives one browser authorization through login and consent; returns the code.
async fn authorize(
    http: &reqwest::Client,
    gw: &Gateway,
    client_id: &str,
    challenge: &str,
) -> String {
    let url = AuthorizeRequest {
        client_id,
        redirect_uri: REDIRECT,
        challenge,
        scope: "mcp",
        state: None,
        resource: &gw.url("/prom/mcp"),
    }
    .url(&gw.url(""));
    let mut browser = Browser::default();
    let page = browser.send(http.get(url)).await;
    // One failed login first, for the login_failure event.
    browser
        .send(
            http.post(gw.url("/login"))
                .form(&page.login_form("ops", "wrong")),
        )
        .await;
    let consent = browser
        .submit(
            http,
            http.post(gw.url("/login"))
                .form(&page.login_form("ops", "pw")),
        )
        .await;
    let back = browser
        .send(
            http.post(gw.url("/consent"))
                .form(&consent.consent_form("approve")),
        )
        .await;
    browser::query(&back.location())["code"].clone()
}

/// Traffic touching every metric the dashboard and the alerts read.
async fn drive_traffic(gw: &Gateway, idp: &Idp, key: &TestKey) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = gw.url("/prom/mcp");
    let call = |tool: &str| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {"a": 1, "b": 2},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientInfo": {"name": "prom", "version": "1"},
                      "io.modelcontextprotocol/clientCapabilities": {}}}})
        .to_string()
    };
    let send = |token: Option<String>, tool: &'static str| {
        let mut req = mcp_post(&http, &url, call(tool))
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", tool);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let good = key.sign(&idp.claims("alice", &url, "mcp math"));
    let mut expired = idp.claims("alice", &url, "mcp");
    expired["exp"] = json!(common::idp::now() - 600);
    let wrong_aud = key.sign(&idp.claims("alice", "https://elsewhere/mcp", "mcp"));
    send(Some(good.clone()), "add").await.unwrap(); // allowed
    send(Some(good.clone()), "get_time").await.unwrap(); // insufficient_scope, denied tool
    send(None, "add").await.unwrap(); // missing_token
    send(Some(key.sign(&expired)), "add").await.unwrap(); // expired
    send(Some(wrong_aud), "add").await.unwrap(); // wrong_audience
    send(Some("opaque-unknown".into()), "add").await.unwrap(); // inactive (introspection)
    idp.activate(
        "opaque-good",
        json!({"active": true, "sub": "bob", "scope": "mcp math", "aud": url}),
    );
    send(Some("opaque-good".into()), "add").await.unwrap(); // active introspection
    idp.set_introspection_down(true);
    send(Some("opaque-while-down".into()), "add").await.unwrap(); // introspection error
    idp.set_introspection_down(false);
    mcp_post(&http, &gw.url("/dead/mcp"), INITIALIZE)
        .bearer_auth(key.sign(&idp.claims("alice", &gw.url("/dead/mcp"), "mcp")))
        .send()
        .await
        .unwrap(); // upstream error
                   // A GET stream, so the SSE gauge has seen one.
    let _ = http
        .get(&url)
        .bearer_auth(&good)
        .header("accept", "text/event-stream")
        .timeout(Duration::from_millis(300))
        .send()
        .await;

    // Past a rate limit (the second round refuses both).
    let limited = key.sign(&idp.claims("alice", &gw.url("/limited/mcp"), "mcp"));
    for _ in 0..2 {
        mcp_post(&http, &gw.url("/limited/mcp"), INITIALIZE)
            .bearer_auth(&limited)
            .send()
            .await
            .unwrap();
    }

    // A client that leaves an SSE stream during a quiet gap, and a body
    // that never finishes (cut off after body_timeout: 408).
    let raw = key.sign(&idp.claims("alice", &gw.url("/raw"), "mcp"));
    let _ = http
        .get(gw.url("/raw/sse-gap"))
        .bearer_auth(&raw)
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap()
        .text()
        .await;
    let mut stalled = common::http1::Conn::open(gw.addr).await;
    let head = format!(
        "POST /raw/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {raw}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    stalled.send(head.as_bytes()).await;
    let _ = stalled.read_response().await;

    // The authorization server: registration, login failure, approval,
    // tokens, refresh reuse, revocation.
    let reg: Value = http
        .post(gw.url("/register"))
        .bearer_auth(OPERATOR)
        .json(&json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = reg["client_id"].as_str().unwrap().to_owned();
    let (verifier, challenge) = pkce();
    let code = authorize(&http, gw, &client_id, &challenge).await;
    let tokens: Value = http
        .post(gw.url("/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &client_id),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        // The second use is a reuse.
        http.post(gw.url("/token"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", &client_id),
            ])
            .send()
            .await
            .unwrap();
    }
    http.post(gw.url("/revoke"))
        .form(&[("token", refresh.as_str()), ("client_id", &client_id)])
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_expression_returns_series_from_a_real_prometheus() {
    let promtool = Command::new(binary("promtool"))
        .args(["check", "rules", &format!("{DASHBOARDS}/alerts.yml")])
        .output()
        .unwrap();
    assert!(
        promtool.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&promtool.stdout),
        String::from_utf8_lossy(&promtool.stderr)
    );

    let key = TestKey::ec1();
    let idp = Idp::start(&[&key]).await;
    let upstream = Upstream::start().await;
    let (port, metrics_port, dead) = (free_port(), free_port(), free_port());
    let data_dir =
        std::env::temp_dir().join(format!("mcpgw-prom-as-{}-{port}", std::process::id()));
    let hash = hash_password("pw").unwrap();
    let gw = Gateway::start_yaml(&format!(
        "public_url: http://127.0.0.1:{port}
listen: 127.0.0.1:{port}
metrics: {{ listen: '127.0.0.1:{metrics_port}' }}
limits: {{ body_timeout: 1s }}
authorization_server:
  data_dir: '{dir}'
  registration: initial_access_token
  initial_access_token: {OPERATOR}
  store: {{ url: '{db}' }}
  users: [{{ username: ops, password_hash: '{hash}', scopes: [mcp, math] }}]
auth:
  jwt_issuers:
    - {{ issuer: '{iss}' }}
    - {{ issuer: 'http://127.0.0.1:{dead}/broken', jwks_uri: 'http://127.0.0.1:{dead}/jwks.json', jwks_min_refresh_interval: 1s }}
  introspection:
    - {{ url: '{iss}/introspect', issuer: '{iss}/opaque', client_id: {cid}, client_secret: '{secret}', inactive_cache_ttl: 1s }}
upstreams:
  - name: prom
    path: /prom/mcp
    url: http://{up}/mcp
    scopes: [mcp, math, time]
    policy: {{ base_scopes: [mcp], tools: {{ add: [math], 'get_*': [time] }} }}
  - {{ name: dead, path: /dead/mcp, url: 'http://127.0.0.1:{dead}/mcp', timeouts: {{ connect: 300ms }} }}
  - {{ name: raw, path: /raw, url: 'http://{up}', policy: {{ base_scopes: [mcp], unlisted_tools: base }} }}
  - {{ name: limited, path: /limited/mcp, url: 'http://{up}/mcp', policy: {{ base_scopes: [mcp] }}, rate_limits: {{ per_subject: {{ rate: 1/h, burst: 1 }} }} }}
",
        dir = data_dir.display(),
        db = common::postgres::fresh_database(),
        iss = idp.issuer,
        cid = INTROSPECTION_CLIENT.0,
        secret = INTROSPECTION_CLIENT.1,
        up = upstream.addr,
    ))
    .await;
    let (_prometheus, prom) = start_prometheus(metrics_port).await;
    let http = reqwest::Client::new();
    // rate() needs two samples after the traffic: drive it, wait for
    // scrapes, drive it again, wait again.
    drive_traffic(&gw, &idp, &key).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    drive_traffic(&gw, &idp, &key).await;
    for _ in 0..40 {
        if query(&http, &prom, "mcpgw_authserver_events_total")
            .await
            .is_ok_and(|r| !r.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut failures = Vec::new();
    for (what, expr) in dashboard_expressions()
        .into_iter()
        .chain(alert_expressions())
    {
        match query(&http, &prom, &expr).await {
            Ok(series) if series.is_empty() => {
                failures.push(format!("{what}: no series for {expr}"))
            }
            Ok(_) => {}
            Err(e) => failures.push(format!("{what}: invalid {expr}: {e}")),
        }
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
