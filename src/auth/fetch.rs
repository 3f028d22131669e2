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
    tokio::time::timeout(limit, async {
        let mut resp = request
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP status {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("answer larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("not the expected JSON: {e}"))
    })
    .await
    .map_err(|_| format!("no answer within {limit:?}"))?
}
