//! Test harness: a real upstream (the demo MCP server plus a few raw routes,
//! behind a counter of every request it receives) and the real gateway on an
//! ephemeral port, both on loopback.
#![allow(dead_code)]

pub mod authserver;
pub mod binary;
pub mod browser;
pub mod e2e;
pub mod forging_idp;
pub mod github;
pub mod http1;
pub mod idp;
pub mod oauth_client;
pub mod oidc_idp;
pub mod postgres;
pub mod relay;
pub mod resource_server;
pub mod tls;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use mcp_oauth_gateway::config::Config;
use mcp_oauth_gateway::{demo, proxy};
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The upstream: demo MCP at `/mcp`, raw helpers at `/inspect`, `/sse-gap`,
/// `/slow`, `/held`. Every request it receives is recorded.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    shutdown: CancellationToken,
    release: CancellationToken,
}

impl Upstream {
    pub async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let release = CancellationToken::new();
        let app = upstream_app(&seen, &shutdown, &release);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled_owned().await })
                .await
                .unwrap();
        });
        Self {
            addr,
            seen,
            shutdown,
            release,
        }
    }

    /// Lets every `/held` stream send its second event and end.
    pub fn release_held(&self) {
        self.release.cancel();
    }

    /// Every request received so far, as `METHOD /path`.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The upstream's routes (see [`Upstream`]), recording into `seen`.
pub fn upstream_app(
    seen: &Arc<Mutex<Vec<String>>>,
    shutdown: &CancellationToken,
    release: &CancellationToken,
) -> Router {
    let release = release.clone();
    demo::router(shutdown.clone())
        .route("/held", get(move || held(release.clone())))
        .route("/inspect", any(inspect))
        .route("/sse-gap", get(sse_gap))
        .route("/slow", any(slow))
        .route("/tools-json", any(tools_json))
        .route("/tools-sse", get(tools_sse))
        .route("/tools-gzip", any(tools_gzip))
        .route("/paced/{pace}", any(paced))
        .route("/own-cors", any(own_cors))
        .layer(middleware::from_fn_with_state(seen.clone(), record))
}

async fn record(State(seen): State<Arc<Mutex<Vec<String>>>>, req: Request, next: Next) -> Response {
    seen.lock()
        .unwrap()
        .push(format!("{} {}", req.method(), req.uri().path()));
    next.run(req).await
}

