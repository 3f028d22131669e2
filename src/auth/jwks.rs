//! One issuer's signing keys: where they are (configured, or read from the
//! issuer's RFC 8414 / OpenID metadata), fetched and refreshed on a schedule
//! by [`KeyRefresher`], and fetched again when a token names an unknown
//! `kid`, at most once per `jwks_min_refresh_interval` so a flood of bogus
//! key ids cannot hammer the IdP.
//!
//! Only public keys (RSA, EC, OKP) are taken from a JWKS: symmetric `oct`
//! keys are skipped, so an HMAC algorithm can never be paired with a key a
//! JWKS published.

use super::fetch;
use super::AuthFailure;
use crate::config::JwtIssuer;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// A usable verification key.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    alg: Option<Algorithm>,
    family: jsonwebtoken::AlgorithmFamily,
    key: DecodingKey,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Key>,
    fetched: Option<Instant>,
}

/// Most keys a token without `kid` is tried against: a JWKS rotating keys
/// holds two or three of one algorithm, and each try is a signature check.
const MAX_KEYS_WITHOUT_KID: usize = 4;

impl KeySet {
    /// The keys a token may be signed with: the one its `kid` names, or,
    /// without a `kid` (optional in RFC 7515), the first few of its `alg`.
    fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<DecodingKey> {
        let fits = |k: &&Key| alg.family() == k.family && k.alg.is_none_or(|a| a == alg);
        let fitting = self.keys.iter().filter(fits);
        match kid {
            Some(kid) => fitting
                .filter(|k| k.kid.as_deref() == Some(kid))
                .take(1)
                .map(|k| k.key.clone())
                .collect(),
            None => fitting
                .take(MAX_KEYS_WITHOUT_KID)
                .map(|k| k.key.clone())
                .collect(),
        }
    }
}

/// The keys of one issuer.
pub(crate) struct KeyStore {
    config: JwtIssuer,
    http: reqwest::Client,
    jwks_uri: RwLock<Option<String>>,
    keys: RwLock<Arc<KeySet>>,
    /// Held while fetching: concurrent refreshes wait for one fetch. Holds
    /// the time of the last attempt.
    refreshing: tokio::sync::Mutex<Option<Instant>>,
}

impl KeyStore {
    pub(crate) fn new(config: JwtIssuer, http: reqwest::Client) -> Self {
        Self {
            jwks_uri: RwLock::new(config.jwks_uri.clone()),
            config,
            http,
            keys: RwLock::default(),
            refreshing: tokio::sync::Mutex::new(None),
        }
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys.read().expect("key set lock").clone()
    }

    /// The keys a token may be signed with (see `KeySet::candidates`). An
    /// unknown `kid` triggers one (rate-limited) refresh; keys never loaded
    /// at all mean the JWKS is unavailable.
    pub(crate) async fn keys_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<DecodingKey>, AuthFailure> {
        let set = self.current();
        let keys = set.candidates(kid, alg);
        if !keys.is_empty() {
            return Ok(keys);
        }
        let refreshed = self.refresh_rate_limited(set.fetched).await;
        let set = self.current();
        if set.fetched.is_none() {
            return Err(AuthFailure::JwksUnavailable(
                refreshed.err().unwrap_or_else(|| "not fetched yet".into()),
            ));
        }
        let keys = set.candidates(kid, alg);
        if keys.is_empty() {
            return Err(AuthFailure::UnknownKey);
        }
        Ok(keys)
    }

    /// Refreshes unless another caller just did (then its keys are used) or
    /// the last attempt is more recent than the minimum interval.
    async fn refresh_rate_limited(&self, seen: Option<Instant>) -> Result<(), String> {
        let mut last_attempt = self.refreshing.lock().await;
        if self.current().fetched != seen {
            return Ok(());
        }
        if last_attempt.is_some_and(|t| t.elapsed() < self.config.jwks_min_refresh_interval) {
            return Err("the last fetch failed moments ago; not retrying yet".into());
        }
        *last_attempt = Some(Instant::now());
        self.fetch().await
    }

    /// Fetches the keys now (the scheduled refresh).
    pub(super) async fn refresh(&self) -> Result<(), String> {
        let mut last_attempt = self.refreshing.lock().await;
        *last_attempt = Some(Instant::now());
        self.fetch().await
    }

