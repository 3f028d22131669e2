//! The authorization server's signing keys: ES256 (or EdDSA), generated on
//! first start and kept in the store.
//!
//! Rotation (`mcp-oauth-gateway keys rotate`) adds a key; it is published at
//! once (JWKS and the proxy's in-process key set) but only signs once it has
//! been published for [`PUBLISH_BEFORE_SIGNING`], so relying parties that
//! cache the JWKS know it before they see it. A superseded key stays
//! published until every token it signed has expired, then it is removed.

use crate::auth::{now_secs, LocalKeys};
use crate::config::SigningAlgorithm;
use crate::store::{Store, StoreError, StoredKey};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// How long a new key is published before it signs.
pub const PUBLISH_BEFORE_SIGNING: u64 = 600;

/// The key that signs, and the JWKS document of all keys.
pub struct SigningKeys {
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// `kid` of the signing key.
    pub kid: String,
    /// The signing key.
    pub encoding: EncodingKey,
    /// `{"keys": [...]}` with every public key.
    pub jwks: Value,
}

/// Makes a new key pair.
pub fn generate(alg: SigningAlgorithm) -> Result<StoredKey, StoreError> {
    let rng = SystemRandom::new();
    let (pkcs8, name) = match alg {
        SigningAlgorithm::ES256 => (
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| StoreError("cannot generate a P-256 key".into()))?
                .as_ref()
                .to_vec(),
            "ES256",
        ),
        SigningAlgorithm::EdDSA => (
            Ed25519KeyPair::generate_pkcs8v1(&rng)
                .map_err(|_| StoreError("cannot generate an Ed25519 key".into()))?
                .as_ref()
                .to_vec(),
            "EdDSA",
        ),
        SigningAlgorithm::RS256 => {
            use aws_lc_rs::encoding::AsDer;
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| StoreError("cannot generate an RSA key".into()))?;
            let der = pair
                .as_der()
                .map_err(|_| StoreError("cannot encode the RSA key".into()))?;
            (der.as_ref().to_vec(), "RS256")
        }
    };
    let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(&pkcs8)[..12]);
    Ok(StoredKey {
        kid,
        alg: name.into(),
        pkcs8,
        created_at: now_secs(),
    })
}

/// The jsonwebtoken form of a stored key.
fn encoding_key(k: &StoredKey) -> Result<(Algorithm, EncodingKey), StoreError> {
    match k.alg.as_str() {
        "ES256" => Ok((Algorithm::ES256, EncodingKey::from_ec_der(&k.pkcs8))),
        "EdDSA" => Ok((Algorithm::EdDSA, EncodingKey::from_ed_der(&k.pkcs8))),
        "RS256" => {
            let pkcs1 = pkcs8_private_key(&k.pkcs8)
                .ok_or_else(|| StoreError(format!("key {}: not a PKCS#8 RSA key", k.kid)))?;
            Ok((Algorithm::RS256, EncodingKey::from_rsa_der(pkcs1)))
        }
        other => Err(StoreError(format!(
            "key {}: unknown algorithm `{other}`",
            k.kid
        ))),
    }
}

/// The `privateKey` of a PKCS#8 `PrivateKeyInfo` (RFC 5208): for RSA, the
/// PKCS#1 `RSAPrivateKey` jsonwebtoken signs with. A minimal DER walk:
/// SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING key, .. }.
fn pkcs8_private_key(der: &[u8]) -> Option<&[u8]> {
    /// Splits one DER element: (tag, content, rest).
    fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[n..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }
    let (0x30, info, _) = element(der)? else {
        return None;
    };
    let (0x02, _, rest) = element(info)? else {
        return None;
    };
    let (0x30, _, rest) = element(rest)? else {
        return None;
    };
    let (0x04, key, _) = element(rest)? else {
        return None;
    };
    Some(key)
}

/// Which stored key signs at `now`: the newest published long enough, or
/// the oldest when none is (a fresh installation signs with its first key).
fn signer(stored: &[StoredKey], now: u64) -> usize {
    stored
        .iter()
        .rposition(|k| k.created_at + PUBLISH_BEFORE_SIGNING <= now)
        .unwrap_or(0)
}

