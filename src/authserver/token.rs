//! The token endpoint: `authorization_code` (single use, PKCE, bound to
//! client, redirect URI and resource) and `refresh_token` (rotated on every
//! use; reuse revokes the family; scope may only narrow). Access tokens are
//! ES256 JWTs whose `aud` is the resource; every one is recorded with its
//! family so that revoking the family revokes it too.

use super::clients::{self, Client};
use super::errors::{required, OAuthError};
use super::flows::{code_belongs_to, Redeemed};
use super::grant::GrantType;
use super::pkce::CodeVerifier;
use super::{random_token, refresh_grace, AsState};
use crate::auth::now_secs;
use crate::store::RefreshRecord;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jsonwebtoken::Header;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::Arc;

/// `POST /token`.
pub async fn token(
    State(state): State<Arc<AsState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let (form, client) = clients::authenticated_form(&state, &headers, &body).await?;
    let name = required(&form, "grant_type")?;
    match GrantType::parse(name) {
        Some(GrantType::AuthorizationCode) => code_grant(&state, &client, &form).await,
        Some(GrantType::RefreshToken) => refresh_grant(&state, &client, &form).await,
        Some(GrantType::ClientCredentials) => {
            client_credentials_grant(&state, &client, &form).await
        }
        None => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("grant_type `{name}` is not supported"),
        )),
    }
}

/// Revokes everything a family issued (refresh tokens and access tokens);
/// the proxy refuses each access token until its own expiry.
pub(super) async fn revoke_family(state: &AsState, family_id: &str) -> Result<(), OAuthError> {
    for (jti, expires_at) in state.store.revoke_family(family_id, now_secs()).await? {
        state.revoked.revoke(jti, expires_at);
    }
    Ok(())
}

async fn code_grant(
    state: &AsState,
    client: &Client,
    form: &std::collections::HashMap<String, String>,
) -> Result<Response, OAuthError> {
    if !client.may_use_grant(GrantType::AuthorizationCode) {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "this client did not register the authorization_code grant",
        ));
    }
    let grant = match state.codes.redeem(required(form, "code")?).await? {
        Redeemed::Grant(g) => g,
        Redeemed::Unknown => return Err(OAuthError::invalid_grant("unknown or expired code")),
        Redeemed::Replayed(family) => {
            super::count_event("code_reuse");
            tracing::warn!(client_id = %client.id, "authorization code used twice; revoking what it issued");
            revoke_family(state, &family).await?;
            return Err(OAuthError::invalid_grant(
                "code already used; the tokens issued from it are revoked",
            ));
        }
    };
    if !code_belongs_to(&grant, client) {
        return Err(OAuthError::invalid_grant(
            "the code was issued to another client",
        ));
    }
    if required(form, "redirect_uri")? != grant.redirect_uri {
        return Err(OAuthError::invalid_grant(
            "redirect_uri differs from the authorization request's",
        ));
    }
    let verifier = CodeVerifier::parse(required(form, "code_verifier")?);
    if !verifier.is_some_and(|v| grant.code_challenge.is_answered_by(&v)) {
        return Err(OAuthError::invalid_grant(
            "code_verifier does not match the code_challenge",
        ));
    }
    if form.get("resource").is_some_and(|r| *r != grant.resource) {
        return Err(OAuthError::invalid_target(
            "resource differs from the authorization request's",
        ));
    }
    let refresh_until = now_secs() + state.settings().config.refresh_token_ttl.as_secs();
    let issued = Issue {
        grant: GrantType::AuthorizationCode,
        subject: &grant.subject,
        scope: &grant.scope,
        resource: &grant.resource,
        family_id: &grant.family_id,
        refresh_until,
    };
    issue(state, client, issued).await
}

