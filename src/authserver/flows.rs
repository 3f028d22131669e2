//! Flows and codes: a validated authorization request waiting for login and
//! consent (`Flow`, kept in `FlowStore` with the browser sessions), and the
//! single-use codes it ends in (`CodeGrant`, `Codes`; a replayed code names
//! the family to revoke). All of it is in the store, so that each request
//! of a browser's sign-in may land on a different replica.

use super::clients::Client;
use super::pkce::CodeChallenge;
use super::random_token;
use crate::auth::now_millis;
use crate::store::{Store, StoreError, TakenCode};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// A validated authorization request waiting for login and consent.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Flow {
    pub(super) client_id: String,
    pub(super) client_name: String,
    pub(super) redirect_uri: String,
    pub(super) state: Option<String>,
    pub(super) code_challenge: CodeChallenge,
    pub(super) resource: String,
    pub(super) scopes: Vec<String>,
    pub(super) csrf: String,
    /// SHA-256 of the flow cookie the browser holds.
    pub(super) binding: Vec<u8>,
    /// Set once the user has logged in.
    pub(super) user: Option<String>,
    /// Shown on the login page the failed attempt redirects to.
    pub(super) notice: Option<String>,
    /// The client's `login_hint`, passed on to an identity provider.
    pub(super) login_hint: Option<String>,
    /// `prompt=login`: a new sign-in even where the browser has a session.
    pub(super) force_login: bool,
    /// `prompt=consent`: the consent page even where consent is remembered.
    pub(super) force_consent: bool,
    /// How the signed-in person is shown (their email, for a person of an
    /// identity provider).
    pub(super) display: Option<String>,
}

/// A code waiting to be exchanged.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CodeGrant {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: CodeChallenge,
    pub resource: String,
    pub scope: String,
    pub subject: String,
    /// The refresh-token family its tokens will belong to.
    pub family_id: String,
}

/// Authorization codes, in the store by SHA-256 (so that any replica can
/// exchange one), single use; a used code is remembered for ten lifetimes
/// to tell a replay.
pub struct Codes {
    store: Arc<dyn Store>,
    ttl: Duration,
}

/// What redeeming a code found.
pub enum Redeemed {
    /// A live code's grant, now used.
    Grant(CodeGrant),
    /// A code used before: the family its first use issued into.
    Replayed(String),
    /// No such code, or it expired.
    Unknown,
}

impl Codes {
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Self {
        Self { store, ttl }
    }

    pub(super) async fn issue(&self, grant: &CodeGrant) -> Result<String, StoreError> {
        let code = random_token(32);
        let json = serde_json::to_string(grant).map_err(|e| StoreError(e.to_string()))?;
        let now = now_millis();
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        self.store
            .put_code(
                &Sha256::digest(code.as_bytes()),
                &json,
                &grant.family_id,
                now.saturating_add(ttl),
                now.saturating_add(ttl.saturating_mul(10)),
            )
            .await?;
        Ok(code)
    }

    /// Takes a code (single use, on every replica at once).
    pub async fn redeem(&self, code: &str) -> Result<Redeemed, StoreError> {
        let hash = Sha256::digest(code.as_bytes());
        Ok(match self.store.take_code(&hash, now_millis()).await? {
            TakenCode::Fresh(json) => match serde_json::from_str(&json) {
                Ok(grant) => Redeemed::Grant(grant),
                Err(e) => return Err(StoreError(format!("a stored code's grant: {e}"))),
            },
            TakenCode::Replayed(family) => Redeemed::Replayed(family),
            TakenCode::Unknown => Redeemed::Unknown,
        })
    }
}

/// How long a flow waits for its next step.
const FLOW_TTL: u64 = 600_000;
/// A browser session's longest life, and how long it lasts unused.
const SESSION_LIFETIME: u64 = 8 * 3_600_000;
const SESSION_IDLE: u64 = 3_600_000;
/// A session's expiry is pushed on when a use finds it this much short of
/// a full idle period (not on every page: that would be a write each).
const SESSION_SLIDE: u64 = 60_000;

/// Flows and browser sessions, in the store by SHA-256 of their ids (an id
/// is a bearer value: the URL or cookie that holds it is the credential).
pub struct FlowStore {
    store: Arc<dyn Store>,
}

