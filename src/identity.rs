//! Caller identity for upstreams: what the gateway verified about a caller,
//! told to the upstream it calls, as headers and/or as a short-lived JWT
//! the gateway signs with a key of its own (published at
//! [`IDENTITY_JWKS_PATH`]), so the upstream can verify it instead of
//! trusting a header. Never the client's token.
//!
//! Header values are the claims as they are, except that a byte outside
//! printable ASCII, a space at either end and `%` itself are
//! percent-encoded (`%25`), so any value fits a header and decodes back
//! unambiguously; group names are joined by `,` after encoding `,` in them
//! (`%2C`).

use crate::auth::{now_secs, Principal};
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use moka::sync::Cache;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Where the gateway publishes the public key of its identity JWTs.
pub const IDENTITY_JWKS_PATH: &str = "/.well-known/gateway-identity-jwks.json";

/// One fact about the caller an upstream can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityField {
    /// The token's `sub`.
    Subject,
    /// The token's `iss`.
    Issuer,
    /// The OAuth client holding the token.
    ClientId,
    /// Granted scopes, space-separated.
    Scopes,
    /// `email`, when the token carries one.
    Email,
    /// `groups`, when the token carries them.
    Groups,
}

impl IdentityField {
    /// The header value of this field for `p`, `None` when unknown.
    pub fn header_value(self, p: &Principal) -> Option<String> {
        match self {
            Self::Subject => Some(encode(&p.subject, false)),
            Self::Issuer => Some(encode(&p.issuer, false)),
            Self::ClientId => p.client_id.as_deref().map(|c| encode(c, false)),
            Self::Scopes => Some(encode(
                &p.scopes.iter().cloned().collect::<Vec<_>>().join(" "),
                false,
            )),
            Self::Email => p.email.as_deref().map(|e| encode(e, false)),
            Self::Groups => (!p.groups.is_empty()).then(|| {
                p.groups
                    .iter()
                    .map(|g| encode(g, true))
                    .collect::<Vec<_>>()
                    .join(",")
            }),
        }
    }
}

/// Percent-encodes what a header value cannot hold as is (bytes outside
/// printable ASCII and space, a space at either end), `%`, and with `list`
/// also `,`.
fn encode(value: &str, list: bool) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.len().saturating_sub(1);
    for (i, b) in value.bytes().enumerate() {
        // A space at either end would be trimmed by the upstream's parser.
        let edge_space = b == b' ' && (i == 0 || i == last);
        if (b' '..=b'~').contains(&b) && b != b'%' && !(list && b == b',') && !edge_space {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The gateway's identity key (ES256) and the assertions it signs.
pub struct IdentitySigner {
    issuer: String,
    kid: String,
    key: EncodingKey,
    jwks: Bytes,
}

/// Why the identity key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IdentityKeyError(String);

impl IdentitySigner {
    /// The signer of `issuer` (the gateway's public URL) with the P-256
    /// PKCS#8 key in `key_file`, or a key generated now when there is none
    /// (then every process has its own: give a file to several replicas).
    pub fn new(issuer: &str, key_file: Option<&Path>) -> Result<Self, IdentityKeyError> {
        let pkcs8 = match key_file {
            Some(path) => read_key(path)?,
            None => EcdsaKeyPair::generate_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &aws_lc_rs::rand::SystemRandom::new(),
            )
            .map_err(|_| IdentityKeyError("cannot generate a P-256 key".into()))?
            .as_ref()
            .to_vec(),
        };
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
            .map_err(|_| IdentityKeyError("not a PKCS#8 P-256 (ES256) private key".into()))?;
        let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(pair.public_key().as_ref())[..12]);
        let key = EncodingKey::from_ec_der(&pkcs8);
        let jwk = Jwk::from_encoding_key(&key, Algorithm::ES256)
            .map_err(|e| IdentityKeyError(format!("cannot publish the key: {e}")))?;
        let mut public = serde_json::to_value(&jwk)
            .map_err(|e| IdentityKeyError(format!("cannot publish the key: {e}")))?;
        public["kid"] = json!(kid);
        public["use"] = json!("sig");
        public["alg"] = json!("ES256");
        Ok(Self {
            issuer: issuer.to_owned(),
            kid,
            key,
            jwks: Bytes::from(json!({ "keys": [public] }).to_string()),
        })
    }

    /// The JWKS document with the public key.
    pub fn jwks(&self) -> Bytes {
        self.jwks.clone()
    }

    /// A JWT saying who `p` is, for `audience`, valid for `ttl`.
    fn sign(&self, p: &Principal, audience: &str, ttl: Duration) -> Option<String> {
        let now = now_secs();
        let mut claims = json!({
            "iss": self.issuer,
            "aud": audience,
            "sub": p.subject,
            "token_issuer": p.issuer,
            "scope": p.scopes.iter().cloned().collect::<Vec<_>>().join(" "),
            "iat": now,
            "exp": now + ttl.as_secs(),
        });
        if let Some(client) = &p.client_id {
            claims["client_id"] = json!(client);
        }
        if let Some(email) = &p.email {
            claims["email"] = json!(email);
        }
        if !p.groups.is_empty() {
            claims["groups"] = json!(p.groups);
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        match jsonwebtoken::encode(&header, &claims, &self.key) {
            Ok(jwt) => Some(jwt),
            Err(e) => {
                tracing::error!(error = %e, "cannot sign an identity assertion");
                None
            }
        }
    }
}

fn read_key(path: &Path) -> Result<Vec<u8>, IdentityKeyError> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::PrivatePkcs8KeyDer::from_pem_file(path)
        .map(|k| k.secret_pkcs8_der().to_vec())
        .map_err(|e| IdentityKeyError(format!("{}: {e}", path.display())))
}

