//! Forwarding a checked, fully buffered POST to its upstream and streaming
//! the response back.
//!
//! Pingora 0.9 cannot replay a body that `request_filter` has read in full
//! (its retry buffer stops at 64 KiB, see notes/pingora.md), and checking the
//! body later, in `request_body_filter`, would open the upstream request
//! before the check. So POSTs, whose JSON-RPC bodies the gateway must inspect
//! before the upstream sees a byte, are sent here over pingora's own pooled
//! connector; GET and DELETE go through pingora's proxy loop.

use super::error::GatewayError;
use super::headers::filter_upstream_response;
use super::route::Route;
use crate::mcp::tools_list::{SseToolsFilter, ToolsListFilter, MAX_FILTERED_BYTES};
use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};
use std::time::Duration;
use tokio::time::timeout;

/// How a forwarded exchange ended once the response had started.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivered {
    /// The whole response reached the client.
    Complete,
    /// The client went away before the response was complete; the upstream
    /// request was dropped.
    ClientGone,
    /// The upstream broke off mid-response; the client's response was cut.
    UpstreamBroke(String),
}

/// Called with the `Mcp-Session-Id` of a successful response.
pub type SessionHook<'a> = &'a (dyn Fn(&[u8]) + Sync);

/// What the gateway does with the upstream's answer besides relaying it.
pub struct ResponseHooks<'a> {
    /// Filters `tools/list` results (set only when the body has such calls).
    pub tools_filter: Option<ToolsListFilter>,
    /// Told the `Mcp-Session-Id` of a successful response (set only for
    /// bodies with an `initialize`).
    pub on_session: Option<SessionHook<'a>>,
    /// Returned as `X-Request-Id`.
    pub request_id: &'a str,
}

/// How the response body is relayed.
enum BodyMode {
    Passthrough,
    WholeJson(ToolsListFilter),
    Sse(SseToolsFilter),
}

/// Sends `req` + `body` to the route's upstream and streams the response to
/// the client. An error is returned only while no response has been written,
/// so the caller can still answer with a status. A client that leaves while
/// the upstream works on its request ends the exchange (`ClientGone`) and
/// the upstream connection is dropped, which cancels the request there.
pub async fn forward_buffered(
    connector: &Connector,
    session: &mut Session,
    route: &Route,
    req: RequestHeader,
    body: Bytes,
    hooks: ResponseHooks<'_>,
) -> Result<Delivered, GatewayError> {
    let peer = route.peer();
    let timeouts = route.upstream.timeouts;
    let sent = std::time::Instant::now();
    let sending = send_with_retries(connector, &peer, route, &req, &body);
    // Watching reads nothing of a next request: pipelining is on, so pingora
    // keeps any such bytes for it (see `early_request_filter`).
    let mut upstream = tokio::select! {
        sent = sending => sent?,
        _ = session.downstream_session.read_body_or_idle(true) => return Ok(Delivered::ClientGone),
    };
    crate::metrics::metrics()
        .upstream_duration
        .with_label_values(&[&route.upstream.name])
        .observe(sent.elapsed().as_secs_f64());
    let mut resp = upstream
        .response_header()
        .cloned()
        .ok_or_else(|| unavailable(route, "upstream sent no response header"))?;
    filter_upstream_response(&mut resp);
    resp.insert_header("x-request-id", hooks.request_id)
        .map_err(|e| unavailable(route, &e.to_string()))?;
    let _stream =
        crate::telemetry::is_event_stream(&resp.headers).then(crate::telemetry::OpenStream::start);
    let success = resp.status.is_success();
    if let (Some(bind), Some(id), true) = (
        hooks.on_session,
        resp.headers.get("mcp-session-id"),
        success,
    ) {
        bind(id.as_bytes());
    }
    let mode = match (hooks.tools_filter, success) {
        (Some(filter), true) => {
            body_mode(&mut resp, filter).map_err(|detail| GatewayError::UnfilterableResponse {
                upstream: route.upstream.name.clone(),
                detail,
            })
        }
        _ => Ok(BodyMode::Passthrough),
    };
    let mode = match mode {
        Ok(m) => m,
        Err(e) => {
            upstream.shutdown().await;
            return Err(e);
        }
    };
    let delivered = match mode {
        BodyMode::WholeJson(filter) => {
            relay_filtered_json(session, &mut upstream, resp, &filter, route).await?
        }
        mode => {
            if session
                .write_response_header(Box::new(resp), false)
                .await
                .is_err()
            {
                upstream.shutdown().await;
                return Ok(Delivered::ClientGone);
            }
            let sse = match mode {
                BodyMode::Sse(f) => Some(f),
                _ => None,
            };
            stream_body(session, &mut upstream, timeouts.idle, sse).await
        }
    };
    if delivered == Delivered::Complete && upstream.response_done() {
        connector
            .release_http_session(upstream, &peer, route.pool_idle_timeout())
            .await;
    } else {
        upstream.shutdown().await;
    }
    Ok(delivered)
}

