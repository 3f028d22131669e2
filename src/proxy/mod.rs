//! The proxy core: a pingora `ProxyHttp` that routes MCP Streamable HTTP
//! traffic to upstreams.
//!
//! Each phase below is short and delegates: `request_filter` runs the life
//! of a request in `pipeline` (serve PRM and AS paths, route, authenticate,
//! then a GET/DELETE goes to pingora's loop and a POST is read, checked and
//! forwarded by `forward`); the upstream's answer goes back through one
//! path (`response`) whichever way it was forwarded; a refusal is accounted
//! once and answered through the single mapping of failures to responses
//! (`error`). Beside them: connection limits (`connections`), path rules
//! (`path_rules`), routing (`route`), header rules (`headers`), body reads
//! (`body`), the auth steps (`access`: token, scope policy, session owner)
//! and the AS bridge (`as_bridge`). A stdio upstream's requests, once
//! checked, are served by `stdio` instead of being forwarded.

mod access;
mod as_bridge;
mod body;
mod connections;
mod cors;
mod error;
mod forward;
mod headers;
mod lifecycle;
mod live;
mod path_rules;
mod pipeline;
mod rate_limit;
mod response;
mod route;
mod stdio;

pub use error::GatewayError;

/// Health checks for a load balancer: `/healthz` (the process serves) and
/// `/readyz` (it can serve everything: with an authorization server, its
/// store answers). Upstreams cannot take these paths.
pub const HEALTH_PATHS: &[&str] = &["/healthz", "/readyz"];
pub use lifecycle::{proxy_service, run_until_terminated, InFlight};
pub use live::{Live, LiveState};

use crate::auth::Principal;
use crate::authserver::AuthServer;
use crate::config::Config;
use crate::mcp::tools_list::{KeepTool, ToolsListFilter};
use crate::mcp::McpPost;
use crate::metrics::metrics;
use crate::policy::ScopePolicy;
use crate::telemetry;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};
use response::StreamRelay;
use route::Route;
use serde_json::Value;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The gateway's request pipeline.
pub struct Gateway {
    /// What the configuration decides, swapped whole on a reload.
    live: LiveState,
    connector: Connector,
    in_flight: Arc<InFlight>,
    /// The built-in authorization server's endpoints, when enabled.
    authserver: Option<axum::Router>,
}

/// Per-request state carried between phases.
pub struct RequestCtx {
    /// The configuration this request started on, kept to its end.
    live: Arc<Live>,
    route: Option<Arc<Route>>,
    principal: Option<Arc<Principal>>,
    post: Option<McpPost>,
    /// The upstream's session id inside the sealed `Mcp-Session-Id` the
    /// caller sent (see `auth::sessions`).
    upstream_session: Option<http::HeaderValue>,
    /// Relays a GET stream's body (through the `tools/list` filter).
    relay: StreamRelay,
    /// The failure a phase found in the upstream's answer, for
    /// `fail_to_proxy` to answer with.
    failure: Option<GatewayError>,
    /// The `id` an error response carries (the request's, or `null`).
    error_id: Value,
    refusal: Option<&'static str>,
    /// `X-Request-Id`: the client's when it sent a usable one, else ours.
    request_id: String,
    /// Counts this response in the open-SSE-streams gauge while it lives.
    _stream: Option<telemetry::OpenStream>,
    upstream_started: Option<Instant>,
    started: Instant,
    _in_flight: lifecycle::InFlightGuard,
}

/// What `admit` decided for a request.
enum Admission {
    /// Let pingora proxy it (GET, DELETE).
    Proxy,
    /// The response has been written already (POST, forwarded here).
    Done,
}

impl Gateway {
    /// Builds the pipeline for `config`, counting requests in `in_flight`;
    /// `builtin` is the authorization server to serve and trust, if any.
    pub fn new(
        config: &Config,
        in_flight: Arc<InFlight>,
        builtin: Option<&AuthServer>,
    ) -> std::io::Result<Self> {
        let live = Live::build(config, builtin, None)?;
        Ok(Self {
            live: Arc::new(ArcSwap::from_pointee(live)),
            connector: Connector::new(None),
            in_flight,
            authserver: builtin.map(AuthServer::router),
        })
    }

    /// The configuration state, for the reloader to swap.
    pub fn live(&self) -> LiveState {
        self.live.clone()
    }

