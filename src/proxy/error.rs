//! Every way the proxy refuses or fails a request, and the one place that
//! turns it into an HTTP response.
//!
//! On an upstream's path the body is a JSON-RPC error (MCP clients parse
//! those) carrying the request's `id` when there is one; elsewhere it is a
//! plain `{"error", "error_description"}` object.

use crate::auth::Refusal;
use crate::mcp::{codes, McpError};
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde_json::{json, Value};

/// Why the gateway answered instead of the upstream.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No upstream is configured for the path.
    #[error("no MCP endpoint at this path")]
    NotFound,
    /// A path the upstream could resolve differently from the gateway.
    #[error("{0}")]
    AmbiguousPath(String),
    /// HTTP method other than POST, GET and DELETE.
    #[error("method {0} is not allowed; MCP uses POST, GET and DELETE")]
    MethodNotAllowed(String),
    /// `Origin` header present and not allowed.
    #[error("{0}")]
    OriginRefused(String),
    /// Request body over the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// Request line and headers over the configured limit.
    #[error("request head exceeds the limit of {limit} bytes; send fewer or shorter headers")]
    HeadTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The body did not arrive within the configured time.
    #[error("request body not received within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// `Content-Encoding` other than identity.
    #[error("Content-Encoding `{0}` is not accepted; send the body uncompressed")]
    UnsupportedEncoding(String),
    /// POST body that is not declared as JSON.
    #[error("Content-Type must be application/json, got `{0}`")]
    UnsupportedMediaType(String),
    /// A field that must be single-valued, sent twice.
    #[error("header `{0}` appears more than once")]
    RepeatedHeader(&'static str),
    /// GET or DELETE carrying a body.
    #[error("{0} requests must not have a body")]
    UnexpectedBody(String),
    /// The client stopped sending before the body was complete.
    #[error("request body incomplete: {0}")]
    BodyRead(String),
    /// A request head the authorization server's router cannot take.
    #[error("the request cannot be passed to the authorization server: {0}")]
    UnroutableRequest(String),
    /// The authorization server's answer could not be relayed.
    #[error("the authorization server's response could not be relayed: {0}")]
    AuthServerResponse(String),
    /// The body is not an acceptable MCP message.
    #[error(transparent)]
    InvalidMessage(#[from] McpError),
    /// Connection to the upstream failed or broke before a response.
    #[error("upstream `{upstream}` is unavailable: {detail}")]
    UpstreamUnavailable {
        /// Upstream name.
        upstream: String,
        /// What failed.
        detail: String,
    },
    /// The token is missing or not accepted, or the policy refuses the
    /// request (400/401/403/503 with a `WWW-Authenticate` challenge).
    #[error("{}", .0.description)]
    Auth(Refusal),
    /// An `Mcp-Session-Id` the caller may not use: unknown to the gateway,
    /// or created by another subject. Answered like an unknown session.
    #[error("session not found; send `initialize` to start a new one")]
    SessionNotFound,
    /// The upstream's response could not be filtered (`tools/list`).
    #[error("upstream `{upstream}` sent a response the gateway cannot filter: {detail}")]
    UnfilterableResponse {
        /// Upstream name.
        upstream: String,
        /// What was wrong.
        detail: String,
    },
    /// A rate limit has no tokens left for this request.
    #[error("{detail}")]
    RateLimited {
        /// Which limit: `subject`, `client`, `tool` or `address`.
        limit: &'static str,
        /// What was exceeded and when to retry.
        detail: String,
        /// When the request would pass; `None` when it never can (it
        /// costs more than the whole burst).
        retry_after: Option<std::time::Duration>,
    },
    /// The upstream cannot take more now (a stdio upstream at its process
    /// limit, or backing off after failed starts).
    #[error("{detail}")]
    UpstreamBusy {
        /// Upstream name.
        upstream: String,
        /// What is exhausted and when to retry.
        detail: String,
        /// When to try again.
        retry_after: std::time::Duration,
    },
    /// The `Mcp-Session-Id` named a session that has ended (its process
    /// exited or it was deleted).
    #[error("session not found (it has ended); send `initialize` to start a new one")]
    SessionEnded,
    /// A second GET stream for one session.
    #[error("a GET stream is already open for this session; close it first")]
    StreamConflict,
    /// A request that needs an `Mcp-Session-Id` came without one.
    #[error(
        "this request needs an `Mcp-Session-Id`: send `initialize` first and use the id it returns"
    )]
    SessionRequired,
    /// The upstream did not answer in time.
    #[error("upstream `{upstream}` did not respond in time: {detail}")]
    UpstreamTimeout {
        /// Upstream name.
        upstream: String,
        /// Which timeout.
        detail: String,
    },
}

