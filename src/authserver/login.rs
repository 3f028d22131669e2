//! The login page and its form: password checks under the throttle, then on
//! to consent (POST-redirect-GET), or back to the page with the reason.

use super::browser::{
    flow_of_this_browser, posted_form, set_cookie, start_over, to_page, unavailable,
};
use super::consent::decide_without_asking;
use super::flows::Flow;
use super::pages::{self, LoginPage};
use super::{random_token, AsState, PeerAddr};
use crate::store::StoreError;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use std::sync::Arc;

/// The login page of a flow: a button per identity provider, and the
/// password form when there are local users. With one provider and no
/// local users, the browser goes straight to the provider.
pub(super) fn login_page(state: &AsState, flow_id: &str, flow: &Flow) -> Response {
    let providers: Vec<(String, String)> = super::federation::buttons(state)
        .into_iter()
        .map(|(id, label)| {
            let mut url = state.public_url.join(&format!("/login/{id}"));
            url.push_str("?flow=");
            url.push_str(flow_id);
            (url, label)
        })
        .collect();
    let settings = state.settings();
    let password = !settings.users.is_empty();
    if let ([(url, _)], false, None) = (providers.as_slice(), password, &flow.notice) {
        return Redirect::to(url).into_response();
    }
    let action = state.public_url.join("/login");
    pages::render(
        StatusCode::OK,
        &LoginPage {
            product: &settings.config.product_name,
            logo: settings.logo.as_deref(),
            client_name: &flow.client_name,
            action: &action,
            flow: flow_id,
            csrf: &flow.csrf,
            error: flow.notice.as_deref(),
            providers: &providers,
            password,
        },
    )
}

/// Back to the login page of the flow, saying why.
async fn retry_login(state: &AsState, flow_id: &str, flow: Flow, notice: &str) -> Response {
    let flow = Flow {
        notice: Some(notice.to_owned()),
        ..flow
    };
    match state.flows.put(flow_id, &flow).await {
        Ok(()) => to_page(state, "/login", flow_id),
        Err(e) => *unavailable(e),
    }
}

/// `GET /login`: the login page of a flow (after a failed attempt, with
/// its notice); a bookmark or reload of an ended one explains.
pub async fn login_again(
    State(state): State<Arc<AsState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match flow_of_this_browser(&state, &headers, query.as_deref()).await {
        Ok(Some((flow_id, flow))) if flow.user.is_none() => login_page(&state, &flow_id, &flow),
        Ok(_) => start_over(&state),
        Err(page) => *page,
    }
}

/// `POST /login`.
pub async fn login(
    State(state): State<Arc<AsState>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, flow_id, flow) = match posted_form(&state, &headers, &body).await {
        Ok(posted) => posted,
        Err(page) => return *page,
    };
    let username = form.get("username").cloned().unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let peer = peer.map(|p| p.0 .0);
    match check_password(&state, &username, password, peer).await {
        Ok(Ok(())) => {}
        Ok(Err(notice)) => return retry_login(&state, &flow_id, flow, &notice).await,
        Err(e) => return *unavailable(e),
    }
    let sid = random_token(32);
    if let Err(e) = state.flows.start_session(&sid, &username).await {
        return *unavailable(e);
    }
    let flow = Flow {
        user: Some(username.clone()),
        notice: None,
        ..flow
    };
    let mut resp = match decide_without_asking(&state, &flow, &username).await {
        Ok(Some(done)) => done,
        Ok(None) => match state.flows.put(&flow_id, &flow).await {
            Ok(()) => to_page(&state, "/consent", &flow_id),
            Err(e) => *unavailable(e),
        },
        Err(r) => r,
    };
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, "mcpgw_session", &sid, 8 * 3600),
    );
    resp
}

/// Checks a password under the throttle (per user and per address);
/// `Ok(Err)` is the notice for the login page.
async fn check_password(
    state: &AsState,
    username: &str,
    password: String,
    peer: Option<std::net::IpAddr>,
) -> Result<Result<(), String>, StoreError> {
    // Unknown names share one bucket, so random names cannot fill the table.
    let settings = state.settings();
    let user_key = if settings.users.contains_key(username) {
        format!("user:{username}")
    } else {
        "user:(unknown)".to_owned()
    };
    let keys = [
        user_key,
        format!("addr:{}", peer.map_or("-".into(), |ip| ip.to_string())),
    ];
    let mut wait = None;
    for k in &keys {
        wait = wait.max(state.login_limiter.wait(k).await?);
    }
    if let Some(wait) = wait {
        return Ok(Err(format!(
            "Too many failed attempts. Try again in {} seconds.",
            wait.as_secs() + 1
        )));
    }
    // Counted as a failure before the check, so concurrent guesses cannot
    // all slip in under the limit; a success clears it.
    for k in &keys {
        state.login_limiter.failed(k).await?;
    }
    let Ok(_permit) = state.login_limiter.checks.try_acquire() else {
        return Ok(Err(
            "Too many sign-ins at once. Try again in a moment.".to_owned()
        ));
    };
    let hash = settings
        .users
        .get(username)
        .map(|u| u.password_hash.expose().to_owned());
    let ok = tokio::task::spawn_blocking(move || {
        super::passwords::verify_password(hash.as_deref(), &password)
    })
    .await
    .unwrap_or(false);
    if !ok {
        let shown: String = username.chars().take(64).collect::<String>();
        super::count_event("login_failure");
        tracing::info!(user = %shown.escape_debug(), "login failed");
        return Ok(Err("Wrong username or password.".to_owned()));
    }
    for k in &keys {
        state.login_limiter.succeeded(k).await?;
    }
    Ok(Ok(()))
}

/// `GET /logout?flow=…` ("Not you? Sign out" on the consent page): ends
/// this browser's session and shows the flow's login page again.
pub async fn logout(
    State(state): State<Arc<AsState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(sid) = super::browser::cookie(&state, &headers, "mcpgw_session") {
        if let Err(e) = state.flows.end_session(sid).await {
            return *unavailable(e);
        }
    }
    let mut resp = match flow_of_this_browser(&state, &headers, query.as_deref()).await {
        Ok(Some((flow_id, flow))) => {
            let flow = Flow {
                user: None,
                display: None,
                notice: None,
                ..flow
            };
            match state.flows.put(&flow_id, &flow).await {
                Ok(()) => to_page(&state, "/login", &flow_id),
                Err(e) => *unavailable(e),
            }
        }
        Ok(None) => start_over(&state),
        Err(page) => *page,
    };
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, "mcpgw_session", "", 0),
    );
    resp
}
