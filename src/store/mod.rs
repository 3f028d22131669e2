//! Durable state of the built-in authorization server, one interface per
//! concept: signing keys ([`KeyStore`]), registered clients
//! ([`ClientStore`]), refresh-token families and revoked access tokens
//! ([`GrantStore`]), remembered consents ([`ConsentStore`]). A backend
//! implements all four, which makes it a [`Store`].
//!
//! SQLite is the default backend (one file in the data directory);
//! PostgreSQL is the one several replicas share (`store.url`); the memory
//! backend behaves the same and keeps nothing (tests; the shared behaviour
//! tests run against all three). Nothing outside this module sees SQL, and
//! the traits use only plain values. Secrets never reach the store in clear: client secrets
//! and refresh tokens are stored as SHA-256 hashes (they are 256-bit random
//! values, so a fast hash is enough).

mod memory;
mod postgres;
mod sqlite;

pub use memory::MemoryStore;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::config::StoreConfig;
use async_trait::async_trait;
use std::sync::Arc;

/// The store the configuration asks for: the SQLite file `gateway.db` in
/// `data_dir`, or the PostgreSQL database of `store.url`, its schema
/// brought up to date. The one place that picks a backend.
pub async fn open(config: &crate::config::AuthServerConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match &config.store {
        StoreConfig::Sqlite => Arc::new(SqliteStore::open(&config.data_dir).await?),
        StoreConfig::Postgres(pg) => Arc::new(PostgresStore::open(pg, true).await?),
    })
}

/// Brings the configured store's schema up to date (the `migrate`
/// command, for operators who apply migrations before rolling out);
/// returns its version.
pub async fn migrate(config: &crate::config::AuthServerConfig) -> Result<usize, StoreError> {
    match &config.store {
        StoreConfig::Sqlite => {
            SqliteStore::open(&config.data_dir)
                .await?
                .schema_version()
                .await
        }
        StoreConfig::Postgres(pg) => PostgresStore::open(pg, true).await?.schema_version().await,
    }
}

/// A storage failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// The kinds `mcpgw_store_errors_total` counts.
pub const ERROR_KINDS: [&str; 4] = ["pool_timeout", "statement_timeout", "unavailable", "other"];

impl From<sqlx::Error> for StoreError {
    /// Also counts the failure by kind (`mcpgw_store_errors_total`).
    fn from(e: sqlx::Error) -> Self {
        let [pool_timeout, statement_timeout, unavailable, other] = ERROR_KINDS;
        let kind = match &e {
            sqlx::Error::PoolTimedOut => pool_timeout,
            // PostgreSQL's query_canceled: statement_timeout ran out.
            sqlx::Error::Database(d) if d.code().as_deref() == Some("57014") => statement_timeout,
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed => unavailable,
            _ => other,
        };
        crate::metrics::metrics()
            .store_errors
            .with_label_values(&[kind])
            .inc();
        Self(e.to_string())
    }
}

/// How a store's connection pool is used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub in_use: u32,
    pub idle: u32,
    pub max: u32,
}

/// A signing key of the authorization server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Key id (`kid`).
    pub kid: String,
    /// JWS algorithm name.
    pub alg: String,
    /// The private key, PKCS#8 DER.
    pub pkcs8: Vec<u8>,
    /// Creation time, seconds since the epoch; the newest signs.
    pub created_at: u64,
}

/// A registered OAuth client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// `client_id`.
    pub client_id: String,
    /// SHA-256 of the secret, for confidential clients.
    pub secret_hash: Option<Vec<u8>>,
    /// The registered metadata (RFC 7591), as JSON.
    pub metadata: String,
    /// Registration time, seconds since the epoch.
    pub created_at: u64,
}

/// One refresh token of a family (all tokens descending from one grant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    /// SHA-256 of the token.
    pub token_hash: Vec<u8>,
    /// The family it belongs to.
    pub family_id: String,
    /// Client it was issued to.
    pub client_id: String,
    /// User (or client) it speaks for.
    pub subject: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The resource (token audience) it is bound to.
    pub resource: String,
    /// Expiry of the family, seconds since the epoch.
    pub expires_at: u64,
    /// Whether it has been exchanged already (a second use is reuse).
    pub rotated: bool,
}

