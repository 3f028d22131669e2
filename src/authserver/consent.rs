//! The consent page and its form: which scopes a user may grant, a
//! remembered consent, and the decision that issues the code or refuses.

use super::authorize::{back_to_client, redirect_error};
use super::browser::{flow_of_this_browser, posted_form, signed_in_user, start_over, unavailable};
use super::flows::{CodeGrant, Flow};
use super::pages::{self, ConsentPage};
use super::redirect_uri;
use super::{random_token, AsState};
use crate::policy::OFFLINE_ACCESS;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeSet;
use std::sync::Arc;

/// `GET /consent`: the consent page of a signed-in flow.
pub async fn consent_again(
    State(state): State<Arc<AsState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let flow = match flow_of_this_browser(&state, &headers, query.as_deref()).await {
        Ok(flow) => flow,
        Err(page) => return *page,
    };
    let user = match signed_in_user(&state, &headers).await {
        Ok(user) => user,
        Err(page) => return *page,
    };
    match (flow, user) {
        (Some((flow_id, flow)), Some(user)) if flow.user.as_ref() == Some(&user) => {
            consent_page(&state, &flow_id, &flow, &user).await
        }
        _ => start_over(&state),
    }
}

/// The scopes a user may grant from a flow's request: a local user's, or
/// what the access rules gave a person of an identity provider at their
/// sign-in.
async fn grantable(state: &AsState, flow: &Flow, user: &str) -> Result<Vec<String>, Response> {
    let settings = state.settings();
    let allowed: BTreeSet<String> = if super::federation::provider_of(user).is_some() {
        state
            .federation
            .scopes_of(&*state.store, &settings, user)
            .await
            .map_err(|e| *unavailable(e))?
            .unwrap_or_default()
    } else {
        settings
            .users
            .get(user)
            .map(|u| u.scopes.clone())
            .unwrap_or_default()
    };
    Ok(flow
        .scopes
        .iter()
        .filter(|s| allowed.contains(*s) || *s == OFFLINE_ACCESS)
        .cloned()
        .collect())
}

/// After login: a remembered consent (or nothing the user may grant) goes
/// straight back to the client; otherwise the flow waits for the consent
/// page, which is where `None` sends the browser.
pub(super) async fn decide_without_asking(
    state: &AsState,
    flow: &Flow,
    user: &str,
) -> Result<Option<Response>, Response> {
    let scopes = grantable(state, flow, user).await?;
    if scopes.iter().all(|s| s == OFFLINE_ACCESS) {
        return Ok(Some(redirect_error(
            state,
            &flow.redirect_uri,
            flow.state.as_deref(),
            "access_denied",
            "the user may grant none of the requested scopes",
        )));
    }
    if flow.force_consent {
        return Ok(None);
    }
    match state
        .store
        .has_consent(user, &flow.client_id, &scopes.join(" "))
        .await
    {
        Ok(true) => Ok(Some(approve(state, flow, user, scopes).await)),
        Ok(false) => Ok(None),
        Err(e) => Err(super::errors::OAuthError::from(e).into_response()),
    }
}

/// The consent page of a signed-in flow.
pub(super) async fn consent_page(
    state: &AsState,
    flow_id: &str,
    flow: &Flow,
    user: &str,
) -> Response {
    let scopes = match grantable(state, flow, user).await {
        Ok(scopes) => scopes,
        Err(page) => return page,
    };
    let redirect = url::Url::parse(&flow.redirect_uri).ok();
    let redirect_host = redirect
        .as_ref()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| flow.redirect_uri.clone());
    let loopback = redirect.as_ref().is_some_and(redirect_uri::is_loopback);
    let action = state.public_url.join("/consent");
    let settings = state.settings();
    let resource = settings.resource(&flow.resource);
    let resource_host = url::Url::parse(&flow.resource)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let described: Vec<(String, Option<String>)> = scopes
        .into_iter()
        .map(|s| {
            let text = resource.and_then(|r| r.descriptions.get(&s).cloned());
            (s, text)
        })
        .collect();
    let sign_out = format!("{}?flow={flow_id}", state.public_url.join("/logout"));
    pages::render(
        StatusCode::OK,
        &ConsentPage {
            product: &settings.config.product_name,
            logo: settings.logo.as_deref(),
            client_name: &flow.client_name,
            resource_name: resource.map_or("its tools", |r| r.name.as_str()),
            resource_host: &resource_host,
            username: flow.display.as_deref().unwrap_or(user),
            sign_out: &sign_out,
            redirect_host: &redirect_host,
            loopback,
            scopes: &described,
            action: &action,
            flow: flow_id,
            csrf: &flow.csrf,
        },
    )
}

/// Issues the code and sends the browser back to the client.
pub(super) async fn approve(
    state: &AsState,
    flow: &Flow,
    user: &str,
    scopes: Vec<String>,
) -> Response {
    let grant = CodeGrant {
        client_id: flow.client_id.clone(),
        redirect_uri: flow.redirect_uri.clone(),
        code_challenge: flow.code_challenge.clone(),
        resource: flow.resource.clone(),
        scope: scopes.join(" "),
        subject: user.to_owned(),
        family_id: random_token(16),
    };
    let code = match state.codes.issue(&grant).await {
        Ok(code) => code,
        Err(e) => return super::errors::OAuthError::from(e).into_response(),
    };
    super::count_event("authorization_approved");
    tracing::info!(client_id = %flow.client_id, user, "authorization approved");
    back_to_client(
        state,
        &flow.redirect_uri,
        flow.state.as_deref(),
        &[("code", &code)],
    )
}

/// `POST /consent`.
pub async fn consent(
    State(state): State<Arc<AsState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, flow_id, flow) = match posted_form(&state, &headers, &body).await {
        Ok(posted) => posted,
        Err(page) => return *page,
    };
    let session_user = match signed_in_user(&state, &headers).await {
        Ok(user) => user,
        Err(page) => return *page,
    };
    let user = match (session_user, &flow.user) {
        (Some(session_user), Some(flow_user)) if session_user == *flow_user => session_user,
        _ => return pages::error(&state, StatusCode::BAD_REQUEST, "sign in again to continue"),
    };
    // Single use: of two posts of the form at once (on any replicas), one
    // ends the flow and decides; the other finds it ended.
    match state.flows.end(&flow_id).await {
        Ok(true) => {}
        Ok(false) => return start_over(&state),
        Err(e) => return *unavailable(e),
    }
    match form.get("action").map(String::as_str) {
        Some("approve") => {
            let scopes = match grantable(&state, &flow, &user).await {
                Ok(scopes) => scopes,
                Err(page) => return page,
            };
            if let Err(e) = state
                .store
                .put_consent(&user, &flow.client_id, &scopes.join(" "))
                .await
            {
                return super::errors::OAuthError::from(e).into_response();
            }
            approve(&state, &flow, &user, scopes).await
        }
        Some("deny") => {
            super::count_event("authorization_denied");
            redirect_error(
                &state,
                &flow.redirect_uri,
                flow.state.as_deref(),
                "access_denied",
                "the user denied the request",
            )
        }
        _ => pages::error(&state, StatusCode::BAD_REQUEST, "choose Allow or Deny"),
    }
}
