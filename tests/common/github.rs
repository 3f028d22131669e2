//! A GitHub-style OAuth 2.0 provider for `type: github`: the documented
//! authorize and access-token endpoints (PKCE S256 checked, errors as 200
//! with `error`, as GitHub does) and the REST endpoints the gateway reads
//! (`/user`, `/user/emails`, `/user/orgs`, `/user/teams`). Whoever the test
//! names is signed in at GitHub; tokens can be revoked.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// A GitHub user: id, login, primary email (verified or not), orgs, and
/// teams as `(org, slug)`.
#[derive(Clone)]
pub struct GhUser {
    pub id: u64,
    pub login: &'static str,
    pub email: (&'static str, bool),
    pub orgs: Vec<&'static str>,
    pub teams: Vec<(&'static str, &'static str)>,
}

#[derive(Default)]
struct GhState {
    users: Mutex<HashMap<&'static str, GhUser>>,
    signed_in: Mutex<Option<&'static str>>,
    codes: Mutex<HashMap<String, (&'static str, String)>>,
    tokens: Mutex<HashMap<String, &'static str>>,
}

pub struct FakeGithub {
    pub url: String,
    state: Arc<GhState>,
}

pub const CLIENT: (&str, &str) = ("gh-client", "gh-secret");

impl FakeGithub {
    pub async fn start(users: Vec<GhUser>) -> Self {
        let state = Arc::new(GhState::default());
        state
            .users
            .lock()
            .unwrap()
            .extend(users.into_iter().map(|u| (u.login, u)));
        let app = Router::new()
            .route("/login/oauth/authorize", get(authorize))
            .route("/login/oauth/access_token", post(access_token))
            .route("/user", get(user))
            .route("/user/emails", get(emails))
            .route("/user/orgs", get(orgs))
            .route("/user/teams", get(teams))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url: format!("http://{addr}"),
            state,
        }
    }

    /// Who is signed in at GitHub from now on.
    pub fn sign_in(&self, login: &'static str) {
        *self.state.signed_in.lock().unwrap() = Some(login);
    }

    /// Replaces a user's teams.
    pub fn set_teams(&self, login: &str, teams: Vec<(&'static str, &'static str)>) {
        self.state
            .users
            .lock()
            .unwrap()
            .get_mut(login)
            .unwrap()
            .teams = teams;
    }

    /// Revokes every token (the person removed the app's authorization).
    pub fn revoke_all(&self) {
        self.state.tokens.lock().unwrap().clear();
    }
}

async fn authorize(
    State(s): State<Arc<GhState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if q.get("client_id").map(String::as_str) != Some(CLIENT.0)
        || q.get("code_challenge_method").map(String::as_str) != Some("S256")
    {
        return (StatusCode::BAD_REQUEST, "bad request").into_response();
    }
    let login = s
        .signed_in
        .lock()
        .unwrap()
        .expect("a test signs someone in");
    let code = format!("code-{}", s.codes.lock().unwrap().len());
    s.codes
        .lock()
        .unwrap()
        .insert(code.clone(), (login, q["code_challenge"].clone()));
    let mut back = url::Url::parse(&q["redirect_uri"]).unwrap();
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &q["state"]);
    Redirect::to(back.as_str()).into_response()
}

async fn access_token(
    State(s): State<Arc<GhState>>,
    Form(f): Form<HashMap<String, String>>,
) -> Json<Value> {
    if f.get("client_id").map(String::as_str) != Some(CLIENT.0)
        || f.get("client_secret").map(String::as_str) != Some(CLIENT.1)
    {
        return Json(json!({"error": "incorrect_client_credentials"}));
    }
    let Some((login, challenge)) = f
        .get("code")
        .and_then(|c| s.codes.lock().unwrap().remove(c))
    else {
        return Json(json!({"error": "bad_verification_code"}));
    };
    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != challenge {
        return Json(json!({"error": "bad_verification_code"}));
    }
    let token = format!("gho_{}_{}", login, s.tokens.lock().unwrap().len());
    s.tokens.lock().unwrap().insert(token.clone(), login);
    Json(
        json!({"access_token": token, "token_type": "bearer", "scope": "read:org,read:user,user:email"}),
    )
}

/// The user a request's bearer token belongs to.
fn who(s: &GhState, headers: &HeaderMap) -> Option<GhUser> {
    let token = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    let login = *s.tokens.lock().unwrap().get(token)?;
    s.users.lock().unwrap().get(login).cloned()
}

fn api(s: &GhState, headers: &HeaderMap, answer: impl FnOnce(GhUser) -> Value) -> Response {
    match who(s, headers) {
        Some(u) => Json(answer(u)).into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "Bad credentials"})),
        )
            .into_response(),
    }
}

async fn user(State(s): State<Arc<GhState>>, headers: HeaderMap) -> Response {
    api(
        &s,
        &headers,
        |u| json!({"id": u.id, "login": u.login, "name": u.login.to_uppercase()}),
    )
}

async fn emails(State(s): State<Arc<GhState>>, headers: HeaderMap) -> Response {
    api(
        &s,
        &headers,
        |u| json!([{"email": "old@example.net", "primary": false, "verified": true}, {"email": u.email.0, "primary": true, "verified": u.email.1}]),
    )
}

async fn orgs(State(s): State<Arc<GhState>>, headers: HeaderMap) -> Response {
    api(&s, &headers, |u| {
        json!(u
            .orgs
            .iter()
            .map(|o| json!({"login": o}))
            .collect::<Vec<_>>())
    })
}

async fn teams(State(s): State<Arc<GhState>>, headers: HeaderMap) -> Response {
    api(&s, &headers, |u| {
        json!(u
            .teams
            .iter()
            .map(|(org, slug)| json!({"slug": slug, "organization": {"login": org}}))
            .collect::<Vec<_>>())
    })
}
