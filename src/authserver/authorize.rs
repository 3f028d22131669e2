//! The authorization endpoint with its login and consent pages.
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

use super::clients::{self, Client};
use super::pages::{self, ConsentPage, LoginPage};
use super::redirect_uri;
use super::{random_token, AsState, PeerAddr};
use crate::policy::OFFLINE_ACCESS;
use aws_lc_rs::constant_time::verify_slices_are_equal;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use moka::sync::Cache;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest authorization request query accepted.
const MAX_AUTHORIZE_QUERY: usize = 4096;

/// A validated authorization request waiting for login and consent.
#[derive(Debug, Clone)]
pub struct Flow {
    client_id: String,
    client_name: String,
    redirect_uri: String,
    state: Option<String>,
    code_challenge: String,
    resource: String,
    scopes: Vec<String>,
    csrf: String,
    /// SHA-256 of the flow cookie the browser holds.
    binding: Vec<u8>,
    /// Set once the user has logged in.
    user: Option<String>,
    /// Shown on the login page the failed attempt redirects to.
    notice: Option<String>,
}

/// A code waiting to be exchanged.
#[derive(Debug, Clone)]
pub struct CodeGrant {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub resource: String,
    pub scope: String,
    pub subject: String,
    /// The refresh-token family its tokens will belong to.
    pub family_id: String,
}

/// Codes by SHA-256, and codes already used (to detect a replay).
pub struct CodeStore {
    live: Cache<Vec<u8>, (Instant, Arc<CodeGrant>)>,
    used: Cache<Vec<u8>, String>,
    ttl: Duration,
}

impl CodeStore {
    pub fn new(ttl: Duration) -> Self {
        Self {
            live: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            used: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl * 10)
                .build(),
            ttl,
        }
    }

    fn issue(&self, grant: CodeGrant) -> String {
        let code = random_token(32);
        self.live.insert(
            Sha256::digest(code.as_bytes()).to_vec(),
            (Instant::now() + self.ttl, Arc::new(grant)),
        );
        code
    }

    /// Takes a code (single use). `Err(family)` when it was used before:
    /// the caller revokes what the first use issued.
    pub fn redeem(&self, code: &str) -> Result<Option<Arc<CodeGrant>>, String> {
        let key = Sha256::digest(code.as_bytes()).to_vec();
        if let Some(family) = self.used.get(&key) {
            return Err(family);
        }
        // Checked here too: the cache may hand out an entry past its time
        // before it evicts it.
        let Some((expires, grant)) = self.live.remove(&key) else {
            return Ok(None);
        };
        self.used.insert(key, grant.family_id.clone());
        Ok((Instant::now() < expires).then_some(grant))
    }
}

/// Flows and browser sessions.
pub struct FlowStore {
    flows: Cache<String, Arc<Flow>>,
    sessions: Cache<String, String>,
}

impl FlowStore {
    pub fn new() -> Self {
        Self {
            flows: Cache::builder()
                .max_capacity(20_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
            sessions: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(8 * 3600))
                .time_to_idle(Duration::from_secs(3600))
                .build(),
        }
    }
}

/// Failed logins per user and per address, with exponential backoff after
/// five failures; and registrations per address.
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    /// Password checks running at once (each costs ~19 MiB and a core).
    pub checks: tokio::sync::Semaphore,
    registrations: Cache<IpAddr, Arc<Mutex<(u32, Instant)>>>,
}

/// Failures allowed before the backoff starts.
const FREE_FAILURES: u32 = 5;
/// The window registrations per address are counted in.
const REGISTRATION_WINDOW: Duration = Duration::from_secs(3600);

impl LoginLimiter {
    pub fn new() -> Self {
        Self {
            failures: Mutex::default(),
            checks: tokio::sync::Semaphore::new(2),
            registrations: Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
        }
    }

    /// How long `key` must still wait before its next attempt.
    fn wait(&self, key: &str) -> Option<Duration> {
        let map = self.failures.lock().expect("limiter lock");
        let (count, last) = map.get(key)?;
        let over = count.checked_sub(FREE_FAILURES)?;
        let backoff = Duration::from_secs(1u64 << over.min(10)).min(Duration::from_secs(900));
        backoff.checked_sub(last.elapsed())
    }