async fn refresh_grant(
    state: &AsState,
    client: &Client,
    form: &std::collections::HashMap<String, String>,
) -> Result<Response, OAuthError> {
    let presented = required(form, "refresh_token")?;
    let hash = Sha256::digest(presented.as_bytes()).to_vec();
    let Some(record) = state.store.refresh_token(&hash).await? else {
        return Err(OAuthError::invalid_grant(
            "unknown, expired or revoked refresh token",
        ));
    };
    if record.client_id != client.id {
        return Err(OAuthError::invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    if record.expires_at <= now_secs() {
        return Err(OAuthError::invalid_grant("the refresh token has expired"));
    }
    if form.get("resource").is_some_and(|r| *r != record.resource) {
        return Err(OAuthError::invalid_target(
            "resource differs from the one the refresh token was issued for",
        ));
    }
    // The user must still exist (a person of an identity provider: still
    // be admitted by the rules) and may have lost scopes since the grant.
    let Some(user_scopes) = grantable_now(state, &record.subject).await else {
        revoke_family(state, &record.family_id).await?;
        return Err(OAuthError::invalid_grant(
            "the user of this grant no longer exists or is no longer admitted",
        ));
    };
    let scope = refreshed_scope(&record.scope, &user_scopes, form.get("scope"))?;
    let grace = state.settings().config.refresh_reuse_grace;
    let same_request = refresh_grace::fingerprint(
        &client.id,
        form.get("scope").map(String::as_str),
        form.get("resource").map(String::as_str),
    );
    // Rotated only now that a new token will be issued (RFC 6749 §6): a
    // refused request leaves the token usable for the corrected retry.
    if !state.store.rotate_refresh_token(&hash).await? {
        if !grace.is_zero() {
            if let Some(answer) =
                refresh_grace::replay(&*state.store, presented, &same_request).await?
            {
                super::count_event("refresh_reuse_within_grace");
                tracing::info!(client_id = %client.id, subject = %record.subject, "the same refresh again within the grace window; the first answer is sent again");
                return Ok(token_response(answer));
            }
        }
        super::count_event("refresh_reuse");
        tracing::warn!(client_id = %client.id, subject = %record.subject, "refresh token reused; revoking its family");
        revoke_family(state, &record.family_id).await?;
        return Err(OAuthError::invalid_grant(
            "refresh token already used; its family is revoked",
        ));
    }
    let issued = Issue {
        grant: GrantType::RefreshToken,
        subject: &record.subject,
        scope: &scope,
        resource: &record.resource,
        family_id: &record.family_id,
        refresh_until: record.expires_at,
    };
    let answer = issue_answer(state, client, issued).await?;
    if !grace.is_zero() {
        // The tokens are issued and the old token is used: they go out
        // even if a retry could not be answered with them.
        if let Err(e) =
            refresh_grace::remember(&*state.store, presented, &same_request, &answer, grace).await
        {
            tracing::warn!(error = %e, "cannot keep a refresh answer for its grace window");
        }
    }
    Ok(token_response(answer))
}

/// What `subject` may grant now: a local user's scopes, or what the access
/// rules give a person of an identity provider; `None` when neither.
async fn grantable_now(state: &AsState, subject: &str) -> Option<BTreeSet<String>> {
    match state.settings().users.get(subject) {
        Some(user) => Some(user.scopes.clone()),
        None => super::federation::admitted_now(state, subject).await,
    }
}

/// The scope a refresh issues: the granted scopes the user still holds, or
/// the narrower set asked for; asking for more is `invalid_scope`.
fn refreshed_scope(
    granted: &str,
    user_scopes: &BTreeSet<String>,
    asked: Option<&String>,
) -> Result<String, OAuthError> {
    let still_held: BTreeSet<&str> = granted
        .split(' ')
        .filter(|s| {
            !s.is_empty() && (user_scopes.contains(*s) || *s == crate::policy::OFFLINE_ACCESS)
        })
        .collect();
    match asked {
        None => Ok(granted
            .split(' ')
            .filter(|s| still_held.contains(s))
            .collect::<Vec<_>>()
            .join(" ")),
        Some(asked) => {
            let asked: Vec<&str> = asked.split(' ').filter(|s| !s.is_empty()).collect();
            if let Some(extra) = asked.iter().find(|s| !still_held.contains(*s)) {
                return Err(OAuthError::invalid_scope(format!(
                    "scope `{extra}` was not granted; a refresh can only narrow the scope"
                )));
            }
            Ok(asked.join(" "))
        }
    }
}

/// `client_credentials`: a confidential client acting for itself (`sub` is
/// its id), limited to the scopes it registered (the resource's base scopes
/// when it registered none); no refresh token.
async fn client_credentials_grant(
    state: &AsState,
    client: &Client,
    form: &std::collections::HashMap<String, String>,
) -> Result<Response, OAuthError> {
    if client.secret_hash.is_none() || !client.may_use_grant(GrantType::ClientCredentials) {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "this client did not register the client_credentials grant",
        ));
    }
    let settings = state.settings();
    let resource = match (form.get("resource"), settings.resources.as_slice()) {
        (Some(r), _) => settings.resource(r).ok_or_else(|| {
            OAuthError::invalid_target("resource is not a protected resource of this server")
        })?,
        (None, [only]) => only,
        (None, _) => {
            return Err(OAuthError::invalid_target(
                "resource is required: several resources are served here",
            ))
        }
    };
    let registered: Vec<String> = match &client.meta.scope {
        Some(s) => s
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        None => resource.base.clone(),
    };
    let asked: Vec<String> = match form.get("scope") {
        Some(s) => s
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        None => registered
            .iter()
            .filter(|s| resource.scopes.contains(s))
            .cloned()
            .collect(),
    };
    if let Some(bad) = asked
        .iter()
        .find(|s| !registered.contains(s) || !resource.scopes.contains(s))
    {
        return Err(OAuthError::invalid_scope(format!(
            "scope `{bad}` is not available to this client for this resource"
        )));
    }
    let issued = Issue {
        grant: GrantType::ClientCredentials,
        subject: &client.id,
        scope: &asked.join(" "),
        resource: &resource.url,
        family_id: &random_token(16),
        refresh_until: 0,
    };
    issue(state, client, issued).await
}