/// Loads the stored keys (generating the first one if there is none),
/// removes keys no live token can carry any more, and publishes the rest
/// to `local`.
pub async fn load(
    store: &dyn Store,
    local: &LocalKeys,
    access_token_ttl: u64,
    alg: SigningAlgorithm,
) -> Result<SigningKeys, StoreError> {
    let mut stored = store.signing_keys().await?;
    if stored.is_empty() {
        let key = generate(alg)?;
        store.add_signing_key(&key).await?;
        tracing::info!(kid = %key.kid, "generated the authorization server's first signing key");
        stored.push(key);
    }
    let now = now_secs();
    let current = signer(&stored, now);
    // Key i stopped signing when key i+1 started; its tokens live on for
    // at most the access-token lifetime after that.
    let retired: Vec<usize> = (0..current)
        .filter(|&i| stored[i + 1].created_at + PUBLISH_BEFORE_SIGNING + access_token_ttl < now)
        .collect();
    for &i in &retired {
        store.remove_signing_key(&stored[i].kid).await?;
        tracing::info!(kid = %stored[i].kid, "retired signing key removed");
    }
    let newest_signer = stored[current].kid.clone();
    let stored: Vec<StoredKey> = stored
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !retired.contains(i))
        .map(|(_, k)| k)
        .collect();
    let mut public = Vec::new();
    let mut published = Vec::new();
    for k in &stored {
        let (algorithm, encoding) = encoding_key(k)?;
        let jwk = Jwk::from_encoding_key(&encoding, algorithm)
            .map_err(|e| StoreError(format!("key {}: {e}", k.kid)))?;
        let decoding =
            DecodingKey::from_jwk(&jwk).map_err(|e| StoreError(format!("key {}: {e}", k.kid)))?;
        let mut doc = serde_json::to_value(&jwk).map_err(|e| StoreError(e.to_string()))?;
        doc["kid"] = json!(k.kid);
        doc["use"] = json!("sig");
        doc["alg"] = json!(k.alg);
        public.push(doc);
        published.push((k.kid.clone(), algorithm, decoding));
    }
    local.publish(published);
    let signing = stored
        .iter()
        .find(|k| k.kid == newest_signer)
        .expect("the signer is kept");
    let (algorithm, encoding) = encoding_key(signing)?;
    Ok(SigningKeys {
        kid: signing.kid.clone(),
        algorithm,
        encoding,
        jwks: json!({"keys": public}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, created_at: u64) -> StoredKey {
        StoredKey {
            kid: kid.into(),
            alg: "ES256".into(),
            pkcs8: Vec::new(),
            created_at,
        }
    }

    #[test]
    fn every_algorithm_generates_a_key_that_signs_and_publishes() {
        for alg in [
            SigningAlgorithm::ES256,
            SigningAlgorithm::EdDSA,
            SigningAlgorithm::RS256,
        ] {
            let k = generate(alg).unwrap();
            let (algorithm, encoding) = encoding_key(&k).unwrap();
            let jwk = Jwk::from_encoding_key(&encoding, algorithm).unwrap();
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(algorithm),
                &json!({"sub": "x", "exp": 4_000_000_000u64}),
                &encoding,
            )
            .unwrap();
            let key = DecodingKey::from_jwk(&jwk).unwrap();
            let checked = jsonwebtoken::decode::<serde_json::Value>(
                &token,
                &key,
                &jsonwebtoken::Validation::new(algorithm),
            );
            assert!(checked.is_ok(), "{alg:?}: {checked:?}");
        }
    }

    #[test]
    fn a_new_key_signs_only_after_it_has_been_published() {
        let keys = [key("old", 0), key("new", 10_000)];
        assert_eq!(
            signer(&keys, 10_001),
            0,
            "just published: the old key still signs"
        );
        assert_eq!(signer(&keys, 10_000 + PUBLISH_BEFORE_SIGNING), 1);
        assert_eq!(
            signer(&[key("first", 5)], 6),
            0,
            "a fresh installation signs at once"
        );
    }
}