/// The authorization server's storage: one interface per concept, each
/// used by the authorization-server module named on it. A backend
/// implements all five; [`open`] picks it.
pub trait Store:
    KeyStore + ClientStore + GrantStore + ConsentStore + PersonStore + CodeStore + StateStore
{
}

impl<
        T: KeyStore + ClientStore + GrantStore + ConsentStore + PersonStore + CodeStore + StateStore,
    > Store for T
{
}

/// A counter of events in a fixed window (see [`StateStore::bump_counter`]).
/// Times are milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    /// Events counted in the current window, this one included.
    pub count: u32,
    /// When the current window began.
    pub started_at: u64,
    /// When the last event was counted.
    pub last_at: u64,
}

/// Short-lived state of the browser flows and the throttles (`flows`,
/// `throttling`, `federation`): entries that expire, and counters. In the
/// store so that the replica a browser's next request lands on finds what
/// the last one wrote. Keys are SHA-256 hashes the caller made (flow and
/// session ids are bearer values), `kind` names the family of entries;
/// times are milliseconds since the epoch.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Writes (replaces) the entry, live until `expires_at`.
    async fn put_state(
        &self,
        kind: &str,
        key: &[u8],
        value: &str,
        expires_at: u64,
    ) -> Result<(), StoreError>;
    /// The live entry and when it expires.
    async fn state(
        &self,
        kind: &str,
        key: &[u8],
        now: u64,
    ) -> Result<Option<(String, u64)>, StoreError>;
    /// Removes the entry and returns it if it was live: of any number of
    /// callers at once (on any replica), at most one gets it.
    async fn take_state(
        &self,
        kind: &str,
        key: &[u8],
        now: u64,
    ) -> Result<Option<String>, StoreError>;
    /// Counts one event against `key`; a counter whose window (`window`
    /// long, from its first event) has passed starts again at one.
    /// Atomic: callers at once on any replica each get their own count.
    async fn bump_counter(
        &self,
        kind: &str,
        key: &[u8],
        now: u64,
        window: u64,
    ) -> Result<Counter, StoreError>;
    /// The counter, if its window has not passed.
    async fn counter(
        &self,
        kind: &str,
        key: &[u8],
        now: u64,
    ) -> Result<Option<Counter>, StoreError>;
    /// Forgets the counter.
    async fn reset_counter(&self, kind: &str, key: &[u8]) -> Result<(), StoreError>;
}

/// What taking an authorization code found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakenCode {
    /// The first use of a live code: its grant (JSON).
    Fresh(String),
    /// A code used before: the family its first use issued into.
    Replayed(String),
    /// No such code, or it expired unused.
    Unknown,
}

/// Authorization codes (`flows`), by SHA-256, kept after their use until
/// `forget_at` so that a replay is known as one. In the store, so that the
/// replica that exchanges a code need not be the one that issued it.
/// Times here are milliseconds since the epoch (codes live for seconds).
#[async_trait]
pub trait CodeStore: Send + Sync {
    /// Records a new code's grant (JSON), the family its tokens will
    /// belong to, when it expires and when its record may go.
    async fn put_code(
        &self,
        hash: &[u8],
        grant: &str,
        family_id: &str,
        expires_at: u64,
        forget_at: u64,
    ) -> Result<(), StoreError>;
    /// Marks a code used and tells what it was: of any number of callers
    /// at once (on any replica), at most one gets [`TakenCode::Fresh`].
    async fn take_code(&self, hash: &[u8], now: u64) -> Result<TakenCode, StoreError>;
}

/// The signing keys (`keys`).
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Every signing key, oldest first.
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError>;
    /// Adds a signing key.
    async fn add_signing_key(&self, key: &StoredKey) -> Result<(), StoreError>;
    /// Removes a retired signing key.
    async fn remove_signing_key(&self, kid: &str) -> Result<(), StoreError>;
    /// Whether the store answers now (readiness): a cheap read.
    async fn ping(&self) -> Result<(), StoreError> {
        self.signing_keys().await.map(drop)
    }
    /// Its connection pool, for a store several replicas share (metrics).
    fn pool_stats(&self) -> Option<PoolStats> {
        None
    }
}

