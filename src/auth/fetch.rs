//! Bounded HTTP calls to identity providers: a time limit, a size limit on
//! the answer, and no redirects (a metadata or JWKS URL is taken as
//! configured or published, never where a 3xx points).

use reqwest::{Client, RequestBuilder};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Largest JSON document accepted from an IdP.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// The HTTP client shared by every token source.
pub(crate) fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mcp-oauth-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client's TLS backend initialises")
}

/// Sends `request` and reads a JSON answer of at most 1 MiB within
/// `limit`; any other outcome is an error text naming what went wrong.
pub(crate) async fn json<T: DeserializeOwned>(
    request: RequestBuilder,
    limit: Duration,
) -> Result<T, String> {
    json_or_status(request, limit).await.map_err(|e| e.text)
}

/// Why a JSON fetch failed, with the OAuth `error` code of an unsuccessful
/// answer (a refusal to tell apart from an outage).
#[derive(Debug)]
pub(crate) struct FetchError {
    pub text: String,
    /// The OAuth `error` code of an unsuccessful JSON answer, if any.
    pub oauth_error: Option<String>,
}

/// [`json`], keeping the status of an unsuccessful answer.
pub(crate) async fn json_or_status<T: DeserializeOwned>(
    request: RequestBuilder,
    limit: Duration,
) -> Result<T, FetchError> {
    let failed = |text: String| FetchError {
        text,
        oauth_error: None,
    };
    tokio::time::timeout(limit, async {
        let mut resp = request
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| failed(format!("request failed: {e}")))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.bytes().await.unwrap_or_default();
            let oauth_error = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .filter(|e| {
                    e.len() <= 64 && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                });
            return Err(FetchError {
                text: format!(
                    "HTTP status {status}{}",
                    oauth_error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ),
                oauth_error,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| failed(format!("reading the body: {e}")))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(failed(format!(
                    "answer larger than {MAX_DOCUMENT_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| failed(format!("not the expected JSON: {e}")))
    })
    .await
    .map_err(|_| failed(format!("no answer within {limit:?}")))?
}