    fn record(&self, key: &str, failed: bool) {
        let mut map = self.failures.lock().expect("limiter lock");
        if map.len() > 100_000 {
            map.retain(|_, (_, last)| last.elapsed() < Duration::from_secs(900));
        }
        if failed {
            let entry = map.entry(key.to_owned()).or_insert((0, Instant::now()));
            *entry = (entry.0 + 1, Instant::now());
        } else {
            map.remove(key);
        }
    }

    /// Counts one registration from `ip` against `per_hour`; `Err` says
    /// how long until the address may register again.
    pub fn allow_registration(&self, ip: IpAddr, per_hour: u32) -> Result<(), Duration> {
        let entry = self
            .registrations
            .get_with(ip, || Arc::new(Mutex::new((0, Instant::now()))));
        let mut e = entry.lock().expect("limiter lock");
        if e.1.elapsed() > REGISTRATION_WINDOW {
            *e = (0, Instant::now());
        }
        if e.0 >= per_hour {
            return Err(REGISTRATION_WINDOW.saturating_sub(e.1.elapsed()));
        }
        e.0 += 1;
        Ok(())
    }
}

fn cookie_name(state: &AsState, base: &str) -> String {
    if state.config.issuer.starts_with("https://") {
        format!("__Host-{base}")
    } else {
        base.to_owned()
    }
}

fn set_cookie(state: &AsState, base: &str, value: &str, max_age: u64) -> HeaderValue {
    let secure = if state.config.issuer.starts_with("https://") {
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

fn cookie<'a>(state: &AsState, headers: &'a HeaderMap, base: &str) -> Option<&'a str> {
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

/// Redirects back to the client with `params`, `state` and `iss`.
fn back_to_client(
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

fn redirect_error(
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
            StatusCode::BAD_REQUEST,
            "the authorization request is too long",
        );
    }
    let params = match super::errors::parse_form(query.as_bytes()) {
        Ok(p) => p,
        Err(e) => return pages::error(StatusCode::BAD_REQUEST, &e.description),
    };
    let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let client = match get("client_id") {
        None => return pages::error(StatusCode::BAD_REQUEST, "the request names no client"),
        Some(id) => match clients::find(&state, id).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return pages::error(
                    StatusCode::BAD_REQUEST,
                    "this application is not registered here",
                )
            }
            Err(e) => return pages::error(StatusCode::BAD_REQUEST, &e.description),
        },
    };
    let redirect = match (get("redirect_uri"), client.meta.redirect_uris.as_slice()) {
        (Some(r), registered) if registered.iter().any(|u| redirect_uri::matches(u, r)) => {
            r.to_owned()
        }
        (None, [only]) => only.clone(),
        _ => {
            return pages::error(
                StatusCode::BAD_REQUEST,
                "the redirect URI is not one this application registered",
            )
        }
    };
    let flow_state = get("state");
    let fail = |error: &str, description: &str| {
        redirect_error(&state, &redirect, flow_state, error, description)
    };
    if get("response_type") != Some("code") {
        return fail(
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    let challenge = match (get("code_challenge"), get("code_challenge_method")) {
        (Some(c), Some("S256"))
            if (43..=128).contains(&c.len())
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            c
        }
        (Some(_), Some("S256")) => {
            return fail(
                "invalid_request",
                "code_challenge is not a base64url SHA-256",
            )
        }
        _ => {
            return fail(
                "invalid_request",
                "PKCE with code_challenge_method=S256 is required",
            )
        }
    };
    let resource = match (get("resource"), state.resources.as_slice()) {
        (Some(r), _) => match state.resource(r) {
            Some(res) => res.clone(),
            None => {
                return fail(
                    "invalid_target",
                    "resource is not a protected resource of this server",
                )
            }
        },
        (None, [only]) => only.clone(),
        (None, _) => {
            return fail(
                "invalid_target",
                "resource is required: several resources are served here",
            )
        }
    };
    let scopes: Vec<String> = match get("scope") {
        Some(s) => {
            let mut seen = BTreeSet::new();
            s.split(' ')
                .filter(|s| !s.is_empty() && seen.insert(*s))
                .map(str::to_owned)
                .collect()
        }
        None => resource.base.clone(),
    };
    if let Some(bad) = scopes
        .iter()
        .find(|s| !resource.scopes.contains(s) && *s != OFFLINE_ACCESS)
    {
        return fail(
            "invalid_scope",
            &format!("scope `{bad}` is not known for this resource"),
        );
    }
    let binding = random_token(32);
    let flow = Flow {
        client_id: client.id.clone(),
        client_name: client.display_name().to_owned(),
        redirect_uri: redirect.clone(),
        state: flow_state.map(str::to_owned),
        code_challenge: challenge.to_owned(),
        resource: resource.url.clone(),
        scopes,
        csrf: random_token(32),
        binding: Sha256::digest(binding.as_bytes()).to_vec(),
        user: None,
        notice: None,
    };
    let flow_id = random_token(24);
    let mut resp = match signed_in_user(&state, &headers) {
        Some(user) => {
            let flow = Flow {
                user: Some(user.clone()),
                ..flow
            };
            match decide_without_asking(&state, &flow, &user).await {
                Ok(Some(done)) => done,
                Ok(None) => {
                    let page = consent_page(&state, &flow_id, &flow, &user);
                    state.flows.flows.insert(flow_id, Arc::new(flow));
                    page
                }
                Err(r) => return r,
            }
        }
        None => {
            let page = login_page(&state, &flow_id, &flow);
            state.flows.flows.insert(flow_id, Arc::new(flow));
            page
        }
    };
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, "mcpgw_flow", &binding, 600),
    );
    resp
}

