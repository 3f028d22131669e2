//! A stdio upstream's side of the proxy: after the same route, token,
//! body and policy checks as an HTTP upstream's, its requests are served
//! here as Streamable HTTP (MCP 2025-06-18 "Transports") from the
//! upstream's processes (`crate::stdio`):
//! - POST `initialize` starts a session (`Mcp-Session-Id`), bound to the
//!   caller like an HTTP upstream's;
//! - any other POST needs the session; one with requests is answered as
//!   an event stream (or JSON when the client accepts only that), one
//!   without is `202 Accepted`;
//! - a stateless client's POST (MCP 2026-07-28: no `initialize`, no
//!   session id) goes to its caller's process, which the bridge starts and
//!   initializes itself (see `StdioPool::stateless_session`);
//! - GET opens the session's stream for what the process sends outside a
//!   POST; DELETE ends the session.
//!
//! `tools/list` answers go through the caller's filter as for HTTP.

use super::error::{self, GatewayError};
use super::pipeline::{client_left, post_tools_filter};
use super::response;
use super::route::Route;
use super::{Admission, Gateway, RequestCtx};
use crate::mcp::tools_list::ToolsListFilter;
use crate::mcp::{McpError, McpPost};
use crate::stdio::{Exchange, Message, StdioError, StdioPool};
use bytes::{BufMut, Bytes, BytesMut};
use http::Method;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Serves a checked POST from the route's processes.
pub(super) async fn post(
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &Route,
    pool: &Arc<StdioPool>,
    body: &Bytes,
    post: &McpPost,
) -> Result<Admission, GatewayError> {
    let started = Instant::now();
    let (live, principal) = (ctx.live.clone(), ctx.principal.clone());
    let caller = live.access.as_deref().zip(principal.as_deref());
    let mut messages = Message::parse_body(body).map_err(|e| McpError::Parse(e.to_string()))?;
    let initialize = post
        .messages
        .iter()
        .any(|m| m.method.as_deref() == Some("initialize"));
    if initialize {
        if messages.len() != 1 {
            return Err(McpError::InvalidRequest(
                "`initialize` must be sent alone, not in a batch".into(),
            )
            .into());
        }
        let request = messages.remove(0);
        let (new_session, answer) = pool
            .initialize(caller.map(|(_, p)| p), request)
            .await
            .map_err(|e| refusal(route, e))?;
        let mut headers = vec![("x-request-id", ctx.request_id.clone())];
        if let Some(new_session) = &new_session {
            let id = match caller {
                Some((access, principal)) => access
                    .seal_session(route, new_session.id().as_bytes(), principal)
                    .and_then(|sealed| sealed.to_str().ok().map(str::to_owned))
                    .ok_or_else(|| {
                        response::unavailable(route, "a session id that cannot be sent")
                    })?,
                None => new_session.id().to_owned(),
            };
            headers.push(("mcp-session-id", id));
        }
        observe(route, started);
        if let Err(e) = error::write_json(session, 200, &headers, answer, false).await {
            tracing::debug!(error = %e, "could not write the initialize answer");
        }
        return Ok(Admission::Done);
    }
    let mcp_session = match session_id(session, ctx) {
        Ok(id) => pool.session(&id).ok_or(GatewayError::SessionEnded)?,
        Err(missing) if !is_stateless(session) => return Err(missing),
        Err(_) => pool
            .stateless_session(caller.map(|(_, p)| p))
            .await
            .map_err(|e| refusal(route, e))?,
    };
    let streams = accepts_event_stream(session);
    let tools_filter = post_tools_filter(ctx, route, post);
    let exchange = mcp_session
        .send(messages, streams, route.upstream.timeouts.response)
        .await
        .map_err(|e| refusal(route, e))?;
    let Some(exchange) = exchange else {
        observe(route, started);
        write_empty(session, 202, &ctx.request_id).await;
        return Ok(Admission::Done);
    };
    let delivered = if streams {
        observe(route, started);
        relay_events(session, ctx, route, exchange, tools_filter).await
    } else {
        json_answers(
            session,
            ctx,
            route,
            exchange,
            tools_filter,
            post.is_batch,
            started,
        )
        .await
    };
    if !delivered {
        client_left(route, &ctx.request_id);
    }
    Ok(Admission::Done)
}

