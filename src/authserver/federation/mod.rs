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
//! `<id>|<sub>`, so two providers never share one; their claims are kept
//! (not the provider's tokens) so the rules can be applied again at every
//! refresh.

pub mod oidc;
pub mod rules;

use super::browser::{flow_of_this_browser, set_cookie, to_page};
use super::consent::decide_without_asking;
use super::flows::Flow;
use super::{pages, random_token, AsState};
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
struct Pending {
    provider: String,
    flow_id: String,
    nonce: String,
    verifier: String,
}

/// Sign-ins under way, and what the people signed in may grant.
pub(crate) struct Federation {
    /// By `state`; ten minutes to come back.
    pending: Cache<String, Arc<Pending>>,
    /// Subject to the scopes the rules gave at their latest sign-in, for
    /// as long as a browser session lasts.
    people: Cache<String, Arc<BTreeSet<String>>>,
}

impl Federation {
    pub fn new() -> Self {
        Self {
            pending: Cache::builder()
                .max_capacity(20_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
            people: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(8 * 3600))
                .build(),
        }
    }

    /// What `subject` (signed in through a provider) may grant.
    pub fn scopes_of(&self, subject: &str) -> Option<Arc<BTreeSet<String>>> {
        self.people.get(subject)
    }
}

/// Whether `subject` is a person of an identity provider (`<id>|<sub>`).
pub fn provider_of(subject: &str) -> Option<&str> {
    subject.split_once('|').map(|(id, _)| id)
}

/// What `subject` may grant now: the rules applied to the claims of their
/// latest sign-in (a provider removed from the configuration admits no
/// one). `None`: not admitted.
pub(crate) async fn admitted_now(state: &AsState, subject: &str) -> Option<BTreeSet<String>> {
    let idp = provider_of(subject)?;
    let settings = state.settings();
    settings.provider(idp)?;
    let claims = match state.store.person(subject).await {
        Ok(Some(c)) => serde_json::from_str::<Value>(&c).ok()?,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a person's claims");
            return None;
        }
    };
    rules::admitted(&settings.config.access, idp, &claims)
}

/// `GET /login/<id>?flow=…`: on to the provider.
pub async fn start(
    State(state): State<Arc<AsState>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some((flow_id, flow)) = flow_of_this_browser(&state, &headers, query.as_deref()) else {
        return super::browser::start_over();
    };
    let settings = state.settings();
    let Some(provider) = settings.provider(&id) else {
        return pages::error(
            StatusCode::NOT_FOUND,
            "There is no such sign-in provider here.",
        );
    };
    let metadata = match provider.discover().await {
        Ok((m, _)) => m,
        Err(e) => return provider_failure(&id, &e),
    };
    let pending = Pending {
        provider: id.clone(),
        flow_id,
        nonce: random_token(24),
        verifier: random_token(32),
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
        Ok(url) => {
            state
                .federation
                .pending
                .insert(state_param, Arc::new(pending));
            Redirect::to(&url).into_response()
        }
        Err(e) => provider_failure(&id, &e),
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
            super::count_event("federated_login_failure");
            tracing::info!(target: "audit", decision = "denied", reason = "federated_login", provider = %id, detail = %message, "sign-in through an identity provider refused");
            pages::error(status, &message)
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
    let pending = params
        .get("state")
        .and_then(|s| state.federation.pending.remove(s))
        .ok_or_else(|| bad("This sign-in is unknown, expired or already used. Go back to your application and connect again."))?;
    if pending.provider != id {
        return Err(bad(
            "This answer came back to another provider's sign-in; it is not accepted.",
        ));
    }
    let flow_query = format!("flow={}", pending.flow_id);
    let (flow_id, flow) = flow_of_this_browser(state, headers, Some(&flow_query))
        .ok_or_else(|| bad("This sign-in was started in another browser, or has ended. Go back to your application and connect again."))?;
    let settings = state.settings();
    let provider = settings
        .provider(id)
        .ok_or_else(|| bad("This sign-in provider is no longer configured here."))?;
    if let Some(error) = params.get("error") {
        let detail = params.get("error_description").map_or("", String::as_str);
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "{} did not sign you in: {error} {detail}",
                provider.config.display_name
            ),
        ));
    }
    let (metadata, _) = provider
        .discover()
        .await
        .map_err(|e| failure_of(provider, &e))?;
    check_iss(provider, &metadata, params.get("iss").map(String::as_str))?;
    let code = params
        .get("code")
        .ok_or_else(|| bad("The identity provider sent no authorization code."))?;
    let claims = provider
        .sign_in(
            code,
            &callback_url(state, id),
            &pending.verifier,
            &pending.nonce,
        )
        .await
        .map_err(|e| failure_of(provider, &e))?;
    let sub = claims["sub"].as_str().unwrap_or_default();
    let subject = format!("{id}|{sub}");
    let Some(scopes) = rules::admitted(&settings.config.access, id, &claims) else {
        super::count_event("federated_login_refused");
        tracing::info!(target: "audit", decision = "denied", reason = "no_access_rule", provider = %id, subject = %subject.escape_debug(), "person not admitted by the access rules");
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "Your {} account is not allowed to use this server. Ask its operator for access.",
                provider.config.display_name
            ),
        ));
    };
    remember(state, &subject, &claims, scopes).await?;
    super::count_event("federated_login");
    tracing::info!(target: "audit", decision = "allowed", reason = "federated_login", provider = %id, subject = %subject.escape_debug(), "signed in through an identity provider");
    let display = ["email", "name", "preferred_username"]
        .iter()
        .find_map(|c| claims[*c].as_str())
        .unwrap_or(sub)
        .to_owned();
    let sid = random_token(32);
    state.flows.sessions.insert(sid.clone(), subject.clone());
    let flow = Flow {
        user: Some(subject.clone()),
        display: Some(display),
        notice: None,
        ..(*flow).clone()
    };
    let mut resp = match decide_without_asking(state, &flow, &subject).await {
        Ok(Some(done)) => done,
        Ok(None) => {
            state.flows.flows.insert(flow_id.clone(), Arc::new(flow));
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

/// Keeps the person's claims (for the rules at refresh; never the
/// provider's tokens) and what they may grant now.
async fn remember(
    state: &AsState,
    subject: &str,
    claims: &Value,
    scopes: BTreeSet<String>,
) -> Result<(), Refusal> {
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
    state
        .store
        .put_person(subject, &kept.to_string(), crate::auth::now_secs())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot record a person's sign-in");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "The sign-in could not be recorded; try again in a moment.".to_owned(),
            )
        })?;
    state
        .federation
        .people
        .insert(subject.to_owned(), Arc::new(scopes));
    Ok(())
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

fn provider_failure(id: &str, e: &RpError) -> Response {
    super::count_event("federated_login_failure");
    tracing::warn!(provider = %id, error = %e, "cannot start a sign-in through an identity provider");
    let status = match e {
        RpError::Unreachable(_) => StatusCode::BAD_GATEWAY,
        RpError::Refused(_) => StatusCode::BAD_GATEWAY,
    };
    pages::error(
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
