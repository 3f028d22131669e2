//! The auth steps of the pipeline: who the caller is (bearer token to
//! [`Principal`], for this upstream's audience), whether the scope policy
//! lets it make this request, and whether the session it names is its own.
//! Each step answers with a [`GatewayError`] the proxy writes as is.

use super::error::GatewayError;
use super::headers::MCP_SESSION_ID;
use super::route::Route;
use crate::auth::prm::metadata_url;
use crate::auth::sessions::SessionSeal;
use crate::auth::{
    bearer_token, AuthFailure, Authenticator, BuiltinIssuer, KeyRefresher, Principal, Refusal,
};
use crate::config::{AuthConfig, PublicUrl};
use crate::mcp::McpPost;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use std::sync::Arc;

/// Token verification, policy and session binding for every upstream.
pub struct Access {
    authenticator: Authenticator,
    sessions: SessionSeal,
    public_url: PublicUrl,
}

impl Access {
    /// Builds the auth state for `config`; `sessions` carries the
    /// session seal over a reload (a new one when `None`).
    pub fn new(
        config: &AuthConfig,
        public_url: PublicUrl,
        builtin: Option<BuiltinIssuer>,
        sessions: Option<SessionSeal>,
    ) -> Self {
        Self {
            authenticator: Authenticator::new(config, builtin),
            sessions: sessions.unwrap_or_else(|| {
                SessionSeal::new(
                    config
                        .session_secret
                        .as_ref()
                        .map(|s| s.expose().as_bytes()),
                )
            }),
            public_url,
        }
    }

    /// The session seal, to keep over a reload.
    pub fn sessions(&self) -> SessionSeal {
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
    /// created the session: the id it names must be sealed for it. Returns
    /// the upstream's own id inside, to send on.
    pub fn check_session(
        &self,
        session: &Session,
        route: &Route,
        principal: &Principal,
    ) -> Result<Option<HeaderValue>, GatewayError> {
        let Some(id) = session.req_header().headers.get(MCP_SESSION_ID) else {
            return Ok(None);
        };
        let upstream = &route.upstream.name;
        let opened = self
            .sessions
            .open(upstream, id.as_bytes(), principal)
            .and_then(|inner| HeaderValue::from_bytes(inner).ok());
        match opened {
            Some(inner) => Ok(Some(inner)),
            None => {
                tracing::warn!(
                    upstream = %upstream,
                    issuer = %principal.issuer,
                    subject = %principal.subject,
                    reason = "unknown session, or another subject's",
                    "session refused"
                );
                Err(GatewayError::SessionNotFound)
            }
        }
    }

    /// Seals the `Mcp-Session-Id` of an answer to `principal` (an
    /// `initialize` created the session, or the upstream names it again):
    /// the client only ever sees sealed ids.
    pub fn seal_response(
        &self,
        resp: &mut ResponseHeader,
        route: &Route,
        principal: &Principal,
    ) -> pingora::Result<()> {
        let Some(id) = resp.headers.get(MCP_SESSION_ID) else {
            return Ok(());
        };
        match self.seal_session(route, id.as_bytes(), principal) {
            Some(sealed) => resp.insert_header("mcp-session-id", sealed),
            None => {
                resp.remove_header(&MCP_SESSION_ID);
                Ok(())
            }
        }
    }

    /// The id to give `principal` for the session `session_id` of the
    /// route's upstream: sealed to them.
    pub fn seal_session(
        &self,
        route: &Route,
        session_id: &[u8],
        principal: &Principal,
    ) -> Option<HeaderValue> {
        let sealed = self
            .sessions
            .seal(&route.upstream.name, session_id, principal);
        HeaderValue::from_bytes(&sealed).ok()
    }
}