/// Serves a checked GET (the session's stream) or DELETE (its end).
pub(super) async fn stream_or_delete(
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &Route,
    pool: &Arc<StdioPool>,
) -> Result<Admission, GatewayError> {
    let id = session_id(session, ctx)?;
    if session.req_header().method == Method::DELETE {
        if !pool.end_session(&id) {
            return Err(GatewayError::SessionEnded);
        }
        write_empty(session, 200, &ctx.request_id).await;
        return Ok(Admission::Done);
    }
    let mcp_session = pool.session(&id).ok_or(GatewayError::SessionEnded)?;
    let rx = mcp_session.open_stream().map_err(|e| refusal(route, e))?;
    let tools_filter = Gateway::get_stream_filter(ctx);
    if !relay_events(session, ctx, route, rx, tools_filter).await {
        client_left(route, &ctx.request_id);
    }
    Ok(Admission::Done)
}

/// The `Mcp-Session-Id` a request must carry.
/// The session the request names: the one inside the sealed id an
/// authenticated caller sent, or the id itself without auth.
fn session_id(session: &Session, ctx: &RequestCtx) -> Result<String, GatewayError> {
    ctx.upstream_session
        .as_ref()
        .or_else(|| session.req_header().headers.get("mcp-session-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or(GatewayError::SessionRequired)
}

/// Whether the request is from a stateless client (MCP 2026-07-28 and
/// later: no `initialize`, no sessions), by its `MCP-Protocol-Version`.
fn is_stateless(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() == 10 && v >= FIRST_STATELESS_REVISION)
}

/// The first MCP revision without sessions.
const FIRST_STATELESS_REVISION: &str = "2026-07-28";

/// Whether the client reads an event stream (MCP clients list both
/// `application/json` and `text/event-stream`); one that accepts only
/// JSON gets the answers as JSON.
fn accepts_event_stream(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.split(';').next().unwrap_or_default().trim();
            t.eq_ignore_ascii_case("text/event-stream")
        })
}

/// The refusal of a stdio error.
fn refusal(route: &Route, e: StdioError) -> GatewayError {
    let upstream = route.upstream.name.clone();
    match e {
        StdioError::Busy { retry_after, .. } | StdioError::BackingOff { retry_after, .. } => {
            GatewayError::UpstreamBusy {
                upstream,
                detail: e.to_string(),
                retry_after,
            }
        }
        StdioError::StartFailed { detail, .. } => {
            GatewayError::UpstreamUnavailable { upstream, detail }
        }
        StdioError::StartTimeout { .. } | StdioError::Stuck { .. } => {
            GatewayError::UpstreamTimeout {
                upstream,
                detail: e.to_string(),
            }
        }
        StdioError::SessionGone => GatewayError::SessionEnded,
        StdioError::StreamOpen => GatewayError::StreamConflict,
    }
}

fn observe(route: &Route, started: Instant) {
    crate::metrics::metrics()
        .upstream_duration
        .with_label_values(&[&route.upstream.name])
        .observe(started.elapsed().as_secs_f64());
}

async fn write_empty(session: &mut Session, status: u16, request_id: &str) {
    let written = async {
        let mut resp = ResponseHeader::build(status, Some(2))?;
        resp.insert_header("content-length", "0")?;
        resp.insert_header("x-request-id", request_id)?;
        session.write_response_header(Box::new(resp), true).await
    };
    if let Err(e) = written.await {
        tracing::debug!(error = %e, "could not write the response");
    }
}

/// One message through the caller's `tools/list` filter.
fn filtered(route: &Route, filter: Option<&ToolsListFilter>, message: Bytes) -> Bytes {
    match filter.map(|f| f.filter_json(&message)) {
        Some(Ok(Some(changed))) => Bytes::from(changed),
        Some(Err(e)) => {
            tracing::warn!(upstream = %route.upstream.name, error = %e, "stdio upstream answer could not be filtered; dropped");
            Bytes::new()
        }
        _ => message,
    }
}

