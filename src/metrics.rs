//! Every Prometheus metric of the gateway, defined once, in one registry.
//!
//! Label values are bounded by the configuration or by fixed lists, never
//! taken raw from a request: `upstream` is a configured name, `method` one
//! of MCP's methods (else `other`), `tool` a configured tool name or
//! pattern (else `other`), `reason` one of the fixed auth-failure reasons.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::LazyLock;

/// Buckets from 100 µs (proxying) to 30 s (long tool calls), in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// The bounded label for a JSON-RPC method: one of MCP's client methods,
/// else `other` (`batch`, `response`, `-` are
/// passed through as the proxy uses them).
pub fn method_label(method: &str) -> &str {
    match method {
        "batch" | "response" | "-" => method,
        m if crate::mcp::CLIENT_METHODS.contains(&m) => m,
        _ => "other",
    }
}

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    /// Requests by upstream, JSON-RPC method and HTTP status.
    pub requests: IntCounterVec,
    /// `tools/call` by upstream, tool (configured name/pattern) and outcome.
    pub tool_calls: IntCounterVec,
    /// Refused requests by upstream and reason.
    pub auth_failures: IntCounterVec,
    /// Refused requests by upstream and client (see [`client_label`]).
    pub denied_by_client: IntCounterVec,
    /// Allowed requests by upstream (the other side of `auth_failures`).
    pub auth_allowed: IntCounterVec,
    /// Whole request time, gateway included.
    pub request_duration: HistogramVec,
    /// Time from sending to the upstream to its response header.
    pub upstream_duration: HistogramVec,
    /// Verified-token cache lookups by result (`hit`, `miss`).
    pub token_cache: IntCounterVec,
    /// JWKS fetches by issuer and outcome.
    pub jwks_fetches: IntCounterVec,
    /// Introspection calls by outcome (`active`, `inactive`, `error`).
    pub introspections: IntCounterVec,
    /// Introspection call latency.
    pub introspection_duration: Histogram,
    /// SSE streams open now.
    pub open_streams: IntGauge,
    /// Upstream failures by upstream and kind (`unavailable`, `timeout`).
    pub upstream_errors: IntCounterVec,
    /// Clients that left before their response was complete, by upstream.
    pub client_disconnects: IntCounterVec,
    /// Requests refused by a rate limit, by upstream (`-` outside one) and
    /// limit (`subject`, `client`, `tool`, `address`).
    pub rate_limited: IntCounterVec,
    /// Configuration reloads by outcome (`applied`, `unchanged`, `invalid`,
    /// `failed`).
    pub config_reloads: IntCounterVec,
    /// Sign-ins through identity providers by provider (configured ids, or
    /// `-`) and outcome (`signed_in`, `refused`, `failed`, `ended`).
    pub federated_logins: IntCounterVec,
    /// Reloads of the listener's certificate files by outcome (`applied`,
    /// `invalid`).
    pub tls_certificate_reloads: IntCounterVec,
    /// Connections and requests the gateway cut off for a limit, by reason
    /// (`address_limit`, `header_timeout`, `body_timeout`).
    pub connections_closed: IntCounterVec,
    /// Authorization-server events (registration, approval, denial,
    /// login failure, refresh reuse, revocation).
    pub authserver_events: IntCounterVec,
    /// Tokens issued by grant type.
    pub tokens_issued: IntCounterVec,
    /// Failed store operations by kind.
    pub store_errors: IntCounterVec,
    /// The store's connection pool by state (`in_use`, `idle`, `max`).
    pub store_pool: IntGaugeVec,
    /// Stdio upstream processes running now, by upstream.
    pub stdio_processes: IntGaugeVec,
    /// Stdio upstream processes started, by upstream.
    pub stdio_starts: IntCounterVec,
    /// Stdio upstream processes ended, by upstream and reason.
    pub stdio_exits: IntCounterVec,
    /// Constant 1, labelled with the version.
    pub build_info: IntGaugeVec,
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let introspection_duration = Histogram::with_opts(
            HistogramOpts::new(
                "mcpgw_introspection_duration_seconds",
                "Token introspection call latency.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        r.register(Box::new(introspection_duration.clone()))
            .expect("unique metric");
        let open_streams =
            IntGauge::new("mcpgw_open_sse_streams", "SSE streams being relayed now.")
                .expect("valid metric");
        r.register(Box::new(open_streams.clone()))
            .expect("unique metric");
        let build_info = gauge(
            &r,
            "mcpgw_build_info",
            "Constant 1; the version label says which build runs.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Self {
            requests: counter(&r, "mcpgw_requests_total", "Requests by upstream, JSON-RPC method and HTTP status.", &["upstream", "method", "status"]),
            tool_calls: counter(&r, "mcpgw_tool_calls_total", "tools/call by upstream, tool (configured name or pattern, else other) and outcome (allowed, denied, rate_limited, upstream_error).", &["upstream", "tool", "outcome"]),
            auth_failures: counter(&r, "mcpgw_auth_failures_total", "Requests refused by upstream and reason.", &["upstream", "reason"]),
            denied_by_client: counter(&r, "mcpgw_denied_requests_by_client_total", "Requests refused after the token was read, by upstream and client (the first 100 client ids seen, then other).", &["upstream", "client"]),
            auth_allowed: counter(&r, "mcpgw_auth_allowed_total", "Requests whose token and scopes were accepted, by upstream.", &["upstream"]),
            request_duration: histogram(&r, "mcpgw_request_duration_seconds", "Whole request time at the gateway, by upstream.", &["upstream"]),
            upstream_duration: histogram(&r, "mcpgw_upstream_duration_seconds", "Upstream time to response headers, by upstream.", &["upstream"]),
            token_cache: counter(&r, "mcpgw_token_cache_requests_total", "Verified-token cache lookups by result (hit, miss).", &["result"]),
            jwks_fetches: counter(&r, "mcpgw_jwks_fetches_total", "JWKS fetches by issuer and outcome (ok, error).", &["issuer", "outcome"]),
            introspections: counter(&r, "mcpgw_introspections_total", "Introspection calls by outcome (active, inactive, error).", &["outcome"]),
            introspection_duration,
            open_streams,
            upstream_errors: counter(&r, "mcpgw_upstream_errors_total", "Upstream failures by upstream and kind (unavailable, timeout).", &["upstream", "kind"]),
            client_disconnects: counter(&r, "mcpgw_client_disconnects_total", "Clients that closed the connection before their response was complete, by upstream (never counted as upstream errors).", &["upstream"]),
            rate_limited: counter(&r, "mcpgw_rate_limited_total", "Requests refused by a rate limit, by upstream (- outside one) and limit (subject, client, tool, address).", &["upstream", "limit"]),
            config_reloads: counter(&r, "mcpgw_config_reloads_total", "Configuration reloads (SIGHUP or a change of the file) by outcome: applied, unchanged, invalid (refused by validation; the running configuration stays), failed (valid but could not be built; it stays too).", &["outcome"]),
            federated_logins: counter(&r, "mcpgw_federated_logins_total", "Sign-ins through identity providers by provider (configured id, or -) and outcome: signed_in, refused (no access rule, or the person declined at the provider), failed (the provider unreachable or its answer not accepted), ended (the provider no longer vouches for a person at a refresh).", &["provider", "outcome"]),
            tls_certificate_reloads: counter(&r, "mcpgw_tls_certificate_reloads_total", "Reloads of the listener's certificate files (changed, or SIGHUP) by outcome: applied, invalid (unusable files: the served certificate stays).", &["outcome"]),
            connections_closed: counter(&r, "mcpgw_connections_closed_total", "Connections and requests cut off for a limit, by reason (address_limit, header_timeout, body_timeout).", &["reason"]),
            authserver_events: counter(&r, "mcpgw_authserver_events_total", "Authorization-server events (registration, authorization_approved, authorization_denied, login_failure, refresh_reuse, refresh_reuse_within_grace, code_reuse, revocation, federated_login, federated_login_refused, federated_login_failure, store_unavailable).", &["event"]),
            tokens_issued: counter(&r, "mcpgw_tokens_issued_total", "Tokens issued by grant type.", &["grant_type"]),
            store_errors: counter(&r, "mcpgw_store_errors_total", "Failed operations of the authorization server's store by kind: pool_timeout (no free connection within store.acquire_timeout), statement_timeout (a statement ran past store.statement_timeout), unavailable (the database cannot be reached), other.", &["kind"]),
            store_pool: gauge(&r, "mcpgw_store_pool_connections", "Connections of the PostgreSQL store's pool by state: in_use, idle, max (store.pool_size).", &["state"]),
            stdio_processes: gauge(&r, "mcpgw_stdio_processes", "Stdio upstream processes running now, by upstream.", &["upstream"]),
            stdio_starts: counter(&r, "mcpgw_stdio_process_starts_total", "Stdio upstream processes started, by upstream.", &["upstream"]),
            stdio_exits: counter(&r, "mcpgw_stdio_process_exits_total", "Stdio upstream processes ended, by upstream and reason: crashed (exited on its own), idle, deleted (its session's DELETE), startup_timeout, refused_initialize, protocol_error (a line over 16 MiB), replaced (a reload changed the upstream).", &["upstream", "reason"]),
            build_info,
            registry: r,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Most distinct client ids used as label values.
const MAX_CLIENT_LABELS: usize = 100;

/// The label of a client id: itself for the first `MAX_CLIENT_LABELS`
/// distinct ids the process sees, `other` after that, so dynamically
/// registered clients cannot grow the series without bound.
pub fn client_label(client_id: &str) -> String {
    static SEEN: LazyLock<std::sync::Mutex<std::collections::HashSet<String>>> =
        LazyLock::new(Default::default);
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if seen.contains(client_id) {
        return client_id.to_owned();
    }
    if seen.len() < MAX_CLIENT_LABELS && client_id.len() <= 128 {
        seen.insert(client_id.to_owned());
        return client_id.to_owned();
    }
    "other".to_owned()
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Serves `GET /metrics` (Prometheus text format) on a listener of its own,
/// so the metrics never share the public origin.
pub struct MetricsEndpoint(pub std::net::SocketAddr);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for MetricsEndpoint {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let listener = match tokio::net::TcpListener::bind(self.0).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(listen = %self.0, error = %e, "cannot serve /metrics");
                return;
            }
        };
        tracing::info!(listen = %self.0, "metrics listener");
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(|| async {
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    metrics().render(),
                )
            }),
        );
        let stopped = async move {
            let _ = shutdown.changed().await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!(error = %e, "metrics listener failed");
        }
    }
}
