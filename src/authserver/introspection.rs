//! Introspection (RFC 7662) of the tokens this server issued, for
//! confidential clients: an access token is active while its signature,
//! issuer and expiry hold and it is not revoked; a refresh token while it is
//! unused, unexpired and its family not revoked.

use super::clients;
use super::errors::{required, OAuthError};
use super::revocation::own_access_token;
use super::AsState;
use crate::auth::now_secs;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// `POST /introspect`: for confidential clients.
pub async fn introspect(
    State(state): State<Arc<AsState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let (form, client) = clients::authenticated_form(&state, &headers, &body).await?;
    if client.secret_hash.is_none() {
        return Err(OAuthError::invalid_client(
            "introspection needs a confidential client",
        ));
    }
    let token = required(&form, "token")?;
    let inactive = json!({"active": false});
    let answer = if let Some(c) = own_access_token(&state, token) {
        let revoked = c["jti"].as_str().is_some_and(|j| state.revoked.contains(j));
        if revoked {
            inactive
        } else {
            json!({"active": true, "token_type": "access_token", "iss": c["iss"], "sub": c["sub"], "aud": c["aud"],
                   "client_id": c["client_id"], "scope": c["scope"], "exp": c["exp"], "iat": c["iat"], "jti": c["jti"]})
        }
    } else {
        match state
            .store
            .refresh_token(&Sha256::digest(token.as_bytes()))
            .await?
        {
            Some(r) if !r.rotated && r.expires_at > now_secs() => json!({
                "active": true, "token_type": "refresh_token", "iss": state.issuer(), "sub": r.subject,
                "aud": r.resource, "client_id": r.client_id, "scope": r.scope, "exp": r.expires_at}),
            _ => inactive,
        }
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(answer)).into_response())
}
