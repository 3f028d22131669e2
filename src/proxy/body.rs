//! Reading a POST body completely, within limits, before anything is sent
//! upstream.

use super::error::GatewayError;
use bytes::{Bytes, BytesMut};
use http::header;
use pingora::proxy::Session;
use std::time::Duration;

/// Checks the declared framing and media type of a POST, then reads its
/// whole body (at most `limit` bytes, within `deadline`: pingora times each
/// read alone, so a client trickling its body would otherwise hold the
/// request open indefinitely).
pub async fn read_post_body(
    session: &mut Session,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, GatewayError> {
    let req = session.req_header();
    if let Some(enc) = req.headers.get(header::CONTENT_ENCODING) {
        let enc = String::from_utf8_lossy(enc.as_bytes())
            .trim()
            .to_ascii_lowercase();
        if enc != "identity" {
            return Err(GatewayError::UnsupportedEncoding(enc));
        }
    }
    let content_type = req
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    if !is_json_media_type(&content_type) {
        return Err(GatewayError::UnsupportedMediaType(content_type));
    }
    let declared = req
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let mut body = BytesMut::with_capacity(declared.map_or(8 * 1024, |n| n as usize));
    within(deadline, read_all(session, &mut body, limit)).await?;
    Ok(body.freeze())
}

/// Runs a body read that must finish within `deadline` (408 after it,
/// counted in `mcpgw_connections_closed_total{reason="body_timeout"}`).
pub async fn within<T>(
    deadline: Duration,
    read: impl std::future::Future<Output = Result<T, GatewayError>>,
) -> Result<T, GatewayError> {
    tokio::time::timeout(deadline, read).await.map_err(|_| {
        crate::metrics::metrics()
            .connections_closed
            .with_label_values(&["body_timeout"])
            .inc();
        GatewayError::BodyTimeout(deadline)
    })?
}

async fn read_all(
    session: &mut Session,
    body: &mut BytesMut,
    limit: usize,
) -> Result<(), GatewayError> {
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(GatewayError::BodyTooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(GatewayError::BodyRead(e.to_string())),
        }
    }
}

/// `application/json`, with parameters (`; charset=utf-8`) allowed.
fn is_json_media_type(value: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::is_json_media_type;

    #[test]
    fn json_media_type_accepts_parameters_and_case() {
        assert!(is_json_media_type("application/json"));
        assert!(is_json_media_type("Application/JSON; charset=utf-8"));
        assert!(!is_json_media_type(""));
        assert!(!is_json_media_type("text/plain"));
        assert!(!is_json_media_type("application/json-seq"));
    }
}
