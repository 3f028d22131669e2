//! Caller identity for upstreams as configured: which verified facts an
//! upstream gets as headers, and whether it gets a gateway-signed JWT
//! (see `crate::identity`).

use super::raw::{RawForwardIdentity, RawUpstream};
use super::validate::RESERVED_UPSTREAM_HEADERS;
use super::ConfigError;
use crate::identity::IdentityField;
use http::HeaderName;
use std::collections::HashSet;
use std::time::Duration;

/// What one upstream is told about its caller.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardIdentity {
    /// Each fact under its header name; a client's own copies of these
    /// headers are always removed.
    pub headers: Vec<(IdentityField, HeaderName)>,
    /// The gateway-signed JWT, when configured.
    pub jwt: Option<IdentityJwt>,
}

impl ForwardIdentity {
    /// Every header name the gateway owns on this upstream's requests.
    pub fn header_names(&self) -> impl Iterator<Item = &HeaderName> {
        self.headers
            .iter()
            .map(|(_, name)| name)
            .chain(self.jwt.as_ref().map(|j| &j.header))
    }
}

/// The gateway-signed identity JWT of one upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityJwt {
    /// The header carrying it (`Authorization` gets `Bearer <jwt>`).
    pub header: HeaderName,
    /// Its `aud`: the upstream's URL unless configured.
    pub audience: String,
    /// Its lifetime.
    pub ttl: Duration,
}

/// Credentials a client could forge and the gateway never sets as a fact.
const NEVER_IDENTITY: &[&str] = &[
    "cookie",
    "proxy-authorization",
    "x-forwarded-for",
    "x-request-id",
];

/// The identity settings of the upstream at `at`.
pub(super) fn validate_forward_identity(
    up: &RawUpstream,
    at: &str,
    auth_disabled: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<ForwardIdentity> {
    let raw: &RawForwardIdentity = up.forward_identity.as_ref()?;
    let at = format!("{at}.forward_identity");
    if auth_disabled {
        errors.push(ConfigError::new(
            &at,
            "authentication is disabled, so there is no verified caller to forward",
            "enable `auth`",
        ));
    }
    let configured: HashSet<String> = up.headers.keys().map(|k| k.to_ascii_lowercase()).collect();
    let mut seen = HashSet::new();
    let mut check = |path: String, text: &str, may_be_authorization: bool| {
        let name = match HeaderName::try_from(text) {
            Ok(n) => n,
            Err(_) => {
                errors.push(ConfigError::new(
                    &path,
                    format!("`{text}` is not a header name"),
                    "use letters, digits and `-`, e.g. `x-auth-subject`",
                ));
                return None;
            }
        };
        let n = name.as_str();
        let problem = if RESERVED_UPSTREAM_HEADERS.contains(&n) || NEVER_IDENTITY.contains(&n) {
            Some(format!(
                "`{n}` is a header the gateway or the transport owns"
            ))
        } else if n == "authorization" && !may_be_authorization {
            Some("only the identity JWT may go in `authorization`".to_owned())
        } else if configured.contains(n) {
            Some(format!("`{n}` is also one of this upstream's `headers`"))
        } else if !seen.insert(name.clone()) {
            Some(format!("`{n}` carries another identity field already"))
        } else {
            None
        };
        match problem {
            Some(message) => {
                errors.push(ConfigError::new(
                    &path,
                    message,
                    "pick a header of its own, e.g. `x-auth-subject`",
                ));
                None
            }
            None => Some(name),
        }
    };
    let mut headers = Vec::new();
    for (field, text) in &raw.headers {
        let path = format!("{at}.headers.{}", field_key(*field));
        if let Some(name) = check(path, text, false) {
            headers.push((*field, name));
        }
    }
    let jwt_header = raw
        .jwt
        .as_ref()
        .map(|j| check(format!("{at}.jwt.header"), &j.header, true));
    let jwt = raw
        .jwt
        .as_ref()
        .zip(jwt_header.flatten())
        .map(|(j, header)| {
            let ttl = j.ttl.0;
            if !(Duration::from_secs(2)..=Duration::from_secs(3600)).contains(&ttl) {
                errors.push(ConfigError::new(
                    &format!("{at}.jwt.ttl"),
                    format!("{ttl:?} is out of range"),
                    "use `2s` to `1h`; short is the point (default `60s`)",
                ));
            }
            let audience = j
                .audience
                .clone()
                .unwrap_or_else(|| up.url.clone().unwrap_or_default());
            if audience.trim().is_empty() {
                errors.push(ConfigError::new(
                    &format!("{at}.jwt.audience"),
                    "empty audience",
                    "leave it out to use the upstream's URL",
                ));
            }
            IdentityJwt {
                header,
                audience,
                ttl,
            }
        });
    Some(ForwardIdentity { headers, jwt })
}

/// The YAML key of a field.
fn field_key(field: IdentityField) -> &'static str {
    match field {
        IdentityField::Subject => "subject",
        IdentityField::Issuer => "issuer",
        IdentityField::ClientId => "client_id",
        IdentityField::Scopes => "scopes",
        IdentityField::Email => "email",
        IdentityField::Groups => "groups",
    }
}
