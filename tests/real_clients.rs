//! Real MCP clients through the gateway: the official TypeScript SDK,
//! installed from npm by this test (`npm ci` in tests/clients) on first run.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn clients_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients"))
}

fn ensure_npm_packages() {
    if clients_dir()
        .join("node_modules/@modelcontextprotocol/sdk")
        .exists()
    {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(clients_dir())
        .status()
        .expect("npm is needed for the real-client tests (Node.js 20+)");
    assert!(status.success(), "npm ci in tests/clients failed");
}

/// Runs a client script in tests/clients with `args`; returns the JSON line
/// it printed, or fails with its output.
async fn run_client(program: std::path::PathBuf, args: Vec<String>) -> Value {
    let shown = program.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(program)
            .args(args)
            .current_dir(clients_dir())
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot run `{shown}` for the real-client tests: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client `{shown}` failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

/// A gateway with the built-in authorization server (user `alice`, password
/// `pw`) and a per-tool policy in front of the demo upstream; its store is
/// removed on drop.
struct OAuthGateway {
    gw: Gateway,
    data_dir: std::path::PathBuf,
}

impl Drop for OAuthGateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

async fn oauth_gateway(upstream: &Upstream, authorization_server_extra: &str) -> OAuthGateway {
    let port = free_port();
    let data_dir =
        std::env::temp_dir().join(format!("mcpgw-client-oauth-{}-{port}", std::process::id()));
    let hash = mcp_oauth_gateway::authserver::passwords::hash_password("pw").unwrap();
    let gw = Gateway::start_yaml(&format!(
        "public_url: http://127.0.0.1:{port}
listen: 127.0.0.1:{port}
authorization_server:
  data_dir: '{dir}'
{authorization_server_extra}  users: [{{ username: alice, password_hash: '{hash}', scopes: [mcp, math, time] }}]
upstreams:
  - name: demo
    path: /demo/mcp
    url: http://{up}/mcp
    scopes: [mcp, math, time]
    policy: {{ base_scopes: [mcp], tools: {{ add: [math], 'get_*': [time], echo: [], countdown: [] }} }}
",
        dir = data_dir.display(),
        up = upstream.addr
    ))
    .await;
    OAuthGateway { gw, data_dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_lists_and_calls_demo_tools_through_the_gateway() {
    ensure_npm_packages();
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let url = gw.url("/demo/mcp");
    let seen = run_client("node".into(), vec!["ts_sdk_client.mjs".into(), url]).await;
    assert_eq!(
        seen["tools"],
        serde_json::json!(["echo", "add", "get_time", "countdown"])
    );
    assert_eq!(seen["add"], "42");
    assert_eq!(seen["countdown"], "counted down 3 steps");
    assert_eq!(
        seen["progress"],
        serde_json::json!([1, 2, 3]),
        "progress notifications reached the SDK"
    );
    assert!(
        upstream.seen().iter().any(|r| r == "DELETE /mcp"),
        "session DELETE passed through: {:?}",
        upstream.seen()
    );
}

/// The TypeScript SDK completes OAuth 2.1 with the built-in authorization
/// server: DCR, PKCE authorize, login and consent, token, filtered
/// tools/list, 403 step-up, refresh after expiry, revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_completes_oauth_with_the_builtin_authorization_server() {
    ensure_npm_packages();
    let upstream = Upstream::start().await;
    let oauth = oauth_gateway(&upstream, "  access_token_ttl: 2s\n").await;
    let url = oauth.gw.url("/demo/mcp");
    let args = ["ts_sdk_oauth.mjs", &url, "alice", "pw"]
        .map(String::from)
        .to_vec();
    let seen = run_client("node".into(), args).await;
    println!("{seen}");
    assert_eq!(
        seen["firstScope"], "mcp",
        "the SDK asked for the challenged base scope"
    );
    assert_eq!(
        seen["tools"],
        serde_json::json!(["countdown", "echo"]),
        "tools/list filtered to callable tools"
    );
    assert_eq!(seen["echo"], "hi");
    assert_eq!(seen["add"], "42");
    // SDK 1.32 refreshes instead of re-authorizing on 403 insufficient_scope
    // and gives up; the script's application code then re-authorizes with
    // the challenged scope (see ts_sdk_oauth.mjs).
    assert_eq!(
        seen["stepUp"], "application",
        "403 insufficient_scope led to re-authorization"
    );
    assert_eq!(seen["progress"], serde_json::json!([1, 2, 3]));
    assert_eq!(
        seen["refreshed"], true,
        "the SDK refreshed after the access token expired"
    );
    assert_eq!(seen["afterExpiry"], "2");
    assert_eq!(seen["revokeStatus"], 200);
    assert!(
        seen["afterRevoke"].as_str().unwrap().starts_with("refused"),
        "after revocation the SDK cannot get in: {}",
        seen["afterRevoke"]
    );
}

/// The Python venv with the official `mcp` SDK (pinned in
/// tests/clients/requirements.txt), created under the gitignored
/// tests/e2e/.cache on first run.
fn python_with_mcp() -> std::path::PathBuf {
    let root = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/e2e/.cache/venv"
    ));
    let python = root.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import mcp.client.auth"])
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(root)
            .status()
            .expect("python3 is needed for the Python SDK test");
        assert!(
            made.success(),
            "python3 -m venv failed (Debian: apt-get install python3-venv)"
        );
        let installed = Command::new(root.join("bin/pip"))
            .args(["install", "-q", "-r"])
            .arg(clients_dir().join("requirements.txt"))
            .status()
            .unwrap();
        assert!(
            installed.success(),
            "pip install of the Python MCP SDK failed"
        );
    }
    python
}

/// The Python SDK's OAuthClientProvider completes the flow: 401, PRM (its
/// `resource` checked), AS metadata (`issuer` checked), DCR, authorize, login
/// and consent, `iss` checked, token, then filtered tools/list and a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_completes_oauth_with_the_builtin_authorization_server() {
    let python = python_with_mcp();
    let upstream = Upstream::start().await;
    let oauth = oauth_gateway(&upstream, "").await;
    let url = oauth.gw.url("/demo/mcp");
    let args = ["python_sdk_oauth.py", &url, "alice", "pw"]
        .map(String::from)
        .to_vec();
    let seen = run_client(python, args).await;
    assert_eq!(seen["client_registered"], true);
    assert_eq!(
        seen["scope"], "mcp offline_access",
        "the SDK adds offline_access from the AS metadata"
    );
    assert_eq!(seen["tools"], serde_json::json!(["countdown", "echo"]));
    assert_eq!(seen["echo"], "hi");
    assert_eq!(seen["authorizations"], 1);
}
