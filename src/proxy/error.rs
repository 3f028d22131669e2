//! Every way the proxy refuses or fails a request, and the one place that
//! turns it into an HTTP response.
//!
//! On an upstream's path the body is a JSON-RPC error (MCP clients parse
//! those) carrying the request's `id` when there is one; elsewhere it is a
//! plain `{"error", "error_description"}` object.

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
    /// `Content-Encoding` other than identity.
    #[error("Content-Encoding `{0}` is not accepted; send the body uncompressed")]
    UnsupportedEncoding(String),
    /// POST body that is not declared as JSON.
    #[error("Content-Type must be application/json, got `{0}`")]
    UnsupportedMediaType(String),
    /// GET or DELETE carrying a body.
    #[error("{0} requests must not have a body")]
    UnexpectedBody(String),
    /// The client stopped sending before the body was complete.
    #[error("request body incomplete: {0}")]
    BodyRead(String),
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
            Self::UnsupportedEncoding(_) | Self::UnsupportedMediaType(_) => 415,
            Self::AmbiguousPath(_)
            | Self::UnexpectedBody(_)
            | Self::BodyRead(_)
            | Self::InvalidMessage(_) => 400,
            Self::UpstreamUnavailable { .. } => 502,
            Self::UpstreamTimeout { .. } => 504,
        }
    }

    /// JSON-RPC error code of the body on an MCP path.
    pub fn jsonrpc_code(&self) -> i64 {
        match self {
            Self::InvalidMessage(e) => e.code(),
            Self::UnexpectedBody(_) | Self::BodyRead(_) => codes::INVALID_REQUEST,
            Self::UpstreamUnavailable { .. } => codes::UPSTREAM_UNAVAILABLE,
            Self::UpstreamTimeout { .. } => codes::UPSTREAM_TIMEOUT,
            Self::NotFound
            | Self::AmbiguousPath(_)
            | Self::MethodNotAllowed(_)
            | Self::OriginRefused(_)
            | Self::BodyTooLarge { .. }
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
            Self::UnsupportedEncoding(_) => "unsupported_encoding",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::UnexpectedBody(_) => "unexpected_body",
            Self::BodyRead(_) => "body_incomplete",
            Self::InvalidMessage(_) => "invalid_message",
            Self::UpstreamUnavailable { .. } => "upstream_unavailable",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
        }
    }

    /// The response body: JSON-RPC on an MCP path, plain JSON elsewhere.
    pub fn body(&self, on_mcp_path: bool, id: Value) -> Bytes {
        let value = if on_mcp_path {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": self.jsonrpc_code(), "message": self.to_string()}})
        } else {
            json!({"error": self.kind(), "error_description": self.to_string()})
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
    body_unread: bool,
) -> pingora::Result<()> {
    let body = err.body(on_mcp_path, id);
    let mut resp = ResponseHeader::build(err.status(), Some(4))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    if let GatewayError::MethodNotAllowed(_) = err {
        resp.insert_header("allow", "POST, GET, DELETE")?;
    }
    if body_unread {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}