/// Registered clients (`registration`, `clients`).
#[async_trait]
pub trait ClientStore: Send + Sync {
    /// Registers a client.
    async fn put_client(&self, client: &ClientRecord) -> Result<(), StoreError>;
    /// A registered client.
    async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError>;
}

/// What grants issued: refresh-token families and revoked access tokens (`token`, `revocation`).
#[async_trait]
pub trait GrantStore: Send + Sync {
    /// The refresh token with this hash, if its family is not revoked.
    async fn refresh_token(&self, hash: &[u8]) -> Result<Option<RefreshRecord>, StoreError>;
    /// Marks a refresh token used; `false` if it already was (reuse).
    async fn rotate_refresh_token(&self, hash: &[u8]) -> Result<bool, StoreError>;
    /// Records what one grant issued, atomically with respect to
    /// [`GrantStore::revoke_family`]: the access token's id (so that revoking the
    /// family revokes it) and, when there is one, the new refresh token.
    /// Returns `false` and records nothing when the family is revoked
    /// already (a concurrent code or refresh-token reuse): the caller must
    /// not hand out the tokens. A revocation that commits after this call
    /// finds the access token recorded.
    async fn record_issue(
        &self,
        family_id: &str,
        jti: &str,
        access_expires_at: u64,
        refresh: Option<&RefreshRecord>,
    ) -> Result<bool, StoreError>;
    /// Revokes a family: its refresh tokens stop working and its unexpired
    /// access tokens are returned, each id with its expiry (and recorded as
    /// revoked).
    async fn revoke_family(
        &self,
        family_id: &str,
        now: u64,
    ) -> Result<Vec<(String, u64)>, StoreError>;
    /// Records one revoked access token until it expires.
    async fn revoke_access_token(&self, jti: &str, expires_at: u64) -> Result<(), StoreError>;
    /// Every revoked access token still unexpired.
    async fn revoked_access_tokens(&self, now: u64) -> Result<Vec<(String, u64)>, StoreError>;
    /// Deletes expired refresh tokens and revocations; returns rows removed.
    async fn purge_expired(&self, now: u64) -> Result<u64, StoreError>;
    /// Waits, at most `at_most`, for news that a replica (or the `keys`
    /// command) sharing the store revoked access tokens or changed the
    /// signing keys (PostgreSQL's `LISTEN`); a store no other process
    /// writes to has none and just waits ([`News::Quiet`]). The caller then
    /// reads what changed again, and on `Quiet` the revocations anyway, so
    /// news missed while reconnecting is made up for within `at_most`.
    async fn await_news(&self, at_most: std::time::Duration) -> News {
        tokio::time::sleep(at_most).await;
        News::Quiet
    }
}

/// What [`GrantStore::await_news`] heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum News {
    /// Access tokens were revoked.
    Revocations,
    /// A signing key was added or removed.
    Keys,
    /// Nothing (the wait ran out, or the listener was lost).
    Quiet,
}

/// Consents users remembered (`consent`).
#[async_trait]
pub trait ConsentStore: Send + Sync {
    /// Whether `subject` has consented to `scope` for `client_id`.
    async fn has_consent(
        &self,
        subject: &str,
        client_id: &str,
        scope: &str,
    ) -> Result<bool, StoreError>;
    /// Remembers a consent.
    async fn put_consent(
        &self,
        subject: &str,
        client_id: &str,
        scope: &str,
    ) -> Result<(), StoreError>;
}

/// A person signed in through an identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonRecord {
    /// Their claims (JSON) as last vouched for by the provider.
    pub claims: String,
    /// The provider's refresh token, when it gave one.
    pub idp_refresh_token: Option<String>,
    /// When they last signed in at the provider (seconds).
    pub signed_in_at: u64,
}

/// People signed in through an identity provider (`federation`).
#[async_trait]
pub trait PersonStore: Send + Sync {
    /// Records (replaces) `subject`'s record.
    async fn put_person(&self, subject: &str, person: &PersonRecord) -> Result<(), StoreError>;
    /// `subject`'s record.
    async fn person(&self, subject: &str) -> Result<Option<PersonRecord>, StoreError>;
}

#[cfg(test)]
mod tests;
