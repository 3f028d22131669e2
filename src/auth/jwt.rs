//! Local verification of JWT access tokens from one configured issuer.
//!
//! Order of checks: the header's `alg` must be one the issuer accepts
//! (`none` never is; HMAC only with a configured secret), the header may
//! name no critical extension (`crit`, RFC 7515 §4.1.11: the gateway
//! implements none) and its `typ`, when present, must be one the issuer
//! accepts for access tokens (RFC 8725 §3.11: an ID token or a logout token
//! is not one); the key comes from the issuer's JWKS (or its secret for
//! HMAC), by `kid`, or without one by trying the few keys of that `alg`;
//! then jsonwebtoken checks the signature, `exp` and `nbf` (with the
//! issuer's leeway) and `iss`, and `sub` must not be empty (it is the
//! identity sessions are bound to). The audience is checked per upstream by
//! the caller, since one token is verified once and may be presented
//! anywhere.

use super::jwks::KeyStore;
use super::local::LocalKeys;
use super::{AuthFailure, Principal};
use crate::config::JwtIssuer;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;

/// Decodes one base64url JWT segment as JSON, without verifying anything.
fn segment(part: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `iss` a JWT-shaped token claims, before any verification: only used
/// to pick which issuer verifies it.
pub(super) fn unverified_issuer(token: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    segment(payload)?.get("iss")?.as_str().map(str::to_owned)
}

/// Verifies the tokens of one issuer.
pub(super) struct IssuerVerifier {
    config: JwtIssuer,
    keys: Option<Arc<KeyStore>>,
    local: Option<Arc<LocalKeys>>,
    hmac: Option<DecodingKey>,
}

/// Claims the gateway reads (RFC 9068 names, with common alternatives).
#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    #[serde(default)]
    aud: Option<OneOrMany>,
    exp: u64,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<OneOrMany>,
    #[serde(flatten)]
    profile: super::ProfileClaims,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// `scope` as a space-separated string (RFC 9068), or `scp` as a list.
pub(super) fn scope_set(scope: Option<&str>, scp: Option<OneOrMany>) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = scope
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(scp) = scp {
        for s in scp.into_vec() {
            out.extend(s.split(' ').filter(|s| !s.is_empty()).map(str::to_owned));
        }
    }
    out
}

