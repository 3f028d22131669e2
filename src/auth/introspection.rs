//! RFC 7662 token introspection for opaque tokens.
//!
//! The gateway authenticates to the endpoint with HTTP Basic (client id and
//! secret form-encoded first, RFC 6749 §2.3.1). Any answer other than a 200
//! with a JSON `active` member is a failure of the endpoint, not of the
//! token: the request gets a 503 and nothing is cached.

use super::fetch;
use super::jwt::{scope_set, OneOrMany};
use super::{now_secs, AuthFailure, Principal};
use crate::config::IntrospectionEndpoint;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use std::time::Duration;
use url::form_urlencoded::byte_serialize;

/// What the endpoint said about a token, and for how long it may be reused.
pub(super) enum Outcome {
    Active(Box<Principal>, Duration),
    Inactive(Duration),
}

/// One introspection endpoint.
pub(super) struct Introspector {
    config: IntrospectionEndpoint,
    http: reqwest::Client,
    authorization: String,
}

#[derive(Deserialize)]
struct Response {
    active: bool,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<OneOrMany>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(flatten)]
    profile: super::ProfileClaims,
}

impl Introspector {
    pub(super) fn new(config: IntrospectionEndpoint, http: reqwest::Client) -> Self {
        let id: String = byte_serialize(config.client_id.as_bytes()).collect();
        let secret: String = byte_serialize(config.client_secret.expose().as_bytes()).collect();
        let authorization = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
        Self {
            config,
            http,
            authorization,
        }
    }

    /// Whether `token` may be shown to this endpoint.
    pub(super) fn takes(&self, token: &str) -> bool {
        self.config
            .token_prefix
            .as_deref()
            .is_none_or(|p| token.starts_with(p))
    }

    pub(super) async fn introspect(&self, token: &str) -> Result<Outcome, AuthFailure> {
        let request = self
            .http
            .post(&self.config.url)
            .header("authorization", &self.authorization)
            .form(&[("token", token), ("token_type_hint", "access_token")]);
        let m = crate::metrics::metrics();
        let started = std::time::Instant::now();
        let answer: Result<Response, String> = fetch::json(request, self.config.timeout).await;
        m.introspection_duration
            .observe(started.elapsed().as_secs_f64());
        let outcome = match &answer {
            Ok(r) if r.active => "active",
            Ok(_) => "inactive",
            Err(_) => "error",
        };
        m.introspections.with_label_values(&[outcome]).inc();
        let answer = answer.map_err(|e| {
            AuthFailure::IntrospectionUnavailable(format!("{}: {e}", self.config.url))
        })?;
        self.outcome(answer)
    }

    /// What an answer says of the token: inactive (also when it is not an
    /// access token or has expired), or whom it speaks for and how long
    /// that may be cached.
    fn outcome(&self, r: Response) -> Result<Outcome, AuthFailure> {
        let inactive = Ok(Outcome::Inactive(self.config.inactive_cache_ttl));
        // Some servers call refresh tokens active too: only access tokens
        // open an upstream.
        let not_access = r.token_type.as_deref().is_some_and(|t| {
            !t.eq_ignore_ascii_case("access_token") && !t.eq_ignore_ascii_case("bearer")
        });
        if !r.active || not_access {
            return inactive;
        }
        let now = now_secs();
        if r.exp.is_some_and(|exp| exp <= now) {
            return inactive;
        }
        if r.nbf.is_some_and(|nbf| nbf > now) {
            return Err(AuthFailure::NotYetValid);
        }
        let issuer = match (r.iss, &self.config.issuer) {
            (Some(iss), Some(expected)) if iss != *expected => {
                return Err(AuthFailure::WrongIssuer)
            }
            (Some(iss), _) => iss,
            (None, Some(expected)) => expected.clone(),
            (None, None) => self.config.url.clone(),
        };
        // An empty `sub` would be one identity shared by every such token.
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let Some(subject) = non_empty(&r.sub).or_else(|| non_empty(&r.client_id)) else {
            return Err(AuthFailure::InvalidClaims(
                "the introspection answer has neither a non-empty `sub` nor a `client_id`".into(),
            ));
        };
        let ttl = match r.exp {
            Some(exp) => self.config.cache_ttl.min(Duration::from_secs(exp - now)),
            None => self.config.cache_ttl,
        };
        let (email, groups) = r.profile.into_parts();
        Ok(Outcome::Active(
            Box::new(Principal {
                issuer,
                subject,
                client_id: r.client_id,
                scopes: scope_set(r.scope.as_deref(), None),
                expires_at: r.exp,
                token_id: r.jti,
                audiences: r.aud.map(OneOrMany::into_vec).unwrap_or_default(),
                email,
                groups,
            }),
            ttl,
        ))
    }
}
