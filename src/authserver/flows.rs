//! Flows and codes: a validated authorization request waiting for login and
//! consent (`Flow`, kept in `FlowStore` with the browser sessions), and the
//! single-use codes it ends in (`CodeGrant`, `CodeStore`; a replayed code
//! names the family to revoke).

use super::clients::Client;
use super::pkce::CodeChallenge;
use super::random_token;
use moka::sync::Cache;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
#[derive(Debug, Clone)]
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

    pub(super) fn issue(&self, grant: CodeGrant) -> String {
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
