//! The resource server's half of OAuth: turning a bearer token into a
//! [`Principal`], deciding whether it may make a request, and telling a
//! client how to get a better token when it may not.
//!
//! Token sources are tried in a fixed order (see [`Authenticator`]); every
//! verdict is cached under the SHA-256 of the token, so a token seen before
//! costs a hash and a map lookup, and concurrent first uses of one token make
//! one verification (one introspection call) between them. Nothing here
//! issues tokens: the built-in authorization server is, to this module, one
//! more JWT issuer.

mod cache;
pub mod challenge;
pub(crate) mod fetch;
mod introspection;
pub(crate) mod jwks;
mod jwt;
pub mod local;
pub mod prm;
pub mod sessions;

pub use cache::TokenCache;
pub use challenge::Refusal;
pub use jwks::{KeyRefresher, RefreshTasks};
pub use local::{LocalKeys, RevokedTokens};

use crate::config::{AuthConfig, Upstream};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Who a verified token speaks for, and what it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's issuer (`iss`).
    pub issuer: String,
    /// The user or client it was issued for (`sub`).
    pub subject: String,
    /// The OAuth client that holds it (`client_id`, or `azp`).
    pub client_id: Option<String>,
    /// Granted scopes.
    pub scopes: BTreeSet<String>,
    /// Expiry, seconds since the epoch.
    pub expires_at: Option<u64>,
    /// Token id (`jti`).
    pub token_id: Option<String>,
    /// Audiences (`aud`).
    pub audiences: Vec<String>,
    /// `email`, when the token (or introspection answer) has a string one.
    pub email: Option<String>,
    /// `groups`, the strings of a string or list claim; empty when absent.
    pub groups: Vec<String>,
}

impl Principal {
    /// Whether the token was issued for `upstream` (RFC 8707): its resource
    /// URL, or one of its configured extra audiences.
    pub fn is_for(&self, upstream: &Upstream) -> bool {
        self.audiences
            .iter()
            .any(|a| *a == upstream.resource || upstream.extra_audiences.contains(a))
    }
}

/// The optional profile claims of a token (`email`, `groups`), read
/// leniently: a claim of an unexpected type is ignored, never a reason to
/// refuse a token that is otherwise valid.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct ProfileClaims {
    #[serde(default)]
    email: Option<serde_json::Value>,
    #[serde(default)]
    groups: Option<serde_json::Value>,
}

impl ProfileClaims {
    /// `(email, groups)`.
    pub(crate) fn into_parts(self) -> (Option<String>, Vec<String>) {
        use serde_json::Value;
        let email = match self.email {
            Some(Value::String(e)) if !e.is_empty() => Some(e),
            _ => None,
        };
        let groups = match self.groups {
            Some(Value::String(g)) => vec![g],
            Some(Value::Array(items)) => items
                .into_iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        (email, groups)
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the epoch (0 before it).
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why a token was not accepted. `reason()` is the fixed label used in logs
/// (and metrics).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// No `Authorization` header.
    #[error("no bearer token")]
    MissingToken,
    /// An `Authorization` header that is not a well-formed bearer token.
    #[error("malformed Authorization header: {0}")]
    Malformed(String),
    /// A token in the query string (never accepted, MCP spec).
    #[error("access tokens are not accepted in the query string; send an Authorization header")]
    TokenInQuery,
    /// Not a token any source could read.
    #[error("the token could not be read: {0}")]
    Unreadable(String),
    /// The signature does not verify.
    #[error("the token signature is invalid")]
    BadSignature,
    /// `alg` is `none` or not accepted for the issuer.
    #[error("algorithm `{0}` is not accepted")]
    DisallowedAlgorithm(String),
    /// The JWS header names critical extensions (`crit`, RFC 7515
    /// §4.1.11), none of which the gateway implements, or is malformed.
    #[error("the token's header is not acceptable: {0}")]
    UnsupportedHeader(String),
    /// `typ` says the JWT is not an access token (RFC 8725 §3.11).
    #[error("a `{0}` token is not an access token")]
    WrongTokenType(String),
    /// `kid` not in the issuer's JWKS (even after a refresh).
    #[error("the token was signed with an unknown key")]
    UnknownKey,
    /// Past `exp`.
    #[error("the token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iss` is not a configured issuer.
    #[error("the token's issuer is not trusted here")]
    WrongIssuer,
    /// `aud` does not name this upstream.
    #[error("the token was not issued for this resource")]
    WrongAudience,
    /// Required claims are missing or mistyped.
    #[error("the token's claims are invalid: {0}")]
    InvalidClaims(String),
    /// The built-in authorization server revoked it.
    #[error("the token has been revoked")]
    Revoked,
    /// The built-in issuer's revocations could not be read for longer
    /// than `store.max_staleness` (its store is unreachable): its tokens
    /// are refused until they can.
    #[error("the revocation list is out of date: the authorization server's store is unreachable")]
    RevocationsStale,
    /// The introspection endpoint says `active: false`.
    #[error("the token is not active")]
    Inactive,
    /// The issuer's keys could not be fetched.
    #[error("the issuer's signing keys are unavailable: {0}")]
    JwksUnavailable(String),
    /// The introspection endpoint failed.
    #[error("token introspection is unavailable: {0}")]
    IntrospectionUnavailable(String),
}

impl AuthFailure {
    /// A fixed, bounded label for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Malformed(_) => "malformed",
            Self::TokenInQuery => "token_in_query",
            Self::Unreadable(_) => "unreadable",
            Self::BadSignature => "bad_signature",
            Self::DisallowedAlgorithm(_) => "disallowed_algorithm",
            Self::UnsupportedHeader(_) => "unsupported_header",
            Self::WrongTokenType(_) => "wrong_token_type",
            Self::UnknownKey => "unknown_key",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::InvalidClaims(_) => "invalid_claims",
            Self::Inactive => "inactive",
            Self::Revoked => "revoked",
            Self::RevocationsStale => "revocations_stale",
            Self::JwksUnavailable(_) => "jwks_unavailable",
            Self::IntrospectionUnavailable(_) => "introspection_unavailable",
        }
    }

