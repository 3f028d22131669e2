//! Forwarding a checked, fully buffered POST to its upstream; its response
//! goes back through the same path as pingora's (`response`).
//!
//! Why a POST bypasses pingora's proxy loop: the gateway must read and
//! check the whole JSON-RPC body before the upstream sees a byte, and
//! pingora 0.9.1 cannot replay a body that `request_filter` has read
//! (its retry buffer is a fixed 64 KiB; above that the request hangs, see
//! notes/pingora.md), while checking it later, in `request_body_filter`,
//! opens the upstream request before the check. So a POST is sent here,
//! over pingora's own pooled connector; GET and DELETE go through the loop.
//!
//! The exact condition under which this bypass can go: a pingora release
//! in which `request_filter` can hand the loop a body it already read, of
//! any size up to `limits.max_body_bytes` (upstream PR #816's
//! `set_buffered_body` / `request_body_buffer_limit`; 0.9.1, the newest on
//! crates.io as of 2026-12, has neither). Then `forward_post` returns
//! `Admission::Proxy`, the retry rule of `forward_buffered` moves into
//! `fail_to_connect`/`error_while_proxy`, and this file goes.

use super::access::Access;
use super::error::GatewayError;
use super::response::{self, unavailable, upstream_failure, BodyMode, StreamRelay};
use super::route::Route;
use crate::auth::Principal;
use crate::mcp::tools_list::{ToolsListFilter, MAX_FILTERED_BYTES};
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

/// What the gateway does with the upstream's answer besides relaying it.
pub struct ResponseHooks<'a> {
    /// Filters `tools/list` results (set only when the body has such calls).
    pub tools_filter: Option<ToolsListFilter>,
    /// The authenticated caller, to whom a session id in the answer is
    /// sealed.
    pub caller: Option<(&'a Access, &'a Principal)>,
    /// Returned as `X-Request-Id`.
    pub request_id: &'a str,
}

/// Sends `head()` + `body` to the route's upstream and streams the response to
/// the client. An error is returned only while no response has been written,
/// so the caller can still answer with a status. A client that leaves while
/// the upstream works on its request ends the exchange (`ClientGone`) and
/// the upstream connection is dropped, which cancels the request there.
pub async fn forward_buffered(
    connector: &Connector,
    session: &mut Session,
    route: &Route,
    head: &(dyn Fn(&Session) -> Result<RequestHeader, GatewayError> + Sync),
    body: Bytes,
    hooks: ResponseHooks<'_>,
) -> Result<Delivered, GatewayError> {
    let peer = route
        .peer()
        .ok_or_else(|| unavailable(route, "not an HTTP upstream"))?;
    let sent = std::time::Instant::now();
    let mut retries = 0;
    let mut upstream = loop {
        // Built for each attempt (pingora keeps the head it writes), from
        // the client's: nothing is copied for a retry that never comes.
        let req = head(session)?;
        let attempt = send_once(connector, &peer, route, req, &body);
        // Watching reads nothing of a next request: pipelining is on, so
        // pingora keeps any such bytes for it (see `early_request_filter`).
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            _ = session.downstream_session.read_body_or_idle(true) => return Ok(Delivered::ClientGone),
        };
        match outcome {
            Ok(upstream) => break upstream,
            Err(Attempt {
                error,
                on: Some(on),
            }) if retries < RESET_RETRIES && was_reset_unread(&error) => {
                tracing::debug!(upstream = %route.upstream.name, connection = on, %error, "upstream reset the connection before reading the request; sending it on a new one");
                retries += 1;
            }
            Err(Attempt { error, on: None }) => return Err(upstream_failure(route, &error)),
            Err(Attempt {
                error,
                on: Some(on),
            }) => {
                let error = error.more_context(format!("on {on} connection"));
                return Err(upstream_failure(route, &error));
            }
        }
    };
    let delivered = relay_response(session, &mut upstream, route, hooks, sent).await;
    if matches!(delivered, Ok(Delivered::Complete)) && upstream.response_done() {
        connector
            .release_http_session(upstream, &peer, route.pool_idle_timeout())
            .await;
    } else {
        upstream.shutdown().await;
    }
    delivered
}

/// Relays the upstream's answer through the response path both forwarding
/// ways share (`response`), telling `hooks` the session it creates.
async fn relay_response(
    session: &mut Session,
    upstream: &mut HttpSession,
    route: &Route,
    hooks: ResponseHooks<'_>,
    sent: std::time::Instant,
) -> Result<Delivered, GatewayError> {
    let mut resp = upstream
        .response_header()
        .cloned()
        .ok_or_else(|| unavailable(route, "upstream sent no response header"))?;
    if resp.version == http::Version::HTTP_2 {
        as_http1_head(&mut resp).map_err(|e| unavailable(route, e))?;
    }
    let _open_stream = response::begin(&mut resp, route, hooks.request_id, sent)?;
    let body = response::post_body(&mut resp, route, hooks.tools_filter)?;
    if let Some((access, principal)) = hooks.caller {
        access
            .seal_response(&mut resp, route, principal)
            .map_err(|e| unavailable(route, e))?;
    }
    match body {
        BodyMode::WholeJson(filter) => {
            relay_filtered_json(session, upstream, resp, &filter, route).await
        }
        BodyMode::Stream(relay) => {
            if session
                .write_response_header(Box::new(resp), false)
                .await
                .is_err()
            {
                return Ok(Delivered::ClientGone);
            }
            let idle = route.upstream.timeouts.idle;
            Ok(stream_body(session, upstream, idle, relay).await)
        }
    }
}