fn login_page(state: &AsState, flow_id: &str, flow: &Flow) -> Response {
    let action = state.public_url.join("/login");
    pages::render(
        StatusCode::OK,
        &LoginPage {
            client_name: &flow.client_name,
            action: &action,
            flow: flow_id,
            csrf: &flow.csrf,
            error: flow.notice.as_deref(),
        },
    )
}

/// Back to the login page of the flow, saying why.
fn retry_login(state: &AsState, flow_id: &str, flow: &Flow, notice: &str) -> Response {
    let flow = Flow {
        notice: Some(notice.to_owned()),
        ..flow.clone()
    };
    state.flows.flows.insert(flow_id.to_owned(), Arc::new(flow));
    to_page(state, "/login", flow_id)
}

/// The page for a sign-in that cannot go on here (ended, expired, or
/// started in another browser).
fn start_over() -> Response {
    pages::error(
        StatusCode::BAD_REQUEST,
        "This sign-in has ended or was started in another browser. Go back to your application and connect again; it will bring you back here.",
    )
}

/// The flow `?flow=` names, if this browser started it.
fn flow_of_this_browser(
    state: &AsState,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Option<(String, Arc<Flow>)> {
    let flow_id = url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "flow")
        .map(|(_, v)| v.into_owned())?;
    let flow = state.flows.flows.get(&flow_id)?;
    let bound = cookie(state, headers, "mcpgw_flow").is_some_and(|b| {
        verify_slices_are_equal(&Sha256::digest(b.as_bytes()), &flow.binding).is_ok()
    });
    bound.then_some((flow_id, flow))
}

/// `GET /login`: the login page of a flow (after a failed attempt, with
/// its notice); a bookmark or reload of an ended one explains.
pub async fn login_again(
    State(state): State<Arc<AsState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match flow_of_this_browser(&state, &headers, query.as_deref()) {
        Some((flow_id, flow)) if flow.user.is_none() => login_page(&state, &flow_id, &flow),
        _ => start_over(),
    }
}

/// `GET /consent`: the consent page of a signed-in flow.
pub async fn consent_again(
    State(state): State<Arc<AsState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let flow = flow_of_this_browser(&state, &headers, query.as_deref());
    match (flow, signed_in_user(&state, &headers)) {
        (Some((flow_id, flow)), Some(user)) if flow.user.as_ref() == Some(&user) => {
            consent_page(&state, &flow_id, &flow, &user)
        }
        _ => start_over(),
    }
}

fn signed_in_user(state: &AsState, headers: &HeaderMap) -> Option<String> {
    cookie(state, headers, "mcpgw_session").and_then(|sid| state.flows.sessions.get(sid))
}