/// What a grant issues tokens for.
struct Issue<'a> {
    /// The grant that issues them (named in metrics and logs).
    grant: GrantType,
    subject: &'a str,
    scope: &'a str,
    resource: &'a str,
    family_id: &'a str,
    /// Expiry of the refresh-token family; 0: no refresh token.
    refresh_until: u64,
}

/// An RFC 9068 access token (`typ` `at+jwt`) signed with the key that
/// signs now.
fn sign_access_token(state: &AsState, claims: &serde_json::Value) -> Result<String, OAuthError> {
    let keys = state.signing();
    let mut header = Header::new(keys.algorithm);
    header.kid = Some(keys.kid.clone());
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(&header, claims, &keys.encoding).map_err(OAuthError::server_error)
}

async fn issue(
    state: &AsState,
    client: &Client,
    issued: Issue<'_>,
) -> Result<Response, OAuthError> {
    issue_answer(state, client, issued)
        .await
        .map(token_response)
}

/// Issues the tokens; the token endpoint's JSON answer.
async fn issue_answer(
    state: &AsState,
    client: &Client,
    issued: Issue<'_>,
) -> Result<serde_json::Value, OAuthError> {
    let Issue {
        grant,
        subject,
        scope,
        resource,
        family_id,
        refresh_until,
    } = issued;
    let now = now_secs();
    let ttl = state.settings().config.access_token_ttl.as_secs();
    let jti = random_token(16);
    let claims = json!({
        "iss": state.issuer(), "sub": subject, "aud": resource, "client_id": client.id,
        "scope": scope, "iat": now, "exp": now + ttl, "jti": jti,
    });
    let access_token = sign_access_token(state, &claims)?;
    let refresh = (refresh_until > 0 && client.may_use_grant(GrantType::RefreshToken))
        .then(|| random_token(32));
    let refresh_record = refresh.as_ref().map(|token| RefreshRecord {
        token_hash: Sha256::digest(token.as_bytes()).to_vec(),
        family_id: family_id.to_owned(),
        client_id: client.id.clone(),
        subject: subject.to_owned(),
        scope: scope.to_owned(),
        resource: resource.to_owned(),
        expires_at: refresh_until,
        rotated: false,
    });
    let recorded = state
        .store
        .record_issue(family_id, &jti, now + ttl, refresh_record.as_ref())
        .await?;
    if !recorded {
        // A concurrent reuse of the code or refresh token revoked the
        // family between the check and now: these tokens never leave.
        return Err(OAuthError::invalid_grant(
            "the grant was revoked while these tokens were being issued",
        ));
    }
    let mut answer = json!({"access_token": access_token, "token_type": "Bearer", "expires_in": ttl, "scope": scope});
    if let Some(refresh) = refresh {
        answer["refresh_token"] = json!(refresh);
    }
    crate::metrics::metrics()
        .tokens_issued
        .with_label_values(&[grant.as_str()])
        .inc();
    tracing::info!(client_id = %client.id, grant = grant.as_str(), subject, scope, resource, "tokens issued");
    Ok(answer)
}

/// The token endpoint's answer, never cached (RFC 6749 §5.1).
fn token_response(answer: serde_json::Value) -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(answer),
    )
        .into_response()
}
