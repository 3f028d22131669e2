//! CORS (the Fetch standard's cross-origin protocol) for browser-based MCP
//! clients: a page on another origin may call the MCP paths and the
//! endpoints an OAuth client calls with `fetch`, when its origin is in
//! `allowed_origins`.
//!
//! The decision is made in `pipeline` before anything else (a preflight is
//! answered before authentication, which it cannot carry) and recorded in
//! this request's [`CorsModule`], a pingora downstream module: every
//! response written on the session passes through it, whichever part of
//! the gateway wrote it (upstream relay, error, authorization server), so
//! the rule is applied in one place. It drops any `Access-Control-*`
//! field already on a response (an upstream's own CORS policy never
//! reaches the browser unchecked) and, for an allowed origin, adds ours:
//! that origin (never `*`), no credentials (tokens travel in
//! `Authorization`, not cookies), the MCP headers allowed and exposed.
//! Every response of a path open to scripts carries `Vary: Origin`, so a
//! cache never serves one origin's answer to another.
//!
//! The login, consent and authorize pages are for people (navigations,
//! never `fetch`) and introspection is for resource servers: they get no
//! CORS fields, so no script on another origin can read them.

use super::error::GatewayError;
use super::headers::origin_allowed;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::Method;
use pingora::http::ResponseHeader;
use pingora::modules::http::{HttpModule, HttpModuleBuilder, Module};
use pingora::proxy::Session;
use std::any::Any;
use std::collections::HashSet;

/// The authorization server's documents a web client reads.
const AS_DOCUMENTS: &[&str] = &[
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
    "/jwks.json",
];
/// The authorization server's endpoints a web client posts to.
const AS_ENDPOINTS: &[&str] = &["/register", "/token", "/revoke"];

/// Request fields a browser-based MCP client sends besides those the Fetch
/// standard safelists.
const ALLOWED_HEADERS: &str = "Authorization, Content-Type, Mcp-Session-Id, MCP-Protocol-Version, Mcp-Method, Mcp-Name, Last-Event-ID";
/// Response fields a page must be able to read: the challenge, the session,
/// the request id to quote in a bug report, and when to retry.
const EXPOSED_HEADERS: &str =
    "WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version, X-Request-Id, Retry-After";
/// How long a browser may reuse a preflight's answer (seconds; Chromium
/// caps it at 7200).
const MAX_AGE: &str = "600";

/// What a path is to a script on another origin: the methods it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// An MCP endpoint (Streamable HTTP).
    Mcp,
    /// A metadata document or key set.
    Document,
    /// An OAuth endpoint taking a POST.
    Endpoint,
}

impl Exposure {
    /// How the authorization server's `path` is exposed, if it is.
    pub fn of_authserver_path(path: &str) -> Option<Self> {
        if AS_DOCUMENTS.contains(&path) {
            Some(Self::Document)
        } else if AS_ENDPOINTS.contains(&path) {
            Some(Self::Endpoint)
        } else {
            None
        }
    }

    fn methods(self) -> &'static str {
        match self {
            Self::Mcp => "GET, POST, DELETE",
            Self::Document => "GET, HEAD",
            Self::Endpoint => "POST",
        }
    }
}

/// Whether a request is a CORS preflight the gateway answers itself.
#[derive(Debug, PartialEq, Eq)]
pub enum Sharing {
    /// An ordinary request: serve it (its response is shared as decided).
    Request,
    /// A preflight from an allowed origin: answer it with
    /// [`answer_preflight`].
    Preflight,
}

/// Decides how the response to this request on a path exposed as
/// `exposure` is shared, and records it in the request's [`CorsModule`].
/// A preflight from an origin not in `allowed` is refused (403).
pub fn share(
    session: &mut Session,
    exposure: Exposure,
    allowed: &HashSet<String>,
) -> Result<Sharing, GatewayError> {
    let head = session.req_header();
    let origin = head.headers.get(header::ORIGIN).cloned();
    let preflight = head.method == Method::OPTIONS
        && head
            .headers
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let refused = match origin
        .as_ref()
        .map(|o| origin_allowed(Some(o.as_bytes()), allowed))
    {
        Some(Err(why)) => Some(why),
        Some(Ok(())) => None,
        None => preflight.then(|| "a preflight must carry Origin".to_owned()),
    };
    let granted = match (origin, &refused) {
        (Some(origin), None) => Some(Grant {
            origin,
            preflight: preflight.then_some(exposure),
        }),
        _ => None,
    };
    if let Some(module) = session.downstream_modules_ctx.get_mut::<CorsModule>() {
        module.exposed = true;
        module.granted = granted;
    }
    match refused {
        Some(why) if preflight => Err(GatewayError::OriginRefused(format!(
            "{why}; add it to `allowed_origins` to let its pages call the gateway"
        ))),
        _ if preflight => Ok(Sharing::Preflight),
        _ => Ok(Sharing::Request),
    }
}

