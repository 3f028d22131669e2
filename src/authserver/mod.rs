//! The built-in OAuth 2.1 authorization server, split by concept like Ory
//! Hydra: `discovery` (RFC 8414 metadata, JWKS), `registration` (RFC 7591),
//! `authorize` (the PKCE authorization request), `login` and `consent` (the
//! two pages and their forms), `flows` (pending requests and single-use
//! codes), `browser` (cookies and which flow a page or form belongs to),
//! `throttling` (failed logins, registrations per address), `token`
//! (code, refresh and client-credentials grants, rotation), `revocation`
//! (RFC 7009), `introspection` (RFC 7662), `redirect_uri` (which
//! redirects a client may register and use), `cimd` (Client ID Metadata
//! Documents), `keys` and `passwords`, over the `store`.
//!
//! It is an ordinary axum `Router`; the proxy hands it the AS paths in
//! process. It meets the proxy only through tokens: the proxy verifies its
//! JWTs with the keys in [`LocalKeys`] and sees its revocations in
//! [`RevokedTokens`], never calling into this module.

mod authorize;
mod browser;
mod cimd;
mod clients;
mod consent;
mod discovery;
mod errors;
mod flows;
mod grant;
mod introspection;
mod keys;
mod login;
mod pages;
pub mod passwords;
mod pkce;
mod redirect_uri;
mod registration;
mod revocation;
mod throttling;
mod token;

use crate::auth::{now_secs, BuiltinIssuer, LocalKeys, RevokedTokens};
use crate::config::{AuthServerConfig, Config, PublicUrl, User};
use crate::store::{Store, StoreError};
use axum::routing::{get, post};
use axum::Router;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Paths the authorization server answers (exact matches).
pub const PATHS: &[&str] = &[
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
    "/jwks.json",
    "/register",
    "/authorize",
    "/login",
    "/consent",
    "/token",
    "/revoke",
    "/introspect",
];

/// A protected resource the AS issues tokens for.
#[derive(Debug, Clone)]
pub(crate) struct Resource {
    /// Its URL (the token audience).
    pub url: String,
    /// Scopes it knows.
    pub scopes: Vec<String>,
    /// Scopes granted when a client asks for none.
    pub base: Vec<String>,
}

/// Everything the handlers share.
pub(crate) struct AsState {
    pub config: AuthServerConfig,
    pub public_url: PublicUrl,
    pub store: Arc<dyn Store>,
    pub local_keys: Arc<LocalKeys>,
    keys: std::sync::RwLock<Arc<keys::SigningKeys>>,
    pub revoked: Arc<RevokedTokens>,
    pub resources: Vec<Resource>,
    pub users: HashMap<String, User>,
    pub codes: flows::CodeStore,
    pub flows: flows::FlowStore,
    pub login_limiter: throttling::LoginLimiter,
    pub documents: Option<cimd::MetadataDocuments>,
}

impl AsState {
    /// The key that signs now, and the JWKS.
    pub fn signing(&self) -> Arc<keys::SigningKeys> {
        self.keys.read().expect("keys lock").clone()
    }

    /// The issuer identifier, exactly as the PRM documents publish it.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// Every scope any resource knows, plus `offline_access`.
    pub fn scopes_supported(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        for s in self.resources.iter().flat_map(|r| r.scopes.iter()) {
            if !all.contains(s) {
                all.push(s.clone());
            }
        }
        all.push(crate::policy::OFFLINE_ACCESS.to_owned());
        all
    }

    pub fn resource(&self, url: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.url == url)
    }
}

/// The running authorization server.
pub struct AuthServer {
    state: Arc<AsState>,
}

