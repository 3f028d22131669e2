//! Dynamic Client Registration (RFC 7591): validated metadata, public and
//! confidential clients (the secret is shown once and stored hashed), the
//! configured policy, a size limit and a per-address rate limit.

use super::clients::{hash_secret, ClientMetadata};
use super::errors::OAuthError;
use super::grant::GrantType;
use super::redirect_uri;
use super::{random_token, AsState, PeerAddr};
use crate::auth::now_secs;
use crate::config::RegistrationPolicy;
use crate::store::ClientRecord;
use aws_lc_rs::constant_time::verify_slices_are_equal;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::Arc;

/// Largest registration request.
const MAX_REGISTRATION_BYTES: usize = 16 * 1024;

fn invalid_metadata(d: impl Into<String>) -> OAuthError {
    OAuthError::new(StatusCode::BAD_REQUEST, "invalid_client_metadata", d)
}

fn strings(doc: &Value, field: &str, default: &[&str]) -> Result<Vec<String>, OAuthError> {
    match doc.get(field) {
        None | Some(Value::Null) => Ok(default.iter().map(|s| (*s).to_owned()).collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid_metadata(format!("`{field}` must be a list of strings")))
            })
            .collect(),
        Some(_) => Err(invalid_metadata(format!(
            "`{field}` must be a list of strings"
        ))),
    }
}

fn string(doc: &Value, field: &str) -> Result<Option<String>, OAuthError> {
    match doc.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid_metadata(format!("`{field}` must be a string"))),
    }
}

/// Validates registration metadata into what is stored.
pub fn validate(doc: &Value) -> Result<ClientMetadata, OAuthError> {
    if !doc.is_object() {
        return Err(invalid_metadata("the body must be a JSON object"));
    }
    let method = token_endpoint_auth_method(doc)?;
    let grant_types = registered_grant_types(doc)?;
    let uses_code = grant_types.contains(&GrantType::AuthorizationCode);
    if grant_types.contains(&GrantType::ClientCredentials) && method == "none" {
        return Err(invalid_metadata(
            "client_credentials needs a confidential client (a secret)",
        ));
    }
    let response_types = strings(
        doc,
        "response_types",
        if uses_code { &["code"] } else { &[] },
    )?;
    if (uses_code && response_types != ["code"]) || (!uses_code && !response_types.is_empty()) {
        return Err(invalid_metadata("response_types must be [\"code\"] exactly when the authorization_code grant is registered"));
    }
    if grant_types.contains(&GrantType::RefreshToken) && !uses_code {
        return Err(invalid_metadata(
            "refresh_token comes with the authorization_code grant",
        ));
    }
    let (redirect_uris, application_type) = redirect_uris_and_application_type(doc, uses_code)?;
    let client_name = string(doc, "client_name")?;
    if client_name
        .as_ref()
        .is_some_and(|n| n.chars().count() > 200)
    {
        return Err(invalid_metadata(
            "client_name is longer than 200 characters",
        ));
    }
    Ok(ClientMetadata {
        redirect_uris,
        client_name,
        token_endpoint_auth_method: method,
        grant_types,
        response_types,
        application_type,
        scope: string(doc, "scope")?,
    })
}

/// `token_endpoint_auth_method`: `none`, `client_secret_basic` (the
/// default) or `client_secret_post`.
fn token_endpoint_auth_method(doc: &Value) -> Result<String, OAuthError> {
    let method =
        string(doc, "token_endpoint_auth_method")?.unwrap_or_else(|| "client_secret_basic".into());
    if !["none", "client_secret_basic", "client_secret_post"].contains(&method.as_str()) {
        return Err(invalid_metadata(format!(
            "token_endpoint_auth_method `{method}` is not supported"
        )));
    }
    Ok(method)
}

/// `grant_types`, each one the server supports; `authorization_code` by
/// default.
fn registered_grant_types(doc: &Value) -> Result<Vec<GrantType>, OAuthError> {
    strings(doc, "grant_types", &[GrantType::AuthorizationCode.as_str()])?
        .iter()
        .map(|g| {
            GrantType::parse(g)
                .ok_or_else(|| invalid_metadata(format!("grant type `{g}` is not supported")))
        })
        .collect()
}

/// `redirect_uris` (1 to 10 with the authorization_code grant, at most 10
/// without it) and `application_type` (`web` by default, or `native`), which
/// decides the redirect URIs allowed.
fn redirect_uris_and_application_type(
    doc: &Value,
    uses_code: bool,
) -> Result<(Vec<String>, String), OAuthError> {
    let redirect_uris = strings(doc, "redirect_uris", &[])?;
    if (uses_code && redirect_uris.is_empty()) || redirect_uris.len() > 10 {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_redirect_uri",
            "give 1 to 10 `redirect_uris`",
        ));
    }
    let application_type = string(doc, "application_type")?.unwrap_or_else(|| "web".into());
    if application_type != "web" && application_type != "native" {
        return Err(invalid_metadata(
            "application_type must be `web` or `native`",
        ));
    }
    for uri in &redirect_uris {
        redirect_uri::validate(uri, &application_type)
            .map_err(|m| OAuthError::new(StatusCode::BAD_REQUEST, "invalid_redirect_uri", m))?;
    }
    Ok((redirect_uris, application_type))
}