impl GatewayError {
    /// HTTP status of the response.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound => 404,
            Self::MethodNotAllowed(_) => 405,
            Self::OriginRefused(_) => 403,
            Self::BodyTooLarge { .. } => 413,
            Self::HeadTooLarge { .. } => 431,
            Self::BodyTimeout(_) => 408,
            Self::UnsupportedEncoding(_) | Self::UnsupportedMediaType(_) => 415,
            Self::AmbiguousPath(_)
            | Self::RepeatedHeader(_)
            | Self::UnexpectedBody(_)
            | Self::BodyRead(_)
            | Self::UnroutableRequest(_)
            | Self::InvalidMessage(_) => 400,
            Self::AuthServerResponse(_) => 500,
            Self::UpstreamUnavailable { .. } | Self::UnfilterableResponse { .. } => 502,
            Self::UpstreamTimeout { .. } => 504,
            Self::UpstreamBusy { .. } => 503,
            Self::SessionEnded => 404,
            Self::StreamConflict => 409,
            Self::SessionRequired => 400,
            Self::Auth(r) => r.status,
            Self::SessionNotFound => 404,
            Self::RateLimited { .. } => 429,
        }
    }

    /// JSON-RPC error code of the body on an MCP path.
    pub fn jsonrpc_code(&self) -> i64 {
        match self {
            Self::InvalidMessage(e) => e.code(),
            Self::UnexpectedBody(_)
            | Self::BodyRead(_)
            | Self::RepeatedHeader(_)
            | Self::UnroutableRequest(_)
            | Self::StreamConflict
            | Self::SessionRequired => codes::INVALID_REQUEST,
            Self::AuthServerResponse(_) => codes::INTERNAL_ERROR,
            Self::UpstreamUnavailable { .. }
            | Self::UnfilterableResponse { .. }
            | Self::UpstreamBusy { .. } => codes::UPSTREAM_UNAVAILABLE,
            Self::UpstreamTimeout { .. } => codes::UPSTREAM_TIMEOUT,
            Self::RateLimited { .. } => codes::RATE_LIMITED,
            Self::Auth(_)
            | Self::SessionNotFound
            | Self::SessionEnded
            | Self::NotFound
            | Self::AmbiguousPath(_)
            | Self::MethodNotAllowed(_)
            | Self::OriginRefused(_)
            | Self::BodyTooLarge { .. }
            | Self::HeadTooLarge { .. }
            | Self::BodyTimeout(_)
            | Self::UnsupportedEncoding(_)
            | Self::UnsupportedMediaType(_) => codes::REQUEST_REFUSED,
        }
    }

    /// Short machine-readable name, for logs and non-JSON-RPC bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::AmbiguousPath(_) => "ambiguous_path",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::OriginRefused(_) => "origin_refused",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::HeadTooLarge { .. } => "head_too_large",
            Self::BodyTimeout(_) => "body_timeout",
            Self::UnsupportedEncoding(_) => "unsupported_encoding",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::UnexpectedBody(_) => "unexpected_body",
            Self::RepeatedHeader(_) => "repeated_header",
            Self::BodyRead(_) => "body_incomplete",
            Self::UnroutableRequest(_) => "unroutable_request",
            Self::AuthServerResponse(_) => "authserver_response",
            Self::InvalidMessage(_) => "invalid_message",
            Self::UpstreamUnavailable { .. } => "upstream_unavailable",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::UpstreamBusy { .. } => "upstream_busy",
            Self::SessionEnded => "session_ended",
            Self::StreamConflict => "stream_conflict",
            Self::SessionRequired => "session_required",
            Self::UnfilterableResponse { .. } => "unfilterable_response",
            Self::Auth(r) => r.reason,
            Self::SessionNotFound => "session_mismatch",
            Self::RateLimited { .. } => "rate_limited",
        }
    }

    /// The response body: JSON-RPC on an MCP path, plain JSON elsewhere;
    /// both carry the request id.
    pub fn body(&self, on_mcp_path: bool, id: Value, request_id: &str) -> Bytes {
        let value = if let Self::Auth(r) = self {
            json!({"error": r.error, "error_description": r.description, "request_id": request_id})
        } else if let (Self::RateLimited { .. }, false) = (self, on_mcp_path) {
            // The authorization server's clients read OAuth error codes
            // (RFC 6749 §4.1.2.1): this is the one for "not now".
            json!({"error": "temporarily_unavailable", "error_description": self.to_string(), "request_id": request_id})
        } else if on_mcp_path {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": self.jsonrpc_code(), "message": self.to_string(), "data": {"request_id": request_id}}})
        } else {
            json!({"error": self.kind(), "error_description": self.to_string(), "request_id": request_id})
        };
        Bytes::from(value.to_string())
    }
}

/// Writes `err` as the whole response. `body_unread` closes the connection
/// afterwards, since unread request bytes would be taken for the next request.
pub async fn respond(
    session: &mut Session,
    err: &GatewayError,
    on_mcp_path: bool,
    id: Value,
    request_id: &str,
    body_unread: bool,
) -> pingora::Result<()> {
    let mut headers = vec![
        ("cache-control", "no-store".to_owned()),
        ("x-request-id", request_id.to_owned()),
    ];
    match err {
        GatewayError::MethodNotAllowed(_) => headers.push(("allow", "POST, GET, DELETE".into())),
        GatewayError::Auth(Refusal {
            www_authenticate: Some(challenge),
            ..
        }) => headers.push(("www-authenticate", challenge.clone())),
        GatewayError::RateLimited {
            retry_after: Some(wait),
            ..
        }
        | GatewayError::UpstreamBusy {
            retry_after: wait, ..
        } => headers.push(("retry-after", retry_after_seconds(*wait).to_string())),
        _ => {}
    }
    write_json(
        session,
        err.status(),
        &headers,
        err.body(on_mcp_path, id, request_id),
        body_unread,
    )
    .await
}

/// `Retry-After` in whole seconds, rounded up: a client that waits that
/// long finds the tokens it needs.
pub fn retry_after_seconds(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// Writes a complete JSON response the gateway produced itself. `close`
/// ends the connection afterwards (unread request bytes would otherwise be
/// taken for the next request).
pub async fn write_json(
    session: &mut Session,
    status: u16,
    headers: &[(&'static str, String)],
    body: Bytes,
    close: bool,
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(status, Some(headers.len() + 2))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    for (name, value) in headers {
        resp.insert_header(*name, value)?;
    }
    if close {
        session.set_keepalive(None);
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if head_only {
        return Ok(());
    }
    session.write_response_body(Some(body), true).await
}
