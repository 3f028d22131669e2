//! Rate limits (issue 16 §6): token buckets per subject, per client id and
//! per tool on an upstream, and per address for requests without a valid
//! token. A refused call gets 429 with `Retry-After` and a JSON-RPC error,
//! is audited and counted by limit. Timing is checked loosely here (a slow
//! machine only ever refills more, up to the burst); the exact refill
//! arithmetic is pinned by the unit tests of `ratelimit`.

mod common;

use common::idp::{Idp, TestKey};
use common::{client, free_port, stateless_tool_call, status_headers_text, Gateway, Upstream};
use serde_json::{json, Value};
use std::time::Duration;

struct Setup {
    _upstream: Upstream,
    idp: Idp,
    gw: Gateway,
    key: TestKey,
}

impl Setup {
    /// Three upstreams in front of the demo server, one limit each, and
    /// `top_level` YAML (the per-address limit).
    async fn start(top_level: &str) -> Self {
        let key = TestKey::ec1();
        let idp = Idp::start(&[&key]).await;
        let upstream = Upstream::start().await;
        let port = free_port();
        let up = |name: &str, limits: &str| {
            format!(
                "  - name: {name}
    path: /{name}/mcp
    url: http://{addr}/mcp
    policy: {{ base_scopes: [mcp], unlisted_tools: base }}
    rate_limits: {limits}
",
                addr = upstream.addr
            )
        };
        let yaml = format!(
            "public_url: http://127.0.0.1:{port}
listen: 127.0.0.1:{port}
auth:
  jwt_issuers: [{{ issuer: {iss} }}]
{top_level}upstreams:
{subject}{client}{tool}",
            iss = idp.issuer,
            subject = up("subj", "{ per_subject: { rate: 2/s, burst: 3 } }"),
            client = up("cli", "{ per_client: { rate: 1/min, burst: 2 } }"),
            tool = up(
                "tool",
                "{ per_tool: { add: 1/min, 'get_*': { rate: 1/min, burst: 2 } } }"
            ),
        );
        let gw = Gateway::start_yaml(&yaml).await;
        Self {
            _upstream: upstream,
            idp,
            gw,
            key,
        }
    }

    /// A token of `subject` (held by `client`) for upstream `name`.
    fn token(&self, name: &str, subject: &str, client: &str) -> String {
        let mut claims = self
            .idp
            .claims(subject, &self.gw.url(&format!("/{name}/mcp")), "mcp");
        claims["client_id"] = json!(client);
        self.key.sign(&claims)
    }

    /// Calls `tool` on upstream `name` as `subject` of `app`.
    async fn call(&self, name: &str, subject: &str, app: &str, tool: &str) -> Answer {
        let args = match tool {
            "add" => json!({"a": 1, "b": 2}),
            "echo" => json!({"text": "hi"}),
            _ => json!({}),
        };
        let url = self.gw.url(&format!("/{name}/mcp"));
        let req = stateless_tool_call(&client(), &url, 7, tool, args, json!({}))
            .bearer_auth(self.token(name, subject, app));
        Answer::of(req).await
    }
}

/// What the gateway answered.
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: Value,
}

impl Answer {
    async fn of(req: reqwest::RequestBuilder) -> Self {
        let (status, headers, text) = status_headers_text(req).await;
        let body = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text }));
        Self {
            status,
            retry_after: headers
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse().expect("Retry-After in seconds")),
            body,
        }
    }

    fn assert_limited(&self, limit: &str) {
        assert_eq!(self.status, 429, "{}", self.body);
        assert!(
            self.retry_after.is_some_and(|s| s >= 1),
            "Retry-After missing"
        );
        let error = &self.body["error"];
        assert_eq!(error["code"], -32004, "{}", self.body);
        assert_eq!(
            self.body["id"], 7,
            "the JSON-RPC error answers the request's id"
        );
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(limit), "{message}");
    }
}

