//! The auth steps of the pipeline: who the caller is (bearer token to
//! [`Principal`], for this upstream's audience), whether the scope policy
//! lets it make this request, and whether the session it names is its own.
//! Each step answers with a [`GatewayError`] the proxy writes as is.

use super::error::GatewayError;
use super::route::Route;
use crate::auth::prm::metadata_url;
use crate::auth::sessions::{SessionBindings, SessionRefusal};
use crate::auth::{
    bearer_token, AuthFailure, Authenticator, BuiltinIssuer, KeyRefresher, Principal, Refusal,
};
use crate::config::{AuthConfig, PublicUrl};
use crate::mcp::McpPost;
use pingora::proxy::Session;
use std::sync::Arc;

/// Token verification, policy and session binding for every upstream.
pub struct Access {
    authenticator: Authenticator,
    sessions: SessionBindings,
    public_url: PublicUrl,
}

impl Access {
    /// Builds the auth state for `config`; `sessions` carries the
    /// session bindings over a reload (a new table when `None`).
    pub fn new(
        config: &AuthConfig,
        public_url: PublicUrl,
        builtin: Option<BuiltinIssuer>,
        sessions: Option<SessionBindings>,
    ) -> Self {
        Self {
            authenticator: Authenticator::new(config, builtin),
            sessions: sessions.unwrap_or_else(|| {
                SessionBindings::new(config.session_entries, config.session_idle_timeout)
            }),
            public_url,
        }
    }

    /// The session bindings, to keep over a reload.
    pub fn sessions(&self) -> SessionBindings {
        self.sessions.clone()
    }

    /// The background job refreshing JWKS keys.
    pub fn key_refresher(&self) -> KeyRefresher {
        self.authenticator.key_refresher()
    }

    fn refuse(&self, route: &Route, failure: &AuthFailure) -> GatewayError {
        let upstream = &route.upstream;
        if failure.is_unavailable() {
            tracing::warn!(upstream = %upstream.name, error = %failure, "cannot verify tokens");
        }
        GatewayError::Auth(Refusal::for_failure(
            failure,
            &metadata_url(&self.public_url, &upstream.path),
            &upstream.policy.base,
        ))
    }

    /// The caller of this request, if its bearer token is valid for `route`.
    pub async fn authenticate(
        &self,
        session: &Session,
        route: &Route,
    ) -> Result<Arc<Principal>, GatewayError> {
        let req = session.req_header();
        let values: Vec<&[u8]> = req
            .headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        let token = bearer_token(&values, req.uri.query()).map_err(|f| self.refuse(route, &f))?;
        let principal = self
            .authenticator
            .authenticate(token)
            .await
            .map_err(|f| self.refuse(route, &f))?;
        if !principal.is_for(&route.upstream) {
            return Err(self.refuse(route, &AuthFailure::WrongAudience));
        }
        Ok(principal)
    }

    /// Checks the scope policy: the base scopes for GET and DELETE (`post`
    /// is `None`), every message of a POST body otherwise.
    pub fn authorize(
        &self,
        route: &Route,
        principal: &Principal,
        post: Option<&McpPost>,
    ) -> Result<(), GatewayError> {
        let policy = &route.upstream.policy;
        let result = match post {
            None => policy.check(&principal.scopes, [(None, None)]),
            Some(post) => policy.check(
                &principal.scopes,
                post.messages
                    .iter()
                    .map(|m| (m.method.as_deref(), m.tool.as_deref())),
            ),
        };
        result.map_err(|denial| {
            GatewayError::Auth(Refusal::for_denial(
                &denial,
                policy,
                &principal.scopes,
                &metadata_url(&self.public_url, &route.upstream.path),
            ))
        })
    }

    /// A request naming an `Mcp-Session-Id` must come from the subject that
    /// created the session.
    pub fn check_session(
        &self,
        session: &Session,
        route: &Route,
        principal: &Principal,
    ) -> Result<(), GatewayError> {
        let Some(id) = session.req_header().headers.get("mcp-session-id") else {
            return Ok(());
        };
        let upstream = &route.upstream.name;
        self.sessions
            .check(upstream, id.as_bytes(), principal)
            .map_err(|refusal| {
                tracing::warn!(
                    upstream = %upstream,
                    issuer = %principal.issuer,
                    subject = %principal.subject,
                    reason = match refusal {
                        SessionRefusal::Unknown => "unknown session",
                        SessionRefusal::OtherSubject => "session belongs to another subject",
                    },
                    "session refused"
                );
                GatewayError::SessionNotFound
            })
    }

    /// Records the session an `initialize` created for `principal`.
    pub fn bind_session(&self, route: &Route, session_id: &[u8], principal: &Principal) {
        self.sessions
            .bind(&route.upstream.name, session_id, principal);
    }

    /// Forgets a session after its owner's successful DELETE.
    pub fn forget_session(&self, route: &Route, session_id: &[u8]) {
        self.sessions.forget(&route.upstream.name, session_id);
    }
}