impl AuthServer {
    /// Opens the store in the configured data directory, loads (or makes)
    /// the signing keys and the revocations, and starts the purge job.
    /// Runs on its own small runtime, which lives as long as the process.
    pub fn start(config: &Config) -> Result<Option<Self>, StoreError> {
        let Some(as_config) = config.authorization_server.clone() else {
            return Ok(None);
        };
        let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("authserver-store")
                .enable_all()
                .build()
                .map_err(|e| StoreError(format!("cannot start the store runtime: {e}")))?,
        ));
        let local = Arc::new(LocalKeys::default());
        let revoked = Arc::new(RevokedTokens::default());
        // On a thread of its own: the caller may itself be inside a runtime.
        let (store, keys) = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    runtime.block_on(async {
                        let store = crate::store::open(&as_config).await?;
                        let ttl = as_config.access_token_ttl.as_secs();
                        let alg = as_config.signing_algorithm;
                        let keys = keys::load(store.as_ref(), &local, ttl, alg).await?;
                        for (jti, exp) in store.revoked_access_tokens(now_secs()).await? {
                            revoked.revoke(jti, exp);
                        }
                        Ok::<_, StoreError>((store, keys))
                    })
                })
                .join()
                .map_err(|_| StoreError("store initialisation panicked".into()))
        })??;
        let resources = config
            .upstreams
            .iter()
            .map(|u| Resource {
                url: u.resource.clone(),
                scopes: u.policy.scopes_supported(),
                base: u.policy.base.clone(),
            })
            .collect();
        let users = as_config
            .users
            .iter()
            .map(|u| (u.username.clone(), u.clone()))
            .collect();
        let code_ttl = as_config.code_ttl;
        let state = AsState {
            public_url: config.public_url.clone(),
            store,
            local_keys: local,
            keys: std::sync::RwLock::new(Arc::new(keys)),
            revoked,
            resources,
            users,
            codes: flows::CodeStore::new(code_ttl),
            flows: flows::FlowStore::new(),
            login_limiter: throttling::LoginLimiter::new(),
            documents: as_config.client_metadata_documents.map(|c| {
                cimd::MetadataDocuments::new(cimd::FetchPolicy {
                    allow_private_addresses: c.allow_private_addresses,
                    allow_http: c.allow_http,
                    timeout: c.timeout,
                })
            }),
            config: as_config,
        };
        let state = Arc::new(state);
        runtime.spawn(maintain(state.clone()));
        Ok(Some(Self { state }))
    }

    /// What the proxy needs to trust this server's tokens.
    pub fn issuer(&self) -> BuiltinIssuer {
        BuiltinIssuer {
            issuer: self.state.issuer().to_owned(),
            keys: self.state.local_keys.clone(),
            revoked: self.state.revoked.clone(),
        }
    }

    /// The endpoints.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/.well-known/oauth-authorization-server",
                get(discovery::metadata),
            )
            .route(
                "/.well-known/openid-configuration",
                get(discovery::metadata),
            )
            .route("/jwks.json", get(discovery::jwks))
            .route("/register", post(registration::register))
            .route("/authorize", get(authorize::authorize))
            .route("/login", get(login::login_again).post(login::login))
            .route(
                "/consent",
                get(consent::consent_again).post(consent::consent),
            )
            .route("/token", post(token::token))
            .route("/revoke", post(revocation::revoke))
            .route("/introspect", post(introspection::introspect))
            .with_state(self.state.clone())
    }
}

/// Every minute: reload the keys (a rotation made by `keys rotate` is
/// picked up, retired keys go); every five: purge expired grants.
async fn maintain(state: Arc<AsState>) {
    let ttl = state.config.access_token_ttl.as_secs();
    for round in 1u64.. {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let alg = state.config.signing_algorithm;
        match keys::load(state.store.as_ref(), &state.local_keys, ttl, alg).await {
            Ok(k) => *state.keys.write().expect("keys lock") = Arc::new(k),
            Err(e) => tracing::warn!(error = %e, "reloading signing keys failed"),
        }
        if round % 5 == 0 {
            match state.store.purge_expired(now_secs()).await {
                Ok(n) if n > 0 => tracing::info!(rows = n, "purged expired grants"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purge failed"),
            }
        }
    }
}

/// `keys rotate`: adds a signing key to the store of `config`. A running
/// gateway publishes it within a minute and signs with it after
/// `keys::PUBLISH_BEFORE_SIGNING` seconds.
pub fn rotate_key(config: &Config) -> Result<String, StoreError> {
    let as_config = config
        .authorization_server
        .as_ref()
        .ok_or_else(|| StoreError("the configuration has no authorization_server".into()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError(e.to_string()))?;
    runtime.block_on(async {
        let store = crate::store::open(as_config).await?;
        let key = keys::generate(as_config.signing_algorithm)?;
        store.add_signing_key(&key).await?;
        Ok(key.kid)
    })
}

/// Counts an authorization-server event (a fixed name).
pub(crate) fn count_event(event: &'static str) {
    crate::metrics::metrics()
        .authserver_events
        .with_label_values(&[event])
        .inc();
}

/// A random token of `bytes` bytes, base64url-encoded.
pub fn random_token(bytes: usize) -> String {
    use aws_lc_rs::rand::SecureRandom;
    use base64::Engine;
    let mut buf = vec![0u8; bytes];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut buf)
        .expect("the system random generator works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// The address of the client of a request, set by the proxy.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::IpAddr);
