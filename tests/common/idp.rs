//! A test identity provider: RFC 8414 metadata, a JWKS that tests can
//! rotate or take down, and an RFC 7662 introspection endpoint that counts
//! its calls and can be slowed or taken down. Tokens are signed with the
//! fixed test keys in tests/fixtures/keys.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Basic credentials the gateway must present at `/introspect`.
pub const INTROSPECTION_CLIENT: (&str, &str) = ("gateway", "s3cret:with/odd chars");

/// One of the fixture signing keys.
#[derive(Clone)]
pub struct TestKey {
    pub kid: &'static str,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub jwk: Value,
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

impl TestKey {
    pub fn load(kid: &'static str, file: &str, alg: Algorithm) -> Self {
        let pem = fixture(file);
        let encoding = match alg {
            Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            other => panic!("no fixture for {other:?}"),
        }
        .unwrap();
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&encoding, alg).unwrap()).unwrap();
        jwk["kid"] = json!(kid);
        Self {
            kid,
            alg,
            encoding,
            jwk,
        }
    }

    pub fn ec1() -> Self {
        Self::load("ec1", "ec1.pem", Algorithm::ES256)
    }
    pub fn ec2() -> Self {
        Self::load("ec2", "ec2.pem", Algorithm::ES256)
    }
    pub fn rsa() -> Self {
        Self::load("rsa", "rsa.pem", Algorithm::RS256)
    }
    pub fn ed() -> Self {
        Self::load("ed", "ed.pem", Algorithm::EdDSA)
    }

    /// Signs `claims` under a JWS header given as JSON (any fields, `alg`
    /// set to this key's).
    pub fn sign_with_header(&self, mut header: Value, claims: &Value) -> String {
        use base64::Engine;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        header["alg"] = serde_json::to_value(self.alg).unwrap();
        let signing_input = format!("{}.{}", b64(&header), b64(claims));
        let signature =
            jsonwebtoken::crypto::sign(signing_input.as_bytes(), &self.encoding, self.alg).unwrap();
        format!("{signing_input}.{signature}")
    }

    /// Signs `claims` with this key (header `alg` and `kid` set).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// The RSA public key in PEM, as an attacker would use it as an HMAC secret.
pub fn rsa_public_pem() -> Vec<u8> {
    fixture("rsa.pub.pem")
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[derive(Default)]
struct IdpState {
    issuer: String,
    jwks: Mutex<Vec<Value>>,
    jwks_fetches: AtomicUsize,
    jwks_down: AtomicBool,
    introspections: AtomicUsize,
    introspection_down: AtomicBool,
    introspection_delay_ms: AtomicU64,
    active_tokens: Mutex<HashMap<String, Value>>,
}

/// The running test IdP.
pub struct Idp {
    pub issuer: String,
    pub addr: SocketAddr,
    state: Arc<IdpState>,
}

impl Idp {
    /// Starts with `keys` published in the JWKS.
    pub async fn start(keys: &[&TestKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = format!("http://{addr}");
        let state = Arc::new(IdpState {
            issuer: issuer.clone(),
            jwks: Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect()),
            ..IdpState::default()
        });
        let app = Router::new()
            .route("/.well-known/oauth-authorization-server", get(metadata))
            .route("/jwks.json", get(jwks))
            .route("/introspect", post(introspect))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            issuer,
            addr,
            state,
        }
    }

    pub fn publish(&self, keys: &[&TestKey]) {
        *self.state.jwks.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    pub fn set_jwks_down(&self, down: bool) {
        self.state.jwks_down.store(down, Ordering::SeqCst);
    }

    pub fn introspections(&self) -> usize {
        self.state.introspections.load(Ordering::SeqCst)
    }

    pub fn set_introspection_down(&self, down: bool) {
        self.state.introspection_down.store(down, Ordering::SeqCst);
    }

    pub fn set_introspection_delay(&self, delay: Duration) {
        self.state
            .introspection_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Makes `token` active with the given introspection answer.
    pub fn activate(&self, token: &str, answer: Value) {
        self.state
            .active_tokens
            .lock()
            .unwrap()
            .insert(token.to_owned(), answer);
    }

    /// Claims for a token for `audience` with `scope`, valid for 10 minutes.
    pub fn claims(&self, subject: &str, audience: &str, scope: &str) -> Value {
        json!({
            "iss": self.issuer, "sub": subject, "aud": audience, "scope": scope,
            "client_id": "test-client", "iat": now(), "exp": now() + 600, "jti": format!("jti-{subject}-{}", now())
        })
    }
}

async fn metadata(State(s): State<Arc<IdpState>>) -> Json<Value> {
    Json(json!({"issuer": s.issuer, "jwks_uri": format!("{}/jwks.json", s.issuer)}))
}

async fn jwks(State(s): State<Arc<IdpState>>) -> Response {
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if s.jwks_down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    Json(json!({"keys": *s.jwks.lock().unwrap()})).into_response()
}

async fn introspect(
    State(s): State<Arc<IdpState>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    s.introspections.fetch_add(1, Ordering::SeqCst);
    let delay = s.introspection_delay_ms.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    if s.introspection_down.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    use base64::Engine;
    let enc = |t: &str| url::form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            enc(INTROSPECTION_CLIENT.0),
            enc(INTROSPECTION_CLIENT.1)
        ))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let token = form.get("token").cloned().unwrap_or_default();
    let answer = s.active_tokens.lock().unwrap().get(&token).cloned();
    Json(answer.unwrap_or_else(|| json!({"active": false}))).into_response()
}
