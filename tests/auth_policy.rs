//! Per-upstream scope policy over real HTTP: step-up challenges, base
//! scopes, look-alike tools and methods, `Mcp-Name` checks, session owners,
//! and `tools/list` filtering.

mod common;

use common::idp::{Idp, TestKey};
use common::resource_server::*;
use common::{client, mcp_post, rpc, Upstream, INITIALIZE};
use serde_json::{json, Value};

/// Issue 11.6: a method an upstream could trim or case-fold into a known
/// one is refused before the policy (it would pass as an unknown method
/// with only the base scopes); well-formed unknown methods follow the
/// upstream's `unlisted_methods`.
#[tokio::test]
async fn lookalike_methods_are_refused_and_unlisted_methods_follow_the_policy() {
    let s = Setup::start().await;
    let base_only = s.token("alice", "mcp");
    for method in ["Tools/Call", "tools/call ", "tools/call\\u0000"] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":3,"method":"{method}","params":{{"name":"add","arguments":{{"a":1,"b":2}}}}}}"#
        );
        let (status, _, text) = s.post("/demo/mcp", Some(&base_only), &body).await;
        assert_eq!(status, 400, "{method}: {text}");
        assert!(text.contains("-32600"), "{method}: {text}");
    }
    assert_eq!(s.upstream.count(), 0, "no look-alike reached the upstream");

    let vendor = r#"{"jsonrpc":"2.0","id":4,"method":"vendor/extension","params":{}}"#;
    let raw = s.token_for("/raw", "alice", "mcp");
    let (status, _, text) = s.post("/raw/inspect", Some(&raw), vendor).await;
    assert_eq!(status, 200, "unlisted_methods: base (the default): {text}");
    let other = s.token_for("/other/mcp", "alice", "mcp");
    let (status, headers, text) = s.post("/other/mcp", Some(&other), vendor).await;
    assert_eq!(status, 403, "unlisted_methods: deny: {text}");
    assert!(challenge(&headers).contains("method `vendor/extension` is not allowed"));
}

/// Resource server 5: a valid token without the tool's scope gets 403 with
/// the scopes needed plus the granted ones still relevant.
#[tokio::test]
async fn missing_tool_scope_gets_403_insufficient_scope_with_step_up_scope() {
    let s = Setup::start().await;
    let token = s.token("alice", "mcp time openid");
    let (status, headers, body) = s.call_tool(&token, "add", json!({"a": 1, "b": 2})).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        challenge(&headers),
        format!(
            "Bearer error=\"insufficient_scope\", error_description=\"tools/call of `add` needs scope math\", scope=\"mcp math time\", resource_metadata=\"{}\"",
            s.prm_url("/demo/mcp")
        )
    );
    assert_eq!(error_of(&body).0, "insufficient_scope");
    let (status, _, body) = s.call_tool(&token, "get_time", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.upstream.count(),
        1,
        "only the allowed call reached the upstream"
    );

    let wider = s.token("alice", "mcp math time");
    let (status, _, body) = s.call_tool(&wider, "add", json!({"a": 40, "b": 2})).await;
    assert_eq!(status, 200);
    assert!(body.contains("42"), "{body}");
}

#[tokio::test]
async fn a_token_without_the_base_scope_is_refused_everywhere() {
    let s = Setup::start().await;
    let token = s.token("alice", "math");
    let (status, headers, _) = s.post("/demo/mcp", Some(&token), INITIALIZE).await;
    assert_eq!(status, 403);
    assert!(challenge(&headers).contains("scope=\"mcp math\""));
    let resp = client()
        .get(s.gw.url("/demo/mcp"))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

/// Tool names are matched literally: case and look-alike characters name
/// other (unlisted, denied) tools; a batch is refused as a whole.
#[tokio::test]
async fn lookalike_names_and_batches_hiding_a_forbidden_call_are_refused() {
    let s = Setup::start().await;
    let token = s.token("alice", "mcp math time");
    for name in ["ADD", "\u{430}dd", "add\u{200b}"] {
        let (status, _, body) = s.call_tool(&token, name, json!({"a": 1, "b": 2})).await;
        assert_eq!(status, 403, "{name:?}: {body}");
        assert!(error_of(&body).1.contains("not allowed"), "{body}");
    }
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 1, "b": 1}}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "shutdown", "arguments": {}}}
    ]);
    let (status, _, body) = s.post("/demo/mcp", Some(&token), &batch.to_string()).await;
    assert_eq!(status, 403, "{body}");
    let dup = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add","name":"shutdown","arguments":{}}}"#;
    let (status, _, body) = s.post("/demo/mcp", Some(&token), dup).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(s.upstream.count(), 0);
}

/// Resource server 9: `Mcp-Name` that lies about the tool gets -32020.
#[tokio::test]
async fn mcp_name_header_lying_about_the_tool_gets_32020() {
    let s = Setup::start().await;
    let token = s.token("alice", "mcp time");
    let body = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "add", "arguments": {}}});
    let c = client();
    let (status, messages, _) = rpc(mcp_post(&c, &s.gw.url("/demo/mcp"), body.to_string())
        .bearer_auth(&token)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "get_time"))
    .await;
    assert_eq!(status, 400);
    assert_eq!(messages[0]["error"]["code"], -32020);
    assert_eq!(s.upstream.count(), 0);
}

