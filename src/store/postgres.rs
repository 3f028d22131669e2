//! The PostgreSQL backend: one database that several gateway replicas
//! share. Schema versions (`migrations/postgres/`) are applied at open
//! under an advisory lock, so that replicas starting together apply each
//! once; a schema newer than this binary knows is refused.
//!
//! PostgreSQL runs transactions concurrently (read committed), where
//! SQLite queues every write: what must not interleave takes a lock of its
//! own. Issuing into a refresh-token family and revoking it hold the
//! family's advisory lock for their transaction, so a token is either
//! recorded before the revocation (and revoked by it) or refused after it;
//! rotating a refresh token, like taking an authorization code, is one
//! conditional `UPDATE`, which two replicas cannot both win.

use super::{
    ClientRecord, ClientStore, CodeStore, ConsentStore, Counter, GrantStore, KeyStore, News,
    PersonRecord, PersonStore, PoolStats, RefreshRecord, StateStore, StoreError, StoredKey,
    TakenCode,
};
use crate::config::PostgresConfig;
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use std::str::FromStr;

/// Schema versions, one `.sql` file each; version N is
/// `MIGRATIONS[N - 1]`. Never edit one that has shipped: add the next.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgres/0001_initial.sql"),
    include_str!("migrations/postgres/0002_codes.sql"),
    include_str!("migrations/postgres/0003_states.sql"),
];

/// The channel revocations are announced on (no payload: listeners read
/// the revocations again, so a notification cannot be misread).
const REVOCATIONS: &str = "mcpgw_revocations";

/// The channel signing-key changes are announced on.
const KEYS: &str = "mcpgw_keys";

/// The advisory lock migrations run under (any fixed number, ours).
const MIGRATION_LOCK: i64 = 0x6d63_7067_776d_6967;

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: PgPool,
    /// The connection listening for revocations, once one is open.
    listener: tokio::sync::Mutex<Option<PgListener>>,
}

impl PostgresStore {
    /// Connects to the configured database and brings its schema up to
    /// date (`migrate`: `false` only checks that it is).
    pub async fn open(config: &PostgresConfig, migrate: bool) -> Result<Self, StoreError> {
        let statement_timeout = format!("{}ms", config.statement_timeout.as_millis());
        let url = config.url.expose();
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError(format!("postgres url: {}", redact(&e.to_string(), url))))?
            .application_name("mcp-oauth-gateway")
            .options([("statement_timeout", statement_timeout.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(config.pool_size)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError(format!(
                    "cannot connect to PostgreSQL: {}",
                    redact(&e.to_string(), url)
                ))
            })?;
        let store = Self {
            pool,
            listener: tokio::sync::Mutex::default(),
        };
        store.migrate(migrate).await?;
        Ok(store)
    }