/// The value of `mcpgw_rate_limited_total` for `upstream` and `limit`.
fn limited_count(upstream: &str, limit: &str) -> u64 {
    let text = mcp_oauth_gateway::metrics::metrics().render();
    text.lines()
        .filter(|l| l.starts_with("mcpgw_rate_limited_total{"))
        .filter(|l| l.contains(&format!("upstream=\"{upstream}\"")))
        .filter(|l| l.contains(&format!("limit=\"{limit}\"")))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_subject_past_its_burst_gets_429_and_its_bucket_refills_at_the_rate() {
    let s = Setup::start("").await;
    for i in 0..3 {
        let a = s.call("subj", "alice", "app", "echo").await;
        assert_eq!(
            a.status, 200,
            "call {i} is within the burst of 3: {}",
            a.body
        );
    }
    let refused = s.call("subj", "alice", "app", "echo").await;
    refused.assert_limited("per subject");
    // 2/s: the next token is 500 ms away, so the client is told 1 s.
    assert_eq!(refused.retry_after, Some(1));
    assert!(limited_count("subj", "subject") >= 1);

    // Another subject has a bucket of its own, even with the same client.
    assert_eq!(s.call("subj", "bob", "app", "echo").await.status, 200);

    // After 550 ms at 2/s at least one token is back (more only on a slow
    // machine, and never more than the burst).
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(s.call("subj", "alice", "app", "echo").await.status, 200);
    let mut passed = 0;
    for _ in 0..4 {
        if s.call("subj", "alice", "app", "echo").await.status == 200 {
            passed += 1;
        }
    }
    assert!(passed < 4, "a refilled bucket holds at most its burst");
}

#[tokio::test]
async fn a_client_limit_is_shared_by_every_subject_of_that_client() {
    let s = Setup::start("").await;
    assert_eq!(s.call("cli", "alice", "app", "echo").await.status, 200);
    assert_eq!(s.call("cli", "bob", "app", "echo").await.status, 200);
    let refused = s.call("cli", "carol", "app", "echo").await;
    refused.assert_limited("per client");
    // 1/min: a minute until the next token.
    assert!(
        refused.retry_after.unwrap() > 50,
        "{:?}",
        refused.retry_after
    );
    assert_eq!(
        s.call("cli", "carol", "other-app", "echo").await.status,
        200
    );
    assert!(limited_count("cli", "client") >= 1);
}

#[tokio::test]
async fn a_tool_limit_counts_only_the_calls_its_rule_matches() {
    let s = Setup::start("").await;
    assert_eq!(s.call("tool", "alice", "app", "add").await.status, 200);
    s.call("tool", "alice", "app", "add")
        .await
        .assert_limited("tool `add`");
    // Tools of other rules, and unlimited tools, are unaffected.
    assert_eq!(s.call("tool", "alice", "app", "echo").await.status, 200);
    assert_eq!(s.call("tool", "alice", "app", "get_time").await.status, 200);
    assert_eq!(s.call("tool", "alice", "app", "get_time").await.status, 200);
    s.call("tool", "alice", "app", "get_time")
        .await
        .assert_limited("tool `get_*`");
    // The bucket is per subject.
    assert_eq!(s.call("tool", "bob", "app", "add").await.status, 200);
    assert_eq!(limited_count("tool", "tool"), 2);
}

#[tokio::test]
async fn a_batch_counts_each_message() {
    let s = Setup::start("").await;
    let call = |id: u64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x"}}})
    };
    let url = s.gw.url("/subj/mcp");
    let batch = |n: u64| {
        common::mcp_post(
            &client(),
            &url,
            Value::Array((1..=n).map(call).collect()).to_string(),
        )
        .header("mcp-protocol-version", "2025-03-26")
        .bearer_auth(s.token("subj", "alice", "app"))
    };
    // Four messages can never fit a burst of three: no Retry-After.
    let (status, headers, text) = status_headers_text(batch(4)).await;
    assert_eq!(status, 429, "{text}");
    assert!(headers.get("retry-after").is_none());
    assert!(text.contains("exceeds the burst"), "{text}");
    // Three fit, and spend the whole burst.
    let (status, _, text) = status_headers_text(batch(3)).await;
    assert_ne!(status, 429, "{text}");
    s.call("subj", "alice", "app", "echo")
        .await
        .assert_limited("per subject");
}

#[tokio::test]
async fn requests_without_a_valid_token_are_limited_per_address() {
    let s =
        Setup::start("limits:\n  unauthenticated_per_address: { rate: 1/min, burst: 3 }\n").await;
    let http = client();
    let url = s.gw.url("/subj/mcp");
    let anonymous = || stateless_tool_call(&http, &url, 7, "echo", json!({"text": "x"}), json!({}));
    assert_eq!(Answer::of(anonymous()).await.status, 401);
    let forged = anonymous().bearer_auth("not-a-token");
    assert_eq!(Answer::of(forged).await.status, 401);
    let prm = s.gw.url("/.well-known/oauth-protected-resource/subj/mcp");
    assert_eq!(http.get(&prm).send().await.unwrap().status(), 200);
    // The fourth request without a valid token finds the bucket empty.
    anonymous_refused(Answer::of(anonymous()).await);
    let doc = http.get(&prm).send().await.unwrap();
    assert_eq!(doc.status(), 429);
    let body: Value = doc.json().await.unwrap();
    assert_eq!(
        body["error"], "temporarily_unavailable",
        "an OAuth error off MCP paths"
    );
    // Callers with a valid token are not counted, and not refused.
    assert_eq!(s.call("subj", "alice", "app", "echo").await.status, 200);
    assert!(limited_count("-", "address") >= 1);
}

fn anonymous_refused(a: Answer) {
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(a.retry_after.unwrap() > 50, "{:?}", a.retry_after);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("without a valid token"),
        "{}",
        a.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_requests_never_spend_more_than_the_burst() {
    let s = std::sync::Arc::new(Setup::start("").await);
    // 24 calls at once over their own keep-alive connections, one client
    // bucket of burst 2 refilling once a minute: exactly two pass.
    let calls = (0..24).map(|i| {
        let s = s.clone();
        tokio::spawn(async move { s.call("cli", &format!("user-{i}"), "racer", "echo").await })
    });
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.unwrap().status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        22,
        "{statuses:?}"
    );
}
