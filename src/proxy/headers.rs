//! Header rules between client and upstream (RFC 9110 §7.6.1 hop-by-hop
//! fields, credentials, the MCP transport's `Origin` check).
//!
//! MCP's own headers (`Mcp-Session-Id`, `MCP-Protocol-Version`,
//! `Last-Event-ID`, `Mcp-Method`, `Mcp-Name`) are end-to-end and pass through
//! both ways untouched.

use super::error::GatewayError;
use super::route::Route;
use crate::auth::Principal;
use http::header::{self, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use std::collections::HashSet;
use std::net::IpAddr;

/// Hop-by-hop fields never forwarded in either direction. `Transfer-Encoding`
/// is not listed: pingora decodes and re-frames bodies itself.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Client credentials for the gateway, never passed to the upstream: the
/// upstream must not be able to replay a user's token or session cookie.
const CLIENT_CREDENTIALS: &[&str] = &["authorization", "proxy-authorization", "cookie"];

/// The fields of `headers` that are in `names` or that a `Connection`
/// header names (when `names` has `Connection`), each once (`keys` yields
/// each name once). One pass over
/// the message's fields, and nothing allocated when none is present: this
/// runs three times per proxied call (issue 17's profile).
fn present_of(headers: &http::HeaderMap, names: &[&str]) -> Vec<HeaderName> {
    let mut present: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if names.contains(&name.as_str()) {
            present.push(name.clone());
        }
    }
    if !present.contains(&header::CONNECTION) {
        return present;
    }
    let listed = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok());
    for name in listed {
        if headers.contains_key(&name) && !present.contains(&name) {
            present.push(name);
        }
    }
    present
}

/// The hop-by-hop fields present in `headers`, including any the
/// `Connection` header names.
fn hop_by_hop_present(headers: &http::HeaderMap) -> Vec<HeaderName> {
    present_of(headers, HOP_BY_HOP)
}

/// Rewrites a copy of the client's request head into the upstream's: the
/// path under the upstream URL, the upstream's `Host`, no hop-by-hop fields,
/// no client credentials, `X-Forwarded-For` appended, `X-Request-Id` the one
/// the client gets back (never the client's raw value when it was not
/// usable), configured headers set, the caller's identity as configured.
pub fn rewrite_for_upstream(
    req: &mut RequestHeader,
    route: &Route,
    client_ip: Option<IpAddr>,
    request_id: &str,
    caller: Option<&Principal>,
    session_id: Option<&HeaderValue>,
) -> pingora::Result<()> {
    for name in hop_by_hop_present(&req.headers) {
        req.remove_header(&name);
    }
    for name in present_of(&req.headers, CLIENT_CREDENTIALS) {
        req.remove_header(&name);
    }
    let path = route.upstream_path(req.uri.path(), req.uri.query());
    let uri = path.parse::<http::Uri>().map_err(|e| {
        pingora::Error::because(pingora::ErrorType::InvalidHTTPHeader, "upstream path", e)
    })?;
    req.set_uri(uri);
    if let crate::config::Target::Http(target) = &route.upstream.target {
        req.insert_header(header::HOST, &target.authority)?;
    }
    req.insert_header("x-request-id", request_id)?;
    if let Some(ip) = client_ip {
        let forwarded = match req
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prior) => format!("{prior}, {ip}"),
            None => ip.to_string(),
        };
        req.insert_header("x-forwarded-for", forwarded)?;
    }
    for (name, value) in &route.upstream.headers {
        req.insert_header(name.clone(), value.clone())?;
    }
    // The upstream's own session id, out of the sealed one the client sent.
    if let Some(id) = session_id {
        req.insert_header("mcp-session-id", id.clone())?;
    }
    set_caller_identity(req, route, caller)
}