impl IssuerVerifier {
    pub(super) fn new(config: JwtIssuer, http: reqwest::Client) -> Self {
        let keys = config
            .uses_jwks()
            .then(|| Arc::new(KeyStore::new(config.clone(), http)));
        let hmac = config
            .hmac_secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.expose().as_bytes()));
        Self {
            config,
            keys,
            local: None,
            hmac,
        }
    }

    /// The built-in authorization server: its keys are read in process.
    pub(super) fn builtin(issuer: String, keys: Arc<LocalKeys>) -> Self {
        let config = JwtIssuer {
            issuer,
            jwks_uri: None,
            algorithms: vec![Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256],
            hmac_secret: None,
            // Same process, same clock: no skew to allow for.
            leeway: std::time::Duration::ZERO,
            jwks_refresh_interval: std::time::Duration::from_secs(600),
            jwks_min_refresh_interval: std::time::Duration::from_secs(30),
            fetch_timeout: std::time::Duration::from_secs(5),
            token_types: vec!["at+jwt".into()],
        };
        Self {
            config,
            keys: None,
            local: Some(keys),
            hmac: None,
        }
    }

    /// The issuer's key store, when it uses a JWKS.
    pub(super) fn keys(&self) -> Option<Arc<KeyStore>> {
        self.keys.clone()
    }

    pub(super) async fn verify(&self, token: &str) -> Result<Principal, AuthFailure> {
        let header = token.split('.').next().and_then(segment).ok_or_else(|| {
            AuthFailure::Unreadable("the JWT header is not base64url JSON".into())
        })?;
        let alg_name = header.get("alg").and_then(Value::as_str).unwrap_or("none");
        let alg = Algorithm::from_str(alg_name)
            .ok()
            .filter(|a| self.config.algorithms.contains(a))
            .ok_or_else(|| {
                AuthFailure::DisallowedAlgorithm(alg_name.escape_default().to_string())
            })?;
        refuse_critical_extensions(&header)?;
        self.check_token_type(&header)?;
        let kid = header.get("kid").and_then(Value::as_str);
        let keys = match (&self.hmac, &self.keys, alg.family()) {
            _ if self.local.is_some() => vec![self
                .local
                .as_ref()
                .and_then(|l| l.find(kid, alg))
                .ok_or(AuthFailure::UnknownKey)?],
            (Some(secret), _, jsonwebtoken::AlgorithmFamily::Hmac) => vec![secret.clone()],
            (_, Some(store), family) if family != jsonwebtoken::AlgorithmFamily::Hmac => {
                store.keys_for(kid, alg).await?
            }
            _ => return Err(AuthFailure::DisallowedAlgorithm(alg_name.to_owned())),
        };
        // Without a `kid`, each key of the `alg` is tried in turn (the key
        // store bounds how many); only a bad signature moves on to the next.
        let mut outcome = Err(AuthFailure::UnknownKey);
        for key in &keys {
            outcome = self.decode(token, key, alg, alg_name);
            if !matches!(outcome, Err(AuthFailure::BadSignature)) {
                break;
            }
        }
        let claims = outcome?;
        if claims.sub.is_empty() {
            return Err(AuthFailure::InvalidClaims("`sub` is empty".into()));
        }
        let (email, groups) = claims.profile.into_parts();
        Ok(Principal {
            issuer: claims.iss,
            subject: claims.sub,
            client_id: claims.client_id.or(claims.azp),
            scopes: scope_set(claims.scope.as_deref(), claims.scp),
            expires_at: Some(claims.exp),
            token_id: claims.jti,
            audiences: claims.aud.map(OneOrMany::into_vec).unwrap_or_default(),
            email,
            groups,
        })
    }

    /// Refuses a `typ` outside the issuer's accepted access-token types
    /// (compared without case and without an `application/` prefix, RFC
    /// 7515 §4.1.9); no `typ` at all is accepted.
    fn check_token_type(&self, header: &Value) -> Result<(), AuthFailure> {
        let Some(typ) = header.get("typ") else {
            return Ok(());
        };
        let name = typ.as_str().unwrap_or_default();
        let bare = name
            .get(..12)
            .filter(|p| p.eq_ignore_ascii_case("application/"))
            .map_or(name, |_| &name[12..]);
        if self
            .config
            .token_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(bare))
        {
            Ok(())
        } else {
            Err(AuthFailure::WrongTokenType(
                typ.to_string().escape_default().to_string(),
            ))
        }
    }

    /// Checks the signature and the registered claims with one key.
    fn decode(
        &self,
        token: &str,
        key: &DecodingKey,
        alg: Algorithm,
        alg_name: &str,
    ) -> Result<Claims, AuthFailure> {
        let mut validation = Validation::new(alg);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => AuthFailure::BadSignature,
                ErrorKind::ExpiredSignature => AuthFailure::Expired,
                ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
                ErrorKind::InvalidIssuer => AuthFailure::WrongIssuer,
                ErrorKind::InvalidAlgorithm => {
                    AuthFailure::DisallowedAlgorithm(alg_name.to_owned())
                }
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthFailure::InvalidClaims(format!("`{c}` is missing"))
                }
                ErrorKind::InvalidClaimFormat(c) => {
                    AuthFailure::InvalidClaims(format!("`{c}` has the wrong type"))
                }
                ErrorKind::Json(e) => AuthFailure::InvalidClaims(e.to_string()),
                other => AuthFailure::Unreadable(format!("{other:?}")),
            })
    }
}

/// Header parameters RFC 7515 §4.1 and RFC 7519 register: `crit` may never
/// list them.
const REGISTERED_HEADERS: &[&str] = &[
    "alg", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty", "crit",
];

/// RFC 7515 §4.1.11: a recipient must refuse a JWS whose `crit` lists an
/// extension it does not understand, and a malformed `crit` (not a
/// non-empty list of names, naming a registered or an absent header). The
/// gateway implements no extension, so any well-formed `crit` is refused
/// too; the message says which case it was.
fn refuse_critical_extensions(header: &Value) -> Result<(), AuthFailure> {
    let Some(crit) = header.get("crit") else {
        return Ok(());
    };
    let refuse = |why: String| Err(AuthFailure::UnsupportedHeader(why));
    let names: Option<Vec<&str>> = crit
        .as_array()
        .filter(|list| !list.is_empty())
        .and_then(|list| list.iter().map(Value::as_str).collect());
    let Some(names) = names else {
        return refuse("`crit` must be a non-empty list of header names".into());
    };
    let shown = |name: &str| name.escape_default().to_string();
    if let Some(name) = names.iter().find(|n| REGISTERED_HEADERS.contains(n)) {
        return refuse(format!(
            "`crit` lists the registered header `{}`",
            shown(name)
        ));
    }
    if let Some(name) = names.iter().find(|n| header.get(**n).is_none()) {
        return refuse(format!(
            "`crit` lists `{}`, which the header lacks",
            shown(name)
        ));
    }
    let listed: Vec<String> = names.iter().map(|n| shown(n)).collect();
    refuse(format!(
        "critical extension `{}` is not supported",
        listed.join("`, `")
    ))
}