    /// Whether the failure is the gateway's (or its IdP's), not the token's:
    /// answered with 503 and never cached.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::JwksUnavailable(_) | Self::IntrospectionUnavailable(_) | Self::RevocationsStale
        )
    }

    /// How long this verdict about a token may be reused, if at all. Key and
    /// availability problems can heal at any moment; `nbf` passes.
    fn cache_for(&self) -> Option<Duration> {
        match self {
            Self::BadSignature
            | Self::DisallowedAlgorithm(_)
            | Self::Expired
            | Self::WrongIssuer
            | Self::InvalidClaims(_)
            | Self::UnsupportedHeader(_)
            | Self::WrongTokenType(_)
            | Self::Unreadable(_) => Some(Duration::from_secs(60)),
            _ => None,
        }
    }
}

/// Longest bearer token accepted; real access tokens are a few KiB at most.
pub const MAX_TOKEN_BYTES: usize = 8192;

/// The bytes of RFC 6750's `b64token` (RFC 7235 `token68`) before its
/// `=` padding, as a table: the check runs on every call over the whole
/// token (a JWT is several hundred bytes), one lookup per byte.
const TOKEN68: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    table
};

/// Reads the bearer token of a request: exactly one `Authorization: Bearer
/// <token68>` header (RFC 6750 §2.1), and no `access_token` in the query.
pub fn bearer_token<'a>(
    authorization: &[&'a [u8]],
    query: Option<&str>,
) -> Result<&'a str, AuthFailure> {
    let in_query = query.is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "access_token")
    });
    if in_query {
        return Err(AuthFailure::TokenInQuery);
    }
    let value = match authorization {
        [] => return Err(AuthFailure::MissingToken),
        [one] => *one,
        _ => {
            return Err(AuthFailure::Malformed(
                "more than one Authorization header".into(),
            ))
        }
    };
    let text =
        std::str::from_utf8(value).map_err(|_| AuthFailure::Malformed("not ASCII".into()))?;
    let (scheme, token) = text
        .split_once(' ')
        .ok_or_else(|| AuthFailure::Malformed("expected `Bearer <token>`".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme (Basic, ...) carries no bearer token: answered with
        // a plain challenge, so the client can discover how to get one.
        return Err(AuthFailure::MissingToken);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthFailure::Unreadable(format!(
            "longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    let body = token.trim_end_matches('=');
    if body.is_empty() || !body.bytes().all(|b| TOKEN68[usize::from(b)]) {
        return Err(AuthFailure::Malformed(
            "the token is empty or has characters a bearer token cannot have".into(),
        ));
    }
    Ok(token)
}

/// Verifies bearer tokens against the configured sources, in this order:
///
/// 1. a JWT (three base64url parts) whose unverified `iss` is a configured
///    JWT issuer is verified locally against that issuer's keys, and the
///    verdict is final;
/// 2. any other token goes to the introspection endpoints whose
///    `token_prefix` it has (all of them when none is set), in configuration
///    order; the first that calls it active wins; it is inactive if all
///    that answered say so, and unavailable (503) if one of them failed;
/// 3. with no introspection endpoint, such a token is refused
///    (`wrong_issuer`, or `unreadable` when it is not a JWT).
pub struct Authenticator {
    issuers: HashMap<String, Arc<jwt::IssuerVerifier>>,
    introspectors: Vec<introspection::Introspector>,
    cache: TokenCache,
    /// The built-in issuer and its revocations.
    revoked: Option<(String, Arc<RevokedTokens>)>,
}

/// The built-in authorization server, as a token source: its issuer, the
/// keys it signs with and the tokens it has revoked, all read in process.
pub struct BuiltinIssuer {
    /// Its `iss`.
    pub issuer: String,
    /// Its public keys.
    pub keys: Arc<LocalKeys>,
    /// Its revocations.
    pub revoked: Arc<RevokedTokens>,
}

impl Authenticator {
    /// Builds the sources of `config`. Nothing is fetched yet: the keys are
    /// loaded by the [`KeyRefresher`] and on first use.
    pub fn new(config: &AuthConfig, builtin: Option<BuiltinIssuer>) -> Self {
        let http = fetch::client();
        let mut issuers: HashMap<String, Arc<jwt::IssuerVerifier>> = config
            .jwt_issuers
            .iter()
            .map(|i| {
                (
                    i.issuer.clone(),
                    Arc::new(jwt::IssuerVerifier::new(i.clone(), http.clone())),
                )
            })
            .collect();
        let revoked = builtin
            .as_ref()
            .map(|b| (b.issuer.clone(), b.revoked.clone()));
        if let Some(b) = builtin {
            issuers.insert(
                b.issuer.clone(),
                Arc::new(jwt::IssuerVerifier::builtin(b.issuer, b.keys)),
            );
        }
        let introspectors = config
            .introspection
            .iter()
            .map(|e| introspection::Introspector::new(e.clone(), http.clone()))
            .collect();
        Self {
            issuers,
            introspectors,
            cache: TokenCache::new(config.token_cache_entries),
            revoked,
        }
    }

    /// The job that keeps every issuer's keys fresh.
    pub fn key_refresher(&self) -> KeyRefresher {
        KeyRefresher::new(self.issuers.values().filter_map(|i| i.keys()).collect())
    }

    /// The principal `token` speaks for.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Principal>, AuthFailure> {
        let principal = self
            .cache
            .get_or_verify(token, || self.verify_uncached(token))
            .await?;
        // Checked on every use, cached or not: a revocation counts at once.
        if let Some((builtin, revoked)) = &self.revoked {
            if principal
                .token_id
                .as_deref()
                .is_some_and(|jti| revoked.contains(jti))
            {
                return Err(AuthFailure::Revoked);
            }
            // Fail closed: a copy too old to know this token's revocation.
            if principal.issuer == *builtin && revoked.is_stale() {
                return Err(AuthFailure::RevocationsStale);
            }
        }
        Ok(principal)
    }

    async fn verify_uncached(&self, token: &str) -> cache::Verdict {
        let claimed_issuer = jwt::unverified_issuer(token);
        if let Some(verifier) = claimed_issuer.as_deref().and_then(|i| self.issuers.get(i)) {
            return cache::Verdict::from_jwt(verifier.verify(token).await);
        }
        if self.introspectors.is_empty() {
            return cache::Verdict::from_jwt(Err(match claimed_issuer {
                Some(_) => AuthFailure::WrongIssuer,
                None => AuthFailure::Unreadable("not a JWT from a configured issuer".into()),
            }));
        }
        let mut inactive_for = None;
        let mut unavailable = None;
        for endpoint in self.introspectors.iter().filter(|e| e.takes(token)) {
            match endpoint.introspect(token).await {
                Ok(introspection::Outcome::Active(p, ttl)) => {
                    return cache::Verdict::valid(*p, ttl)
                }
                Ok(introspection::Outcome::Inactive(ttl)) => inactive_for = Some(ttl),
                Err(e) if e.is_unavailable() => unavailable = Some(e),
                Err(e) => return cache::Verdict::failed(e),
            }
        }
        // One endpoint down: the token may be its, so fail closed (503).
        match (unavailable, inactive_for) {
            (Some(e), _) => cache::Verdict::failed(e),
            (None, Some(ttl)) => cache::Verdict::inactive(ttl),
            (None, None) => cache::Verdict::failed(AuthFailure::Unreadable(
                "no introspection endpoint takes tokens of this form".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_of(header: &[u8]) -> Result<&str, AuthFailure> {
        bearer_token(&[header], None)
    }

    /// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~"
    /// / "+" / "/" ) *"="`, every such byte accepted and no other.
    #[test]
    fn bearer_tokens_are_b64token_exactly() {
        let all = "AZaz09-._~+/==";
        assert_eq!(token_of(format!("Bearer {all}").as_bytes()).ok(), Some(all));
        for b in 0..=255u8 {
            let grammar = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
            let header = [b"Bearer ab".as_slice(), &[b], b"cd"].concat();
            assert_eq!(token_of(&header).is_ok(), grammar, "byte {b:#04x}");
        }
        for bad in [
            b"Bearer ".as_slice(),
            b"Bearer ===",
            b"Bearer a=b",
            b"Bearer \xc3\xa9t\xc3\xa9",
        ] {
            assert!(
                matches!(token_of(bad), Err(AuthFailure::Malformed(_))),
                "{bad:?}"
            );
        }
    }
}
