//! The authorization endpoint. Its flow goes on in `login` and `consent`,
//! held in `flows`, tied to the browser by `browser`.
//!
//! `GET /authorize` checks the request in two stages: the client and its
//! redirect URI first (a failure is shown as an error page, never
//! redirected to), then everything else (a failure is redirected back with
//! `error`, `state` and `iss`, RFC 9207). A valid request becomes a *flow*
//! held server-side, bound to the browser by a cookie and to its forms by a
//! CSRF token. Login sets a session cookie; consent is remembered per
//! (user, client, scopes); approval issues a single-use code bound to the
//! client, redirect URI, PKCE challenge and resource.
//!
//! Every form post is answered with a redirect (POST-redirect-GET): a
//! login goes on to `GET /consent?flow=…` (or back to `GET /login?flow=…`
//! with a notice), a decision goes back to the client. So Back and reload
//! never resubmit a form, and `GET /login` or `/consent` of a flow that has
//! ended (a bookmark, Back after Allow) shows a page saying how to start
//! over.

use super::browser::{set_cookie, signed_in_user, unavailable};
use super::clients::{self, Client};
use super::consent::{consent_page, decide_without_asking};
use super::flows::Flow;
use super::login::login_page;
use super::pages::{self};
use super::pkce::{ChallengeError, CodeChallenge};
use super::redirect_uri;
use super::{random_token, AsState, Resource};
use crate::policy::OFFLINE_ACCESS;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Longest authorization request query accepted.
const MAX_AUTHORIZE_QUERY: usize = 4096;

/// Redirects back to the client with `params`, `state` and `iss`.
pub(super) fn back_to_client(
    state: &AsState,
    flow_redirect: &str,
    flow_state: Option<&str>,
    params: &[(&str, &str)],
) -> Response {
    let mut url = url::Url::parse(flow_redirect).expect("registered redirect URIs are URLs");
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
        if let Some(s) = flow_state {
            q.append_pair("state", s);
        }
        q.append_pair("iss", state.issuer());
    }
    let mut resp = Redirect::to(url.as_str()).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub(super) fn redirect_error(
    state: &AsState,
    redirect: &str,
    flow_state: Option<&str>,
    error: &str,
    description: &str,
) -> Response {
    tracing::info!(error, description, "authorization request refused");
    back_to_client(
        state,
        redirect,
        flow_state,
        &[("error", error), ("error_description", description)],
    )
}

/// `GET /authorize`.
pub async fn authorize(
    State(state): State<Arc<AsState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = query.unwrap_or_default();
    if query.len() > MAX_AUTHORIZE_QUERY {
        return pages::error(
            &state,
            StatusCode::BAD_REQUEST,
            "the authorization request is too long",
        );
    }
    let params = match super::errors::parse_form(query.as_bytes()) {
        Ok(p) => p,
        Err(e) => return pages::error(&state, StatusCode::BAD_REQUEST, &e.description),
    };
    let (client, redirect) = match client_and_redirect(&state, &params).await {
        Ok(found) => found,
        Err(page) => return *page,
    };
    let flow_state = param(&params, "state");
    let (challenge, resource, scopes) = match checked_request(&state, &params) {
        Ok(checked) => checked,
        Err((error, description)) => {
            return redirect_error(&state, &redirect, flow_state, error, &description)
        }
    };
    // OpenID Connect `prompt`: `none` (answer without any page), `login`,
    // `consent`; other values ask nothing of this server.
    let prompt: Vec<&str> = param(&params, "prompt")
        .map(|p| p.split(' ').filter(|v| !v.is_empty()).collect())
        .unwrap_or_default();
    if prompt.contains(&"none") && prompt.len() > 1 {
        return redirect_error(
            &state,
            &redirect,
            flow_state,
            "invalid_request",
            "prompt=none cannot be combined with other values",
        );
    }
    let binding = random_token(32);
    let flow = Flow {
        client_id: client.id.clone(),
        client_name: client.display_name().to_owned(),
        redirect_uri: redirect,
        state: flow_state.map(str::to_owned),
        code_challenge: challenge,
        resource: resource.url.clone(),
        scopes,
        csrf: random_token(32),
        binding: Sha256::digest(binding.as_bytes()).to_vec(),
        user: None,
        notice: None,
        login_hint: param(&params, "login_hint").map(str::to_owned),
        force_login: prompt.contains(&"login"),
        force_consent: prompt.contains(&"consent"),
        display: None,
    };
    let mut resp = match start_flow(&state, &headers, flow, prompt.contains(&"none")).await {
        Ok(page) => page,
        Err(r) => return r,
    };
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, "mcpgw_flow", &binding, 600),
    );
    resp
}

