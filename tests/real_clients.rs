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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_lists_and_calls_demo_tools_through_the_gateway() {
    ensure_npm_packages();
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let url = gw.url("/demo/mcp");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("ts_sdk_client.mjs")
            .arg(url)
            .current_dir(clients_dir())
            .output()
            .expect("node is needed for the real-client tests")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "TS SDK client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap();
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