    /// Applies the versions the database lacks (or, with `apply` off,
    /// fails if it lacks any); refuses a database newer than this binary.
    async fn migrate(&self, apply: bool) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .execute(&mut *tx)
            .await?;
        let current: i32 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        let known = MIGRATIONS.len();
        let current = usize::try_from(current).unwrap_or(0);
        if current > known {
            return Err(StoreError(format!(
                "the database's schema is version {current}, newer than this gateway knows ({known}): run the newer gateway, or restore a backup"
            )));
        }
        if current < known && !apply {
            return Err(StoreError(format!(
                "the database's schema is version {current}; this gateway needs {known}: run `mcp-oauth-gateway migrate`"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                .bind(i32::try_from(i + 1).unwrap_or(i32::MAX))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The schema version of the database.
    pub async fn schema_version(&self) -> Result<usize, StoreError> {
        let v: i32 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            .fetch_one(&self.pool)
            .await?
            .get(0);
        Ok(usize::try_from(v).unwrap_or(0))
    }

    /// A transaction holding the advisory lock of `family_id`.
    async fn family_tx(
        &self,
        family_id: &str,
    ) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(family_id)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

/// Announces, when the transaction commits, that tokens were revoked.
async fn notify_revocations(tx: &mut Transaction<'static, Postgres>) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(REVOCATIONS)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A statement of the signing keys table.
type KeyChange<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

impl PostgresStore {
    /// Runs a signing-key change and announces it, in one transaction.
    async fn change_keys(&self, change: KeyChange<'_>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        change.execute(&mut *tx).await?;
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(KEYS)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// `text` without the password of `url` (error messages may quote it).
fn redact(text: &str, url: &str) -> String {
    let password = url::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
        .filter(|p| !p.is_empty());
    match password {
        Some(p) => text.replace(&p, "***"),
        None => text.to_owned(),
    }
}

fn secs(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unsecs(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn refresh_from(row: &PgRow) -> RefreshRecord {
    RefreshRecord {
        token_hash: row.get("token_hash"),
        family_id: row.get("family_id"),
        client_id: row.get("client_id"),
        subject: row.get("subject"),
        scope: row.get("scope"),
        resource: row.get("resource"),
        expires_at: unsecs(row.get("expires_at")),
        rotated: row.get("rotated"),
    }
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, alg, pkcs8, created_at FROM signing_keys ORDER BY created_at, kid",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| StoredKey {
                kid: r.get("kid"),
                alg: r.get("alg"),
                pkcs8: r.get("pkcs8"),
                created_at: unsecs(r.get("created_at")),
            })
            .collect())
    }

    async fn add_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.change_keys(
            sqlx::query(
                "INSERT INTO signing_keys (kid, alg, pkcs8, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&key.kid)
            .bind(&key.alg)
            .bind(&key.pkcs8)
            .bind(secs(key.created_at)),
        )
        .await
    }

    fn pool_stats(&self) -> Option<PoolStats> {
        let open = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        Some(PoolStats {
            in_use: open.saturating_sub(idle),
            idle,
            max: self.pool.options().get_max_connections(),
        })
    }

    async fn remove_signing_key(&self, kid: &str) -> Result<(), StoreError> {
        self.change_keys(sqlx::query("DELETE FROM signing_keys WHERE kid = $1").bind(kid))
            .await
    }
}

#[async_trait]
impl ClientStore for PostgresStore {
    async fn put_client(&self, c: &ClientRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO clients (client_id, secret_hash, metadata, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&c.client_id)
        .bind(&c.secret_hash)
        .bind(&c.metadata)
        .bind(secs(c.created_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT client_id, secret_hash, metadata, created_at FROM clients WHERE client_id = $1",
        )
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| ClientRecord {
            client_id: r.get("client_id"),
            secret_hash: r.get("secret_hash"),
            metadata: r.get("metadata"),
            created_at: unsecs(r.get("created_at")),
        }))
    }
}

#[async_trait]
impl GrantStore for PostgresStore {
    async fn refresh_token(&self, hash: &[u8]) -> Result<Option<RefreshRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT * FROM refresh_tokens WHERE token_hash = $1 AND family_id NOT IN (SELECT family_id FROM revoked_families)",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(refresh_from))
    }

    async fn rotate_refresh_token(&self, hash: &[u8]) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET rotated = TRUE WHERE token_hash = $1 AND NOT rotated",
        )
        .bind(hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_issue(
        &self,
        family_id: &str,
        jti: &str,
        access_expires_at: u64,
        refresh: Option<&RefreshRecord>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.family_tx(family_id).await?;
        let revoked = sqlx::query("SELECT 1 FROM revoked_families WHERE family_id = $1")
            .bind(family_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if revoked {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO family_access_tokens (jti, family_id, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(jti)
        .bind(family_id)
        .bind(secs(access_expires_at))
        .execute(&mut *tx)
        .await?;
        if let Some(t) = refresh {
            sqlx::query("INSERT INTO refresh_tokens (token_hash, family_id, client_id, subject, scope, resource, expires_at, rotated) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                .bind(&t.token_hash)
                .bind(&t.family_id)
                .bind(&t.client_id)
                .bind(&t.subject)
                .bind(&t.scope)
                .bind(&t.resource)
                .bind(secs(t.expires_at))
                .bind(t.rotated)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn revoke_family(
        &self,
        family_id: &str,
        now: u64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let mut tx = self.family_tx(family_id).await?;
        let until: Option<i64> =
            sqlx::query("SELECT MAX(expires_at) FROM refresh_tokens WHERE family_id = $1")
                .bind(family_id)
                .fetch_one(&mut *tx)
                .await?
                .get(0);
        sqlx::query(
            "INSERT INTO revoked_families (family_id, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(family_id)
        .bind(until.unwrap_or(secs(now).saturating_add(86_400)))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO revoked_access_tokens (jti, expires_at) \
             SELECT jti, expires_at FROM family_access_tokens WHERE family_id = $1 AND expires_at > $2 \
             ON CONFLICT DO NOTHING",
        )
        .bind(family_id)
        .bind(secs(now))
        .execute(&mut *tx)
        .await?;
        notify_revocations(&mut tx).await?;
        let revoked = sqlx::query(
            "SELECT jti, expires_at FROM family_access_tokens WHERE family_id = $1 AND expires_at > $2 ORDER BY jti",
        )
        .bind(family_id)
        .bind(secs(now))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| (r.get("jti"), unsecs(r.get("expires_at"))))
        .collect();
        tx.commit().await?;
        Ok(revoked)
    }

    async fn revoke_access_token(&self, jti: &str, expires_at: u64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(jti)
        .bind(secs(expires_at))
        .execute(&mut *tx)
        .await?;
        notify_revocations(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn await_news(&self, at_most: std::time::Duration) -> News {
        let deadline = tokio::time::Instant::now() + at_most;
        let mut listener = self.listener.lock().await;
        if listener.is_none() {
            match PgListener::connect_with(&self.pool).await {
                Ok(mut l) => match l.listen_all([REVOCATIONS, KEYS]).await {
                    Ok(()) => *listener = Some(l),
                    Err(e) => tracing::warn!(error = %e, "cannot listen for revocations"),
                },
                Err(e) => tracing::warn!(error = %e, "cannot listen for revocations"),
            }
        }
        let Some(l) = listener.as_mut() else {
            tokio::time::sleep_until(deadline).await;
            return News::Quiet;
        };
        // A lost connection is re-established inside `recv` (what was
        // announced meanwhile is made up for by the caller's next read).
        match tokio::time::timeout_at(deadline, l.recv()).await {
            Ok(Ok(n)) if n.channel() == KEYS => News::Keys,
            Ok(Ok(_)) => News::Revocations,
            Err(_) => News::Quiet,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "lost the revocation listener; reconnecting");
                *listener = None;
                News::Quiet
            }
        }
    }

    async fn revoked_access_tokens(&self, now: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT jti, expires_at FROM revoked_access_tokens WHERE expires_at > $1 ORDER BY jti",
        )
        .bind(secs(now))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get("jti"), unsecs(r.get("expires_at"))))
            .collect())
    }

    async fn purge_expired(&self, now: u64) -> Result<u64, StoreError> {
        let now_ms = secs(now.saturating_mul(1000));
        let now = secs(now);
        let mut removed = 0;
        for (sql, at) in [
            ("DELETE FROM refresh_tokens WHERE expires_at <= $1", now),
            ("DELETE FROM revoked_families WHERE expires_at <= $1", now),
            (
                "DELETE FROM family_access_tokens WHERE expires_at <= $1",
                now,
            ),
            (
                "DELETE FROM revoked_access_tokens WHERE expires_at <= $1",
                now,
            ),
            ("DELETE FROM codes WHERE forget_at <= $1", now_ms),
            ("DELETE FROM states WHERE expires_at <= $1", now_ms),
            ("DELETE FROM counters WHERE expires_at <= $1", now_ms),
        ] {
            removed += sqlx::query(sql)
                .bind(at)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(removed)
    }
}

#[async_trait]
impl ConsentStore for PostgresStore {
    async fn has_consent(
        &self,
        subject: &str,
        client_id: &str,
        scope: &str,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 FROM consents WHERE subject = $1 AND client_id = $2 AND scope = $3",
        )
        .bind(subject)
        .bind(client_id)
        .bind(scope)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    async fn put_consent(
        &self,
        subject: &str,
        client_id: &str,
        scope: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO consents (subject, client_id, scope) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(subject)
        .bind(client_id)
        .bind(scope)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl PersonStore for PostgresStore {
    async fn put_person(&self, subject: &str, person: &PersonRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO people (subject, claims, idp_refresh_token, signed_in_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (subject) DO UPDATE SET claims = excluded.claims, \
             idp_refresh_token = excluded.idp_refresh_token, signed_in_at = excluded.signed_in_at",
        )
        .bind(subject)
        .bind(&person.claims)
        .bind(&person.idp_refresh_token)
        .bind(secs(person.signed_in_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn person(&self, subject: &str) -> Result<Option<PersonRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT claims, idp_refresh_token, signed_in_at FROM people WHERE subject = $1",
        )
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| PersonRecord {
            claims: r.get("claims"),
            idp_refresh_token: r.get("idp_refresh_token"),
            signed_in_at: unsecs(r.get("signed_in_at")),
        }))
    }
}

#[async_trait]
impl CodeStore for PostgresStore {
    async fn put_code(
        &self,
        hash: &[u8],
        grant: &str,
        family_id: &str,
        expires_at: u64,
        forget_at: u64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO codes (code_hash, grant_json, family_id, expires_at, forget_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(hash)
            .bind(grant)
            .bind(family_id)
            .bind(secs(expires_at))
            .bind(secs(forget_at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn take_code(&self, hash: &[u8], now: u64) -> Result<TakenCode, StoreError> {
        let taken = sqlx::query(
            "UPDATE codes SET used = TRUE WHERE code_hash = $1 AND NOT used RETURNING grant_json, expires_at",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match taken {
            Some(row) if row.get::<i64, _>("expires_at") > secs(now) => {
                TakenCode::Fresh(row.get("grant_json"))
            }
            Some(_) => TakenCode::Unknown,
            None => sqlx::query("SELECT family_id FROM codes WHERE code_hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?
                .map_or(TakenCode::Unknown, |r| {
                    TakenCode::Replayed(r.get("family_id"))
                }),
        })
    }
}

fn counter_from(row: &PgRow) -> Counter {
    Counter {
        count: u32::try_from(row.get::<i64, _>("count")).unwrap_or(u32::MAX),
        started_at: unsecs(row.get("started_at")),
        last_at: unsecs(row.get("last_at")),
    }
}

#[async_trait]
impl StateStore for PostgresStore {
    async fn put_state(
        &self,
        kind: &str,
        key: &[u8],
        value: &str,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO states (kind, key, value, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (kind, key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at",
        )
        .bind(kind)
        .bind(key)
        .bind(value)
        .bind(secs(expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn state(
        &self,
        kind: &str,
        key: &[u8],
        now: u64,
    ) -> Result<Option<(String, u64)>, StoreError> {
        Ok(sqlx::query(
            "SELECT value, expires_at FROM states WHERE kind = $1 AND key = $2 AND expires_at > $3",
        )
        .bind(kind)
        .bind(key)
        .bind(secs(now))
        .fetch_optional(&self.pool)
        .await?
        .map(|r| (r.get("value"), unsecs(r.get("expires_at")))))
    }

    async fn take_state(
        &self,
        kind: &str,
        key: &[u8],
        now: u64,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM states WHERE kind = $1 AND key = $2 RETURNING value, expires_at",
        )
        .bind(kind)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?
        .filter(|r| r.get::<i64, _>("expires_at") > secs(now))
        .map(|r| r.get("value")))
    }

    async fn bump_counter(
        &self,
        kind: &str,
        key: &[u8],
        now: u64,
        window: u64,
    ) -> Result<Counter, StoreError> {
        let row = sqlx::query(
            "INSERT INTO counters (kind, key, count, started_at, last_at, expires_at) \
             VALUES ($1, $2, 1, $3, $3, $4) \
             ON CONFLICT (kind, key) DO UPDATE SET \
             count = CASE WHEN counters.expires_at <= $3 THEN 1 ELSE counters.count + 1 END, \
             started_at = CASE WHEN counters.expires_at <= $3 THEN $3 ELSE counters.started_at END, \
             expires_at = CASE WHEN counters.expires_at <= $3 THEN $4 ELSE counters.expires_at END, \
             last_at = $3 \
             RETURNING count, started_at, last_at",
        )
        .bind(kind)
        .bind(key)
        .bind(secs(now))
        .bind(secs(now.saturating_add(window)))
        .fetch_one(&self.pool)
        .await?;
        Ok(counter_from(&row))
    }

    async fn counter(
        &self,
        kind: &str,
        key: &[u8],
        now: u64,
    ) -> Result<Option<Counter>, StoreError> {
        Ok(sqlx::query(
            "SELECT count, started_at, last_at FROM counters WHERE kind = $1 AND key = $2 AND expires_at > $3",
        )
        .bind(kind)
        .bind(key)
        .bind(secs(now))
        .fetch_optional(&self.pool)
        .await?
        .map(|r| counter_from(&r)))
    }

    async fn reset_counter(&self, kind: &str, key: &[u8]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM counters WHERE kind = $1 AND key = $2")
            .bind(kind)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
