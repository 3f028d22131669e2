//! Flows and codes: a validated authorization request waiting for login and
//! consent (`Flow`, kept in `FlowStore` with the browser sessions, in this
//! process), and the single-use codes it ends in (`CodeGrant`, `Codes`, in
//! the store; a replayed code names the family to revoke).

use super::clients::Client;
use super::pkce::CodeChallenge;
use super::random_token;
use crate::store::{Store, StoreError, TakenCode};
use moka::sync::Cache;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// A validated authorization request waiting for login and consent.
#[derive(Debug, Clone)]
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

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Flows and browser sessions.
pub struct FlowStore {
    pub(super) flows: Cache<String, Arc<Flow>>,
    pub(super) sessions: Cache<String, String>,
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

/// The client a code was issued to must be the one redeeming it.
pub fn code_belongs_to(grant: &CodeGrant, client: &Client) -> bool {
    grant.client_id == client.id
}
