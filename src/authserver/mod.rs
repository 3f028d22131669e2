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
mod federation;
mod flows;
mod grant;
mod health;
mod introspection;
mod keys;
mod login;
mod pages;
pub mod passwords;
mod pkce;
mod redirect_uri;
mod refresh_grace;
mod registration;
mod revocation;
mod throttling;
mod token;

use crate::auth::{now_secs, BuiltinIssuer, LocalKeys, RevokedTokens};
use crate::config::{AuthServerConfig, Config, PublicUrl, User};
use crate::store::{News, Store, StoreError};
use arc_swap::ArcSwap;
use axum::routing::{get, post};
use axum::Router;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Whether the authorization server answers `path`: one of [`PATHS`], or
/// an identity provider's sign-in start or callback.
pub fn serves(path: &str) -> bool {
    PATHS.contains(&path)
        || ["/login/", "/callback/"].iter().any(|prefix| {
            path.strip_prefix(prefix)
                .is_some_and(|id| !id.is_empty() && !id.contains('/'))
        })
}

/// Paths the authorization server answers (exact matches).
pub const PATHS: &[&str] = &[
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
    "/jwks.json",
    "/register",
    "/authorize",
    "/login",
    "/logout",
    "/consent",
    "/token",
    "/revoke",
    "/introspect",
    "/healthz",
    "/readyz",
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
    /// Its name for people (`resource_name`).
    pub name: String,
    /// What its scopes allow, in words, where configured.
    pub descriptions: std::collections::BTreeMap<String, String>,
}

/// What a configuration reload may change: the settings, the resources
/// (from the upstreams) and the users. Handlers take one snapshot per
/// request ([`AsState::settings`]).
pub(crate) struct AsSettings {
    pub config: AuthServerConfig,
    pub resources: Vec<Resource>,
    pub users: HashMap<String, User>,
    /// The identity providers, each with its metadata once discovered.
    pub providers: Vec<federation::oidc::Provider>,
    /// The pages' logo, as a `data:` URL.
    pub logo: Option<String>,
}

impl AsSettings {
    fn new(config: &Config, as_config: AuthServerConfig) -> Self {
        let resources = config
            .upstreams
            .iter()
            .map(|u| Resource {
                url: u.resource.clone(),
                scopes: u.policy.scopes_supported(),
                base: u.policy.base.clone(),
                name: u.resource_name.clone(),
                descriptions: u.scope_descriptions.clone(),
            })
            .collect();
        let users = as_config
            .users
            .iter()
            .map(|u| (u.username.clone(), u.clone()))
            .collect();
        let http = crate::auth::fetch::client();
        let providers = as_config
            .identity_providers
            .iter()
            .map(|p| federation::oidc::Provider::new(p.clone(), http.clone()))
            .collect();
        let logo = as_config.logo_file.as_deref().and_then(|path| {
            crate::config::logo_data_url(path)
                .inspect_err(|e| tracing::warn!(error = %e, "the pages' logo is left out"))
                .ok()
        });
        Self {
            config: as_config,
            resources,
            users,
            providers,
            logo,
        }
    }

    /// The identity provider `id`.
    pub fn provider(&self, id: &str) -> Option<&federation::oidc::Provider> {
        self.providers.iter().find(|p| p.config.id == id)
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

    /// The resource at `url`.
    pub fn resource(&self, url: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.url == url)
    }
}

/// Everything the handlers share.
pub(crate) struct AsState {
    /// The issuer identifier (from `public_url`: fixed while running).
    issuer: String,
    settings: ArcSwap<AsSettings>,
    pub public_url: PublicUrl,
    pub store: Arc<dyn Store>,
    pub local_keys: Arc<LocalKeys>,
    keys: std::sync::RwLock<Arc<keys::SigningKeys>>,
    pub revoked: Arc<RevokedTokens>,
    pub codes: flows::Codes,
    pub flows: flows::FlowStore,
    pub login_limiter: throttling::LoginLimiter,
    pub documents: Option<cimd::MetadataDocuments>,
    pub federation: federation::Federation,
    /// Declared last: dropped after the store it keeps working.
    runtime: StoreRuntime,
}

impl AsState {
    fn new(
        config: &Config,
        as_config: AuthServerConfig,
        opened: Opened,
        runtime: StoreRuntime,
    ) -> Self {
        let codes = flows::Codes::new(opened.store.clone(), as_config.code_ttl);
        let flows = flows::FlowStore::new(opened.store.clone());
        let login_limiter = throttling::LoginLimiter::new(opened.store.clone());
        Self {
            issuer: as_config.issuer.clone(),
            public_url: config.public_url.clone(),
            store: opened.store,
            local_keys: opened.local,
            keys: std::sync::RwLock::new(Arc::new(opened.keys)),
            revoked: opened.revoked,
            codes,
            flows,
            login_limiter,
            federation: federation::Federation::new(),
            documents: as_config.client_metadata_documents.map(|c| {
                cimd::MetadataDocuments::new(cimd::FetchPolicy {
                    allow_private_addresses: c.allow_private_addresses,
                    allow_http: c.allow_http,
                    timeout: c.timeout,
                })
            }),
            settings: ArcSwap::from_pointee(AsSettings::new(config, as_config)),
            runtime,
        }
    }

