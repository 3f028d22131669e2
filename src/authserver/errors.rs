//! OAuth error responses (RFC 6749 §5.2, RFC 7591 §3.2.2), and the strict
//! form parsing every endpoint shares: a parameter sent twice is an error
//! (RFC 6749 §3.1), not a guess.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::collections::HashMap;

/// An OAuth error, answered as JSON with `Cache-Control: no-store`.
#[derive(Debug)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    /// Sent as `Retry-After` (whole seconds, at least 1).
    pub retry_after: Option<std::time::Duration>,
}

impl OAuthError {
    pub fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            retry_after: None,
        }
    }

    /// Tells the client when to try again.
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }
    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", d)
    }
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", d)
    }
    pub fn invalid_scope(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", d)
    }
    pub fn invalid_target(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_target", d)
    }
    pub fn server_error(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "authorization server error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error; see the gateway log",
        )
    }
}

/// How long a client is told to wait when the store cannot answer.
const STORE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// The store failed (a database that is down, a pool exhausted, a timeout):
/// `503 temporarily_unavailable` with `Retry-After` (RFC 6749 §4.1.2.1's
/// code, used at every endpoint), the cause in the log. Nothing was
/// changed that the client must redo differently: it retries the request.
impl From<crate::store::StoreError> for OAuthError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "authorization server store failed");
        crate::metrics::metrics()
            .authserver_events
            .with_label_values(&["store_unavailable"])
            .inc();
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the authorization server's store is unavailable; retry later",
        )
        .retry_after(STORE_RETRY_AFTER)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        tracing::info!(error = self.error, description = %self.description, "OAuth request refused");
        let mut resp = (
            self.status,
            Json(json!({"error": self.error, "error_description": self.description})),
        )
            .into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(wait) = self.retry_after {
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"token\""),
            );
        }
        resp
    }
}

/// Largest form body any endpoint reads.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// Parses `application/x-www-form-urlencoded` text, refusing repeated
/// parameters and oversized bodies.
pub fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    if body.len() > MAX_FORM_BYTES {
        return Err(OAuthError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "request body too large",
        ));
    }
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if out.insert(k.clone().into_owned(), v.into_owned()).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "parameter `{k}` is repeated"
            )));
        }
    }
    Ok(out)
}

/// A required parameter.
pub fn required<'a>(form: &'a HashMap<String, String>, name: &str) -> Result<&'a str, OAuthError> {
    form.get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OAuthError::invalid_request(format!("`{name}` is required")))
}