/// `POST /register`.
pub async fn register(
    State(state): State<Arc<AsState>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    check_registration_policy(&state, &headers)?;
    check_registration_rate(&state, peer.map(|p| p.0 .0)).await?;
    let meta = read_metadata(&body)?;
    check_client_credentials_allowed(&state, &meta)?;
    check_scopes_known(&state, &meta)?;
    let client_id = random_token(16);
    let secret = (meta.token_endpoint_auth_method != "none").then(|| random_token(32));
    let now = now_secs();
    state
        .store
        .put_client(&ClientRecord {
            client_id: client_id.clone(),
            secret_hash: secret.as_deref().map(hash_secret),
            metadata: serde_json::to_string(&meta).map_err(OAuthError::server_error)?,
            created_at: now,
        })
        .await?;
    super::count_event("registration");
    tracing::info!(client_id = %client_id, client_name = meta.client_name.as_deref().unwrap_or("-"), "client registered");
    registration_response(&meta, &client_id, now, secret)
}

/// The configured `registration` policy: refused when disabled; with
/// `initial_access_token`, only with that token as the bearer token
/// (compared in constant time).
fn check_registration_policy(state: &AsState, headers: &HeaderMap) -> Result<(), OAuthError> {
    let settings = state.settings();
    match settings.config.registration {
        RegistrationPolicy::Disabled => Err(OAuthError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            "dynamic client registration is disabled here",
        )),
        RegistrationPolicy::InitialAccessToken => {
            let expected = settings
                .config
                .initial_access_token
                .as_ref()
                .map(|t| t.expose().as_bytes());
            let given = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::as_bytes);
            let ok = matches!((expected, given), (Some(e), Some(g)) if verify_slices_are_equal(e, g).is_ok());
            if ok {
                Ok(())
            } else {
                Err(OAuthError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "registration needs the initial access token",
                ))
            }
        }
        RegistrationPolicy::Open => Ok(()),
    }
}

/// The per-address hourly registration limit; none when it is 0, when the
/// peer's address is unknown, or for loopback when loopback is exempt.
async fn check_registration_rate(state: &AsState, peer: Option<IpAddr>) -> Result<(), OAuthError> {
    let settings = state.settings();
    let limit = settings.config.registrations_per_hour;
    let exempt = |ip: IpAddr| settings.config.registration_exempts_loopback && ip.is_loopback();
    if let Some(ip) = peer.filter(|ip| limit > 0 && !exempt(*ip)) {
        if let Err(wait) = state.login_limiter.allow_registration(ip, limit).await? {
            // RFC 7591 §3.2.2 shape; `temporarily_unavailable` is the RFC
            // 6749 code for a server that cannot take the request now.
            return Err(OAuthError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                format!("more than {limit} registrations from this address within an hour; retry after the time in Retry-After"),
            )
            .retry_after(wait));
        }
    }
    Ok(())
}

/// The request body as validated metadata: at most
/// [`MAX_REGISTRATION_BYTES`] of strict JSON.
fn read_metadata(body: &Bytes) -> Result<ClientMetadata, OAuthError> {
    if body.len() > MAX_REGISTRATION_BYTES {
        return Err(OAuthError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_client_metadata",
            "registration request too large",
        ));
    }
    let doc = crate::mcp::strict_json::parse_strict(body)
        .map_err(|e| invalid_metadata(format!("not valid JSON: {e:?}")))?;
    validate(&doc)
}

/// A client_credentials client acts with no user behind it: only an
/// operator (holding the initial access token) may create one.
fn check_client_credentials_allowed(
    state: &AsState,
    meta: &ClientMetadata,
) -> Result<(), OAuthError> {
    if meta.grant_types.contains(&GrantType::ClientCredentials)
        && state.settings().config.registration != RegistrationPolicy::InitialAccessToken
    {
        return Err(invalid_metadata("client_credentials clients can only be registered with `registration: initial_access_token`"));
    }
    Ok(())
}

/// Every scope in the metadata's `scope` is one this server supports.
fn check_scopes_known(state: &AsState, meta: &ClientMetadata) -> Result<(), OAuthError> {
    let known = state.settings().scopes_supported();
    if let Some(bad) = meta
        .scope
        .iter()
        .flat_map(|s| s.split(' '))
        .find(|s| !s.is_empty() && !known.iter().any(|k| k == s))
    {
        return Err(invalid_metadata(format!("scope `{bad}` is not known here")));
    }
    Ok(())
}

/// The `201 Created` answer: the registered metadata with the client id,
/// its issue time and, for a confidential client, the secret (shown only
/// this once, never expiring).
fn registration_response(
    meta: &ClientMetadata,
    client_id: &str,
    now: u64,
    secret: Option<String>,
) -> Result<Response, OAuthError> {
    let mut answer = serde_json::to_value(meta).map_err(OAuthError::server_error)?;
    answer["client_id"] = json!(client_id);
    answer["client_id_issued_at"] = json!(now);
    if let Some(secret) = secret {
        answer["client_secret"] = json!(secret);
        answer["client_secret_expires_at"] = json!(0);
    }
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(answer),
    )
        .into_response())
}
