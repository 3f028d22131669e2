//! Metrics and request ids over real HTTP: the gateway's `/metrics` listener
//! after allowed and refused traffic. (This binary is its own process, so
//! the global registry holds only this file's traffic.)

mod common;

use common::idp::{Idp, TestKey};
use common::{client, free_port, mcp_post, Gateway, Upstream, INITIALIZE};
use serde_json::{json, Value};

fn call(tool: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": tool, "arguments": {"a": 1, "b": 2},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientInfo": {"name": "obs", "version": "1"},
                  "io.modelcontextprotocol/clientCapabilities": {}}}})
    .to_string()
}

/// The value of the series `name{labels}` (labels in Prometheus's order).
fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no series {series} in:\n{metrics}"))
}

#[tokio::test]
async fn metrics_count_requests_tool_calls_and_auth_failures_by_reason() {
    let key = TestKey::ec1();
    let idp = Idp::start(&[&key]).await;
    let upstream = Upstream::start().await;
    let (port, metrics_port) = (free_port(), free_port());
    let gw = Gateway::start_yaml(&format!(
        "public_url: http://127.0.0.1:{port}
listen: 127.0.0.1:{port}
metrics: {{ listen: '127.0.0.1:{metrics_port}' }}
auth:
  jwt_issuers: [{{ issuer: '{}' }}]
upstreams:
  - name: obs
    path: /obs/mcp
    url: http://{}/mcp
    policy: {{ base_scopes: [mcp], tools: {{ add: [math], 'get_*': [time] }} }}
",
        idp.issuer, upstream.addr
    ))
    .await;
    let url = gw.url("/obs/mcp");
    let token = key.sign(&idp.claims("alice", &url, "mcp math"));
    let c = client();
    let post = |body: String| {
        mcp_post(&c, &url, body)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
    };

    let missing = post(call("add"))
        .header("mcp-name", "add")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);
    let generated = missing.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(generated.len(), 24);
    assert!(
        generated
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
        "lower-case hex: {generated}"
    );
    let body: Value = missing.json().await.unwrap();
    assert_eq!(
        body["request_id"],
        json!(generated),
        "error bodies carry the request id"
    );

    let ok = post(call("add"))
        .header("mcp-name", "add")
        .header("x-request-id", "client-chosen-id.1")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-request-id"], "client-chosen-id.1");
    for tool in ["get_time", "ADD"] {
        let denied = post(call(tool))
            .header("mcp-name", tool)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(denied.status(), 403);
    }
    let bogus = mcp_post(&c, &url, INITIALIZE)
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(bogus.status(), 401);
    let again = post(call("add"))
        .header("mcp-name", "add")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);

    // The access-log phase (which counts a request) runs just after the
    // response is sent: wait until the last request is counted.
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let scrape = || common::get_text(&metrics_url);
    let mut metrics = scrape().await;
    for _ in 0..40 {
        if metrics.contains("mcpgw_request_duration_seconds_count{upstream=\"obs\"} 6") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        metrics = scrape().await;
    }
    assert_eq!(
        value(
            &metrics,
            r#"mcpgw_requests_total{method="tools/call",status="200",upstream="obs"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &metrics,
            r#"mcpgw_requests_total{method="tools/call",status="403",upstream="obs"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &metrics,
            r#"mcpgw_auth_failures_total{reason="missing_token",upstream="obs"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            r#"mcpgw_auth_failures_total{reason="insufficient_scope",upstream="obs"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &metrics,
            r#"mcpgw_auth_failures_total{reason="unreadable",upstream="obs"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            r#"mcpgw_tool_calls_total{outcome="allowed",tool="add",upstream="obs"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &metrics,
            r#"mcpgw_tool_calls_total{outcome="denied",tool="get_*",upstream="obs"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            r#"mcpgw_tool_calls_total{outcome="denied",tool="other",upstream="obs"}"#
        ),
        1.0,
        "unlisted names share one label"
    );
    assert!(
        value(
            &metrics,
            r#"mcpgw_token_cache_requests_total{result="hit"}"#
        ) >= 3.0
    );
    let build = format!(
        "mcpgw_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&metrics, &build), 1.0);
    assert!(
        value(
            &metrics,
            r#"mcpgw_upstream_duration_seconds_count{upstream="obs"}"#
        ) >= 2.0
    );
    assert!(
        value(
            &metrics,
            r#"mcpgw_request_duration_seconds_count{upstream="obs"}"#
        ) >= 6.0
    );
    let jwks = format!(
        "mcpgw_jwks_fetches_total{{issuer=\"{}\",outcome=\"ok\"}}",
        idp.issuer
    );
    assert!(value(&metrics, &jwks) >= 1.0);
}

/// The real binary's JSON logs of allowed and refused requests: one audit
/// event per decision, and no token anywhere.
#[tokio::test]
async fn logs_carry_audit_events_and_never_a_token() {
    let key = TestKey::ec1();
    let idp = Idp::start(&[&key]).await;
    let upstream = Upstream::start().await;
    let port = free_port();
    let config = std::env::temp_dir().join(format!("mcpgw-obs-{}-{port}.yaml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "public_url: http://127.0.0.1:{port}
listen: 127.0.0.1:{port}
logging: {{ format: json, level: info }}
auth:
  jwt_issuers: [{{ issuer: '{}' }}]
upstreams:
  - {{ name: logs, path: /logs/mcp, url: 'http://{}/mcp', policy: {{ base_scopes: [mcp], unlisted_tools: base }} }}
",
            idp.issuer, upstream.addr
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-oauth-gateway"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::wait_for_port(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let url = format!("http://127.0.0.1:{port}/logs/mcp");
    let good = key.sign(&idp.claims("alice", &url, "mcp"));
    let wrong_audience = key.sign(&idp.claims("alice", "https://elsewhere/mcp", "mcp"));
    let c = client();
    for token in [
        &good,
        &wrong_audience,
        &"opaque-secret-token-value".to_owned(),
    ] {
        mcp_post(&c, &url, INITIALIZE)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&config);
    let logs = String::from_utf8_lossy(&out.stderr);
    for token in [&good, &wrong_audience] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!logs.contains(signature), "a token reached the logs");
    }
    assert!(!logs.contains("opaque-secret-token-value"));
    let audit: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "audit")
        .collect();
    let decisions: Vec<(&str, &str)> = audit
        .iter()
        .map(|v| {
            (
                v["decision"].as_str().unwrap(),
                v["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        vec![
            ("allowed", "-"),
            ("denied", "wrong_audience"),
            ("denied", "unreadable")
        ],
        "{logs}"
    );
    assert_eq!(audit[0]["subject"], "alice");
    assert!(audit[0]["request_id"]
        .as_str()
        .is_some_and(|r| r.len() == 24));
}