    /// The key that signs now, and the JWKS.
    pub fn signing(&self) -> Arc<keys::SigningKeys> {
        self.keys.read().expect("keys lock").clone()
    }

    /// The issuer identifier, exactly as the PRM documents publish it.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The settings now (a reload swaps them; a request keeps the ones it
    /// read).
    pub fn settings(&self) -> Arc<AsSettings> {
        self.settings.load_full()
    }
}

/// The running authorization server (a clone is a handle to the same).
#[derive(Clone)]
pub struct AuthServer {
    state: Arc<AsState>,
}

/// The runtime the store was opened on: sqlx's pools keep their upkeep
/// (closing idle connections) on it, so it lives exactly as long as the
/// state holding the store. Dropped, it stops without waiting, which is
/// allowed inside another runtime (where pingora drops the state).
struct StoreRuntime(Option<tokio::runtime::Runtime>);

impl StoreRuntime {
    fn new() -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("authserver-store")
            .enable_all()
            .build()
            .map_err(|e| StoreError(format!("cannot start the store runtime: {e}")))?;
        Ok(Self(Some(runtime)))
    }

    /// Runs the future `work` makes to completion from synchronous code,
    /// on a thread of its own: the caller may itself be inside a runtime.
    fn run<T: Send, F: std::future::Future<Output = T>>(
        &self,
        work: impl FnOnce() -> F + Send,
    ) -> T {
        let runtime = self.0.as_ref().expect("the runtime lives until drop");
        std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(work()))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl StoreRuntime {
    /// Runs `task` on the store's runtime until it ends (or the runtime
    /// does).
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let runtime = self.0.as_ref().expect("the runtime lives until drop");
        runtime.spawn(task);
    }
}

/// How often the revocations are read again whatever the store announced:
/// the longest a revocation on another replica can go unseen here when
/// its announcement was missed (PostgreSQL's `NOTIFY` is the fast path).
const RECONCILE_REVOCATIONS: Duration = Duration::from_secs(5);

/// Keeps the revocations and the signing keys up to date with the store,
/// which other replicas (and the `keys` command) also write: read again on
/// each announcement, and the revocations at least every
/// [`RECONCILE_REVOCATIONS`] (the keys every minute, by `Maintenance`).
/// Ends with the authorization server.
async fn follow_store(state: std::sync::Weak<AsState>) {
    loop {
        let Some(state) = state.upgrade() else {
            return;
        };
        if let Some(pool) = state.store.pool_stats() {
            let gauge = &crate::metrics::metrics().store_pool;
            for (label, n) in [
                ("in_use", pool.in_use),
                ("idle", pool.idle),
                ("max", pool.max),
            ] {
                gauge.with_label_values(&[label]).set(i64::from(n));
            }
        }
        match state.store.await_news(RECONCILE_REVOCATIONS).await {
            News::Keys => reload_keys(&state).await,
            News::Revocations | News::Quiet => {
                match state.store.revoked_access_tokens(now_secs()).await {
                    Ok(all) => {
                        for (jti, exp) in all {
                            if !state.revoked.contains(&jti) {
                                state.revoked.revoke(jti, exp);
                            }
                        }
                        state.revoked.synced();
                    }
                    Err(e) => tracing::warn!(error = %e, "reading the revocations failed"),
                }
            }
        }
    }
}

impl Drop for StoreRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// What opening the store yields: the store, the signing keys, and the
/// revocations it holds, loaded into the sets the proxy checks.
struct Opened {
    store: Arc<dyn Store>,
    keys: keys::SigningKeys,
    local: Arc<LocalKeys>,
    revoked: Arc<RevokedTokens>,
}

impl Opened {
    /// Opens the configured store, loads (or makes) the signing keys and
    /// loads the unexpired revocations.
    async fn load(config: &AuthServerConfig) -> Result<Self, StoreError> {
        let store = crate::store::open(config).await?;
        let local = Arc::new(LocalKeys::default());
        let ttl = config.access_token_ttl.as_secs();
        let keys = keys::load(store.as_ref(), &local, ttl, config.signing_algorithm).await?;
        // Other replicas revoke into a shared store: this copy is trusted
        // only while it can be read (`store.max_staleness`).
        let revoked = Arc::new(match &config.store {
            crate::config::StoreConfig::Postgres(pg) => RevokedTokens::shared(pg.max_staleness),
            crate::config::StoreConfig::Sqlite => RevokedTokens::default(),
        });
        for (jti, exp) in store.revoked_access_tokens(now_secs()).await? {
            revoked.revoke(jti, exp);
        }
        revoked.synced();
        Ok(Self {
            store,
            keys,
            local,
            revoked,
        })
    }
}