    /// An authenticated GET stream is filtered like a POST's `tools/list`
    /// results (see `response::get_stream`).
    fn get_stream_filter(ctx: &RequestCtx) -> Option<ToolsListFilter> {
        let (route, principal) = (ctx.route.as_ref()?, ctx.principal.as_ref()?);
        let policy = &route.upstream.policy;
        policy.filter_tools_list.then(|| {
            ToolsListFilter::any_response(keep_callable(policy.clone(), principal.clone()))
        })
    }
}

impl RequestCtx {
    /// Keeps `failure` for `fail_to_proxy` and hands pingora an error that
    /// leads there.
    fn fail_with(&mut self, failure: GatewayError) -> Box<Error> {
        let e = Error::explain(ErrorType::InternalError, failure.to_string());
        self.failure = Some(failure);
        e
    }

    /// The audit event of an auth decision: one per request that reached
    /// one (never a token, only who it speaks for).
    fn audit(&self, decision: &str, reason: &str, post: Option<&McpPost>) {
        let upstream = self
            .route
            .as_ref()
            .map_or("-", |r| r.upstream.name.as_str());
        if decision == "allowed" {
            metrics().auth_allowed.with_label_values(&[upstream]).inc();
        }
        let p = self.principal.as_deref();
        let tool = post
            .and_then(|p| p.messages.iter().find_map(|m| m.tool.as_deref()))
            .unwrap_or("-");
        tracing::info!(
            target: "audit",
            decision,
            reason,
            upstream,
            issuer = p.map_or("-", |p| p.issuer.as_str()),
            subject = p.map_or("-", |p| p.subject.as_str()),
            client_id = p.and_then(|p| p.client_id.as_deref()).unwrap_or("-"),
            method = post.map_or("-", McpPost::method_label),
            tool = %tool.escape_debug(),
            request_id = %self.request_id,
            latency_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            "auth decision"
        );
    }
}

