//! What the built-in authorization server shares with the proxy in process:
//! its public keys (so its tokens are verified without an HTTP round trip)
//! and the ids of access tokens revoked before their expiry (so a
//! revocation takes effect on the next request).

use super::{now_millis, now_secs};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

/// The in-process key set of the built-in issuer.
#[derive(Default)]
pub struct LocalKeys(RwLock<Vec<(String, Algorithm, DecodingKey)>>);

impl LocalKeys {
    /// Replaces the published keys.
    pub fn publish(&self, keys: Vec<(String, Algorithm, DecodingKey)>) {
        *self.0.write().expect("local keys lock") = keys;
    }

    /// The key `kid` names, when its algorithm is `alg`.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        let keys = self.0.read().expect("local keys lock");
        keys.iter()
            .find(|(k, a, _)| Some(k.as_str()) == kid && *a == alg)
            .map(|(_, _, key)| key.clone())
    }
}

/// Access tokens revoked before they expire, by `jti`; and how current
/// this copy of the store's revocations is.
#[derive(Default)]
pub struct RevokedTokens {
    set: RwLock<HashMap<String, u64>>,
    /// When the store's revocations were last read in full (ms since the
    /// epoch).
    synced_at: AtomicU64,
    /// How old that may grow before the copy is no longer trusted (ms; 0:
    /// never, for a store only this process writes to).
    max_staleness: u64,
}

impl RevokedTokens {
    /// A set that is only as good as its last read of a shared store:
    /// older than `max_staleness`, it is stale.
    pub fn shared(max_staleness: Duration) -> Self {
        Self {
            max_staleness: u64::try_from(max_staleness.as_millis()).unwrap_or(u64::MAX),
            ..Self::default()
        }
    }

    /// Records that the store's revocations were just read in full.
    pub fn synced(&self) {
        self.synced_at.store(now_millis(), Ordering::Relaxed);
    }

    /// Whether a revoked token could be missing: the store has not been
    /// read for longer than allowed (it is unreachable).
    pub fn is_stale(&self) -> bool {
        self.max_staleness > 0
            && now_millis().saturating_sub(self.synced_at.load(Ordering::Relaxed))
                > self.max_staleness
    }

    /// Records a revoked token until `expires_at`; expired entries go.
    pub fn revoke(&self, jti: String, expires_at: u64) {
        let now = now_secs();
        let mut set = self.set.write().expect("revocation lock");
        set.retain(|_, exp| *exp > now);
        set.insert(jti, expires_at);
    }

    /// Whether the token with this id has been revoked.
    pub fn contains(&self, jti: &str) -> bool {
        self.set.read().expect("revocation lock").contains_key(jti)
    }
}