/// A browser session as stored.
#[derive(serde::Serialize, serde::Deserialize)]
struct BrowserSession {
    user: String,
    /// When it began (ms): it ends `SESSION_LIFETIME` later at the latest.
    started_at: u64,
}

const FLOWS: &str = "flow";
const SESSIONS: &str = "session";

/// Saves `value` as the `kind` entry of the bearer id `id` (kept by its
/// SHA-256), live until `expires_at` (ms).
pub(super) async fn put_entry<T: serde::Serialize>(
    store: &dyn Store,
    kind: &str,
    id: &str,
    value: &T,
    expires_at: u64,
) -> Result<(), StoreError> {
    let json = serde_json::to_string(value).map_err(|e| StoreError(format!("a {kind}: {e}")))?;
    store
        .put_state(kind, &Sha256::digest(id.as_bytes()), &json, expires_at)
        .await
}

/// The live `kind` entry of `id`, and when it expires.
pub(super) async fn entry<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    kind: &str,
    id: &str,
) -> Result<Option<(T, u64)>, StoreError> {
    let found = store
        .state(kind, &Sha256::digest(id.as_bytes()), now_millis())
        .await?;
    found
        .map(|(json, expires_at)| Ok((parse(kind, &json)?, expires_at)))
        .transpose()
}

/// Takes the live `kind` entry of `id`: of callers at once, on any
/// replica, one gets it.
pub(super) async fn take_entry<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    kind: &str,
    id: &str,
) -> Result<Option<T>, StoreError> {
    let taken = store
        .take_state(kind, &Sha256::digest(id.as_bytes()), now_millis())
        .await?;
    taken.map(|json| parse(kind, &json)).transpose()
}

fn parse<T: serde::de::DeserializeOwned>(kind: &str, json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError(format!("a stored {kind}: {e}")))
}

impl FlowStore {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Saves a flow (new or changed), for `FLOW_TTL` from now.
    pub(super) async fn put(&self, id: &str, flow: &Flow) -> Result<(), StoreError> {
        let expires_at = now_millis().saturating_add(FLOW_TTL);
        put_entry(&*self.store, FLOWS, id, flow, expires_at).await
    }

    /// A live flow.
    pub(super) async fn get(&self, id: &str) -> Result<Option<Flow>, StoreError> {
        Ok(entry(&*self.store, FLOWS, id).await?.map(|(flow, _)| flow))
    }

    /// Ends a flow: `true` for the one caller (of any at once, on any
    /// replica) that ended it while it was live.
    pub(super) async fn end(&self, id: &str) -> Result<bool, StoreError> {
        Ok(take_entry::<Flow>(&*self.store, FLOWS, id).await?.is_some())
    }

    /// Starts a browser session for `user` under `sid`.
    pub(super) async fn start_session(&self, sid: &str, user: &str) -> Result<(), StoreError> {
        let now = now_millis();
        let session = BrowserSession {
            user: user.to_owned(),
            started_at: now,
        };
        let expires_at = now.saturating_add(SESSION_IDLE);
        put_entry(&*self.store, SESSIONS, sid, &session, expires_at).await
    }

    /// The user of a live browser session; the use keeps it alive for
    /// another idle period (within its lifetime).
    pub(super) async fn session_user(&self, sid: &str) -> Result<Option<String>, StoreError> {
        let Some((session, expires_at)) =
            entry::<BrowserSession>(&*self.store, SESSIONS, sid).await?
        else {
            return Ok(None);
        };
        let slid = now_millis()
            .saturating_add(SESSION_IDLE)
            .min(session.started_at.saturating_add(SESSION_LIFETIME));
        if slid > expires_at.saturating_add(SESSION_SLIDE) {
            put_entry(&*self.store, SESSIONS, sid, &session, slid).await?;
        }
        Ok(Some(session.user))
    }

    /// Ends a browser session (sign out).
    pub(super) async fn end_session(&self, sid: &str) -> Result<(), StoreError> {
        take_entry::<BrowserSession>(&*self.store, SESSIONS, sid)
            .await
            .map(drop)
    }
}

/// The client a code was issued to must be the one redeeming it.
pub fn code_belongs_to(grant: &CodeGrant, client: &Client) -> bool {
    grant.client_id == client.id
}
