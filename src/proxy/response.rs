//! The upstream's answer on its way to the client: one path for both ways a
//! request is forwarded, the POSTs `forward` relays itself and the GET and
//! DELETE streams pingora's loop relays (`response_filter` and
//! `response_body_filter`).
//!
//! Whichever way, the response head loses its hop-by-hop fields and gains
//! `X-Request-Id`, the upstream's latency is observed, an event stream is
//! counted as open while it lives ([`begin`]), and the body is relayed
//! untouched, through the `tools/list` filter event by event, or (a POST's
//! JSON answer to `tools/list`) read whole, filtered and resent
//! ([`post_body`], [`get_stream`]).
//! An upstream failure becomes its error in one place ([`upstream_failure`]).

use super::error::GatewayError;
use super::headers::filter_upstream_response;
use super::route::Route;
use crate::mcp::tools_list::{SseToolsFilter, ToolsListFilter};
use crate::telemetry::OpenStream;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType};
use std::time::Instant;

/// How a POST's response body is relayed.
pub enum BodyMode {
    /// Chunk by chunk as it arrives, through the relay's filter if any.
    Stream(StreamRelay),
    /// Read whole, filtered, and sent with its new length.
    WholeJson(ToolsListFilter),
}

/// Prepares the upstream's response head for the client (hop-by-hop fields
/// out, `X-Request-Id` in) and observes the upstream's latency since
/// `sent`. Returns what counts an event stream as open while it lives.
pub fn begin(
    resp: &mut ResponseHeader,
    route: &Route,
    request_id: &str,
    sent: Instant,
) -> Result<Option<OpenStream>, GatewayError> {
    filter_upstream_response(resp);
    resp.insert_header("x-request-id", request_id)
        .map_err(|e| unavailable(route, e))?;
    crate::metrics::metrics()
        .upstream_duration
        .with_label_values(&[&route.upstream.name])
        .observe(sent.elapsed().as_secs_f64());
    Ok(is_event_stream(resp).then(OpenStream::start))
}

/// How a POST's response is relayed when `filter` has its `tools/list`
/// calls: an event stream is filtered event by event, JSON whole, a 202 or
/// 204 has nothing to filter; any other body (of another type) cannot be
/// read, so it is refused rather than passed on unfiltered. An error
/// response carries no `tools/list` result.
pub fn post_body(
    resp: &mut ResponseHeader,
    route: &Route,
    filter: Option<ToolsListFilter>,
) -> Result<BodyMode, GatewayError> {
    let Some(filter) = filter.filter(|_| resp.status.is_success()) else {
        return Ok(BodyMode::Stream(StreamRelay::default()));
    };
    if is_event_stream(resp) {
        return filtered_stream(resp, route, filter).map(BodyMode::Stream);
    }
    readable(resp, route)?;
    if has_media_type(resp, b"application/json") {
        Ok(BodyMode::WholeJson(filter))
    } else if matches!(resp.status.as_u16(), 202 | 204) {
        Ok(BodyMode::Stream(StreamRelay::default()))
    } else {
        let content_type = resp.headers.get(http::header::CONTENT_TYPE);
        Err(unfilterable(
            route,
            format!(
                "Content-Type `{}` cannot be filtered",
                content_type.map_or("".into(), |t| String::from_utf8_lossy(t.as_bytes()))
            ),
        ))
    }
}

/// How a GET stream is relayed: a successful event stream, which can
/// replay earlier responses (`Last-Event-ID`), through `filter`; any other
/// body cannot carry a `tools/list` result and passes.
pub fn get_stream(
    resp: &mut ResponseHeader,
    route: &Route,
    filter: Option<ToolsListFilter>,
) -> Result<StreamRelay, GatewayError> {
    match filter {
        Some(filter) if resp.status.is_success() && is_event_stream(resp) => {
            filtered_stream(resp, route, filter)
        }
        _ => Ok(StreamRelay::default()),
    }
}

/// An event stream through `filter`: its length changes, so it goes
/// without one.
fn filtered_stream(
    resp: &mut ResponseHeader,
    route: &Route,
    filter: ToolsListFilter,
) -> Result<StreamRelay, GatewayError> {
    readable(resp, route)?;
    resp.remove_header("content-length");
    Ok(StreamRelay {
        filter: Some(filter.into_sse()),
    })
}

/// A body to be filtered must not be compressed.
fn readable(resp: &ResponseHeader, route: &Route) -> Result<(), GatewayError> {
    match resp
        .headers
        .get(http::header::CONTENT_ENCODING)
        .filter(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        Some(encoding) => Err(unfilterable(
            route,
            format!(
                "Content-Encoding `{}`",
                String::from_utf8_lossy(encoding.as_bytes())
            ),
        )),
        None => Ok(()),
    }
}

/// Whether a response is an event stream (media types are case-insensitive,
/// RFC 9110 §8.3.1).
pub fn is_event_stream(resp: &ResponseHeader) -> bool {
    has_media_type(resp, b"text/event-stream")
}

fn has_media_type(resp: &ResponseHeader, media_type: &[u8]) -> bool {
    resp.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.as_bytes().get(..media_type.len()))
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(media_type))
}

/// Relays a body chunk by chunk, through the `tools/list` filter when the
/// response has one.
#[derive(Default)]
pub struct StreamRelay {
    filter: Option<SseToolsFilter>,
}

impl StreamRelay {
    /// Takes the next chunk (`None` when there is none, as at the end) and
    /// returns what to send: the chunk itself, or the events completed so
    /// far, filtered. `end` marks the end of the body.
    pub fn next(&mut self, chunk: Option<Bytes>, end: bool) -> Result<Option<Bytes>, String> {
        let Some(filter) = self.filter.as_mut() else {
            return Ok(chunk);
        };
        let out = match chunk {
            Some(chunk) => Some(Bytes::from(filter.push(&chunk)?)),
            None => None,
        };
        if end {
            if let Some(filter) = self.filter.take() {
                filter.finish();
            }
        }
        Ok(out)
    }
}

/// The error of a failed exchange with the upstream: a timeout is a 504,
/// anything else a 502.
pub fn upstream_failure(route: &Route, e: &Error) -> GatewayError {
    if matches!(
        e.etype(),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    ) {
        GatewayError::UpstreamTimeout {
            upstream: route.upstream.name.clone(),
            detail: e.to_string(),
        }
    } else {
        unavailable(route, e)
    }
}

/// The upstream's answer cannot go through the `tools/list` filter (502).
pub fn unfilterable(route: &Route, detail: String) -> GatewayError {
    GatewayError::UnfilterableResponse {
        upstream: route.upstream.name.clone(),
        detail,
    }
}

/// The upstream could not be reached or answered nothing usable (502).
pub fn unavailable(route: &Route, detail: impl std::fmt::Display) -> GatewayError {
    GatewayError::UpstreamUnavailable {
        upstream: route.upstream.name.clone(),
        detail: detail.to_string(),
    }
}
