//! How a refused request is answered: status, `WWW-Authenticate` (RFC 6750
//! §3, RFC 9728 §5.1) and a JSON body with `error` and
//! `error_description`. [`www_authenticate`] is the one builder of the
//! header.

use super::AuthFailure;
use crate::policy::{PolicyDenial, ScopePolicy};
use std::collections::BTreeSet;

/// A refusal by the auth layer, ready to be written by the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status (400, 401, 403 or 503).
    pub status: u16,
    /// Fixed label for logs and metrics.
    pub reason: &'static str,
    /// OAuth error code of the body.
    pub error: &'static str,
    /// Human-readable explanation.
    pub description: String,
    /// The challenge header, when the status calls for one.
    pub www_authenticate: Option<String>,
}

/// Builds a `Bearer` challenge. `error_description` is reduced to the
/// characters RFC 6750 §3 allows in it.
pub fn www_authenticate(
    resource_metadata: &str,
    scope: &[String],
    error: Option<(&str, &str)>,
) -> String {
    let mut params = Vec::new();
    if let Some((code, description)) = error {
        params.push(format!("error=\"{code}\""));
        let clean: String = description
            .chars()
            .map(|c| match c {
                ' '..='~' if c != '"' && c != '\\' => c,
                _ => '\'',
            })
            .collect();
        params.push(format!("error_description=\"{clean}\""));
    }
    if !scope.is_empty() {
        params.push(format!("scope=\"{}\"", scope.join(" ")));
    }
    params.push(format!("resource_metadata=\"{resource_metadata}\""));
    format!("Bearer {}", params.join(", "))
}

impl Refusal {
    /// The answer to a token that was missing or not accepted.
    pub fn for_failure(
        failure: &AuthFailure,
        resource_metadata: &str,
        base_scopes: &[String],
    ) -> Self {
        // Why a dependency failed is for the operator's log, not the client.
        let description = if failure.is_unavailable() {
            "the gateway cannot check tokens right now (its identity provider is unreachable); retry shortly".to_owned()
        } else {
            failure.to_string()
        };
        let (status, error, challenge) = match failure {
            AuthFailure::MissingToken => (
                401,
                "invalid_token",
                Some(www_authenticate(resource_metadata, base_scopes, None)),
            ),
            AuthFailure::Malformed(_) | AuthFailure::TokenInQuery => (
                400,
                "invalid_request",
                Some(www_authenticate(
                    resource_metadata,
                    base_scopes,
                    Some(("invalid_request", &description)),
                )),
            ),
            f if f.is_unavailable() => (503, "temporarily_unavailable", None),
            _ => (
                401,
                "invalid_token",
                Some(www_authenticate(
                    resource_metadata,
                    base_scopes,
                    Some(("invalid_token", &description)),
                )),
            ),
        };
        Self {
            status,
            reason: failure.reason(),
            error,
            description,
            www_authenticate: challenge,
        }
    }

    /// The answer to a valid token the policy refuses (403). The challenged
    /// `scope` is what the request needs plus the granted scopes still
    /// relevant, so one re-authorisation gets a token for everything.
    pub fn for_denial(
        denial: &PolicyDenial,
        policy: &ScopePolicy,
        granted: &BTreeSet<String>,
        resource_metadata: &str,
    ) -> Self {
        let (description, scope) = match denial {
            PolicyDenial::InsufficientScope { needed, what } => {
                let scope = policy.challenge_scope(needed, granted);
                let missing: Vec<&str> = needed.difference(granted).map(String::as_str).collect();
                (format!("{what} needs scope {}", missing.join(" ")), scope)
            }
            PolicyDenial::ForbiddenTool(tool) => (
                format!(
                    "tool `{}` is not allowed on this server",
                    tool.escape_default()
                ),
                Vec::new(),
            ),
            PolicyDenial::ForbiddenMethod(method) => (
                format!(
                    "method `{}` is not allowed on this server",
                    method.escape_default()
                ),
                Vec::new(),
            ),
        };
        Self {
            status: 403,
            reason: "insufficient_scope",
            error: "insufficient_scope",
            www_authenticate: Some(www_authenticate(
                resource_metadata,
                &scope,
                Some(("insufficient_scope", &description)),
            )),
            description,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_lists_error_scope_and_metadata_in_order() {
        assert_eq!(
            www_authenticate("https://gw/.well-known/oauth-protected-resource/a", &["x".into(), "y".into()], Some(("invalid_token", "the \"token\" expired"))),
            "Bearer error=\"invalid_token\", error_description=\"the 'token' expired\", scope=\"x y\", resource_metadata=\"https://gw/.well-known/oauth-protected-resource/a\""
        );
        assert_eq!(
            www_authenticate("https://gw/m", &[], None),
            "Bearer resource_metadata=\"https://gw/m\""
        );
    }

    #[test]
    fn failures_map_to_400_401_and_503() {
        let f = |f: AuthFailure| Refusal::for_failure(&f, "m", &[]).status;
        assert_eq!(f(AuthFailure::MissingToken), 401);
        assert_eq!(f(AuthFailure::Expired), 401);
        assert_eq!(f(AuthFailure::TokenInQuery), 400);
        assert_eq!(f(AuthFailure::Malformed("x".into())), 400);
        assert_eq!(f(AuthFailure::IntrospectionUnavailable("down".into())), 503);
        assert!(Refusal::for_failure(&AuthFailure::MissingToken, "m", &[])
            .www_authenticate
            .unwrap()
            .starts_with("Bearer resource_metadata"));
    }
}