/// An HTTP/2 upstream's response head made one the client's HTTP/1.1
/// session can write, as pingora's own loop does: version 1.1, and a body
/// without a length (h2 frames it; SSE never has one) sent chunked.
fn as_http1_head(resp: &mut ResponseHeader) -> pingora::Result<()> {
    resp.set_version(http::Version::HTTP_11);
    let has_body = !matches!(resp.status.as_u16(), 100..=199 | 204 | 304);
    if has_body && resp.headers.get(http::header::CONTENT_LENGTH).is_none() {
        resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    Ok(())
}

/// One attempt: connects (or reuses a pooled connection), writes the
/// request and waits for the response header. `forward_buffered` sends the
/// request again only when an attempt provably never reached the upstream
/// application.
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
async fn send_once(
    connector: &Connector,
    peer: &pingora::upstreams::peer::HttpPeer,
    route: &Route,
    req: RequestHeader,
    body: &Bytes,
) -> Result<HttpSession, Attempt> {
    let (mut upstream, reused) = connector
        .get_http_session(peer)
        .await
        .map_err(|error| Attempt { error, on: None })?;
    match exchange_head(&mut upstream, req, body, route.upstream.timeouts.response).await {
        Ok(()) => Ok(upstream),
        Err(error) => Err(Attempt {
            error,
            on: Some(if reused { "a pooled" } else { "a new" }),
        }),
    }
}

/// An attempt that failed: connecting (`on` is `None`), or on a pooled or
/// a new connection.
struct Attempt {
    error: Box<Error>,
    on: Option<&'static str>,
}

/// How often a request the upstream reset unread is sent again: a full
/// accept queue can reset a second new connection too.
const RESET_RETRIES: u32 = 2;

/// Whether the upstream reset the connection (see `send_once`).
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
    req: RequestHeader,
    body: &Bytes,
    response_timeout: Duration,
) -> pingora::Result<()> {
    upstream.set_write_timeout(Some(response_timeout));
    {
        let _corked = Cork::hold(upstream);
        upstream.write_request_header(Box::new(req)).await?;
        upstream.write_request_body(body.clone(), true).await?;
        upstream.finish_request_body().await?;
    }
    match timeout(response_timeout, upstream.read_response_header()).await {
        Ok(r) => r,
        Err(_) => Error::e_explain(
            ErrorType::ReadTimedout,
            format!("no response header within {response_timeout:?}"),
        ),
    }
}

/// Holds back a partial TCP segment of an HTTP/1 upstream connection
/// (`TCP_CORK`, Linux) while the request is written, so that its head and
/// body, which pingora writes and flushes apart, leave as one segment
/// instead of two: one transmit, and one wakeup of the upstream, per call
/// (issue 17's profile; nginx writes a request in one call). Releasing the
/// cork (on drop, also when a write fails) sends what is held at once.
struct Cork(Option<std::os::fd::RawFd>);

impl Cork {
    fn hold(upstream: &HttpSession) -> Self {
        let fd = match upstream {
            HttpSession::H1(h1) => Some(h1.stream().id()),
            _ => None,
        };
        Self(fd.filter(|&fd| set_cork(fd, true)))
    }
}

impl Drop for Cork {
    fn drop(&mut self) {
        if let Some(fd) = self.0 {
            set_cork(fd, false);
        }
    }
}

/// Sets or clears `TCP_CORK` on `fd`; false where the socket has no such
/// option (a Unix socket upstream).
fn set_cork(fd: std::os::fd::RawFd, on: bool) -> bool {
    let value = libc::c_int::from(on);
    // SAFETY: `fd` is the open socket of a connection this function's caller
    // holds for the call, and the option value is a live `c_int` of the
    // length passed.
    let set = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    set == 0
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
            Err(e) => return Err(upstream_failure(route, &e)),
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
    mut relay: StreamRelay,
) -> Delivered {
    loop {
        let chunk = tokio::select! {
            chunk = read_chunk(upstream, idle) => chunk,
            _ = session.downstream_session.read_body_or_idle(true) => return Delivered::ClientGone,
        };
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => return Delivered::UpstreamBroke(e.to_string()),
        };
        let end = chunk.is_none();
        let out = match relay.next(chunk, end) {
            Ok(out) => out.filter(|b| !b.is_empty()),
            Err(e) => return Delivered::UpstreamBroke(e),
        };
        if (out.is_some() || end) && session.write_response_body(out, end).await.is_err() {
            return Delivered::ClientGone;
        }
        if end {
            return Delivered::Complete;
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
