//! The built-in demo MCP server: real MCP over Streamable HTTP, served by the
//! official Rust SDK (`rmcp`).
//!
//! `mcp-oauth-gateway demo` runs it on loopback behind the gateway so a new
//! user has something to connect to, and the integration tests use it as the
//! upstream. Its tools cover the shapes a gateway must carry: a plain JSON
//! result (`echo`, `add`, `get_time`) and a result preceded by progress
//! notifications streamed over SSE (`countdown`).

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::{
    session::local::LocalSessionManager, StreamableHttpServerConfig, StreamableHttpService,
};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Path of the MCP endpoint on the demo server.
pub const MCP_PATH: &str = "/mcp";

/// Longest countdown the demo accepts, so a caller cannot park a task forever.
const MAX_COUNTDOWN_STEPS: u64 = 50;
const MAX_COUNTDOWN_INTERVAL_MS: u64 = 5_000;

/// The demo tools.
#[derive(Clone, Default)]
pub struct DemoServer;

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => unreachable!("tool schemas are object literals"),
    }
}

fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            "echo",
            "Returns the text it is given.",
            schema(json!({"type":"object","properties":{"text":{"type":"string"}},"required":["text"]})),
        ),
        Tool::new(
            "add",
            "Adds two numbers.",
            schema(json!({"type":"object","properties":{"a":{"type":"number"},"b":{"type":"number"}},"required":["a","b"]})),
        ),
        Tool::new(
            "get_time",
            "Returns the server's current time as seconds since the Unix epoch.",
            schema(json!({"type":"object","properties":{}})),
        ),
        Tool::new(
            "countdown",
            "Counts down `steps` times, `interval_ms` apart, sending a progress notification at each step (pass a progressToken in _meta to receive them).",
            schema(json!({"type":"object","properties":{
                "steps":{"type":"integer","minimum":1,"maximum":MAX_COUNTDOWN_STEPS},
                "interval_ms":{"type":"integer","minimum":0,"maximum":MAX_COUNTDOWN_INTERVAL_MS}
            }})),
        ),
    ]
}

fn arg_f64(args: &JsonObject, name: &str) -> Result<f64, ErrorData> {
    args.get(name)
        .and_then(Value::as_f64)
        .ok_or_else(|| ErrorData::invalid_params(format!("`{name}` must be a number"), None))
}

fn arg_u64(args: &JsonObject, name: &str, default: u64, max: u64) -> Result<u64, ErrorData> {
    match args.get(name) {
        None => Ok(default),
        Some(v) => v.as_u64().filter(|n| *n <= max).ok_or_else(|| {
            ErrorData::invalid_params(format!("`{name}` must be an integer up to {max}"), None)
        }),
    }
}

impl DemoServer {
    async fn countdown(
        &self,
        args: &JsonObject,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let steps = arg_u64(args, "steps", 3, MAX_COUNTDOWN_STEPS)?.max(1);
        let interval = Duration::from_millis(arg_u64(
            args,
            "interval_ms",
            500,
            MAX_COUNTDOWN_INTERVAL_MS,
        )?);
        let token = context.meta.get_progress_token();
        for step in 1..=steps {
            tokio::time::sleep(interval).await;
            if let Some(token) = &token {
                let progress = ProgressNotificationParam::new(token.clone(), step as f64)
                    .with_total(steps as f64)
                    .with_message(format!("{} to go", steps - step));
                if context.peer.notify_progress(progress).await.is_err() {
                    return Err(ErrorData::internal_error("client went away", None));
                }
            }
        }
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "counted down {steps} steps"
        ))]))
    }
}

