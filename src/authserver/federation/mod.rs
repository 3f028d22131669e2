//! Sign-in through identity providers: the built-in server is a broker.
//! MCP clients talk OAuth to the gateway as ever; the person is
//! authenticated by their organisation's provider, to which the gateway is
//! an OpenID Connect relying party (`oidc`), and admitted with the scopes
//! the `access` rules give them (`rules`).
//!
//! `GET /login/<id>?flow=…` (a button of the login page) sends the browser
//! of a flow to provider `<id>`; `GET /callback/<id>` takes the answer:
//! `state` names a pending sign-in (single use, bound to the browser's
//! flow cookie and to that provider, so an answer of provider A arriving at
//! B's callback is refused), `iss` must be the provider's, then the code
//! is exchanged and the ID token checked. The person's subject is
//! `<id>|<sub>`, so two providers never share one. Their claims are kept,
//! and the provider's refresh token when it gives one: at every refresh of
//! the gateway's tokens the provider is asked again and the rules applied
//! to what it says now.

mod github;
pub mod oidc;
pub mod rules;

use super::browser::{flow_of_this_browser, set_cookie, to_page, unavailable};
use super::consent::decide_without_asking;
use super::flows::{put_entry, take_entry, Flow};
use super::{pages, random_token, AsSettings, AsState};
use crate::auth::now_millis;
use crate::store::PersonRecord;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use moka::sync::Cache;
use oidc::{AuthorizationRequest, Provider, RpError};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// A sign-in sent to a provider and not yet back.
#[derive(serde::Serialize, serde::Deserialize)]
struct Pending {
    provider: String,
    flow_id: String,
    nonce: String,
    verifier: String,
    /// `prompt=login`: when it was sent (the sign-in must be newer).
    fresh_since: Option<u64>,
}

/// One check with the provider per person at a time (sign-ins under way,
/// `Pending`, are in the store).
pub(crate) struct Federation {
    /// One check with the provider per person at a time.
    checks: Cache<String, Arc<tokio::sync::Mutex<()>>>,
}

impl Federation {
    pub fn new() -> Self {
        Self {
            checks: Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        }
    }

    /// What `subject` (signed in through a provider still configured) may
    /// grant under today's rules, from the claims of their latest check
    /// (in the store: the sign-in may have been on another replica).
    pub async fn scopes_of(
        &self,
        store: &dyn crate::store::Store,
        settings: &AsSettings,
        subject: &str,
    ) -> Result<Option<BTreeSet<String>>, crate::store::StoreError> {
        let Some(idp) = provider_of(subject).filter(|idp| settings.provider(idp).is_some()) else {
            return Ok(None);
        };
        let Some(person) = store.person(subject).await? else {
            return Ok(None);
        };
        let claims: Value = serde_json::from_str(&person.claims)
            .map_err(|e| crate::store::StoreError(format!("a person's stored claims: {e}")))?;
        Ok(rules::admitted(&settings.config.access, idp, &claims))
    }
}

/// How long a sign-in sent to a provider may take to come back.
const PENDING_TTL: u64 = 600_000;
const PENDING: &str = "idp_pending";

impl Federation {
    /// Records a sign-in sent to a provider, by its `state`.
    async fn put_pending(
        &self,
        state: &AsState,
        state_param: &str,
        pending: &Pending,
    ) -> Result<(), crate::store::StoreError> {
        let expires_at = now_millis().saturating_add(PENDING_TTL);
        put_entry(&*state.store, PENDING, state_param, pending, expires_at).await
    }

    /// Takes the sign-in `state` names (single use, on any replica).
    async fn take_pending(
        &self,
        state: &AsState,
        state_param: &str,
    ) -> Result<Option<Pending>, crate::store::StoreError> {
        take_entry(&*state.store, PENDING, state_param).await
    }
}

/// The page for a store that cannot be reached in the middle of a sign-in.
fn store_failure(e: crate::store::StoreError) -> Refusal {
    tracing::error!(error = %e, "the store failed during a sign-in");
    store_failure_text()
}

fn store_failure_text() -> Refusal {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "The sign-in could not be completed now; try again in a moment.".to_owned(),
    )
}

/// Whether `subject` is a person of an identity provider (`<id>|<sub>`).
pub fn provider_of(subject: &str) -> Option<&str> {
    subject.split_once('|').map(|(id, _)| id)
}