/// The tools `principal` may call under `policy`.
fn keep_callable(policy: Arc<ScopePolicy>, principal: Arc<Principal>) -> KeepTool {
    Arc::new(move |tool: &str| policy.may_call(&principal.scopes, tool))
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            live: self.live.load_full(),
            route: None,
            principal: None,
            post: None,
            upstream_session: None,
            relay: StreamRelay::default(),
            failure: None,
            error_id: Value::Null,
            refusal: None,
            request_id: String::new(),
            _stream: None,
            upstream_started: None,
            started: Instant::now(),
            _in_flight: self.in_flight.enter(),
        }
    }

    /// Gives every request the CORS rule (`cors`), applied to each response
    /// head the session writes. Pingora's default, a disabled compression
    /// module, is left out: the gateway never compresses.
    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        modules.add_module(Box::new(cors::CorsModuleBuilder));
    }

    /// Runs before anything reads the request: lets an HTTP/1.1 client
    /// pipeline (RFC 9112 §9.3.2). Besides serving pipelined requests in
    /// order, this makes pingora keep, as the start of the next request,
    /// any byte its client-disconnect watch (`read_body_or_idle`, here and
    /// in `forward`) reads after the request body: with pipelining off that
    /// byte was dropped, and the next request on the connection arrived
    /// without its first byte (`405 method OST`, issue 11.1).
    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        session.downstream_session.set_pipelining_enabled(true);
        connections::HeadDeadline::head_complete(session);
        Ok(())
    }

    /// Runs first for every request: route, `Origin`, method, and for POST the
    /// body checks and forwarding (see `forward`). Returns `true` when the
    /// response has been written here.
    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        match self.admit(session, ctx).await {
            Ok(Admission::Proxy) => Ok(false),
            Ok(Admission::Done) => Ok(true),
            Err(err) => {
                ctx.account_refusal(&err);
                let unread = !session.is_body_done();
                let on_mcp_path = ctx.route.is_some();
                error::respond(
                    session,
                    &err,
                    on_mcp_path,
                    ctx.error_id.clone(),
                    &ctx.request_id,
                    unread,
                )
                .await?;
                Ok(true)
            }
        }
    }

    /// GET and DELETE only (POSTs never get here): the route's upstream.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route chosen"))?;
        let peer = route
            .peer()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "not an HTTP upstream"))?;
        Ok(Box::new(peer))
    }

    /// Replaces pingora's copy of the client's head with the upstream's
    /// (path, Host, credentials, hop-by-hop fields, configured headers; see
    /// `headers::upstream_head`).
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let route = ctx
            .route
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route chosen"))?;
        let forwarding = headers::Forwarding {
            // A GET stream is filtered (see `response_filter`): it must be
            // readable.
            readable: ctx.principal.is_some(),
            ..ctx.forwarding(session, route)
        };
        // Pingora has set the version its upstream session speaks (an HTTP/2
        // session needs its own): that one is kept.
        let version = upstream_request.version;
        *upstream_request = headers::upstream_head(session.req_header(), &forwarding)?;
        upstream_request.set_version(version);
        ctx.upstream_started = Some(Instant::now());
        Ok(())
    }

    /// Drops hop-by-hop fields from the upstream's response head, and
    /// seals a session id it names to the caller.
    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let route = ctx
            .route
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route chosen"))?;
        let sent = ctx.upstream_started.unwrap_or(ctx.started);
        let filter = Self::get_stream_filter(ctx);
        let open_stream = response::begin(upstream_response, &route, &ctx.request_id, sent)
            .map_err(|e| ctx.fail_with(e))?;
        ctx.relay = response::get_stream(upstream_response, &route, filter)
            .map_err(|e| ctx.fail_with(e))?;
        ctx._stream = open_stream;
        if let (Some(access), Some(principal)) = (&ctx.live.access, &ctx.principal) {
            access.seal_response(upstream_response, &route, principal)?;
        }
        Ok(())
    }

    /// Passes a GET stream through the `tools/list` filter, event by event.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Option<Duration>> {
        *body = ctx
            .relay
            .next(body.take(), end_of_stream)
            .map_err(|e| Error::explain(ErrorType::InternalError, e))?;
        Ok(None)
    }

    /// A GET or DELETE failed before a response: answer 502/504 with a
    /// JSON-RPC error, naming the upstream in the log.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let Some(route) = ctx.route.clone() else {
            return FailToProxy {
                error_code: 500,
                can_reuse_downstream: false,
            };
        };
        if *e.esource() == ErrorSource::Downstream {
            pipeline::client_left(&route, &ctx.request_id);
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let err = ctx
            .failure
            .take()
            .unwrap_or_else(|| response::upstream_failure(&route, e));
        if session.response_written().is_some() {
            tracing::warn!(upstream = %route.upstream.name, error = %e, "stream ended with an error");
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        tracing::warn!(upstream = %route.upstream.name, error = %err, "upstream request failed");
        ctx.refusal = Some(err.kind());
        metrics()
            .upstream_errors
            .with_label_values(&[&route.upstream.name, err.kind()])
            .inc();
        if let Err(write_err) =
            error::respond(session, &err, true, Value::Null, &ctx.request_id, true).await
        {
            tracing::debug!(error = %write_err, "could not write the error response");
        }
        FailToProxy {
            error_code: err.status(),
            can_reuse_downstream: false,
        }
    }

    /// Pingora's own error line is left out where `fail_to_proxy` has
    /// logged the failure already (every routed request) and for clients
    /// that left, which are not errors.
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
        ctx.route.is_some() || *e.esource() == ErrorSource::Downstream
    }

    /// One access-log line per request.
    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        connections::HeadDeadline::request_done(session);
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let req = session.req_header();
        let upstream = ctx.route.as_ref().map_or("-", |r| r.upstream.name.as_str());
        let method = ctx.post.as_ref().map_or_else(
            || req.method.as_str().to_owned(),
            |p| crate::metrics::method_label(p.method_label()).to_owned(),
        );
        let m = metrics();
        m.requests
            .with_label_values(&[upstream, &method, &status.to_string()])
            .inc();
        m.request_duration
            .with_label_values(&[upstream])
            .observe(ctx.started.elapsed().as_secs_f64());
        tracing::info!(
            request_id = %ctx.request_id,
            upstream,
            http_method = %req.method,
            path = req.uri.path(),
            rpc_method = ctx.post.as_ref().map_or("-", McpPost::method_label),
            issuer = ctx.principal.as_ref().map_or("-", |p| p.issuer.as_str()),
            subject = ctx.principal.as_ref().map_or("-", |p| p.subject.as_str()),
            client_id = ctx.principal.as_ref().and_then(|p| p.client_id.as_deref()).unwrap_or("-"),
            status,
            refusal = ctx.refusal.unwrap_or("-"),
            duration_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    }
}
