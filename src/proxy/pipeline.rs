//! The life of a request in `request_filter`, one named step each: answer
//! what the gateway serves itself (PRM documents, the authorization
//! server), route, authenticate, then either hand a GET or DELETE to
//! pingora's loop or read, check and forward a POST. Refusals are errors,
//! accounted once (metrics, audit, log) in [`RequestCtx::account_refusal`].

use super::access::Access;
use super::cors::{self, Exposure, Sharing};
use super::response::unavailable;
use super::route::Route;
use super::{
    as_bridge, body, error, forward, headers, keep_callable, path_rules, stdio, Admission, Gateway,
    GatewayError, Live, RequestCtx,
};
use crate::auth::prm::WELL_KNOWN;
use crate::auth::Principal;
use crate::config::Limits;
use crate::identity::IDENTITY_JWKS_PATH;
use crate::mcp::tools_list::ToolsListFilter;
use crate::mcp::{McpError, McpPost};
use crate::metrics::metrics;
use crate::telemetry;
use bytes::Bytes;
use http::Method;
use pingora::proxy::Session;
use std::sync::Arc;

/// Whether `path` is a PRM document's: the well-known path, alone or with
/// a resource path inserted after it.
fn is_metadata_path(path: &str) -> bool {
    path.strip_prefix(WELL_KNOWN)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The authentication step's result: the checker and whom the token speaks
/// for (`None` when auth is disabled).
pub(super) type Caller<'a> = Option<(&'a Access, &'a Principal)>;

/// The upstream a path belongs to, once the path and the head pass the
/// rules no upstream could read differently (dot segments, repeated
/// fields, a foreign `Origin`).
fn route(live: &Live, session: &Session, ctx: &mut RequestCtx) -> Result<Arc<Route>, GatewayError> {
    let head = session.req_header();
    path_rules::check_request_path(head.uri.path()).map_err(GatewayError::AmbiguousPath)?;
    let route = live
        .routes
        .find(head.uri.path())
        .cloned()
        .ok_or(GatewayError::NotFound)?;
    ctx.route = Some(route.clone());
    headers::refuse_repeated(&head.headers).map_err(GatewayError::RepeatedHeader)?;
    let origin = head.headers.get(http::header::ORIGIN).map(|v| v.as_bytes());
    headers::origin_allowed(origin, &live.allowed_origins).map_err(GatewayError::OriginRefused)?;
    Ok(route)
}

impl Live {
    /// Spends one request of the client's address from the bucket for
    /// requests without a valid token, when there is one.
    fn limit_anonymous(&self, session: &Session) -> Result<(), GatewayError> {
        match &self.anonymous_limit {
            Some(limit) => limit.check(super::client_ip(session)),
            None => Ok(()),
        }
    }
}

impl Gateway {
    /// Decides what to do with a request, and does the POST forwarding.
    pub(super) async fn admit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Admission, GatewayError> {
        ctx.request_id =
            telemetry::request_id(session.req_header().headers.get(headers::X_REQUEST_ID));
        let live = ctx.live.clone();
        if let Some(exposure) = self.exposure(&live, session.req_header().uri.path()) {
            if cors::share(session, exposure, &live.allowed_origins)? == Sharing::Preflight {
                live.limit_anonymous(session)?;
                if let Err(e) = cors::answer_preflight(session, &ctx.request_id).await {
                    tracing::debug!(error = %e, "could not answer a preflight");
                }
                return Ok(Admission::Done);
            }
        }
        headers::check_head_size(session.req_header(), live.limits.max_header_bytes)?;
        if let Some(done) = self.serve_locally(&live, session, ctx).await? {
            return Ok(done);
        }
        let route = route(&live, session, ctx)?;
        let principal = match &live.access {
            Some(access) => match access.authenticate(session, &route).await {
                Ok(principal) => Some(principal),
                Err(refused) => return Err(live.limit_anonymous(session).err().unwrap_or(refused)),
            },
            None => {
                live.limit_anonymous(session)?;
                None
            }
        };
        ctx.principal = principal.clone();
        let caller = live.access.as_deref().zip(principal.as_deref());
        match session.req_header().method.clone() {
            Method::GET | Method::DELETE => {
                admit_stream(session, ctx, &route, caller)?;
                match route.stdio() {
                    Some(pool) => stdio::stream_or_delete(session, ctx, &route, pool).await,
                    None => Ok(Admission::Proxy),
                }
            }
            Method::POST => {
                let (body, post) = read_post(session, ctx, &live.limits).await?;
                let post = authorize_post(session, ctx, &route, caller, post)?;
                match route.stdio() {
                    Some(pool) => {
                        let served = stdio::post(session, ctx, &route, pool, &body, &post).await;
                        ctx.post = Some(post);
                        served
                    }
                    None => {
                        self.forward_post(session, ctx, &route, caller, body, post)
                            .await
                    }
                }
            }
            other => Err(GatewayError::MethodNotAllowed(other.to_string())),
        }
    }

    /// How `path` is open to scripts on other origins (see `cors`): the
    /// PRM documents, the authorization server's documents and endpoints a
    /// web client calls, and the MCP paths.
    fn exposure(&self, live: &Live, path: &str) -> Option<Exposure> {
        if is_metadata_path(path) {
            return Some(Exposure::Document);
        }
        self.authserver
            .as_ref()
            .and_then(|_| Exposure::of_authserver_path(path))
            .or_else(|| live.routes.find(path).map(|_| Exposure::Mcp))
    }

    /// PRM documents and the authorization server's paths are answered
    /// here; `None` for everything else.
    async fn serve_locally(
        &self,
        live: &Live,
        session: &mut Session,
        ctx: &RequestCtx,
    ) -> Result<Option<Admission>, GatewayError> {
        let path = session.req_header().uri.path();
        if is_metadata_path(path) {
            live.limit_anonymous(session)?;
            let doc = live.prm.get(path).cloned().ok_or(GatewayError::NotFound)?;
            return self
                .serve_document(session, &ctx.request_id, doc)
                .await
                .map(Some);
        }
        if let Some(signer) = live
            .identity_signer
            .as_ref()
            .filter(|_| path == IDENTITY_JWKS_PATH)
        {
            live.limit_anonymous(session)?;
            let doc = signer.jwks();
            return self
                .serve_document(session, &ctx.request_id, doc)
                .await
                .map(Some);
        }
        if self.authserver.is_none() && super::HEALTH_PATHS.contains(&path) {
            // Nothing to be ready for but the process itself (the
            // authorization server, when there is one, answers these).
            return self.serve_health(session, &ctx.request_id).await.map(Some);
        }
        match self
            .authserver
            .as_ref()
            .filter(|_| crate::authserver::serves(path))
        {
            Some(router) => {
                live.limit_anonymous(session)?;
                as_bridge::serve(router, session, &ctx.request_id, live.limits.body_timeout)
                    .await?;
                Ok(Some(Admission::Done))
            }
            None => Ok(None),
        }
    }

    /// Answers a health check of a gateway without an authorization
    /// server: up, and so ready.
    async fn serve_health(
        &self,
        session: &mut Session,
        request_id: &str,
    ) -> Result<Admission, GatewayError> {
        let req = session.req_header();
        if req.method != Method::GET && req.method != Method::HEAD {
            return Err(GatewayError::MethodNotAllowed(req.method.to_string()));
        }
        let headers = [
            ("cache-control", "no-store".to_owned()),
            ("x-request-id", request_id.to_owned()),
        ];
        let unread = !session.is_body_empty();
        let body = Bytes::from_static(br#"{"status":"ok"}"#);
        if let Err(e) = error::write_json(session, 200, &headers, body, unread).await {
            tracing::debug!(error = %e, "could not write the health answer");
        }
        Ok(Admission::Done)
    }

    /// Answers a `GET` of a public JSON document: a PRM document, the
    /// identity JWKS.
    async fn serve_document(
        &self,
        session: &mut Session,
        request_id: &str,
        doc: Bytes,
    ) -> Result<Admission, GatewayError> {
        let req = session.req_header();
        if req.method != Method::GET && req.method != Method::HEAD {
            return Err(GatewayError::MethodNotAllowed(req.method.to_string()));
        }
        let headers = [
            ("cache-control", "public, max-age=300".to_owned()),
            ("x-request-id", request_id.to_owned()),
        ];
        let unread = !session.is_body_empty();
        if let Err(e) = error::write_json(session, 200, &headers, doc, unread).await {
            tracing::debug!(error = %e, "could not write the metadata document");
        }
        Ok(Admission::Done)
    }

    /// Sends a checked POST and relays the answer (see `forward`), with the
    /// `tools/list` filter and the session binding it calls for.
    async fn forward_post(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route: &Route,
        caller: Caller<'_>,
        body: Bytes,
        post: McpPost,
    ) -> Result<Admission, GatewayError> {
        let hooks = forward::ResponseHooks {
            tools_filter: post_tools_filter(ctx, route, &post),
            caller,
            request_id: &ctx.request_id,
        };
        let (readable, length) = (hooks.tools_filter.is_some(), body.len());
        let head = |session: &Session| {
            let forwarding = headers::Forwarding {
                body_length: Some(length),
                readable,
                ..ctx.forwarding(session, route)
            };
            headers::upstream_head(session.req_header(), &forwarding)
                .map_err(|e| unavailable(route, &e))
        };
        let delivered =
            forward::forward_buffered(&self.connector, session, route, &head, body, hooks).await;
        if delivered.is_err() && caller.is_some() {
            for tool in post.messages.iter().filter_map(|m| m.tool.as_deref()) {
                count_tool_call(route, tool, "upstream_error");
            }
        }
        ctx.post = Some(post);
        match delivered? {
            forward::Delivered::Complete => {}
            forward::Delivered::ClientGone => client_left(route, &ctx.request_id),
            forward::Delivered::UpstreamBroke(detail) => {
                tracing::warn!(upstream = %route.upstream.name, %detail, "upstream broke off mid-response");
            }
        }
        Ok(Admission::Done)
    }
}

/// The `tools/list` filter of an authenticated POST that has such calls,
/// when its upstream filters.
pub(super) fn post_tools_filter(
    ctx: &RequestCtx,
    route: &Route,
    post: &McpPost,
) -> Option<ToolsListFilter> {
    let policy = &route.upstream.policy;
    ctx.principal
        .clone()
        .filter(|_| policy.filter_tools_list)
        .and_then(|p| ToolsListFilter::new(post, keep_callable(policy.clone(), p)))
}

/// GET and DELETE carry no body; with auth they need the base scopes and a
/// session of their own (then pingora's loop proxies them to an HTTP
/// upstream).
fn admit_stream(
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &Route,
    caller: Caller<'_>,
) -> Result<(), GatewayError> {
    if !session.is_body_empty() {
        return Err(GatewayError::UnexpectedBody(
            session.req_header().method.to_string(),
        ));
    }
    if let Some((access, principal)) = caller {
        access.authorize(route, principal, None)?;
        ctx.upstream_session = access.check_session(session, route, principal)?;
        spend_rate_limits(route, principal, None)?;
        ctx.audit("allowed", "-", None);
    }
    Ok(())
}

/// Reads the whole body (within the limits) and parses it as MCP, checking
/// the 2026-07-28 `Mcp-Method`/`Mcp-Name` headers against it.
async fn read_post(
    session: &mut Session,
    ctx: &mut RequestCtx,
    limits: &Limits,
) -> Result<(Bytes, McpPost), GatewayError> {
    let body = body::read_post_body(session, limits.max_body_bytes, limits.body_timeout).await?;
    let post = McpPost::parse(&body).map_err(|refused| {
        ctx.error_id = refused.id;
        GatewayError::InvalidMessage(refused.error)
    })?;
    ctx.error_id = post.response_id();
    // Compared as UTF-8, not ASCII: a non-ASCII `Mcp-Name` must still
    // match the body, and one that is not UTF-8 cannot.
    let header = |name: http::HeaderName| match session.req_header().headers.get(&name) {
        None => Ok(None),
        Some(v) => std::str::from_utf8(v.as_bytes())
            .map(Some)
            .map_err(|_| McpError::HeaderMismatch(format!("{name} is not valid UTF-8"))),
    };
    post.check_standard_headers(header(headers::MCP_METHOD)?, header(headers::MCP_NAME)?)?;
    Ok((body, post))
}

/// With auth: the policy and the session owner decide; every `tools/call`
/// is counted with the outcome. The post is handed back to be forwarded.
fn authorize_post(
    session: &Session,
    ctx: &mut RequestCtx,
    route: &Route,
    caller: Caller<'_>,
    post: McpPost,
) -> Result<McpPost, GatewayError> {
    let Some((access, principal)) = caller else {
        return Ok(post);
    };
    let checked = access
        .authorize(route, principal, Some(&post))
        .and_then(|()| access.check_session(session, route, principal))
        .and_then(|inner| {
            ctx.upstream_session = inner;
            spend_rate_limits(route, principal, Some(&post))
        });
    let outcome = match &checked {
        Ok(()) => "allowed",
        Err(GatewayError::RateLimited { .. }) => "rate_limited",
        Err(_) => "denied",
    };
    for tool in post.messages.iter().filter_map(|m| m.tool.as_deref()) {
        count_tool_call(route, tool, outcome);
    }
    if let Err(e) = checked {
        ctx.post = Some(post);
        return Err(e);
    }
    ctx.audit("allowed", "-", Some(&post));
    Ok(post)
}

/// Spends what an allowed request costs from its upstream's rate limits.
fn spend_rate_limits(
    route: &Route,
    principal: &Principal,
    post: Option<&McpPost>,
) -> Result<(), GatewayError> {
    match &route.limits {
        Some(limits) => limits.check(principal, post),
        None => Ok(()),
    }
}

/// Counts one `tools/call` under its configured tool label.
fn count_tool_call(route: &Route, tool: &str, outcome: &str) {
    let upstream = &route.upstream;
    metrics()
        .tool_calls
        .with_label_values(&[&upstream.name, upstream.policy.tool_label(tool), outcome])
        .inc();
}

/// A client that closed its connection before its response was complete:
/// normal for MCP clients (a cancelled call, a closed stream), so a debug
/// line and its own counter, never an upstream error.
pub(super) fn client_left(route: &Route, request_id: &str) {
    metrics()
        .client_disconnects
        .with_label_values(&[&route.upstream.name])
        .inc();
    tracing::debug!(upstream = %route.upstream.name, %request_id, "client closed the connection before the response was complete");
}

impl RequestCtx {
    /// What this request's upstream head carries besides the client's
    /// fields, for a request without a body of its own.
    pub(super) fn forwarding<'a>(
        &'a self,
        session: &Session,
        route: &'a Route,
    ) -> headers::Forwarding<'a> {
        headers::Forwarding {
            route,
            client_ip: super::client_ip(session),
            request_id: &self.request_id,
            caller: self.principal.as_deref(),
            session_id: self.upstream_session.as_ref(),
            body_length: None,
            readable: false,
        }
    }

    /// Metrics, audit and log line of a refused request, by the kind of
    /// refusal: upstream failures, auth refusals, everything else.
    pub(super) fn account_refusal(&mut self, err: &GatewayError) {
        self.refusal = Some(err.kind());
        let upstream = self
            .route
            .as_ref()
            .map_or("-", |r| r.upstream.name.as_str());
        let m = metrics();
        match err {
            GatewayError::UpstreamUnavailable { .. }
            | GatewayError::UpstreamTimeout { .. }
            | GatewayError::UpstreamBusy { .. } => {
                m.upstream_errors
                    .with_label_values(&[upstream, err.kind()])
                    .inc();
                tracing::warn!(upstream, request_id = %self.request_id, error = %err, "upstream request failed");
            }
            GatewayError::Auth(_)
            | GatewayError::SessionNotFound
            | GatewayError::OriginRefused(_) => {
                let reason = err.kind();
                m.auth_failures.with_label_values(&[upstream, reason]).inc();
                if let Some(client) = self.principal.as_ref().and_then(|p| p.client_id.as_deref()) {
                    let client = crate::metrics::client_label(client);
                    m.denied_by_client
                        .with_label_values(&[upstream, &client])
                        .inc();
                }
                self.audit("denied", reason, self.post.as_ref());
            }
            GatewayError::RateLimited { limit, .. } => {
                m.rate_limited.with_label_values(&[upstream, limit]).inc();
                self.audit("denied", err.kind(), self.post.as_ref());
            }
            _ => {
                tracing::info!(upstream, request_id = %self.request_id, reason = err.kind(), error = %err, "request refused")
            }
        }
    }
}