/// Answers a granted preflight: `204`, the fields added by [`CorsModule`].
pub async fn answer_preflight(session: &mut Session, request_id: &str) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(204, Some(2))?;
    resp.insert_header("x-request-id", request_id)?;
    if !session.is_body_empty() {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), true).await
}

/// An origin's permission to read this request's response.
#[derive(Debug)]
struct Grant {
    /// The request's `Origin`, echoed back.
    origin: HeaderValue,
    /// For a preflight: the methods to allow.
    preflight: Option<Exposure>,
}

/// The per-request state of the CORS rule, applied to every response head
/// written on the session.
#[derive(Debug, Default)]
pub struct CorsModule {
    /// The path is open to scripts: its responses vary by `Origin`.
    exposed: bool,
    granted: Option<Grant>,
}

impl CorsModule {
    /// The rule applied to `resp`.
    fn apply(&self, resp: &mut ResponseHeader) -> pingora::Result<()> {
        let foreign: Vec<HeaderName> = resp
            .headers
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in foreign {
            resp.remove_header(&name);
        }
        if !self.exposed {
            return Ok(());
        }
        resp.append_header(header::VARY, "Origin")?;
        let Some(grant) = &self.granted else {
            return Ok(());
        };
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, grant.origin.clone())?;
        match grant.preflight {
            Some(exposure) => {
                resp.insert_header(header::ACCESS_CONTROL_ALLOW_METHODS, exposure.methods())?;
                resp.insert_header(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS)?;
                resp.insert_header(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE)?;
                resp.append_header(header::VARY, "Access-Control-Request-Method")?;
                resp.append_header(header::VARY, "Access-Control-Request-Headers")?;
            }
            None => {
                resp.insert_header(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED_HEADERS)?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl HttpModule for CorsModule {
    async fn response_header_filter(
        &mut self,
        resp: &mut ResponseHeader,
        _end_of_stream: bool,
    ) -> pingora::Result<()> {
        self.apply(resp)
    }

    fn response_body_filter(
        &mut self,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
    ) -> pingora::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Gives each request its [`CorsModule`].
pub struct CorsModuleBuilder;

impl HttpModuleBuilder for CorsModuleBuilder {
    fn init(&self) -> Module {
        Box::<CorsModule>::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(preflight: Option<Exposure>) -> CorsModule {
        CorsModule {
            exposed: true,
            granted: Some(Grant {
                origin: HeaderValue::from_static("https://app.example"),
                preflight,
            }),
        }
    }

    fn upstream_response() -> ResponseHeader {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("access-control-allow-origin", "*")
            .unwrap();
        resp.insert_header("access-control-allow-credentials", "true")
            .unwrap();
        resp.insert_header("content-type", "application/json")
            .unwrap();
        resp
    }

    fn field<'a>(resp: &'a ResponseHeader, name: &str) -> Option<&'a str> {
        resp.headers.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn every_authserver_path_exposed_to_scripts_exists() {
        for path in AS_DOCUMENTS.iter().chain(AS_ENDPOINTS) {
            assert!(crate::authserver::PATHS.contains(path), "{path}");
        }
        for page in ["/authorize", "/login", "/consent", "/introspect"] {
            assert_eq!(Exposure::of_authserver_path(page), None, "{page}");
        }
    }

    #[test]
    fn an_upstreams_cors_fields_are_replaced_by_ours() {
        let mut resp = upstream_response();
        granted(None).apply(&mut resp).unwrap();
        assert_eq!(
            field(&resp, "access-control-allow-origin"),
            Some("https://app.example")
        );
        assert_eq!(field(&resp, "access-control-allow-credentials"), None);
        assert_eq!(field(&resp, "vary"), Some("Origin"));
        assert!(field(&resp, "access-control-expose-headers")
            .unwrap()
            .contains("WWW-Authenticate"));
        assert_eq!(field(&resp, "content-type"), Some("application/json"));
    }

    #[test]
    fn a_path_not_open_to_scripts_loses_every_cors_field() {
        let mut resp = upstream_response();
        CorsModule::default().apply(&mut resp).unwrap();
        assert!(resp
            .headers
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")));
        assert_eq!(field(&resp, "vary"), None);
    }

    #[test]
    fn a_preflight_lists_the_methods_of_its_path() {
        for (exposure, methods) in [
            (Exposure::Mcp, "GET, POST, DELETE"),
            (Exposure::Endpoint, "POST"),
        ] {
            let mut resp = ResponseHeader::build(204, None).unwrap();
            granted(Some(exposure)).apply(&mut resp).unwrap();
            assert_eq!(field(&resp, "access-control-allow-methods"), Some(methods));
            assert!(field(&resp, "access-control-allow-headers")
                .unwrap()
                .contains("Mcp-Session-Id"));
            assert_eq!(field(&resp, "access-control-max-age"), Some(MAX_AGE));
        }
    }
}
