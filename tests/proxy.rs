//! The proxy core end to end: real gateway, real upstream, real HTTP.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn setup() -> (Upstream, Gateway, reqwest::Client) {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&upstream).await;
    (upstream, gateway, client())
}

/// Posts `body` to the raw inspector route and returns what the upstream saw.
async fn inspect(req: reqwest::RequestBuilder) -> Value {
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn error_of(messages: &[Value]) -> (Value, i64) {
    let m = &messages[0];
    (m["id"].clone(), m["error"]["code"].as_i64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_session_initialize_list_and_call_through_gateway() {
    let (_up, gw, c) = setup().await;
    let url = gw.url("/demo/mcp");
    let (status, msgs, headers) = rpc(mcp_post(&c, &url, INITIALIZE)).await;
    assert_eq!(status, 200);
    assert_eq!(
        msgs[0]["result"]["serverInfo"]["name"],
        "mcp-oauth-gateway-demo"
    );
    let session = headers
        .get("mcp-session-id")
        .expect("Mcp-Session-Id passes back")
        .to_str()
        .unwrap()
        .to_owned();

    let with_session = |body: &'static str| {
        mcp_post(&c, &url, body)
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-06-18")
    };
    let (status, _, _) = rpc(with_session(
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    ))
    .await;
    assert_eq!(status, 202);
    let (_, msgs, _) = rpc(with_session(
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    ))
    .await;
    let names: Vec<&str> = msgs[0]["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "add", "get_time", "countdown"]);
    let (_, msgs, _) = rpc(with_session(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":40}}}"#)).await;
    assert_eq!(msgs[0]["result"]["content"][0]["text"], "42");

    let deleted = c
        .delete(&url)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert!(
        deleted.status().is_success(),
        "DELETE passes through: {}",
        deleted.status()
    );
    let after = with_session(r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        after.status(),
        404,
        "the upstream ended the session on DELETE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_progress_events_arrive_as_the_upstream_sends_them() {
    let (_up, gw, c) = setup().await;
    let resp = stateless_countdown(&c, &gw.url("/demo/mcp"), 3, 400).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut stream = resp.bytes_stream();
    let mut buffer = String::new();
    let mut arrivals: Vec<(Instant, Value)> = Vec::new();
    while let Some(chunk) = stream.next().await {
        buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            for m in rpc_messages("text/event-stream", &event) {
                arrivals.push((Instant::now(), m));
            }
        }
    }
    let progress: Vec<&Instant> = arrivals
        .iter()
        .filter(|(_, m)| m["method"] == "notifications/progress")
        .map(|(t, _)| t)
        .collect();
    let (result_at, result) = arrivals.last().unwrap();
    assert_eq!(
        result["result"]["content"][0]["text"],
        "counted down 3 steps"
    );
    assert_eq!(progress.len(), 3);
    // The upstream spaces events 400 ms apart; a proxy that buffered the
    // response would deliver them all at once, at the end.
    assert!(
        result_at.duration_since(*progress[0]) >= Duration::from_millis(600),
        "first progress event was held back"
    );
    assert!(progress[1].duration_since(*progress[0]) >= Duration::from_millis(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_sse_stream_stays_open_across_a_quiet_gap() {
    let (_up, gw, c) = setup().await;
    let resp = c
        .get(gw.url("/raw/sse-gap"))
        .header("accept", "text/event-stream")
        .header("last-event-id", "7")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["mcp-session-id"], "sse-gap-session");
    let mut stream = resp.bytes_stream();
    let mut got = String::new();
    let mut first_at = None;
    while let Some(chunk) = stream.next().await {
        got.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        if first_at.is_none() && got.contains("event: one") {
            first_at = Some(Instant::now());
        }
    }
    assert!(
        got.contains("event: one") && got.contains("event: two"),
        "{got}"
    );
    assert!(first_at.unwrap().elapsed() < Duration::from_secs(60));
    assert!(
        Instant::now().duration_since(first_at.unwrap()) >= Duration::from_millis(1000),
        "first event must arrive before the gap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_forwarded_byte_for_byte_small_and_large() {
    let (_up, gw, c) = setup().await;
    let small = "{ \"jsonrpc\" : \"2.0\",\n \"id\": \"a\", \"method\": \"ping\" }";
    let seen = inspect(mcp_post(&c, &gw.url("/raw/inspect"), small)).await;
    assert_eq!(seen["body"], small);
    let filler = "x".repeat(300 * 1024);
    let large = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{filler}"}}}}}}"#
    );
    let seen = inspect(mcp_post(&c, &gw.url("/raw/inspect"), large.clone())).await;
    assert_eq!(seen["body"].as_str().unwrap().len(), large.len());
    assert_eq!(seen["body"], large.as_str());
    assert_eq!(seen["headers"]["content-length"], large.len().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_body_is_forwarded_with_a_length() {
    let (_up, gw, c) = setup().await;
    let body = r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#;
    let chunks =
        futures_util::stream::iter(vec![Ok::<_, std::io::Error>(&body[..10]), Ok(&body[10..])]);
    let req = mcp_post(
        &c,
        &gw.url("/raw/inspect"),
        reqwest::Body::wrap_stream(chunks),
    );
    let seen = inspect(req).await;
    assert_eq!(seen["body"], body);
    assert!(seen["headers"].get("transfer-encoding").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_forwarded_and_one_bad_element_refuses_all() {
    let (up, gw, c) = setup().await;
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"}]"#;
    let seen = inspect(mcp_post(&c, &gw.url("/raw/inspect"), batch)).await;
    assert_eq!(seen["body"], batch);
    let before = up.count();
    let bad = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2}]"#;
    let (status, msgs, _) = rpc(mcp_post(&c, &gw.url("/raw/inspect"), bad)).await;
    assert_eq!((status, error_of(&msgs)), (400, (Value::Null, -32600)));
    assert_eq!(up.count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_json_rpc_errors_and_never_reach_the_upstream() {
    let (up, gw, c) = setup().await;
    let url = gw.url("/demo/mcp");
    let cases: &[(&str, u16, i64)] = &[
        ("{\"jsonrpc\":\"2.0\",\"id\":1,", 400, -32700),
        ("not json", 400, -32700),
        ("{\"hello\":1}", 400, -32600),
        ("[]", 400, -32600),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","name":"get_time"}}"#,
            400,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":7}}"#,
            400,
            -32602,
        ),
    ];
    for (body, status, code) in cases {
        let (got_status, msgs, headers) = rpc(mcp_post(&c, &url, *body)).await;
        assert_eq!((got_status, error_of(&msgs).1), (*status, *code), "{body}");
        assert_eq!(headers["content-type"], "application/json");
    }
    let (_, msgs, _) = rpc(mcp_post(
        &c,
        &url,
        r#"{"jsonrpc":"2.0","id":"q","method":"tools/call","params":{}}"#,
    ))
    .await;
    assert_eq!(
        error_of(&msgs),
        (json!("q"), -32602),
        "the request id is echoed"
    );
    assert_eq!(up.count(), 0, "upstream saw: {:?}", up.seen());
}

// spec: Resource server 9 [26], header/body mismatch -> 400 with -32020.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_method_header_mismatch_is_refused_with_32020() {
    let (up, gw, c) = setup().await;
    let body = r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
    let (status, msgs, _) = rpc(mcp_post(&c, &gw.url("/demo/mcp"), body)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "get_time"))
    .await;
    assert_eq!((status, error_of(&msgs)), (400, (json!(4), -32020)));
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encodings_media_types_and_methods_are_checked() {
    let (up, gw, c) = setup().await;
    let url = gw.url("/demo/mcp");
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let (s, msgs, _) = rpc(mcp_post(&c, &url, ping).header("content-encoding", "gzip")).await;
    assert_eq!((s, error_of(&msgs).1), (415, -32003));
    let (s, _, _) = rpc(c.post(&url).header("content-type", "text/plain").body(ping)).await;
    assert_eq!(s, 415);
    let r = c.put(&url).body(ping).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST, GET, DELETE");
    let r = c.get(&url).body("smuggled").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(up.count(), 0, "{:?}", up.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_and_never_reach_the_upstream() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(&upstream, "", "limits:\n  max_body_bytes: 100000").await;
    let c = client();
    let url = gw.url("/demo/mcp");
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "y".repeat(150_000)
    );
    let (s, msgs, _) = rpc(mcp_post(&c, &url, big.clone())).await;
    assert_eq!((s, error_of(&msgs).1), (413, -32003));
    let chunks: Vec<Result<String, std::io::Error>> = big
        .as_bytes()
        .chunks(16 * 1024)
        .map(|b| Ok(String::from_utf8(b.to_vec()).unwrap()))
        .collect();
    let (s, _, _) = rpc(mcp_post(
        &c,
        &url,
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
    ))
    .await;
    assert_eq!(s, 413, "chunked bodies are counted as they arrive");
    assert_eq!(upstream.count(), 0);
    let fits = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "y".repeat(90_000)
    );
    let (s, _, _) = rpc(mcp_post(&c, &gw.url("/raw/inspect"), fits)).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_get_404_with_a_json_body() {
    let (up, gw, c) = setup().await;
    for path in ["/", "/demo", "/demo/mcpx", "/other/mcp"] {
        let r = c
            .post(gw.url(path))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "not_found");
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_with_dot_segments_or_encoded_separators_get_400() {
    let (up, gw, _c) = setup().await;
    // Issue 11.6: and the forms an upstream may decode into dot segments.
    for path in [
        "/demo/mcp/../../raw/inspect",
        "/demo/mcp/%2e%2e/inspect",
        "/raw//inspect",
        "/raw/x/..;/inspect",
        "/raw/x/%252e%252e/inspect",
        "/raw/x/%c0%ae%c0%ae/inspect",
        "/raw/x/%u002e%u002e/inspect",
    ] {
        let raw = raw_http(
            gw.addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(raw.starts_with("HTTP/1.1 400"), "{path}: {raw}");
        assert!(raw.contains("ambiguous_path"), "{raw}");
    }
    assert_eq!(up.count(), 0);
}

// spec: Resource server 7 [11], Origin check against DNS rebinding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_outside_the_allow_list_gets_403() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(&upstream, "", "allowed_origins: ['http://localhost:6274']").await;
    let c = client();
    let url = gw.url("/demo/mcp");
    let (s, msgs, _) =
        rpc(mcp_post(&c, &url, INITIALIZE).header("origin", "http://evil.example")).await;
    assert_eq!((s, error_of(&msgs).1), (403, -32003));
    let r = c
        .get(gw.url("/raw/sse-gap"))
        .header("origin", "null")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(upstream.count(), 0);
    let (s, _, _) =
        rpc(mcp_post(&c, &url, INITIALIZE).header("origin", "http://localhost:6274")).await;
    assert_eq!(s, 200, "configured origin passes");
    let (s, _, _) =
        rpc(mcp_post(&c, &url, INITIALIZE).header("origin", format!("http://{}", gw.addr))).await;
    assert_eq!(s, 200, "the public URL's own origin passes");
}

// spec: Resource server 4, no token passthrough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_hop_by_hop_headers_are_stripped_mcp_headers_pass() {
    let (up, gw, _c) = setup().await;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#;
    let head = |method: &str, extra: &str| {
        format!(
            "{method} /raw/inspect?x=1 HTTP/1.1\r\nHost: public.example\r\nAuthorization: Bearer client-token\r\n\
Cookie: sid=abc\r\nProxy-Authorization: Basic Zm9v\r\nConnection: close, x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
TE: trailers\r\nUpgrade: websocket\r\nMcp-Session-Id: s-1\r\nMCP-Protocol-Version: 2026-07-28\r\nLast-Event-ID: 42\r\n\
Mcp-Method: tools/call\r\nMcp-Name: echo\r\nx-api-key: client-supplied\r\n{extra}\r\n"
        )
    };
    let post = format!(
        "{}{body}",
        head(
            "POST",
            &format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            )
        )
    );
    let get = head("GET", "");
    for request in [post, get] {
        let raw = raw_http(gw.addr, request.as_bytes()).await;
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        let json_start = raw.find("\r\n\r\n").unwrap() + 4;
        let text = raw[json_start..].trim();
        let text = if text.starts_with('{') {
            text.to_owned()
        } else {
            text.lines().nth(1).unwrap().to_owned()
        };
        let seen: Value = serde_json::from_str(&text).unwrap();
        let h = &seen["headers"];
        for gone in [
            "authorization",
            "cookie",
            "proxy-authorization",
            "x-hop",
            "keep-alive",
            "te",
            "upgrade",
        ] {
            assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h}");
        }
        for (name, value) in [
            ("mcp-session-id", "s-1"),
            ("mcp-protocol-version", "2026-07-28"),
            ("last-event-id", "42"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
            ("x-api-key", "upstream-secret"),
            ("x-forwarded-for", "127.0.0.1"),
        ] {
            assert_eq!(h[name], value, "{name}");
        }
        assert_eq!(h["host"], up.addr.to_string());
        assert_eq!(seen["uri"], "/inspect?x=1");
    }
}

/// A POST is forwarded whole, with its own framing: `Content-Length` for
/// the body the gateway read, and no `Expect` (nothing is left to wait for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_post_carries_its_length_and_no_expect() {
    let (_up, gw, _c) = setup().await;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#;
    let request = format!(
        "POST /raw/inspect HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n\
Expect: 100-continue\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let raw = raw_http(gw.addr, request.as_bytes()).await;
    let raw = raw
        .strip_prefix("HTTP/1.1 100 Continue\r\n\r\n")
        .unwrap_or(&raw);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let seen: Value =
        serde_json::from_str(raw[raw.find("\r\n\r\n").unwrap() + 4..].trim()).unwrap();
    let h = &seen["headers"];
    assert!(
        h.get("expect").is_none(),
        "Expect reached the upstream: {h}"
    );
    assert_eq!(h["content-length"], body.len().to_string());
    assert!(h.get("transfer-encoding").is_none(), "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_gets_502_with_the_request_id() {
    let upstream = Upstream::start().await;
    let dead = free_port();
    let extra =
        format!("  - name: dead\n    path: /dead/mcp\n    url: http://127.0.0.1:{dead}/mcp\n");
    let gw = Gateway::start_with(&upstream, &extra, "").await;
    let c = client();
    let (s, msgs, _) = rpc(mcp_post(
        &c,
        &gw.url("/dead/mcp"),
        r#"{"jsonrpc":"2.0","id":77,"method":"ping"}"#,
    ))
    .await;
    assert_eq!(s, 502);
    assert_eq!(error_of(&msgs), (json!(77), -32001));
    assert!(msgs[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`dead`"));
    let r = c.get(gw.url("/dead/mcp")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_gets_504_with_the_request_id() {
    let (_up, gw, c) = setup().await;
    let (s, msgs, _) = rpc(mcp_post(
        &c,
        &gw.url("/raw/slow"),
        r#"{"jsonrpc":"2.0","id":"slow-1","method":"ping"}"#,
    ))
    .await;
    assert_eq!(s, 504);
    assert_eq!(error_of(&msgs), (json!("slow-1"), -32002));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_connections_survive_many_requests() {
    let (up, gw, c) = setup().await;
    for i in 0..50 {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"ping"}}"#);
        let seen = inspect(mcp_post(&c, &gw.url("/raw/inspect"), body.clone())).await;
        assert_eq!(seen["body"], body);
    }
    assert_eq!(up.count(), 50);
}

/// Issue 11.6: the upstream sees the same `X-Request-Id` the client gets
/// back, on POST as on GET: a usable client id as sent, anything else
/// (markup, 300 characters) replaced by the gateway's, never forwarded raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_request_carries_the_request_id_the_client_gets() {
    let (_up, gw, c) = setup().await;
    let long = "a".repeat(300);
    for (sent, kept) in [
        ("trace-42:abc.def_1", true),
        ("<script>x</script>", false),
        (long.as_str(), false),
        ("a%0d%0aSet-Cookie:%20x", false),
    ] {
        let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        for req in [
            mcp_post(&c, &gw.url("/raw/inspect"), ping),
            c.get(gw.url("/raw/inspect")),
        ] {
            let resp = req.header("x-request-id", sent).send().await.unwrap();
            let answered = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
            let seen: Value = resp.json().await.unwrap();
            let method = seen["method"].as_str().unwrap().to_owned();
            assert_eq!(
                seen["headers"]["x-request-id"],
                answered.as_str(),
                "{method} {sent}"
            );
            assert_eq!(
                answered == sent,
                kept,
                "{method} {sent}: answered {answered}"
            );
        }
    }
}

/// A gateway without an authorization server is ready once it serves:
/// `/healthz` and `/readyz` answer 200 `no-store` JSON, GET only, and
/// never reach an upstream.
#[tokio::test]
async fn health_checks_answer_without_an_authorization_server() {
    let (upstream, gw, http) = setup().await;
    for path in ["/healthz", "/readyz"] {
        let resp = http.get(gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["status"], "ok");
        let post = http.post(gw.url(path)).send().await.unwrap();
        assert_eq!(post.status(), 405, "{path}: GET only");
    }
    assert!(upstream.seen().is_empty(), "no upstream request");
}
