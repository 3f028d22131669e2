//! The authorization server's signing keys: ES256, generated on first start
//! and kept in the store. The newest key signs; every stored key is
//! published (JWKS and the proxy's in-process key set), so tokens signed by
//! an older key stay verifiable until they expire.

use crate::auth::{now_secs, LocalKeys};
use crate::store::{Store, StoreError, StoredKey};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The key that signs, and the JWKS document of all keys.
pub struct SigningKeys {
    /// The public keys, shared with the proxy.
    pub local: std::sync::Arc<LocalKeys>,
    /// `kid` of the signing key.
    pub kid: String,
    /// The signing key.
    pub encoding: EncodingKey,
    /// `{"keys": [...]}` with every public key.
    pub jwks: Value,
}

/// Makes a new ES256 key pair.
pub fn generate() -> Result<StoredKey, StoreError> {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| StoreError("cannot generate a P-256 key".into()))?;
    let pkcs8 = pkcs8.as_ref().to_vec();
    let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(&pkcs8)[..12]);
    Ok(StoredKey {
        kid,
        alg: "ES256".into(),
        pkcs8,
        created_at: now_secs(),
    })
}

/// Loads the stored keys (generating the first one if there is none) and
/// publishes them to `local`.
pub async fn load(
    store: &dyn Store,
    local: &std::sync::Arc<LocalKeys>,
) -> Result<SigningKeys, StoreError> {
    let mut stored = store.signing_keys().await?;
    if stored.is_empty() {
        let key = generate()?;
        store.add_signing_key(&key).await?;
        tracing::info!(kid = %key.kid, "generated the authorization server's first signing key");
        stored.push(key);
    }
    let mut public = Vec::new();
    let mut published = Vec::new();
    for k in &stored {
        let encoding = EncodingKey::from_ec_der(&k.pkcs8);
        let jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256)
            .map_err(|e| StoreError(format!("key {}: {e}", k.kid)))?;
        let decoding =
            DecodingKey::from_jwk(&jwk).map_err(|e| StoreError(format!("key {}: {e}", k.kid)))?;
        let mut doc = serde_json::to_value(&jwk).map_err(|e| StoreError(e.to_string()))?;
        doc["kid"] = json!(k.kid);
        doc["use"] = json!("sig");
        doc["alg"] = json!("ES256");
        public.push(doc);
        published.push((k.kid.clone(), Algorithm::ES256, decoding));
    }
    local.publish(published);
    let newest = stored.last().expect("at least one key");
    Ok(SigningKeys {
        local: local.clone(),
        kid: newest.kid.clone(),
        encoding: EncodingKey::from_ec_der(&newest.pkcs8),
        jwks: json!({"keys": public}),
    })
}