impl AuthServer {
    /// Opens the store in the configured data directory and loads the
    /// signing keys and the revocations; `None` when the configuration has
    /// no authorization server. Its upkeep runs as [`Self::maintenance`].
    pub fn start(config: &Config) -> Result<Option<Self>, StoreError> {
        let Some(as_config) = config.authorization_server.clone() else {
            return Ok(None);
        };
        let runtime = StoreRuntime::new()?;
        let opened = runtime.run(|| Opened::load(&as_config))?;
        // Every kind of store failure has a series from the start (at 0),
        // so that rates and alerts on them are defined.
        for kind in crate::store::ERROR_KINDS {
            crate::metrics::metrics()
                .store_errors
                .with_label_values(&[kind]);
        }
        let state = Arc::new(AsState::new(config, as_config, opened, runtime));
        state.runtime.spawn(follow_store(Arc::downgrade(&state)));
        Ok(Some(Self { state }))
    }

    /// The background job reloading keys and purging expired grants.
    pub fn maintenance(&self) -> Maintenance {
        Maintenance(self.state.clone())
    }

    /// Takes the users, settings and resources of a reloaded `config`
    /// (which has an `authorization_server`, with the settings that need a
    /// restart unchanged). Requests under way finish with the old ones.
    pub fn reload(&self, config: &Config) {
        if let Some(as_config) = &config.authorization_server {
            let settings = AsSettings::new(config, as_config.clone());
            self.state.settings.store(Arc::new(settings));
        }
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
            .route("/login/{provider}", get(federation::start))
            .route("/logout", get(login::logout))
            .route("/callback/{provider}", get(federation::callback))
            .route(
                "/consent",
                get(consent::consent_again).post(consent::consent),
            )
            .route("/token", post(token::token))
            .route("/revoke", post(revocation::revoke))
            .route("/introspect", post(introspection::introspect))
            .route("/healthz", get(health::live))
            .route("/readyz", get(health::ready))
            .with_state(self.state.clone())
    }
}

/// The authorization server's upkeep, a pingora background service:
/// every minute it reloads the keys (a rotation made by `keys rotate` is
/// picked up, retired keys go); every five it purges expired grants.
pub struct Maintenance(Arc<AsState>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Maintenance {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let state = &self.0;
        for round in 1u64.. {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                _ = shutdown.changed() => return,
            }
            reload_keys(state).await;
            if round % 5 == 0 {
                match state.store.purge_expired(now_secs()).await {
                    Ok(n) if n > 0 => tracing::info!(rows = n, "purged expired grants"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "purge failed"),
                }
            }
        }
    }
}

async fn reload_keys(state: &AsState) {
    let settings = state.settings();
    let ttl = settings.config.access_token_ttl.as_secs();
    let alg = settings.config.signing_algorithm;
    match keys::load(state.store.as_ref(), &state.local_keys, ttl, alg).await {
        Ok(k) => *state.keys.write().expect("keys lock") = Arc::new(k),
        Err(e) => tracing::warn!(error = %e, "reloading signing keys failed"),
    }
}

/// `keys rotate`: adds a signing key to the store of `config`. A running
/// gateway publishes it within a minute and signs with it after
/// `keys::PUBLISH_BEFORE_SIGNING` seconds.
pub fn rotate_key(config: &Config) -> Result<String, StoreError> {
    with_store_config(config, |as_config| async move {
        let store = crate::store::open(as_config).await?;
        let key = keys::generate(as_config.signing_algorithm)?;
        store.add_signing_key(&key).await?;
        Ok(key.kid)
    })
}

/// `migrate`: brings the store of `config` to the schema this binary
/// needs; returns the version.
pub fn migrate_store(config: &Config) -> Result<usize, StoreError> {
    with_store_config(config, crate::store::migrate)
}

/// Runs `job` on the authorization server's configuration, on a runtime of
/// its own (a command outside `serve`).
fn with_store_config<'c, T, F>(
    config: &'c Config,
    job: impl FnOnce(&'c crate::config::AuthServerConfig) -> F,
) -> Result<T, StoreError>
where
    F: std::future::Future<Output = Result<T, StoreError>>,
{
    let as_config = config
        .authorization_server
        .as_ref()
        .ok_or_else(|| StoreError("the configuration has no authorization_server".into()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError(e.to_string()))?;
    runtime.block_on(job(as_config))
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