/// What `subject` may grant now, asked at each refresh: the provider is
/// asked again about them with its refresh token (when it gave one; its
/// answer replaces the stored claims, and a refusal ends the grant), then
/// the rules are applied. A provider that cannot be reached leaves the
/// claims of the last check. `None`: not admitted (not a person of a
/// configured provider, signed in longer ago than `max_session_age`, no
/// longer vouched for, or no rule admits them).
pub(crate) async fn admitted_now(state: &AsState, subject: &str) -> Option<BTreeSet<String>> {
    let (idp, sub) = subject.split_once('|')?;
    let settings = state.settings();
    let provider = settings.provider(idp)?;
    // One check per person at a time: the provider may rotate its refresh
    // token, and a second check with the old one would be refused.
    let lock = state
        .federation
        .checks
        .get_with(subject.to_owned(), || Arc::new(tokio::sync::Mutex::new(())));
    let _held = lock.lock().await;
    let mut person = match state.store.person(subject).await {
        Ok(Some(p)) => p,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a person's record");
            return None;
        }
    };
    let age = crate::auth::now_secs().saturating_sub(person.signed_in_at);
    if age > settings.config.max_session_age.as_secs() {
        tracing::info!(target: "audit", decision = "denied", reason = "max_session_age", provider = %idp, subject = %subject.escape_debug(), "sign-in too old; the person must sign in at the provider again");
        return None;
    }
    if let Some(token) = person.idp_refresh_token.clone() {
        match provider.recheck(&token, sub).await {
            Ok(fresh) => {
                person.claims = kept_claims(&fresh.claims).to_string();
                person.idp_refresh_token = fresh.refresh_token;
                if let Err(e) = state.store.put_person(subject, &person).await {
                    tracing::warn!(error = %e, "cannot record a person's claims");
                }
            }
            Err(RpError::Unreachable(e)) => {
                tracing::warn!(provider = %idp, error = %e, "cannot ask the provider about a person; using the claims of the last check");
            }
            Err(RpError::Refused(e)) => {
                count(state, idp, "ended");
                tracing::info!(target: "audit", decision = "denied", reason = "provider_refused", provider = %idp, subject = %subject.escape_debug(), detail = %e, "the provider no longer vouches for the person");
                return None;
            }
        }
    }
    let claims: Value = serde_json::from_str(&person.claims).ok()?;
    // The subject is bound to the issuer it was first vouched for by: a
    // provider whose issuer was changed under the same id admits no one
    // of the old one.
    let iss = claims["iss"].as_str().unwrap_or_default();
    if !provider.issuer_matches(iss, claims["tid"].as_str()) {
        tracing::info!(target: "audit", decision = "denied", reason = "issuer_changed", provider = %idp, subject = %subject.escape_debug(), "the provider's issuer changed since the person signed in");
        return None;
    }
    rules::admitted(&settings.config.access, idp, &claims)
}

/// `GET /login/<id>?flow=…`: on to the provider.
pub async fn start(
    State(state): State<Arc<AsState>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let (flow_id, flow) = match flow_of_this_browser(&state, &headers, query.as_deref()).await {
        Ok(Some(found)) => found,
        Ok(None) => return super::browser::start_over(&state),
        Err(page) => return *page,
    };
    let settings = state.settings();
    let Some(provider) = settings.provider(&id) else {
        return pages::error(
            &state,
            StatusCode::NOT_FOUND,
            "There is no such sign-in provider here.",
        );
    };
    let metadata = match provider.discover().await {
        Ok((m, _)) => m,
        Err(e) => return provider_failure(&state, &id, &e),
    };
    let pending = Pending {
        provider: id.clone(),
        flow_id,
        nonce: random_token(24),
        verifier: random_token(32),
        fresh_since: flow.force_login.then(crate::auth::now_secs),
    };
    let state_param = random_token(24);
    let redirect_uri = callback_url(&state, &id);
    let request = AuthorizationRequest {
        redirect_uri: &redirect_uri,
        state: &state_param,
        nonce: &pending.nonce,
        verifier: &pending.verifier,
        login_hint: flow.login_hint.as_deref(),
        force_login: flow.force_login,
    };
    match provider.authorization_url(&metadata, &request) {
        Ok(url) => match state
            .federation
            .put_pending(&state, &state_param, &pending)
            .await
        {
            Ok(()) => Redirect::to(&url).into_response(),
            Err(e) => *unavailable(e),
        },
        Err(e) => provider_failure(&state, &id, &e),
    }
}