/// One SSE event carrying one message.
fn event(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 24);
    out.put_slice(b"event: message\ndata: ");
    out.put_slice(message);
    out.put_slice(b"\n\n");
    out.freeze()
}

/// Writes an event-stream head; `false` if the client is gone.
async fn begin_stream(session: &mut Session, route: &Route, ctx: &mut RequestCtx) -> bool {
    let head = async {
        let mut resp = ResponseHeader::build(200, Some(4))?;
        resp.insert_header("content-type", "text/event-stream")?;
        resp.insert_header("cache-control", "no-cache")?;
        if session.req_header().version == http::Version::HTTP_11 {
            resp.insert_header("transfer-encoding", "chunked")?;
        }
        Ok::<_, Box<pingora::Error>>(resp)
    };
    let Ok(mut resp) = head.await else {
        return false;
    };
    match response::begin(&mut resp, route, &ctx.request_id, Instant::now()) {
        Ok(open) => ctx._stream = open,
        Err(_) => return false,
    }
    session
        .write_response_header(Box::new(resp), false)
        .await
        .is_ok()
}

/// Where the messages of an event stream come from: a POST's exchange, or
/// a session's GET stream.
trait Messages {
    /// The next message; `None` when the stream is complete.
    async fn next_message(&mut self) -> Option<Bytes>;
}

impl Messages for Exchange {
    async fn next_message(&mut self) -> Option<Bytes> {
        self.next().await
    }
}

impl Messages for mpsc::Receiver<Bytes> {
    async fn next_message(&mut self) -> Option<Bytes> {
        self.recv().await
    }
}

/// Relays `messages` as events until they are complete (`true`) or the
/// client leaves (`false`; a POST's exchange, dropped, then cancels what
/// is still open).
async fn relay_events(
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &Route,
    mut messages: impl Messages,
    filter: Option<ToolsListFilter>,
) -> bool {
    if !begin_stream(session, route, ctx).await {
        return false;
    }
    loop {
        let next = tokio::select! {
            next = messages.next_message() => next,
            _ = session.downstream_session.read_body_or_idle(true) => return false,
        };
        let Some(message) = next else {
            return session.write_response_body(None, true).await.is_ok();
        };
        let message = filtered(route, filter.as_ref(), message);
        // A client that takes no bytes for the response timeout has left
        // (its calls are then cancelled, and the process is not pinned).
        let written = tokio::time::timeout(
            route.upstream.timeouts.response,
            session.write_response_body(Some(event(&message)), false),
        );
        if !message.is_empty() && !matches!(written.await, Ok(Ok(()))) {
            return false;
        }
    }
}

/// Collects a POST's answers and sends them as one JSON body (an array for
/// a batch); `false` if the client left first.
async fn json_answers(
    session: &mut Session,
    ctx: &RequestCtx,
    route: &Route,
    mut exchange: Exchange,
    filter: Option<ToolsListFilter>,
    batch: bool,
    started: Instant,
) -> bool {
    let mut answers = Vec::new();
    loop {
        let next = tokio::select! {
            next = exchange.next() => next,
            _ = session.downstream_session.read_body_or_idle(true) => return false,
        };
        match next {
            Some(message) => answers.push(filtered(route, filter.as_ref(), message)),
            None => break,
        }
    }
    observe(route, started);
    answers.retain(|a| !a.is_empty());
    let body = match (batch, answers.len()) {
        (false, 1) => answers.remove(0),
        _ => {
            let mut out = BytesMut::from(&b"["[..]);
            for (i, a) in answers.iter().enumerate() {
                if i > 0 {
                    out.put_u8(b',');
                }
                out.put_slice(a);
            }
            out.put_u8(b']');
            out.freeze()
        }
    };
    let headers = [("x-request-id", ctx.request_id.clone())];
    error::write_json(session, 200, &headers, body, false)
        .await
        .is_ok()
}
