//! Hands authorization-server paths to the built-in AS's axum router, in
//! process: the request is read (bounded), passed through the router as an
//! `http::Request`, and the answer written back on the pingora session.
//! One public origin, one listener, no loopback hop.

use super::error::GatewayError;
use crate::authserver::PeerAddr;
use axum::body::Body;
use axum::Router;
use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use std::time::Duration;
use tower::ServiceExt;

/// Largest request body sent to the AS (forms and registrations are small).
const MAX_AS_BODY: usize = 64 * 1024;
/// Largest AS response relayed (pages and JSON documents).
const MAX_AS_RESPONSE: usize = 1024 * 1024;

/// Serves one AS request on `session`; its body must arrive within
/// `body_timeout`.
pub async fn serve(
    router: &Router,
    session: &mut Session,
    request_id: &str,
    body_timeout: Duration,
) -> Result<(), GatewayError> {
    let body = super::body::within(body_timeout, read_body(session)).await?;
    let head = session.req_header();
    let mut builder = http::Request::builder()
        .method(head.method.clone())
        .uri(head.uri.clone());
    for (name, value) in &head.headers {
        builder = builder.header(name, value);
    }
    let mut request = builder
        .body(Body::from(body))
        .map_err(|e| GatewayError::UnroutableRequest(e.to_string()))?;
    if let Some(ip) = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
    {
        request.extensions_mut().insert(PeerAddr(ip));
    }
    let response = match router.clone().oneshot(request).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let (parts, body) = response.into_parts();
    let relay_failed = |e: &dyn std::fmt::Display| GatewayError::AuthServerResponse(e.to_string());
    let body: Bytes = axum::body::to_bytes(body, MAX_AS_RESPONSE)
        .await
        .map_err(|e| relay_failed(&e))?;
    let mut resp = ResponseHeader::build(parts.status, Some(parts.headers.len() + 1))
        .map_err(|e| relay_failed(&e))?;
    for (name, value) in &parts.headers {
        resp.append_header(name.clone(), value.clone())
            .map_err(|e| relay_failed(&e))?;
    }
    resp.insert_header("content-length", body.len().to_string())
        .map_err(|e| relay_failed(&e))?;
    resp.insert_header("x-request-id", request_id)
        .map_err(|e| relay_failed(&e))?;
    let write = async {
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await
    };
    if let Err(e) = write.await {
        tracing::debug!(error = %e, "client went away during an authorization-server response");
    }
    Ok(())
}

/// The request body, at most `MAX_AS_BODY` bytes.
async fn read_body(session: &mut Session) -> Result<Bytes, GatewayError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|e| GatewayError::BodyRead(e.to_string()))?
    {
        if body.len() + chunk.len() > MAX_AS_BODY {
            return Err(GatewayError::BodyTooLarge { limit: MAX_AS_BODY });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