    async fn fetch(&self) -> Result<(), String> {
        let configured = self.jwks_uri.read().expect("jwks uri lock").clone();
        let uri = match configured {
            Some(u) => u,
            None => {
                let u = self.discover_jwks_uri().await?;
                *self.jwks_uri.write().expect("jwks uri lock") = Some(u.clone());
                u
            }
        };
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<Value>,
        }
        let fetched: Result<Document, String> =
            fetch::json(self.http.get(&uri), self.config.fetch_timeout).await;
        let outcome = if fetched.is_ok() { "ok" } else { "error" };
        crate::metrics::metrics()
            .jwks_fetches
            .with_label_values(&[&self.config.issuer, outcome])
            .inc();
        let doc = fetched.map_err(|e| format!("JWKS {uri}: {e}"))?;
        let keys: Vec<Key> = doc
            .keys
            .into_iter()
            .filter_map(|k| self.usable(k))
            .collect();
        tracing::info!(issuer = %self.config.issuer, keys = keys.len(), "JWKS loaded");
        *self.keys.write().expect("key set lock") = Arc::new(KeySet {
            keys,
            fetched: Some(Instant::now()),
        });
        Ok(())
    }

    fn usable(&self, value: Value) -> Option<Key> {
        let jwk: Jwk = match serde_json::from_value(value) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(issuer = %self.config.issuer, error = %e, "JWKS entry skipped: unreadable");
                return None;
            }
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return None;
        }
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse::<Algorithm>().ok());
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => jsonwebtoken::AlgorithmFamily::Rsa,
            AlgorithmParameters::EllipticCurve(_) => jsonwebtoken::AlgorithmFamily::Ec,
            AlgorithmParameters::OctetKeyPair(_) => jsonwebtoken::AlgorithmFamily::Ed,
            _ => return None,
        };
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) => Some(Key {
                kid: jwk.common.key_id.clone(),
                alg,
                family,
                key,
            }),
            Err(e) => {
                tracing::warn!(issuer = %self.config.issuer, error = %e, "JWKS entry skipped: not a valid key");
                None
            }
        }
    }

    /// RFC 8414 §3 / OpenID discovery: the metadata URLs for the issuer, in
    /// the order MCP clients probe them; the document's `issuer` must be the
    /// configured one.
    async fn discover_jwks_uri(&self) -> Result<String, String> {
        #[derive(Deserialize)]
        struct Metadata {
            issuer: String,
            jwks_uri: Option<String>,
        }
        let issuer = &self.config.issuer;
        let mut failures = Vec::new();
        for url in metadata_urls(issuer) {
            match fetch::json::<Metadata>(self.http.get(&url), self.config.fetch_timeout).await {
                Ok(m) if m.issuer != *issuer => {
                    failures.push(format!("{url}: issuer is `{}`", m.issuer))
                }
                Ok(Metadata {
                    jwks_uri: Some(u), ..
                }) => {
                    return crate::config::check_endpoint_url(&u)
                        .map(|()| u)
                        .map_err(|e| format!("{url}: jwks_uri {e}"))
                }
                Ok(_) => failures.push(format!("{url}: no jwks_uri")),
                Err(e) => failures.push(format!("{url}: {e}")),
            }
        }
        Err(format!(
            "no usable metadata for `{issuer}` ({})",
            failures.join("; ")
        ))
    }
}

/// Where an issuer's metadata may be, most specific first.
fn metadata_urls(issuer: &str) -> Vec<String> {
    let Ok(url) = url::Url::parse(issuer) else {
        return Vec::new();
    };
    let origin = url.origin().ascii_serialization();
    let path = url.path().trim_end_matches('/');
    let mut urls = vec![
        format!("{origin}/.well-known/oauth-authorization-server{path}"),
        format!("{origin}/.well-known/openid-configuration{path}"),
    ];
    if !path.is_empty() {
        urls.push(format!("{origin}{path}/.well-known/openid-configuration"));
    }
    urls
}

/// Background job: loads every issuer's keys at startup and again each
/// `jwks_refresh_interval`; a failed fetch is retried after the minimum
/// interval, and the keys already loaded keep working meanwhile.
pub struct KeyRefresher {
    stores: Vec<Arc<KeyStore>>,
}

impl KeyRefresher {
    pub(super) fn new(stores: Vec<Arc<KeyStore>>) -> Self {
        Self { stores }
    }

    async fn run(store: Arc<KeyStore>) {
        loop {
            let wait = match store.refresh().await {
                Ok(()) => store.config.jwks_refresh_interval,
                Err(e) => {
                    tracing::warn!(issuer = %store.config.issuer, error = %e, "JWKS refresh failed; keeping the keys already loaded");
                    store.config.jwks_min_refresh_interval
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

impl KeyRefresher {
    /// Starts refreshing on the current runtime, until the tasks are
    /// dropped.
    pub fn spawn(&self) -> RefreshTasks {
        RefreshTasks(
            self.stores
                .iter()
                .map(|s| tokio::spawn(Self::run(s.clone())))
                .collect(),
        )
    }
}

/// Running refreshes, stopped when dropped (a reload replacing the token
/// sources, shutdown).
pub struct RefreshTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for RefreshTasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::metadata_urls;

    #[test]
    fn metadata_is_probed_path_inserted_then_path_appended() {
        assert_eq!(
            metadata_urls("https://idp.example/tenant1"),
            vec![
                "https://idp.example/.well-known/oauth-authorization-server/tenant1",
                "https://idp.example/.well-known/openid-configuration/tenant1",
                "https://idp.example/tenant1/.well-known/openid-configuration",
            ]
        );
        assert_eq!(metadata_urls("https://idp.example/").len(), 2);
    }
}
