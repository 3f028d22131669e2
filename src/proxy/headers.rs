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

/// The hop-by-hop fields present in `headers`, including any the
/// `Connection` header names, each once (`keys` yields each name once):
/// nothing is allocated when none is present.
fn hop_by_hop_present(headers: &http::HeaderMap) -> Vec<HeaderName> {
    let mut present: Vec<HeaderName> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(&name.as_str()))
        .cloned()
        .collect();
    if present.contains(&header::CONNECTION) {
        for name in connection_listed(headers) {
            if headers.contains_key(&name) && !present.contains(&name) {
                present.push(name);
            }
        }
    }
    present
}

// Field names the hot path looks up, as `HeaderName`s: a lookup by `&str`
// parses the name on every call (issue 17's profile).
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
pub const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
pub const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

/// What the upstream's request head carries besides the client's fields.
pub struct Forwarding<'a> {
    pub route: &'a Route,
    pub client_ip: Option<IpAddr>,
    /// `X-Request-Id`: the one the client gets back (never the client's raw
    /// value when it was not usable).
    pub request_id: &'a str,
    pub caller: Option<&'a Principal>,
    /// The upstream's own session id, out of the sealed one the client sent.
    pub session_id: Option<&'a HeaderValue>,
    /// The length of a buffered body the gateway sends itself: its framing
    /// replaces the client's (`Content-Length`, no `Transfer-Encoding`), and
    /// an `Expect: 100-continue` has nothing left to wait for.
    pub body_length: Option<usize>,
    /// `Accept-Encoding: identity`: the answer is filtered, so it must be
    /// readable.
    pub readable: bool,
}

impl Forwarding<'_> {
    /// Whether the client's field `name` is left out of the upstream's head:
    /// a hop-by-hop field (or one `Connection` lists, in `listed`), a client
    /// credential, or a field the gateway sets itself (with the identity
    /// fields' look-alikes with `_` for `-`, which CGI-style servers read
    /// as the same variable).
    fn replaces(&self, name: &HeaderName, listed: &[HeaderName]) -> bool {
        let text = name.as_str();
        let upstream = &self.route.upstream;
        HOP_BY_HOP.contains(&text)
            || CLIENT_CREDENTIALS.contains(&text)
            || listed.contains(name)
            || *name == X_REQUEST_ID
            || (*name == header::HOST && matches!(upstream.target, crate::config::Target::Http(_)))
            || (*name == X_FORWARDED_FOR && self.client_ip.is_some())
            || (*name == MCP_SESSION_ID && self.session_id.is_some())
            || (self.body_length.is_some()
                && [
                    header::CONTENT_LENGTH,
                    header::TRANSFER_ENCODING,
                    header::EXPECT,
                ]
                .contains(name))
            || (*name == header::ACCEPT_ENCODING && self.readable)
            || upstream.headers.iter().any(|(set, _)| set == name)
            || upstream.identity.as_ref().is_some_and(|identity| {
                let dashed = text.contains('_').then(|| text.replace('_', "-"));
                identity
                    .header_names()
                    .any(|owned| owned == name || dashed.as_deref() == Some(owned.as_str()))
            })
    }
}

