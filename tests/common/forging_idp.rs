//! An OpenID Provider that answers with whatever ID token a test asks for:
//! correct, or wrong in one way (audience, issuer, nonce, `alg: none`, an
//! HMAC signature, expired, signed by a key it never published), to show
//! the gateway's relying party refuses each. Real metadata, JWKS, and an
//! authorize endpoint that sends the browser straight back.

use super::idp::{now, TestKey};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What is wrong with the next ID token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgery {
    None,
    WrongAudience,
    WrongIssuer,
    WrongNonce,
    AlgNone,
    Hmac,
    Expired,
    UnknownKey,
}

pub const CLIENT: (&str, &str) = ("gateway", "forge-secret-of-at-least-32-bytes!!");

struct ForgeState {
    issuer: String,
    key: TestKey,
    forgery: Mutex<Forgery>,
    /// Code to the nonce its authorization request carried.
    nonces: Mutex<HashMap<String, String>>,
}

pub struct ForgingIdp {
    pub issuer: String,
    state: Arc<ForgeState>,
}

impl ForgingIdp {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(ForgeState {
            issuer: issuer.clone(),
            key: TestKey::ec1(),
            forgery: Mutex::new(Forgery::None),
            nonces: Mutex::default(),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(metadata))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { issuer, state }
    }

    /// The next ID token is wrong in this way.
    pub fn forge(&self, forgery: Forgery) {
        *self.state.forgery.lock().unwrap() = forgery;
    }
}

async fn metadata(State(s): State<Arc<ForgeState>>) -> Json<Value> {
    let i = &s.issuer;
    Json(json!({
        "issuer": i, "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"), "jwks_uri": format!("{i}/jwks"),
        "id_token_signing_alg_values_supported": ["ES256"],
        "authorization_response_iss_parameter_supported": true,
    }))
}

async fn jwks(State(s): State<Arc<ForgeState>>) -> Json<Value> {
    Json(json!({"keys": [s.key.jwk]}))
}

async fn authorize(
    State(s): State<Arc<ForgeState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let code = format!("code-{}", s.nonces.lock().unwrap().len());
    s.nonces
        .lock()
        .unwrap()
        .insert(code.clone(), q.get("nonce").cloned().unwrap_or_default());
    let mut back = url::Url::parse(&q["redirect_uri"]).unwrap();
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &q["state"])
        .append_pair("iss", &s.issuer);
    Redirect::to(back.as_str()).into_response()
}

async fn token(
    State(s): State<Arc<ForgeState>>,
    Form(f): Form<HashMap<String, String>>,
) -> Json<Value> {
    let nonce = s
        .nonces
        .lock()
        .unwrap()
        .remove(&f["code"])
        .unwrap_or_default();
    let forgery = *s.forgery.lock().unwrap();
    let now = now();
    let mut claims = json!({
        "iss": s.issuer, "sub": "mallory", "aud": CLIENT.0, "iat": now, "exp": now + 300,
        "nonce": nonce, "email": "mallory@example.com", "email_verified": true,
    });
    match forgery {
        Forgery::WrongAudience => claims["aud"] = json!("another-client"),
        Forgery::WrongIssuer => claims["iss"] = json!("https://evil.example"),
        Forgery::WrongNonce => claims["nonce"] = json!("not-the-one-sent"),
        Forgery::Expired => {
            claims["iat"] = json!(now - 7200);
            claims["exp"] = json!(now - 3600);
        }
        _ => {}
    }
    let id_token = match forgery {
        Forgery::AlgNone => {
            let enc = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
            format!(
                "{}.{}.",
                enc(json!({"alg": "none", "typ": "JWT"})),
                enc(claims)
            )
        }
        Forgery::Hmac => {
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            header.kid = Some(s.key.kid.to_owned());
            jsonwebtoken::encode(
                &header,
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(CLIENT.1.as_bytes()),
            )
            .unwrap()
        }
        Forgery::UnknownKey => TestKey::ec2().sign(&claims),
        _ => s.key.sign(&claims),
    };
    Json(json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token}))
}