/// Connects (or reuses a pooled connection), writes the request and waits for
/// the response header, sending the request again only when an attempt
/// provably never reached the upstream application.
///
/// The rule (RFC 9110 §9.2.2: a non-idempotent request is retried only when
/// it is known not to have been processed): an attempt is repeated, on a new
/// connection and at most `RESET_RETRIES` times, when the upstream *reset*
/// the connection before sending any response byte. A TCP stack resets a connection that is closed
/// with unread data or that receives data after it was closed, so a reset
/// means the request was never read in full: a stale pooled connection the
/// upstream had closed, or a new one its full accept queue dropped (measured:
/// a Python `http.server` has a backlog of 5, and a burst of new connections
/// overflows it). The request carries exactly its `Content-Length`, so an
/// upstream that read it in full and then died or closed sends a FIN
/// instead (an abortive close with `SO_LINGER` 0 aside); a FIN or a timeout
/// proves nothing, since the upstream may have acted, so the client gets
/// the error and the POST is never sent twice.
async fn send_with_retries(
    connector: &Connector,
    peer: &pingora::upstreams::peer::HttpPeer,
    route: &Route,
    req: &RequestHeader,
    body: &Bytes,
) -> Result<HttpSession, GatewayError> {
    let mut retries = 0;
    loop {
        let (mut upstream, reused) = connector
            .get_http_session(peer)
            .await
            .map_err(|e| connect_error(route, &e))?;
        match exchange_head(&mut upstream, req, body, route.upstream.timeouts.response).await {
            Ok(()) => return Ok(upstream),
            Err(e) if retries < RESET_RETRIES && was_reset_unread(&e) => {
                tracing::debug!(upstream = %route.upstream.name, reused, error = %e, "upstream reset the connection before reading the request; sending it on a new one");
                retries += 1;
            }
            Err(e) if is_timeout(&e) => {
                return Err(GatewayError::UpstreamTimeout {
                    upstream: route.upstream.name.clone(),
                    detail: e.to_string(),
                })
            }
            Err(e) => {
                let on = if reused { "a pooled" } else { "a new" };
                return Err(unavailable(route, &format!("{e} (on {on} connection)")));
            }
        }
    }
}

/// How often a request the upstream reset unread is sent again: a full
/// accept queue can reset a second new connection too.
const RESET_RETRIES: u32 = 2;

/// Whether the upstream reset the connection (see `send_with_retries`).
fn was_reset_unread(e: &Error) -> bool {
    e.root_cause()
        .downcast_ref::<std::io::Error>()
        .is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            )
        })
}

async fn exchange_head(
    upstream: &mut HttpSession,
    req: &RequestHeader,
    body: &Bytes,
    response_timeout: Duration,
) -> pingora::Result<()> {
    upstream.set_write_timeout(Some(response_timeout));
    upstream.write_request_header(Box::new(req.clone())).await?;
    upstream.write_request_body(body.clone(), true).await?;
    upstream.finish_request_body().await?;
    match timeout(response_timeout, upstream.read_response_header()).await {
        Ok(r) => r,
        Err(_) => Error::e_explain(
            ErrorType::ReadTimedout,
            format!("no response header within {response_timeout:?}"),
        ),
    }
}