/// The upstream's identity headers: whatever the client sent under their
/// names is removed (and under look-alikes with `_` for `-`, which
/// CGI-style servers read as the same variable), then each fact the
/// gateway verified is set (a fact the token does not carry stays absent),
/// and the signed JWT.
fn set_caller_identity(
    req: &mut RequestHeader,
    route: &Route,
    caller: Option<&Principal>,
) -> pingora::Result<()> {
    let Some(identity) = &route.upstream.identity else {
        return Ok(());
    };
    let owned: HashSet<&str> = identity.header_names().map(HeaderName::as_str).collect();
    let look_alikes: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|n| {
            n.as_str().contains('_') && owned.contains(n.as_str().replace('_', "-").as_str())
        })
        .cloned()
        .collect();
    for name in identity.header_names().chain(&look_alikes) {
        req.remove_header(name);
    }
    let Some(caller) = caller else { return Ok(()) };
    for (field, name) in &identity.headers {
        if let Some(value) = field.header_value(caller) {
            req.insert_header(name.clone(), value)?;
        }
    }
    if let (Some(jwt), Some(assertions)) = (&identity.jwt, &route.assertions) {
        let token = assertions.for_caller(caller).ok_or_else(|| {
            pingora::Error::explain(
                pingora::ErrorType::InternalError,
                "cannot sign the caller's identity",
            )
        })?;
        if jwt.header == header::AUTHORIZATION {
            req.insert_header(header::AUTHORIZATION, format!("Bearer {token}"))?;
        } else {
            req.insert_header(jwt.header.clone(), &*token)?;
        }
    }
    Ok(())
}

/// Sets the framing of a buffered body the gateway forwards itself. The body
/// is complete, so an `Expect: 100-continue` has nothing left to wait for.
pub fn set_fixed_length(req: &mut RequestHeader, len: usize) -> pingora::Result<()> {
    req.remove_header(&header::TRANSFER_ENCODING);
    req.remove_header(&header::EXPECT);
    req.insert_header(header::CONTENT_LENGTH, len.to_string())
}

/// Fields the gateway decides on that must appear at most once: with two
/// values, the gateway could check one while the upstream reads the other.
const SINGLE_VALUED: &[&str] = &[
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "content-encoding",
    "content-type",
    "origin",
];

/// Refuses a request repeating a field that must be single-valued.
pub fn refuse_repeated(headers: &http::HeaderMap) -> Result<(), &'static str> {
    match SINGLE_VALUED
        .iter()
        .find(|name| headers.get_all(**name).iter().nth(1).is_some())
    {
        Some(name) => Err(name),
        None => Ok(()),
    }
}

/// Removes hop-by-hop fields from an upstream response before it reaches the
/// client.
pub fn filter_upstream_response(resp: &mut ResponseHeader) {
    for name in hop_by_hop_present(&resp.headers) {
        resp.remove_header(&name);
    }
}

/// The `Origin` rule of the MCP Streamable HTTP transport (DNS-rebinding
/// defence): requests without `Origin` (non-browser clients) pass; requests
/// with one pass only if it is allowed. `null` and malformed origins fail.
pub fn origin_allowed(origin: Option<&[u8]>, allowed: &HashSet<String>) -> Result<(), String> {
    let Some(raw) = origin else { return Ok(()) };
    let text = std::str::from_utf8(raw).map_err(|_| "Origin is not valid UTF-8".to_owned())?;
    match crate::config::normalise_origin(text) {
        Ok(o) if allowed.contains(&o) => Ok(()),
        _ => Err(format!("Origin `{}` is not allowed", text.escape_default())),
    }
}

/// Refuses a request head over `limit` bytes (request line and every
/// field, counted as sent: `name: value` plus line ends), before anything
/// is forwarded.
pub fn check_head_size(req: &RequestHeader, limit: usize) -> Result<(), GatewayError> {
    let line = req.method.as_str().len() + req.raw_path().len() + 12;
    let fields: usize = req
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if line + fields > limit {
        return Err(GatewayError::HeadTooLarge { limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> HashSet<String> {
        ["https://app.example.com".to_owned()].into()
    }

    #[test]
    fn missing_origin_passes_and_allowed_origin_passes_in_any_case() {
        assert!(origin_allowed(None, &allowed()).is_ok());
        assert!(origin_allowed(Some(b"HTTPS://APP.example.com:443"), &allowed()).is_ok());
    }

    #[test]
    fn other_null_and_garbage_origins_are_refused() {
        for o in [
            &b"https://evil.example"[..],
            b"null",
            b"https://app.example.com.evil",
            b"\xff",
            b"http://app.example.com",
        ] {
            assert!(origin_allowed(Some(o), &allowed()).is_err(), "{o:?}");
        }
    }

    #[test]
    fn response_loses_hop_by_hop_fields_and_keeps_mcp_headers() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for (n, v) in [
            ("connection", "close, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "h2c"),
            ("mcp-session-id", "abc"),
            ("content-type", "text/event-stream"),
        ] {
            resp.append_header(n, v).unwrap();
        }
        filter_upstream_response(&mut resp);
        let mut names: Vec<_> = resp.headers.keys().map(|k| k.as_str().to_owned()).collect();
        names.sort();
        assert_eq!(names, vec!["content-type", "mcp-session-id"]);
    }
}