/// `GET /callback/<id>`: the provider's answer.
pub async fn callback(
    State(state): State<Arc<AsState>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match sign_in(&state, &id, query.as_deref().unwrap_or_default(), &headers).await {
        Ok(resp) => resp,
        Err((status, message)) => {
            // 403: refused (by the rules, or the person at the provider);
            // anything else failed.
            let outcome = if status == StatusCode::FORBIDDEN {
                "refused"
            } else {
                "failed"
            };
            count(&state, &id, outcome);
            tracing::info!(target: "audit", decision = "denied", reason = "federated_login", provider = %id.escape_debug(), detail = %message.escape_debug(), "sign-in through an identity provider refused");
            pages::error(&state, status, &message)
        }
    }
}

/// What went wrong, as the page shows it.
type Refusal = (StatusCode, String);

async fn sign_in(
    state: &AsState,
    id: &str,
    query: &str,
    headers: &HeaderMap,
) -> Result<Response, Refusal> {
    let bad = |message: &str| (StatusCode::BAD_REQUEST, message.to_owned());
    let params = super::errors::parse_form(query.as_bytes()).map_err(|e| bad(&e.description))?;
    let pending = match params.get("state") {
        Some(s) => state
            .federation
            .take_pending(state, s)
            .await
            .map_err(store_failure)?,
        None => None,
    };
    let pending = pending.ok_or_else(|| bad("This sign-in is unknown, expired or already used. Go back to your application and connect again."))?;
    if pending.provider != id {
        return Err(bad(
            "This answer came back to another provider's sign-in; it is not accepted.",
        ));
    }
    let flow_query = format!("flow={}", pending.flow_id);
    let (flow_id, flow) = flow_of_this_browser(state, headers, Some(&flow_query))
        .await
        .map_err(|_| store_failure_text())?
        .ok_or_else(|| bad("This sign-in was started in another browser, or has ended. Go back to your application and connect again."))?;
    let settings = state.settings();
    let provider = settings
        .provider(id)
        .ok_or_else(|| bad("This sign-in provider is no longer configured here."))?;
    let (metadata, _) = provider
        .discover()
        .await
        .map_err(|e| failure_of(provider, &e))?;
    // RFC 9207 §2.4: error answers carry `iss` too.
    check_iss(provider, &metadata, params.get("iss").map(String::as_str))?;
    if let Some(error) = params.get("error") {
        // Only a well-formed code is shown: the description is the
        // provider's (or an attacker's) free text.
        let code = Some(error.as_str())
            .filter(|e| e.len() <= 64 && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .unwrap_or("unknown error");
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "{} did not sign you in ({code}).",
                provider.config.display_name
            ),
        ));
    }
    let code = params
        .get("code")
        .ok_or_else(|| bad("The identity provider sent no authorization code."))?;
    let signed_in = provider
        .sign_in(
            code,
            &callback_url(state, id),
            &pending.verifier,
            &pending.nonce,
            pending.fresh_since,
        )
        .await
        .map_err(|e| failure_of(provider, &e))?;
    let claims = signed_in.claims.clone();
    let sub = claims["sub"].as_str().unwrap_or_default();
    let subject = format!("{id}|{sub}");
    if rules::admitted(&settings.config.access, id, &claims).is_none() {
        tracing::info!(target: "audit", decision = "denied", reason = "no_access_rule", provider = %id, subject = %subject.escape_debug(), "person not admitted by the access rules");
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "Your {} account is not allowed to use this server. Ask its operator for access.",
                provider.config.display_name
            ),
        ));
    }
    remember(state, &subject, signed_in).await?;
    count(state, id, "signed_in");
    tracing::info!(target: "audit", decision = "allowed", reason = "federated_login", provider = %id, subject = %subject.escape_debug(), "signed in through an identity provider");
    let display = ["email", "name", "preferred_username"]
        .iter()
        .find_map(|c| claims[*c].as_str())
        .unwrap_or(sub)
        .to_owned();
    let sid = random_token(32);
    state
        .flows
        .start_session(&sid, &subject)
        .await
        .map_err(store_failure)?;
    let flow = Flow {
        user: Some(subject.clone()),
        display: Some(display),
        notice: None,
        ..flow
    };
    let mut resp = match decide_without_asking(state, &flow, &subject).await {
        Ok(Some(done)) => done,
        Ok(None) => {
            state
                .flows
                .put(&flow_id, &flow)
                .await
                .map_err(store_failure)?;
            to_page(state, "/consent", &flow_id)
        }
        Err(r) => r,
    };
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, "mcpgw_session", &sid, 8 * 3600),
    );
    Ok(resp)
}

