//! Revocation (RFC 7009) of the tokens this server issued. A revoked access
//! token is refused by the proxy on its next use (the in-process revocation
//! set), a revoked refresh token takes its whole family with it.

use super::clients;
use super::errors::{required, OAuthError};
use super::AsState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jsonwebtoken::Validation;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Claims of a valid access token this server issued (signature, issuer,
/// expiry), or `None`.
pub(super) fn own_access_token(state: &AsState, token: &str) -> Option<Value> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    let key = state.local_keys.find(header.kid.as_deref(), header.alg)?;
    let mut v = Validation::new(header.alg);
    v.set_issuer(&[state.issuer()]);
    v.validate_aud = false;
    v.leeway = 0;
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .ok()
        .map(|d| d.claims)
}

/// `POST /revoke`: always 200 for a well-formed request (RFC 7009 §2.2).
pub async fn revoke(
    State(state): State<Arc<AsState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let (form, client) = clients::authenticated_form(&state, &headers, &body).await?;
    let token = required(&form, "token")?;
    let hash = Sha256::digest(token.as_bytes()).to_vec();
    if let Some(record) = state.store.refresh_token(&hash).await? {
        if record.client_id == client.id {
            super::token::revoke_family(&state, &record.family_id).await?;
            super::count_event("revocation");
            tracing::info!(client_id = %client.id, "refresh token revoked with its family");
        }
    } else if let Some(claims) = own_access_token(&state, token) {
        let (Some(jti), Some(exp)) = (claims["jti"].as_str(), claims["exp"].as_u64()) else {
            return Ok(ok());
        };
        if claims["client_id"] == json!(client.id) {
            state.store.revoke_access_token(jti, exp).await?;
            state.revoked.revoke(jti.to_owned(), exp);
            super::count_event("revocation");
            tracing::info!(client_id = %client.id, "access token revoked");
        }
    }
    Ok(ok())
}

fn ok() -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Json(json!({}))).into_response()
}