/// Resource server 6: a session belongs to the subject that created it.
#[tokio::test]
async fn session_id_replayed_by_another_subject_gets_404() {
    let s = Setup::start().await;
    let alice = s.token("alice", "mcp");
    let eve = s.token("eve", "mcp");
    let session = initialize_session(&s, &alice).await;
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let resp = session_post(&s, &alice, &session, initialized)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let before = s.upstream.count();

    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let (status, messages, _) = rpc(session_post(&s, &eve, &session, list)).await;
    assert_eq!(status, 404);
    assert!(messages[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("session not found"));
    let (status, _, _) = rpc(session_post(&s, &eve, "made-up-session", list)).await;
    assert_eq!(status, 404, "a session the gateway never saw created");
    let get = client()
        .get(s.gw.url("/demo/mcp"))
        .bearer_auth(&eve)
        .header("mcp-session-id", &session)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 404);
    assert_eq!(s.upstream.count(), before, "eve reached nothing");

    let (status, _, _) = rpc(session_post(&s, &alice, &session, list)).await;
    assert_eq!(status, 200, "alice keeps her session");
}

/// tools/list hides tools the caller could not call, in an SSE session
/// response and in a stateless one.
#[tokio::test]
async fn tools_list_shows_only_callable_tools() {
    let s = Setup::start().await;
    let token = s.token("alice", "mcp math");
    let session = initialize_session(&s, &token).await;
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let (status, messages, headers) = rpc(session_post(&s, &token, &session, list)).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(tool_names(&messages), vec!["add", "countdown", "echo"]);

    let c = client();
    let (status, messages, headers) = rpc(mcp_post(&c, &s.gw.url("/demo/mcp"), TOOLS_LIST)
        .bearer_auth(&token)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list"))
    .await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(tool_names(&messages), vec!["add", "countdown", "echo"]);

    let time_only = s.token("bob", "mcp time");
    let (_, messages, _) = rpc(mcp_post(&c, &s.gw.url("/demo/mcp"), TOOLS_LIST)
        .bearer_auth(&time_only)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list"))
    .await;
    assert_eq!(tool_names(&messages), vec!["countdown", "echo", "get_time"]);
}

/// POSTs `body` to `url` with the bearer `token`.
async fn post_with(
    c: &reqwest::Client,
    url: &str,
    body: &'static str,
    token: &str,
) -> reqwest::Response {
    mcp_post(c, url, body)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn tools_list_json_response_is_filtered_and_reframed() {
    let s = Setup::start().await;
    let token = s.token_for("/raw", "alice", "mcp");
    let c = client();
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let resp = post_with(&c, &s.gw.url("/raw/tools-json"), list, &token).await;
    assert_eq!(resp.headers()["content-type"], "application/json");
    let length: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = resp.text().await.unwrap();
    assert_eq!(length, body.len());
    let messages = vec![serde_json::from_str::<Value>(&body).unwrap()];
    assert_eq!(tool_names(&messages), vec!["add", "get_time"]);

    let admin = s.token_for("/raw", "root", "mcp admin");
    let (_, messages, _) =
        rpc(mcp_post(&c, &s.gw.url("/raw/tools-json"), list).bearer_auth(&admin)).await;
    assert_eq!(
        tool_names(&messages),
        vec!["add", "get_time", "secret_admin"]
    );
}

/// A GET stream can replay a `tools/list` response (`Last-Event-ID`
/// resumption): it is filtered too.
#[tokio::test]
async fn tools_list_replayed_on_a_get_stream_is_filtered() {
    let s = Setup::start().await;
    let token = s.token_for("/raw", "alice", "mcp");
    let resp = client()
        .get(s.gw.url("/raw/tools-sse"))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .header("last-event-id", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let messages = common::rpc_messages("text/event-stream", &body);
    let list = messages
        .iter()
        .find(|m| m["id"] == 7)
        .expect("the replayed response");
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["add", "get_time"]);
    assert!(
        body.contains(
            "id: 2\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\n"
        ),
        "{body}"
    );
}

/// A `tools/list` answer the gateway cannot read (here: compressed, on a
/// POST and on a GET stream whose media type is in capitals) is refused
/// with a 502, never passed on unfiltered.
#[tokio::test]
async fn tools_list_answer_that_cannot_be_filtered_is_refused() {
    let s = Setup::start().await;
    let token = s.token_for("/raw", "alice", "mcp");
    let c = client();
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let resp = post_with(&c, &s.gw.url("/raw/tools-gzip"), list, &token).await;
    assert_eq!(resp.status(), 502);
    let body = resp.text().await.unwrap();
    assert!(!body.contains("secret_admin"), "{body}");
    assert!(body.contains("Content-Encoding"), "{body}");

    let resp = c
        .get(s.gw.url("/raw/tools-gzip"))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body = resp.text().await.unwrap();
    assert!(!body.contains("secret_admin"), "{body}");
    assert!(body.contains("Content-Encoding"), "{body}");
}

#[tokio::test]
async fn tools_list_filtering_can_be_switched_off_per_upstream() {
    let idp = Idp::start(&[&TestKey::ec1()]).await;
    let upstream = Upstream::start().await;
    let gw = gateway_with(
        &format!("  jwt_issuers: [{{ issuer: '{}' }}]\n", idp.issuer),
        &format!(
            "  - name: raw\n    path: /raw\n    url: http://{}\n    policy: {{ tools: {{ 'secret_*': [admin] }}, unlisted_tools: base, filter_tools_list: false }}\n",
            upstream.addr
        ),
    )
    .await;
    let token = TestKey::ec1().sign(&idp.claims("alice", &gw.url("/raw"), ""));
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let (status, messages, _) =
        rpc(mcp_post(&client(), &gw.url("/raw/tools-json"), list).bearer_auth(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(
        tool_names(&messages),
        vec!["add", "get_time", "secret_admin"]
    );
}
