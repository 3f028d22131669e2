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
use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
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
    /// The client went away mid-response; the upstream request was dropped.
    ClientGone,
    /// The upstream broke off mid-response; the client's response was cut.
    UpstreamBroke(String),
}

/// Sends `req` + `body` to the route's upstream and streams the response to
/// the client. An error is returned only while no response has been written,
/// so the caller can still answer with a status.
pub async fn forward_buffered(
    connector: &Connector,
    session: &mut Session,
    route: &Route,
    req: RequestHeader,
    body: Bytes,
) -> Result<Delivered, GatewayError> {
    let peer = route.peer();
    let timeouts = route.upstream.timeouts;
    let mut upstream = send_with_one_retry(connector, &peer, route, &req, &body).await?;
    let mut resp = upstream
        .response_header()
        .cloned()
        .ok_or_else(|| unavailable(route, "upstream sent no response header"))?;
    filter_upstream_response(&mut resp);
    if session
        .write_response_header(Box::new(resp), false)
        .await
        .is_err()
    {
        upstream.shutdown().await;
        return Ok(Delivered::ClientGone);
    }
    let delivered = stream_body(session, &mut upstream, timeouts.idle).await;
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
/// the response header. A pooled connection the upstream has meanwhile closed
/// fails at once; that attempt is retried once on a fresh connection, which
/// is safe because the upstream closed it without reading our request.
async fn send_with_one_retry(
    connector: &Connector,
    peer: &pingora::upstreams::peer::HttpPeer,
    route: &Route,
    req: &RequestHeader,
    body: &Bytes,
) -> Result<HttpSession, GatewayError> {
    let mut retried = false;
    loop {
        let (mut upstream, reused) = connector
            .get_http_session(peer)
            .await
            .map_err(|e| connect_error(route, &e))?;
        match exchange_head(&mut upstream, req, body, route.upstream.timeouts.response).await {
            Ok(()) => return Ok(upstream),
            Err(e) if reused && !retried && !is_timeout(&e) => {
                tracing::debug!(upstream = %route.upstream.name, error = %e, "pooled connection was stale; retrying on a new one");
                retried = true;
            }
            Err(e) if is_timeout(&e) => {
                return Err(GatewayError::UpstreamTimeout {
                    upstream: route.upstream.name.clone(),
                    detail: e.to_string(),
                })
            }
            Err(e) => return Err(unavailable(route, &e.to_string())),
        }
    }
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

/// Copies the response body chunk by chunk (SSE events leave as they
/// arrive), watching for the client going away.
async fn stream_body(
    session: &mut Session,
    upstream: &mut HttpSession,
    idle: Option<Duration>,
) -> Delivered {
    loop {
        let next = tokio::select! {
            chunk = read_chunk(upstream, idle) => chunk,
            _ = session.downstream_session.read_body_or_idle(true) => return Delivered::ClientGone,
        };
        match next {
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
            Err(e) => return Delivered::UpstreamBroke(e.to_string()),
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
