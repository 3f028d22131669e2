//! What the built-in authorization server shares with the proxy in process:
//! its public keys (so its tokens are verified without an HTTP round trip)
//! and the ids of access tokens revoked before their expiry (so a
//! revocation takes effect on the next request).

use super::now_secs;
use jsonwebtoken::{Algorithm, DecodingKey};
use std::collections::HashMap;
use std::sync::RwLock;

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

/// Access tokens revoked before they expire, by `jti`.
#[derive(Default)]
pub struct RevokedTokens(RwLock<HashMap<String, u64>>);

impl RevokedTokens {
    /// Records a revoked token until `expires_at`; expired entries go.
    pub fn revoke(&self, jti: String, expires_at: u64) {
        let now = now_secs();
        let mut set = self.0.write().expect("revocation lock");
        set.retain(|_, exp| *exp > now);
        set.insert(jti, expires_at);
    }

    /// Whether the token with this id has been revoked.
    pub fn contains(&self, jti: &str) -> bool {
        self.0.read().expect("revocation lock").contains_key(jti)
    }
}