/// The scopes a user may grant from a flow's request.
fn grantable(state: &AsState, flow: &Flow, user: &str) -> Vec<String> {
    let allowed: BTreeSet<&String> = state
        .users
        .get(user)
        .map(|u| u.scopes.iter().collect())
        .unwrap_or_default();
    flow.scopes
        .iter()
        .filter(|s| allowed.contains(s) || *s == OFFLINE_ACCESS)
        .cloned()
        .collect()
}

/// After login: a remembered consent (or nothing the user may grant) goes
/// straight back to the client; otherwise the flow waits for the consent
/// page, which is where `None` sends the browser.
async fn decide_without_asking(
    state: &AsState,
    flow: &Flow,
    user: &str,
) -> Result<Option<Response>, Response> {
    let scopes = grantable(state, flow, user);
    if scopes.iter().all(|s| s == OFFLINE_ACCESS) {
        return Ok(Some(redirect_error(
            state,
            &flow.redirect_uri,
            flow.state.as_deref(),
            "access_denied",
            "the user may grant none of the requested scopes",
        )));
    }
    match state
        .store
        .has_consent(user, &flow.client_id, &scopes.join(" "))
        .await
    {
        Ok(true) => Ok(Some(approve(state, flow, user, scopes))),
        Ok(false) => Ok(None),
        Err(e) => Err(super::errors::OAuthError::from(e).into_response()),
    }
}

/// The consent page of a signed-in flow.
fn consent_page(state: &AsState, flow_id: &str, flow: &Flow, user: &str) -> Response {
    let scopes = grantable(state, flow, user);
    let redirect = url::Url::parse(&flow.redirect_uri).ok();
    let redirect_host = redirect
        .as_ref()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| flow.redirect_uri.clone());
    let loopback = redirect.as_ref().is_some_and(redirect_uri::is_loopback);
    let action = state.public_url.join("/consent");
    pages::render(
        StatusCode::OK,
        &ConsentPage {
            client_name: &flow.client_name,
            username: user,
            redirect_host: &redirect_host,
            loopback,
            scopes: &scopes,
            action: &action,
            flow: flow_id,
            csrf: &flow.csrf,
        },
    )
}