/// RFC 9207: the `iss` of the answer must be the provider's; a provider
/// that announces it must send it.
fn check_iss(
    provider: &Provider,
    metadata: &oidc::Metadata,
    iss: Option<&str>,
) -> Result<(), Refusal> {
    let refused = |why: &str| {
        (
            StatusCode::BAD_REQUEST,
            format!("The sign-in answer is not accepted: {why}."),
        )
    };
    match iss {
        Some(iss) if iss == metadata.issuer || fits_template(&provider.config.issuer, iss) => {
            Ok(())
        }
        Some(_) => Err(refused("it names another issuer")),
        None if metadata.authorization_response_iss_parameter_supported => Err(refused(
            "it names no issuer, which this provider always does",
        )),
        None => Ok(()),
    }
}

/// Whether `iss` is the template (with `{tenantid}`) filled with one path
/// segment.
fn fits_template(template: &str, iss: &str) -> bool {
    let Some((before, after)) = template.split_once("{tenantid}") else {
        return false;
    };
    iss.strip_prefix(before)
        .and_then(|rest| rest.strip_suffix(after))
        .is_some_and(|tid| !tid.is_empty() && !tid.contains('/'))
}

/// The claims worth keeping: what the rules read, not the token's
/// envelope.
fn kept_claims(claims: &Value) -> Value {
    let mut kept = claims.clone();
    if let Value::Object(map) = &mut kept {
        for transient in [
            "nonce",
            "at_hash",
            "c_hash",
            "aud",
            "azp",
            "exp",
            "iat",
            "auth_time",
            "sid",
            "jti",
        ] {
            map.remove(transient);
        }
    }
    kept
}

/// Keeps the person's claims and the provider's refresh token (to ask it
/// again at each refresh; never forwarded anywhere) and what they may
/// grant now.
async fn remember(
    state: &AsState,
    subject: &str,
    signed_in: oidc::SignedIn,
) -> Result<(), Refusal> {
    let claims_of_sign_in = signed_in.claims;
    let person = PersonRecord {
        claims: kept_claims(&claims_of_sign_in).to_string(),
        idp_refresh_token: signed_in.refresh_token,
        signed_in_at: crate::auth::now_secs(),
    };
    state
        .store
        .put_person(subject, &person)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot record a person's sign-in");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "The sign-in could not be recorded; try again in a moment.".to_owned(),
            )
        })?;
    Ok(())
}

/// Counts a sign-in outcome for provider `id` (`-` for an id that is not
/// configured: the label stays bounded by the configuration), and as an
/// authorization-server event.
fn count(state: &AsState, id: &str, outcome: &'static str) {
    let provider = if state.settings().provider(id).is_some() {
        id
    } else {
        "-"
    };
    crate::metrics::metrics()
        .federated_logins
        .with_label_values(&[provider, outcome])
        .inc();
    super::count_event(match outcome {
        "signed_in" => "federated_login",
        "refused" | "ended" => "federated_login_refused",
        _ => "federated_login_failure",
    });
}

fn callback_url(state: &AsState, id: &str) -> String {
    state.public_url.join(&format!("/callback/{id}"))
}

fn failure_of(provider: &Provider, e: &RpError) -> Refusal {
    tracing::warn!(provider = %provider.config.id, error = %e, "sign-in through an identity provider failed");
    match e {
        RpError::Unreachable(_) => (
            StatusCode::BAD_GATEWAY,
            format!(
                "{} cannot be reached right now. Try again in a moment.",
                provider.config.display_name
            ),
        ),
        RpError::Refused(why) => (
            StatusCode::BAD_REQUEST,
            format!(
                "The answer of {} was not accepted: {why}.",
                provider.config.display_name
            ),
        ),
    }
}

fn provider_failure(state: &AsState, id: &str, e: &RpError) -> Response {
    count(state, id, "failed");
    tracing::warn!(provider = %id, error = %e, "cannot start a sign-in through an identity provider");
    let status = match e {
        RpError::Unreachable(_) => StatusCode::BAD_GATEWAY,
        RpError::Refused(_) => StatusCode::BAD_GATEWAY,
    };
    pages::error(
        state,
        status,
        "The sign-in provider cannot be reached right now. Try again in a moment.",
    )
}

/// The providers of the login page: `(id, label)`.
pub(crate) fn buttons(state: &AsState) -> Vec<(String, String)> {
    state
        .settings()
        .providers
        .iter()
        .map(|p| (p.config.id.clone(), p.config.display_name.clone()))
        .collect()
}
