//! The browser side of a flow: cookies (the flow binding and the session),
//! which flow a page or a form belongs to (flow cookie and CSRF token), and
//! the redirects and pages between the login and consent steps.

use super::flows::Flow;
use super::pages::{self};
use super::AsState;
use aws_lc_rs::constant_time::verify_slices_are_equal;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

fn cookie_name(state: &AsState, base: &str) -> String {
    if state.issuer().starts_with("https://") {
        format!("__Host-{base}")
    } else {
        base.to_owned()
    }
}

pub(super) fn set_cookie(state: &AsState, base: &str, value: &str, max_age: u64) -> HeaderValue {
    let secure = if state.issuer().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
        cookie_name(state, base)
    ))
    .expect("cookie values are base64url")
}

pub(super) fn cookie<'a>(state: &AsState, headers: &'a HeaderMap, base: &str) -> Option<&'a str> {
    let name = cookie_name(state, base);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The page for a sign-in that cannot go on here (ended, expired, or
/// started in another browser).
pub(super) fn start_over(state: &AsState) -> Response {
    pages::error(state, StatusCode::BAD_REQUEST,
        "This sign-in has ended or was started in another browser. Go back to your application and connect again; it will bring you back here.",
    )
}

/// The answer to a browser request the store could not serve (503, try
/// again).
pub(super) fn unavailable(e: crate::store::StoreError) -> Box<Response> {
    Box::new(super::errors::OAuthError::from(e).into_response())
}

/// Whether the browser holds the cookie the flow was bound to.
fn bound_to_this_browser(state: &AsState, headers: &HeaderMap, flow: &Flow) -> bool {
    cookie(state, headers, "mcpgw_flow").is_some_and(|b| {
        verify_slices_are_equal(&Sha256::digest(b.as_bytes()), &flow.binding).is_ok()
    })
}

/// The flow `?flow=` names, if this browser started it.
pub(super) async fn flow_of_this_browser(
    state: &AsState,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<(String, Flow)>, Box<Response>> {
    let Some(flow_id) = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "flow")
            .map(|(_, v)| v.into_owned())
    }) else {
        return Ok(None);
    };
    let flow = state.flows.get(&flow_id).await.map_err(unavailable)?;
    Ok(flow
        .filter(|flow| bound_to_this_browser(state, headers, flow))
        .map(|flow| (flow_id, flow)))
}

/// Who is signed in in this browser.
pub(super) async fn signed_in_user(
    state: &AsState,
    headers: &HeaderMap,
) -> Result<Option<String>, Box<Response>> {
    match cookie(state, headers, "mcpgw_session") {
        Some(sid) => state.flows.session_user(sid).await.map_err(unavailable),
        None => Ok(None),
    }
}

/// A redirect to one of this server's pages (`/login` or `/consent`) for
/// the flow.
pub(super) fn to_page(state: &AsState, page: &str, flow_id: &str) -> Response {
    let mut url = state.public_url.join(page);
    url.push_str("?flow=");
    url.push_str(flow_id);
    let mut resp = Redirect::to(&url).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The flow a form posts to, checked against its CSRF token and the
/// browser's flow cookie; `None` (logged) when either is missing or wrong.
async fn posted_flow(
    state: &AsState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<Option<(String, Flow)>, Box<Response>> {
    let Some(flow_id) = form.get("flow") else {
        return Ok(None);
    };
    let Some(flow) = state.flows.get(flow_id).await.map_err(unavailable)? else {
        return Ok(None);
    };
    let csrf_ok = form
        .get("csrf_token")
        .is_some_and(|t| verify_slices_are_equal(t.as_bytes(), flow.csrf.as_bytes()).is_ok());
    if !csrf_ok || !bound_to_this_browser(state, headers, &flow) {
        tracing::warn!("form refused: CSRF token or flow cookie missing or wrong");
        return Ok(None);
    }
    Ok(Some((flow_id.clone(), flow)))
}

/// A checked login or consent form: its fields, its flow id and its flow.
type PostedForm = (HashMap<String, String>, String, Flow);

/// A login or consent form post, or the error page to answer it with.
pub(super) async fn posted_form(
    state: &AsState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<PostedForm, Box<Response>> {
    let form = super::errors::parse_form(body)
        .map_err(|e| Box::new(pages::error(state, StatusCode::BAD_REQUEST, &e.description)))?;
    let (flow_id, flow) = posted_flow(state, headers, &form).await?.ok_or_else(|| {
        Box::new(pages::error(state, StatusCode::BAD_REQUEST,
            "this form has expired or was not sent by this browser; start again from your application",
        ))
    })?;
    Ok((form, flow_id, flow))
}