/// A redirect to one of this server's pages (`/login` or `/consent`) for
/// the flow.
fn to_page(state: &AsState, page: &str, flow_id: &str) -> Response {
    let mut url = state.public_url.join(page);
    url.push_str("?flow=");
    url.push_str(flow_id);
    let mut resp = Redirect::to(&url).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Issues the code and sends the browser back to the client.
fn approve(state: &AsState, flow: &Flow, user: &str, scopes: Vec<String>) -> Response {
    let code = state.codes.issue(CodeGrant {
        client_id: flow.client_id.clone(),
        redirect_uri: flow.redirect_uri.clone(),
        code_challenge: flow.code_challenge.clone(),
        resource: flow.resource.clone(),
        scope: scopes.join(" "),
        subject: user.to_owned(),
        family_id: random_token(16),
    });
    super::count_event("authorization_approved");
    tracing::info!(client_id = %flow.client_id, user, "authorization approved");
    back_to_client(
        state,
        &flow.redirect_uri,
        flow.state.as_deref(),
        &[("code", &code)],
    )
}

/// The flow a form posts to, checked against its CSRF token and the
/// browser's flow cookie; `None` (logged) when either is missing or wrong.
fn posted_flow(
    state: &AsState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Option<(String, Arc<Flow>)> {
    let flow_id = form.get("flow")?;
    let flow = state.flows.flows.get(flow_id)?;
    let csrf_ok = form
        .get("csrf_token")
        .is_some_and(|t| verify_slices_are_equal(t.as_bytes(), flow.csrf.as_bytes()).is_ok());
    let bound = cookie(state, headers, "mcpgw_flow").is_some_and(|b| {
        verify_slices_are_equal(&Sha256::digest(b.as_bytes()), &flow.binding).is_ok()
    });
    if !csrf_ok || !bound {
        tracing::warn!("form refused: CSRF token or flow cookie missing or wrong");
        return None;
    }
    Some((flow_id.clone(), flow))
}

/// A checked login or consent form: its fields, its flow id and its flow.
type PostedForm = (HashMap<String, String>, String, Arc<Flow>);

/// A login or consent form post, or the error page to answer it with.
fn posted_form(
    state: &AsState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<PostedForm, Box<Response>> {
    let form = super::errors::parse_form(body)
        .map_err(|e| Box::new(pages::error(StatusCode::BAD_REQUEST, &e.description)))?;
    let (flow_id, flow) = posted_flow(state, headers, &form).ok_or_else(|| {
        Box::new(pages::error(
            StatusCode::BAD_REQUEST,
            "this form has expired or was not sent by this browser; start again from your application",
        ))
    })?;
    Ok((form, flow_id, flow))
}

/// `POST /login`.
pub async fn login(
    State(state): State<Arc<AsState>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, flow_id, flow) = match posted_form(&state, &headers, &body) {
        Ok(posted) => posted,
        Err(page) => return *page,
    };
    let username = form.get("username").cloned().unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    // Unknown names share one bucket, so random names cannot fill the table.
    let user_key = if state.users.contains_key(&username) {
        format!("user:{username}")
    } else {
        "user:(unknown)".to_owned()
    };
    let keys = [
        user_key,
        format!("addr:{}", peer.map_or("-".into(), |p| p.0 .0.to_string())),
    ];
    if let Some(wait) = keys
        .iter()
        .filter_map(|k| state.login_limiter.wait(k))
        .max()
    {
        let message = format!(
            "Too many failed attempts. Try again in {} seconds.",
            wait.as_secs() + 1
        );
        return retry_login(&state, &flow_id, &flow, &message);
    }
    // Counted as a failure before the check, so concurrent guesses cannot
    // all slip in under the limit; a success clears it.
    for k in &keys {
        state.login_limiter.record(k, true);
    }
    let Ok(_permit) = state.login_limiter.checks.try_acquire() else {
        return retry_login(
            &state,
            &flow_id,
            &flow,
            "Too many sign-ins at once. Try again in a moment.",
        );
    };
    let hash = state
        .users
        .get(&username)
        .map(|u| u.password_hash.expose().to_owned());
    let ok = tokio::task::spawn_blocking(move || {
        super::passwords::verify_password(hash.as_deref(), &password)
    })
    .await
    .unwrap_or(false);
    let shown: String = username
        .chars()
        .take(64)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if !ok {
        super::count_event("login_failure");
        tracing::info!(user = %shown, "login failed");
        return retry_login(&state, &flow_id, &flow, "Wrong username or password.");
    }
    for k in &keys {
        state.login_limiter.record(k, false);
    }
    let sid = random_token(32);
    state.flows.sessions.insert(sid.clone(), username.clone());
    let flow = Flow {
        user: Some(username.clone()),
        notice: None,
        ..(*flow).clone()
    };
    let mut resp = match decide_without_asking(&state, &flow, &username).await {
        Ok(Some(done)) => done,
        Ok(None) => {
            state.flows.flows.insert(flow_id.clone(), Arc::new(flow));
            to_page(&state, "/consent", &flow_id)
        }
        Err(r) => r,
    };
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, "mcpgw_session", &sid, 8 * 3600),
    );
    resp
}

/// `POST /consent`.
pub async fn consent(
    State(state): State<Arc<AsState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, flow_id, flow) = match posted_form(&state, &headers, &body) {
        Ok(posted) => posted,
        Err(page) => return *page,
    };
    let user = match (signed_in_user(&state, &headers), &flow.user) {
        (Some(session_user), Some(flow_user)) if session_user == *flow_user => session_user,
        _ => return pages::error(StatusCode::BAD_REQUEST, "sign in again to continue"),
    };
    state.flows.flows.invalidate(&flow_id);
    match form.get("action").map(String::as_str) {
        Some("approve") => {
            let scopes = grantable(&state, &flow, &user);
            if let Err(e) = state
                .store
                .put_consent(&user, &flow.client_id, &scopes.join(" "))
                .await
            {
                return super::errors::OAuthError::from(e).into_response();
            }
            approve(&state, &flow, &user, scopes)
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
        _ => pages::error(StatusCode::BAD_REQUEST, "choose Allow or Deny"),
    }
}

/// The client a code was issued to must be the one redeeming it.
pub fn code_belongs_to(grant: &CodeGrant, client: &Client) -> bool {
    grant.client_id == client.id
}