/// A non-empty request parameter.
fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// Stage one: the client and the redirect URI. A failure here is an error
/// page, never a redirect (the redirect URI is not trusted yet).
async fn client_and_redirect(
    state: &AsState,
    params: &HashMap<String, String>,
) -> Result<(Client, String), Box<Response>> {
    let page = |message: &str| Box::new(pages::error(state, StatusCode::BAD_REQUEST, message));
    let client = match param(params, "client_id") {
        None => return Err(page("the request names no client")),
        Some(id) => match clients::find(state, id).await {
            Ok(Some(c)) => c,
            Ok(None) => return Err(page("this application is not registered here")),
            Err(e) => return Err(page(&e.description)),
        },
    };
    let redirect = match (
        param(params, "redirect_uri"),
        client.meta.redirect_uris.as_slice(),
    ) {
        (Some(r), registered) if registered.iter().any(|u| redirect_uri::matches(u, r)) => {
            r.to_owned()
        }
        (None, [only]) => only.clone(),
        _ => {
            return Err(page(
                "the redirect URI is not one this application registered",
            ))
        }
    };
    Ok((client, redirect))
}

/// An OAuth error (code, description) to redirect back to the client.
type RedirectedError = (&'static str, String);

fn refuse<T>(error: &'static str, description: &str) -> Result<T, RedirectedError> {
    Err((error, description.to_owned()))
}

/// Stage two: response type, PKCE, resource and scopes. A failure is an
/// OAuth error redirected back to the client.
fn checked_request(
    state: &AsState,
    params: &HashMap<String, String>,
) -> Result<(CodeChallenge, Resource, Vec<String>), RedirectedError> {
    let get = |k: &str| param(params, k);
    if get("response_type") != Some("code") {
        return refuse(
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    let challenge = match CodeChallenge::parse(get("code_challenge"), get("code_challenge_method"))
    {
        Ok(c) => c,
        Err(ChallengeError::Malformed) => {
            return refuse(
                "invalid_request",
                "code_challenge is not a base64url SHA-256",
            )
        }
        Err(ChallengeError::S256Required) => {
            return refuse(
                "invalid_request",
                "PKCE with code_challenge_method=S256 is required",
            )
        }
    };
    let resource = requested_resource(state, get("resource"))?;
    let scopes = requested_scopes(get("scope"), &resource)?;
    Ok((challenge, resource, scopes))
}

/// RFC 8707: the protected resource named, or the only one served here.
fn requested_resource(state: &AsState, named: Option<&str>) -> Result<Resource, RedirectedError> {
    let settings = state.settings();
    match (named, settings.resources.as_slice()) {
        (Some(r), _) => match settings.resource(r) {
            Some(res) => Ok(res.clone()),
            None => refuse(
                "invalid_target",
                "resource is not a protected resource of this server",
            ),
        },
        (None, [only]) => Ok(only.clone()),
        (None, _) => refuse(
            "invalid_target",
            "resource is required: several resources are served here",
        ),
    }
}

/// The scopes asked for (each once), or the resource's base scopes when
/// none are; every one must be known for the resource.
fn requested_scopes(
    asked: Option<&str>,
    resource: &Resource,
) -> Result<Vec<String>, RedirectedError> {
    let scopes: Vec<String> = match asked {
        Some(s) => {
            let mut seen = BTreeSet::new();
            s.split(' ')
                .filter(|s| !s.is_empty() && seen.insert(*s))
                .map(str::to_owned)
                .collect()
        }
        None => resource.base.clone(),
    };
    match scopes
        .iter()
        .find(|s| !resource.scopes.contains(s) && *s != OFFLINE_ACCESS)
    {
        Some(bad) => refuse(
            "invalid_scope",
            &format!("scope `{bad}` is not known for this resource"),
        ),
        None => Ok(scopes),
    }
}

/// A signed-in browser goes on to consent (or straight back when consent is
/// remembered); any other to the login page. The flow is kept either way.
async fn start_flow(
    state: &AsState,
    headers: &HeaderMap,
    flow: Flow,
    prompt_none: bool,
) -> Result<Response, Response> {
    let flow_id = random_token(24);
    let signed_in = signed_in_user(state, headers)
        .await
        .map_err(|page| *page)?
        .filter(|_| !flow.force_login);
    if prompt_none {
        let refuse = |error, description| {
            redirect_error(
                state,
                &flow.redirect_uri,
                flow.state.as_deref(),
                error,
                description,
            )
        };
        let Some(user) = signed_in else {
            return Ok(refuse(
                "login_required",
                "no one is signed in in this browser",
            ));
        };
        let flow = Flow {
            user: Some(user.clone()),
            ..flow.clone()
        };
        return Ok(match decide_without_asking(state, &flow, &user).await? {
            Some(done) => done,
            None => refuse(
                "consent_required",
                "the user has not consented to this request",
            ),
        });
    }
    let Some(user) = signed_in else {
        let page = login_page(state, &flow_id, &flow);
        state
            .flows
            .put(&flow_id, &flow)
            .await
            .map_err(|e| *unavailable(e))?;
        return Ok(page);
    };
    let flow = Flow {
        user: Some(user.clone()),
        ..flow
    };
    match decide_without_asking(state, &flow, &user).await? {
        Some(done) => Ok(done),
        None => {
            let page = consent_page(state, &flow_id, &flow, &user).await;
            state
                .flows
                .put(&flow_id, &flow)
                .await
                .map_err(|e| *unavailable(e))?;
            Ok(page)
        }
    }
}