/// One upstream's identity assertions: signed once per caller and reused
/// for half their lifetime, so a known caller costs a lookup, not a
/// signature.
pub struct Assertions {
    signer: Arc<IdentitySigner>,
    audience: String,
    ttl: Duration,
    cache: Cache<String, Arc<str>>,
}

impl Assertions {
    /// Assertions for `audience` valid for `ttl`, signed by `signer`.
    pub fn new(signer: Arc<IdentitySigner>, audience: String, ttl: Duration) -> Self {
        Self {
            signer,
            audience,
            ttl,
            cache: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl / 2)
                .build(),
        }
    }

    /// The assertion for `p` (`None` only when signing failed).
    pub fn for_caller(&self, p: &Principal) -> Option<Arc<str>> {
        let key = json!([
            p.issuer,
            p.subject,
            p.client_id,
            p.scopes,
            p.email,
            p.groups
        ])
        .to_string();
        if let Some(jwt) = self.cache.get(&key) {
            return Some(jwt);
        }
        let jwt: Arc<str> = self.signer.sign(p, &self.audience, self.ttl)?.into();
        self.cache.insert(key, jwt.clone());
        Some(jwt)
    }
}

/// The claims of an assertion, for tests and for upstreams written in Rust.
pub fn claims_of(jwt: &str) -> Option<Value> {
    let payload = jwt.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

impl std::fmt::Debug for Assertions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assertions")
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn alice() -> Principal {
        Principal {
            issuer: "https://idp.example.com".into(),
            subject: "alice".into(),
            client_id: Some("app".into()),
            scopes: BTreeSet::from(["mcp".to_owned(), "math".to_owned()]),
            expires_at: None,
            token_id: None,
            audiences: vec![],
            email: Some("alice@example.com".into()),
            groups: vec!["ops".into(), "CN=a,OU=b".into()],
        }
    }

    #[test]
    fn header_values_encode_only_what_a_header_cannot_hold() {
        let p = alice();
        assert_eq!(IdentityField::Scopes.header_value(&p).unwrap(), "math mcp");
        assert_eq!(
            IdentityField::Groups.header_value(&p).unwrap(),
            "ops,CN=a%2COU=b"
        );
        assert_eq!(encode("José 100%\n", false), "Jos%C3%A9 100%25%0A");
        // Spaces at either end would be trimmed by the upstream's parser.
        assert_eq!(encode(" alice ", false), "%20alice%20");
        assert_eq!(encode("a b", false), "a b");
        let mut spaced = p.clone();
        spaced.groups = vec![" admins".into(), "ops ".into()];
        assert_eq!(
            IdentityField::Groups.header_value(&spaced).unwrap(),
            "%20admins,ops%20"
        );
        let mut anonymous = p.clone();
        anonymous.email = None;
        anonymous.groups.clear();
        assert_eq!(IdentityField::Email.header_value(&anonymous), None);
        assert_eq!(IdentityField::Groups.header_value(&anonymous), None);
    }

    #[test]
    fn an_assertion_verifies_with_the_published_key_and_is_reused() {
        let signer = Arc::new(IdentitySigner::new("https://gw.example.com", None).unwrap());
        let assertions = Assertions::new(
            signer.clone(),
            "http://up/mcp".into(),
            Duration::from_secs(60),
        );
        let jwt = assertions.for_caller(&alice()).unwrap();
        assert_eq!(assertions.for_caller(&alice()).unwrap(), jwt, "cached");
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&signer.jwks()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.set_audience(&["http://up/mcp"]);
        validation.set_issuer(&["https://gw.example.com"]);
        let claims = jsonwebtoken::decode::<Value>(jwt.as_bytes(), &key, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["token_issuer"], "https://idp.example.com");
        assert_eq!(claims["groups"], json!(["ops", "CN=a,OU=b"]));
        assert!(claims["exp"].as_u64().unwrap() <= now_secs() + 60);
        let mut bob = alice();
        bob.subject = "bob".into();
        assert_ne!(assertions.for_caller(&bob).unwrap(), jwt);
    }
}