/// The upstream's request head, built from the client's: the path under the
/// upstream URL, the upstream's `Host`, no hop-by-hop fields, no client
/// credentials, `X-Forwarded-For` appended, `X-Request-Id`, configured
/// headers set, the caller's identity as configured (a fact the token does
/// not carry stays absent), and the signed JWT.
///
/// Built fresh rather than as a rewritten copy: the client's head keeps a
/// second map of each field's original case, which a copy clones and every
/// pingora insert parses the name into again (issue 17's profile). The
/// upstream gets the fields in pingora's canonical case.
pub fn upstream_head(client: &RequestHeader, fwd: &Forwarding) -> pingora::Result<RequestHeader> {
    let route = fwd.route;
    let listed = connection_listed(&client.headers);
    let mut headers = http::HeaderMap::with_capacity(client.headers.len() + 8);
    for (name, value) in &client.headers {
        if !fwd.replaces(name, &listed) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let crate::config::Target::Http(target) = &route.upstream.target {
        headers.insert(header::HOST, field_value("Host", &target.authority)?);
    }
    headers.insert(X_REQUEST_ID, field_value("X-Request-Id", fwd.request_id)?);
    if let Some(ip) = fwd.client_ip {
        let forwarded = match client
            .headers
            .get(X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
        {
            Some(prior) => format!("{prior}, {ip}"),
            None => ip.to_string(),
        };
        headers.insert(X_FORWARDED_FOR, field_value("X-Forwarded-For", forwarded)?);
    }
    for (name, value) in &route.upstream.headers {
        headers.insert(name.clone(), value.clone());
    }
    if let Some(id) = fwd.session_id {
        headers.insert(MCP_SESSION_ID, id.clone());
    }
    if let Some(length) = fwd.body_length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    if fwd.readable {
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    set_caller_identity(&mut headers, route, fwd.caller)?;
    let path = route.upstream_path(client.uri.path(), client.uri.query());
    let uri = path.parse::<http::Uri>().map_err(|e| {
        pingora::Error::because(pingora::ErrorType::InvalidHTTPHeader, "upstream path", e)
    })?;
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = client.method.clone();
    parts.uri = uri;
    // An HTTP/2 client's request goes out as HTTP/1.1; an HTTP/2
    // upstream's session converts it again, as pingora's own loop does.
    parts.version = http::Version::HTTP_11;
    parts.headers = headers;
    Ok(RequestHeader::from(parts))
}

/// The fields a `Connection` header lists (RFC 9110 §7.6.1); nothing is
/// allocated when there is none.
fn connection_listed(headers: &http::HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

/// The caller's identity headers, as the upstream's identity settings ask
/// (whatever the client sent under their names is already left out).
fn set_caller_identity(
    headers: &mut http::HeaderMap,
    route: &Route,
    caller: Option<&Principal>,
) -> pingora::Result<()> {
    let (Some(identity), Some(caller)) = (&route.upstream.identity, caller) else {
        return Ok(());
    };
    for (field, name) in &identity.headers {
        if let Some(text) = field.header_value(caller) {
            headers.insert(name.clone(), field_value("identity header", text)?);
        }
    }
    if let (Some(jwt), Some(assertions)) = (&identity.jwt, &route.assertions) {
        let token = assertions.for_caller(caller).ok_or_else(|| {
            pingora::Error::explain(
                pingora::ErrorType::InternalError,
                "cannot sign the caller's identity",
            )
        })?;
        let text = if jwt.header == header::AUTHORIZATION {
            format!("Bearer {token}")
        } else {
            token.to_string()
        };
        headers.insert(jwt.header.clone(), field_value("identity JWT", text)?);
    }
    Ok(())
}

/// A field value the gateway sets, or the error naming it.
fn field_value<T>(what: &'static str, text: T) -> pingora::Result<HeaderValue>
where
    T: TryInto<HeaderValue, Error = http::header::InvalidHeaderValue>,
{
    text.try_into()
        .map_err(|e| pingora::Error::because(pingora::ErrorType::InvalidHTTPHeader, what, e))
}

/// Fields the gateway decides on that must appear at most once: with two
/// values, the gateway could check one while the upstream reads the other.
static SINGLE_VALUED: [HeaderName; 7] = [
    MCP_SESSION_ID,
    HeaderName::from_static("mcp-protocol-version"),
    MCP_METHOD,
    MCP_NAME,
    header::CONTENT_ENCODING,
    header::CONTENT_TYPE,
    header::ORIGIN,
];

/// Refuses a request repeating a field that must be single-valued.
pub fn refuse_repeated(headers: &http::HeaderMap) -> Result<(), &'static str> {
    match SINGLE_VALUED
        .iter()
        .find(|name| headers.get_all(*name).iter().nth(1).is_some())
    {
        Some(name) => Err(name.as_str()),
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
