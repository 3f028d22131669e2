//! Registered clients: their metadata, and client authentication at the
//! token, revocation and introspection endpoints (`none`,
//! `client_secret_basic`, `client_secret_post`). Secrets are 256-bit random
//! values stored as SHA-256 hashes and compared in constant time.

use super::errors::OAuthError;
use super::grant::GrantType;
use super::AsState;
use aws_lc_rs::constant_time::verify_slices_are_equal;
use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// RFC 7591 client metadata, as registered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientMetadata {
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub client_name: Option<String>,
    pub token_endpoint_auth_method: String,
    pub grant_types: Vec<GrantType>,
    pub response_types: Vec<String>,
    pub application_type: String,
    #[serde(default)]
    pub scope: Option<String>,
}

/// A registered client, or one described by a metadata document.
#[derive(Clone)]
pub struct Client {
    pub id: String,
    pub secret_hash: Option<Vec<u8>>,
    pub meta: ClientMetadata,
}

impl Client {
    /// The name shown on the consent page (the id when it has none).
    pub fn display_name(&self) -> &str {
        self.meta.client_name.as_deref().unwrap_or(&self.id)
    }

    pub fn may_use_grant(&self, grant: GrantType) -> bool {
        self.meta.grant_types.contains(&grant)
    }
}

pub fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Looks a client up.
pub async fn find(state: &AsState, client_id: &str) -> Result<Option<Client>, OAuthError> {
    if let Some(docs) = state
        .documents
        .as_ref()
        .filter(|d| d.is_document_url(client_id))
    {
        return match docs.client(client_id).await {
            Ok(c) => Ok(Some((*c).clone())),
            Err(why) => {
                tracing::warn!(client_id, reason = %why, "client metadata document refused");
                Err(OAuthError::invalid_client(format!(
                    "client metadata document refused: {why}"
                )))
            }
        };
    }
    let Some(record) = state.store.client(client_id).await? else {
        return Ok(None);
    };
    let meta = serde_json::from_str(&record.metadata).map_err(OAuthError::server_error)?;
    Ok(Some(Client {
        id: record.client_id,
        secret_hash: record.secret_hash,
        meta,
    }))
}

/// Authenticates the client of a token-endpoint style request.
pub async fn authenticate(
    state: &AsState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<Client, OAuthError> {
    let basic = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .map(|b64| -> Result<(String, String), OAuthError> {
            let raw = STANDARD
                .decode(b64.trim())
                .map_err(|_| OAuthError::invalid_client("malformed Basic credentials"))?;
            let text = String::from_utf8(raw)
                .map_err(|_| OAuthError::invalid_client("malformed Basic credentials"))?;
            let (id, secret) = text
                .split_once(':')
                .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
            let decode = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            Ok((decode(id), decode(secret)))
        })
        .transpose()?;
    let (id, secret, method) = match (basic, form.get("client_id"), form.get("client_secret")) {
        (Some(_), _, Some(_)) => {
            return Err(OAuthError::invalid_request(
                "use one client authentication method",
            ))
        }
        (Some((id, secret)), form_id, None) => {
            if form_id.is_some_and(|f| *f != id) {
                return Err(OAuthError::invalid_client(
                    "client_id does not match the credentials",
                ));
            }
            (id, Some(secret), "client_secret_basic")
        }
        (None, Some(id), Some(secret)) => (id.clone(), Some(secret.clone()), "client_secret_post"),
        (None, Some(id), None) => (id.clone(), None, "none"),
        (None, None, _) => return Err(OAuthError::invalid_client("no client authentication")),
    };
    let client = find(state, &id)
        .await?
        .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
    let ok = match (&client.secret_hash, secret) {
        (Some(hash), Some(secret)) => {
            client.meta.token_endpoint_auth_method == method
                && verify_slices_are_equal(hash, &hash_secret(&secret)).is_ok()
        }
        (None, None) => client.meta.token_endpoint_auth_method == "none",
        _ => false,
    };
    if !ok {
        return Err(OAuthError::invalid_client("client authentication failed"));
    }
    Ok(client)
}

/// Reads a form body and authenticates its client (token, revocation and
/// introspection endpoints).
pub async fn authenticated_form(
    state: &AsState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(HashMap<String, String>, Client), OAuthError> {
    let form = super::errors::parse_form(body)?;
    let client = authenticate(state, headers, &form).await?;
    Ok((form, client))
}