/// Echoes what arrived: method, path and query, HTTP version, headers, and
/// the body.
async fn inspect(
    method: Method,
    version: axum::http::Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                json!(String::from_utf8_lossy(v.as_bytes())),
            )
        })
        .collect();
    axum::Json(json!({
        "method": method.as_str(),
        "uri": uri.to_string(),
        "version": format!("{version:?}"),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}

/// An SSE stream whose second event waits for [`Upstream::release_held`].
async fn held(release: CancellationToken) -> Response {
    let stream = futures_util::stream::unfold(0, move |step| {
        let release = release.clone();
        async move {
            let text = match step {
                0 => "event: one\ndata: 1\n\n",
                1 => {
                    release.cancelled().await;
                    "event: two\ndata: 2\n\n"
                }
                _ => return None,
            };
            Some((
                Ok::<_, std::io::Error>(Bytes::from_static(text.as_bytes())),
                step + 1,
            ))
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// An SSE stream with a quiet gap between two events.
async fn sse_gap() -> Response {
    let stream = async_stream(vec![
        (Duration::ZERO, "event: one\ndata: 1\n\n"),
        (Duration::from_millis(1500), "event: two\ndata: 2\n\n"),
    ]);
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("mcp-session-id", "sse-gap-session")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn async_stream(
    parts: Vec<(Duration, &'static str)>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(parts.into_iter(), |mut it| async move {
        let (delay, text) = it.next()?;
        tokio::time::sleep(delay).await;
        Some((Ok(Bytes::from_static(text.as_bytes())), it))
    })
}

/// Answers any JSON-RPC request with a plain-JSON `tools/list` result.
async fn tools_json(body: Bytes) -> impl IntoResponse {
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let tools = ["add", "get_time", "secret_admin"]
        .map(|name| json!({"name": name, "inputSchema": {"type": "object"}}));
    axum::Json(json!({"jsonrpc": "2.0", "id": request["id"], "result": {"tools": tools}}))
}

/// A `tools/list` result in plain text that claims to be gzip-compressed:
/// JSON to a POST, an event stream to a GET. A gateway that cannot read a
/// body must not pass it on unfiltered.
async fn tools_gzip(method: Method, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let tools = ["add", "secret_admin"].map(|name| json!({"name": name}));
    let result = json!({"jsonrpc": "2.0", "id": request["id"], "result": {"tools": tools}});
    let (content_type, body) = match method {
        Method::GET => ("Text/Event-Stream", format!("data: {result}\n\n")),
        _ => ("application/json", result.to_string()),
    };
    Response::builder()
        .header("content-type", content_type)
        .header("content-encoding", "gzip")
        .body(Body::from(body))
        .unwrap()
}

/// A GET stream replaying a `tools/list` response, split mid-event.
async fn tools_sse() -> Response {
    let stream = async_stream(vec![
        (
            Duration::ZERO,
            "id: 1\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"tools\":[{\"name\":\"add\"},",
        ),
        (
            Duration::from_millis(50),
            "{\"name\":\"get_time\"},{\"name\":\"secret_admin\"}]}}\n\n",
        ),
        (
            Duration::ZERO,
            "id: 2\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\n",
        ),
    ]);
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// Answers a JSON-RPC request with an empty result carrying its `id`, after
/// a delay set by the path: `instant`, `1ms`, `jitter` (0-5 ms, varying with
/// the id), or `sse` (the result as one event of an SSE stream, ~1 ms).
async fn paced(axum::extract::Path(pace): axum::extract::Path<String>, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = &request["id"];
    let delay_us = match pace.as_str() {
        "instant" => 0,
        "jitter" => id.as_u64().unwrap_or(0).wrapping_mul(2_654_435_761) % 5_001,
        _ => 1_000,
    };
    if delay_us > 0 {
        tokio::time::sleep(Duration::from_micros(delay_us)).await;
    }
    let result = json!({"jsonrpc": "2.0", "id": id, "result": {}}).to_string();
    if pace == "sse" {
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(futures_util::stream::once(async move {
                Ok::<_, std::io::Error>(Bytes::from(format!("event: message\ndata: {result}\n\n")))
            })))
            .unwrap();
    }
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(result))
        .unwrap()
}

/// A JSON-RPC answer carrying the upstream's own, wide-open CORS fields.
async fn own_cors() -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .header("access-control-allow-origin", "*")
        .header("access-control-allow-credentials", "true")
        .header("access-control-expose-headers", "x-upstream-secret")
        .header("access-control-allow-methods", "PUT")
        .body(Body::from(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#))
        .unwrap()
}

async fn slow() -> impl IntoResponse {
    tokio::time::sleep(Duration::from_secs(3)).await;
    axum::Json(json!({"jsonrpc": "2.0", "id": 1, "result": {}}))
}

/// A gateway running in this process on an ephemeral port.
pub struct Gateway {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

struct StopOnMessage(Mutex<Option<tokio::sync::oneshot::Receiver<()>>>);

#[async_trait::async_trait]
impl ShutdownSignalWatch for StopOnMessage {
    async fn recv(&self) -> ShutdownSignal {
        let rx = self.0.lock().unwrap().take();
        if let Some(rx) = rx {
            let _ = rx.await;
        }
        ShutdownSignal::FastShutdown
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Config text for a gateway on `port` with the standard test routes:
/// `/demo/mcp` (demo MCP server) and `/raw` (the raw helpers).
pub fn config_yaml(
    port: u16,
    upstream: SocketAddr,
    extra_upstream_yaml: &str,
    top_level_yaml: &str,
) -> String {
    let auth = if top_level_yaml.contains("auth:") {
        ""
    } else {
        "auth: { disabled: true }"
    };
    format!(
        "public_url: http://127.0.0.1:{port}
listen: 127.0.0.1:{port}
{auth}
{top_level_yaml}
upstreams:
  - name: demo
    path: /demo/mcp
    url: http://{upstream}/mcp
  - name: raw
    path: /raw
    url: http://{upstream}
    headers:
      x-api-key: upstream-secret
    timeouts:
      response: 700ms
{extra_upstream_yaml}"
    )
}

impl Gateway {
    /// Starts the standard test gateway in front of `upstream`.
    pub async fn start(upstream: &Upstream) -> Self {
        Self::start_with(upstream, "", "").await
    }

    pub async fn start_with(
        upstream: &Upstream,
        extra_upstream_yaml: &str,
        top_level_yaml: &str,
    ) -> Self {
        let port = free_port();
        let yaml = config_yaml(port, upstream.addr, extra_upstream_yaml, top_level_yaml);
        Self::start_yaml(&yaml).await
    }

    pub async fn start_yaml(yaml: &str) -> Self {
        let config =
            Config::from_yaml(yaml).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        Self::start_config(config).await
    }

    /// Starts from the file `path`, which it then watches for reloads.
    pub async fn start_file(path: &std::path::Path) -> Self {
        let config = Config::load(path).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        Self::start_config(config).await
    }

    async fn start_config(config: Config) -> Self {
        if std::env::var_os("MCPGW_TEST_LOG").is_some() {
            mcp_oauth_gateway::telemetry::init(config.log_format, "info");
        }
        let addr = config.listen;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server = mcp_oauth_gateway::server::build(&config, proxy::InFlight::new()).unwrap();
        std::thread::spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(StopOnMessage(Mutex::new(Some(rx)))),
            })
        });
        wait_for_port(addr).await;
        Self {
            addr,
            stop: Some(tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The value of `series` (a metric name with its labels, as `/metrics`
/// prints it) at the metrics listener on `metrics_port`; 0 when absent.
pub async fn metric(metrics_port: u16, series: &str) -> f64 {
    let text = get_text(&format!("http://127.0.0.1:{metrics_port}/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits (20 s at most) until `series` reaches `n`; `context` is shown
/// when it does not (a log, say).
pub async fn await_metric(metrics_port: u16, series: &str, n: f64, context: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while metric(metrics_port, series).await < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{series} never reached {n}:\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_for_port(addr: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listens on {addr}");
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The body of a GET (a metrics page, a document).
pub async fn get_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// GETs `url` and reads its body as JSON.
pub async fn get_json(url: &str) -> Value {
    serde_json::from_str(&get_text(url).await)
        .unwrap_or_else(|e| panic!("{url} answered no JSON: {e}"))
}

/// A JSON-RPC POST as MCP clients send it.
pub fn mcp_post(
    client: &reqwest::Client,
    url: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body)
}

pub const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"gateway-tests","version":"1"}}}"#;

/// The JSON-RPC messages in an SSE or JSON response body.
pub fn rpc_messages(content_type: &str, body: &str) -> Vec<Value> {
    if content_type.starts_with("text/event-stream") {
        body.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    } else {
        vec![serde_json::from_str(body).unwrap()]
    }
}

/// Sends a POST and returns (status, JSON-RPC messages, headers).
pub async fn rpc(req: reqwest::RequestBuilder) -> (u16, Vec<Value>, reqwest::header::HeaderMap) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.text().await.unwrap();
    let messages = if body.is_empty() {
        vec![]
    } else {
        rpc_messages(&ct, &body)
    };
    (status, messages, headers)
}

/// Writes raw bytes to `addr` and returns the raw response (read to close).
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends a stateless (2026-07-28) `countdown` tools/call with a progress
/// token: protocol data in `_meta`, `Mcp-Method`/`Mcp-Name` headers set.
pub async fn stateless_countdown(
    c: &reqwest::Client,
    url: &str,
    steps: u32,
    interval_ms: u32,
) -> reqwest::Response {
    let args = json!({"steps": steps, "interval_ms": interval_ms});
    stateless_tool_call(c, url, 9, "countdown", args, json!({"progressToken": "p1"}))
        .send()
        .await
        .unwrap()
}

/// A stateless (2026-07-28) `tools/call` of `tool` as SDK clients send it:
/// protocol data in `_meta` (with `extra_meta`'s fields), `Mcp-Method` and
/// `Mcp-Name` set.
pub fn stateless_tool_call(
    c: &reqwest::Client,
    url: &str,
    id: u64,
    tool: &str,
    arguments: Value,
    extra_meta: Value,
) -> reqwest::RequestBuilder {
    let mut meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "gateway-tests", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    if let (Some(meta), Value::Object(extra)) = (meta.as_object_mut(), extra_meta) {
        meta.extend(extra);
    }
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": arguments, "_meta": meta}});
    mcp_post(c, url, body.to_string())
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
}

/// Sends a request and returns (status, headers, body text).
pub async fn status_headers_text(
    req: reqwest::RequestBuilder,
) -> (u16, reqwest::header::HeaderMap, String) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}