impl ServerHandler for DemoServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "mcp-oauth-gateway-demo",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions("Demo MCP server bundled with mcp-oauth-gateway.")
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.clone().unwrap_or_default();
        let result = match request.name.as_ref() {
            "echo" => {
                let text = args
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ErrorData::invalid_params("`text` must be a string", None))?;
                CallToolResult::success(vec![ContentBlock::text(text)])
            }
            "add" => {
                let sum = arg_f64(&args, "a")? + arg_f64(&args, "b")?;
                CallToolResult::success(vec![ContentBlock::text(sum.to_string())])
            }
            "get_time" => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                CallToolResult::success(vec![ContentBlock::text(now.as_secs().to_string())])
            }
            "countdown" => self.countdown(&args, &context).await?,
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool `{other}`"),
                    None,
                ));
            }
        };
        Ok(result.into())
    }
}

/// An axum router serving the demo MCP server at [`MCP_PATH`]; cancelling
/// `shutdown` ends its sessions and streams.
pub fn router(shutdown: CancellationToken) -> axum::Router {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(true)
        .with_cancellation_token(shutdown);
    let service: StreamableHttpService<DemoServer, LocalSessionManager> =
        StreamableHttpService::new(|| Ok(DemoServer), Default::default(), config);
    axum::Router::new().nest_service(MCP_PATH, service)
}

/// Serves the demo router on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let app = router(shutdown.clone());
    // Small SSE writes must leave at once: without TCP_NODELAY, Nagle and
    // delayed ACKs hold each response for ~40 ms.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
        .await
}

/// Starts the demo server on an ephemeral loopback port in a thread of its
/// own and returns its address.
pub fn spawn_on_loopback() -> std::io::Result<std::net::SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("demo-upstream")
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("demo-upstream".into())
        .spawn(move || {
            runtime.block_on(async move {
                let served = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => serve(l, CancellationToken::new()).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = served {
                    tracing::error!(error = %e, "demo upstream stopped");
                }
            });
        })?;
    Ok(addr)
}

/// Where and how `mcp-oauth-gateway demo` runs.
pub struct DemoSettings<'a> {
    /// `host:port` as the user wrote it: the public URL keeps the host
    /// (`localhost` and `127.0.0.1` are different URLs to MCP clients).
    pub public_authority: &'a str,
    /// The address that authority resolves to, to listen on.
    pub listen: std::net::SocketAddr,
    /// The demo MCP server.
    pub upstream: std::net::SocketAddr,
    /// Argon2 hash of the `demo` user's password.
    pub password_hash: &'a str,
    /// Where the SQLite store lives.
    pub data_dir: &'a std::path::Path,
    /// Where `/metrics` is served.
    pub metrics_listen: std::net::SocketAddr,
}

/// The embedded configuration of `mcp-oauth-gateway demo`: the gateway in
/// front of the demo server under `/demo/mcp`, with the built-in
/// authorization server (one user, `demo`; registrations from loopback not
/// rate-limited, so development tools can register freely), a per-tool
/// policy, and metrics.
pub fn gateway_config(
    demo: &DemoSettings<'_>,
) -> Result<crate::config::Config, crate::config::ConfigErrors> {
    crate::config::Config::from_yaml(&format!(
        "public_url: http://{authority}
listen: {listen}
server:
  worker_threads: 2
  shutdown_grace_period: 5s
allowed_origins: ['http://localhost:6274']
metrics: {{ listen: '{metrics}' }}
authorization_server:
  data_dir: '{dir}'
  registration_rate_limit: {{ exempt_loopback: true }}
  users:
    - {{ username: demo, password_hash: '{hash}', scopes: [mcp, math, time] }}
upstreams:
  - name: demo
    path: /demo/mcp
    url: http://{upstream}{MCP_PATH}
    resource_name: Demo MCP server
    scopes: [mcp, math, time]
    policy:
      base_scopes: [mcp]
      tools: {{ add: [math], 'get_*': [time], echo: [], countdown: [] }}
",
        authority = demo.public_authority,
        listen = demo.listen,
        metrics = demo.metrics_listen,
        dir = demo.data_dir.display(),
        hash = demo.password_hash,
        upstream = demo.upstream,
    ))
}