/// Chooses how a response to a body with `tools/list` calls is relayed:
/// JSON is filtered whole, SSE event by event, a 202 or 204 has no body to
/// filter; any other body (compressed, or of another type) cannot be read,
/// so it is refused rather than passed unfiltered.
fn body_mode(resp: &mut ResponseHeader, filter: ToolsListFilter) -> Result<BodyMode, String> {
    let header = |name| {
        resp.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    let encoding = header("content-encoding");
    if !encoding.is_empty() && encoding != "identity" {
        return Err(format!("Content-Encoding `{encoding}`"));
    }
    let content_type = header("content-type");
    if content_type.starts_with("application/json") {
        Ok(BodyMode::WholeJson(filter))
    } else if content_type.starts_with("text/event-stream") {
        resp.remove_header("content-length");
        Ok(BodyMode::Sse(filter.into_sse()))
    } else if resp.status.as_u16() == 202 || resp.status.as_u16() == 204 {
        Ok(BodyMode::Passthrough)
    } else {
        Err(format!("Content-Type `{content_type}` cannot be filtered"))
    }
}

/// Reads a whole JSON response, filters it, and sends it with its new length.
async fn relay_filtered_json(
    session: &mut Session,
    upstream: &mut HttpSession,
    mut resp: ResponseHeader,
    filter: &ToolsListFilter,
    route: &Route,
) -> Result<Delivered, GatewayError> {
    let broken = |detail: String| GatewayError::UnfilterableResponse {
        upstream: route.upstream.name.clone(),
        detail,
    };
    let mut body = Vec::new();
    loop {
        match read_chunk(upstream, route.upstream.timeouts.idle).await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_FILTERED_BYTES => {
                body.extend_from_slice(&chunk)
            }
            Ok(Some(_)) => {
                return Err(broken(format!("JSON body over {MAX_FILTERED_BYTES} bytes")))
            }
            Ok(None) => break,
            Err(e) => return Err(unavailable(route, &e.to_string())),
        }
    }
    let body = Bytes::from(filter.filter_json(&body).map_err(broken)?.unwrap_or(body));
    resp.remove_header("transfer-encoding");
    resp.insert_header("content-length", body.len().to_string())
        .map_err(|e| broken(e.to_string()))?;
    let sent = async {
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await
    };
    Ok(match sent.await {
        Ok(()) => Delivered::Complete,
        Err(_) => Delivered::ClientGone,
    })
}

/// Copies the response body chunk by chunk (SSE events leave as they
/// arrive, through the `tools/list` filter when there is one), watching for
/// the client going away.
async fn stream_body(
    session: &mut Session,
    upstream: &mut HttpSession,
    idle: Option<Duration>,
    mut sse: Option<SseToolsFilter>,
) -> Delivered {
    loop {
        let next = tokio::select! {
            chunk = read_chunk(upstream, idle) => chunk,
            _ = session.downstream_session.read_body_or_idle(true) => return Delivered::ClientGone,
        };
        let next = match (next, sse.as_mut()) {
            (Ok(Some(chunk)), Some(filter)) => filter.push(&chunk).map(|b| Some(Bytes::from(b))),
            (Ok(None), Some(_)) => {
                if let Some(filter) = sse.take() {
                    filter.finish();
                }
                Ok(None)
            }
            (Err(e), _) => return Delivered::UpstreamBroke(e.to_string()),
            (other, None) => other.map_err(|e| e.to_string()),
        };
        match next {
            Ok(Some(chunk)) if chunk.is_empty() => {}
            Ok(Some(chunk)) => {
                if session
                    .write_response_body(Some(chunk), false)
                    .await
                    .is_err()
                {
                    return Delivered::ClientGone;
                }
            }
            Ok(None) => {
                return match session.write_response_body(None, true).await {
                    Ok(()) => Delivered::Complete,
                    Err(_) => Delivered::ClientGone,
                };
            }
            Err(e) => return Delivered::UpstreamBroke(e),
        }
    }
}

async fn read_chunk(
    upstream: &mut HttpSession,
    idle: Option<Duration>,
) -> pingora::Result<Option<Bytes>> {
    match idle {
        None => upstream.read_response_body().await,
        Some(limit) => match timeout(limit, upstream.read_response_body()).await {
            Ok(r) => r,
            Err(_) => Error::e_explain(ErrorType::ReadTimedout, format!("idle for {limit:?}")),
        },
    }
}

fn is_timeout(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    )
}

/// Maps a connect failure: a timeout is a 504, anything else a 502.
pub fn connect_error(route: &Route, e: &Error) -> GatewayError {
    if is_timeout(e) {
        GatewayError::UpstreamTimeout {
            upstream: route.upstream.name.clone(),
            detail: e.to_string(),
        }
    } else {
        unavailable(route, &e.to_string())
    }
}

fn unavailable(route: &Route, detail: &str) -> GatewayError {
    GatewayError::UpstreamUnavailable {
        upstream: route.upstream.name.clone(),
        detail: detail.to_owned(),
    }
}
