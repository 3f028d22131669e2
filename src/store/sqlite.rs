//! The SQLite backend: one file (WAL mode), schema versions applied in
//! order at open.
//!
//! Writes go through one connection of their own and every multi-statement
//! write is a `BEGIN IMMEDIATE` transaction. SQLite allows one writer at a
//! time; with several pooled connections, a deferred transaction that read
//! first and then wrote failed at once with `SQLITE_BUSY` (5) or
//! `SQLITE_BUSY_SNAPSHOT` (517), which its busy timeout does not cover, and
//! concurrent revocations were lost (issue 11.3). One writer connection
//! queues this process's writes in the pool instead; the busy timeout
//! covers another process (the `keys` command) holding the lock. Reads use
//! their own connections and, in WAL mode, never wait for the writer.

use super::{
    ClientRecord, ClientStore, CodeStore, ConsentStore, Counter, GrantStore, KeyStore,
    PersonRecord, PersonStore, RefreshRecord, StateStore, StoreError, StoredKey, TakenCode,
};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// Schema versions, one `.sql` file each under `migrations/sqlite/`;
/// version N is `MIGRATIONS[N - 1]`. Never edit one that has shipped: add
/// the next file.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/sqlite/0001_initial.sql"),
    include_str!("migrations/sqlite/0002_people.sql"),
    include_str!("migrations/sqlite/0003_codes.sql"),
    include_str!("migrations/sqlite/0004_states.sql"),
];

/// How long a write waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQLite store.
pub struct SqliteStore {
    /// Connections for reads.
    read: SqlitePool,
    /// The one connection for writes.
    write: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/gateway.db` and brings its schema up
    /// to date.
    pub async fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        let options = SqliteConnectOptions::new()
            .filename(dir.join("gateway.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        migrate(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Ok(Self { read, write })
    }

    /// A private in-memory database (tests).
    pub async fn in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?;
        // One connection: every connection to `:memory:` is its own database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        migrate(&pool).await?;
        Ok(Self {
            read: pool.clone(),
            write: pool,
        })
    }

    /// The schema version of the file.
    pub async fn schema_version(&self) -> Result<usize, StoreError> {
        let v: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            .fetch_one(&self.read)
            .await?
            .get(0);
        Ok(usize::try_from(v).unwrap_or(0))
    }

    /// A write transaction holding the write lock from its first statement.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// Brings the schema up to date.
async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .execute(pool)
        .await?;
    // The version is read inside the write transaction, so that two
    // processes opening the file at once apply each migration once.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        .fetch_one(&mut *tx)
        .await?
        .get(0);
    let current = usize::try_from(current).unwrap_or(0);
    if current > MIGRATIONS.len() {
        return Err(StoreError(format!(
            "the database's schema is version {current}, newer than this gateway knows ({}): run the newer gateway, or restore a backup",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_version (version) VALUES (?)")
            .bind(i as i64 + 1)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

fn refresh_from(row: &sqlx::sqlite::SqliteRow) -> RefreshRecord {
    RefreshRecord {
        token_hash: row.get("token_hash"),
        family_id: row.get("family_id"),
        client_id: row.get("client_id"),
        subject: row.get("subject"),
        scope: row.get("scope"),
        resource: row.get("resource"),
        expires_at: row.get::<i64, _>("expires_at") as u64,
        rotated: row.get::<i64, _>("rotated") != 0,
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, alg, pkcs8, created_at FROM signing_keys ORDER BY created_at, kid",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .iter()
            .map(|r| StoredKey {
                kid: r.get("kid"),
                alg: r.get("alg"),
                pkcs8: r.get("pkcs8"),
                created_at: r.get::<i64, _>("created_at") as u64,
            })
            .collect())
    }

    async fn add_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO signing_keys (kid, alg, pkcs8, created_at) VALUES (?, ?, ?, ?)")
            .bind(&key.kid)
            .bind(&key.alg)
            .bind(&key.pkcs8)
            .bind(key.created_at as i64)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn remove_signing_key(&self, kid: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM signing_keys WHERE kid = ?")
            .bind(kid)
            .execute(&self.write)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl ClientStore for SqliteStore {
    async fn put_client(&self, c: &ClientRecord) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO clients (client_id, secret_hash, metadata, created_at) VALUES (?, ?, ?, ?)")
            .bind(&c.client_id)
            .bind(&c.secret_hash)
            .bind(&c.metadata)
            .bind(c.created_at as i64)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT client_id, secret_hash, metadata, created_at FROM clients WHERE client_id = ?",
        )
        .bind(client_id)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| ClientRecord {
            client_id: r.get("client_id"),
            secret_hash: r.get("secret_hash"),
            metadata: r.get("metadata"),
            created_at: r.get::<i64, _>("created_at") as u64,
        }))
    }
}

#[async_trait]
impl GrantStore for SqliteStore {
    async fn refresh_token(&self, hash: &[u8]) -> Result<Option<RefreshRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT * FROM refresh_tokens WHERE token_hash = ? AND family_id NOT IN (SELECT family_id FROM revoked_families)",
        )
        .bind(hash)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.as_ref().map(refresh_from))
    }

    async fn rotate_refresh_token(&self, hash: &[u8]) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET rotated = 1 WHERE token_hash = ? AND rotated = 0",
        )
        .bind(hash)
        .execute(&self.write)
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
        let mut tx = self.write_tx().await?;
        let revoked = sqlx::query("SELECT 1 FROM revoked_families WHERE family_id = ?")
            .bind(family_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if revoked {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO family_access_tokens (jti, family_id, expires_at) VALUES (?, ?, ?)",
        )
        .bind(jti)
        .bind(family_id)
        .bind(access_expires_at as i64)
        .execute(&mut *tx)
        .await?;
        if let Some(t) = refresh {
            sqlx::query("INSERT INTO refresh_tokens (token_hash, family_id, client_id, subject, scope, resource, expires_at, rotated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
                .bind(&t.token_hash)
                .bind(&t.family_id)
                .bind(&t.client_id)
                .bind(&t.subject)
                .bind(&t.scope)
                .bind(&t.resource)
                .bind(t.expires_at as i64)
                .bind(i64::from(t.rotated))
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
        let mut tx = self.write_tx().await?;
        let until: Option<i64> =
            sqlx::query("SELECT MAX(expires_at) FROM refresh_tokens WHERE family_id = ?")
                .bind(family_id)
                .fetch_one(&mut *tx)
                .await?
                .get(0);
        sqlx::query("INSERT OR IGNORE INTO revoked_families (family_id, expires_at) VALUES (?, ?)")
            .bind(family_id)
            .bind(until.unwrap_or(now as i64 + 86_400))
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query("SELECT jti, expires_at FROM family_access_tokens WHERE family_id = ? AND expires_at > ?")
            .bind(family_id)
            .bind(now as i64)
            .fetch_all(&mut *tx)
            .await?;
        let mut revoked = Vec::new();
        for r in &rows {
            let jti: String = r.get("jti");
            let expires_at: i64 = r.get("expires_at");
            sqlx::query(
                "INSERT OR IGNORE INTO revoked_access_tokens (jti, expires_at) VALUES (?, ?)",
            )
            .bind(&jti)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            revoked.push((jti, u64::try_from(expires_at).unwrap_or(0)));
        }
        tx.commit().await?;
        Ok(revoked)
    }

    async fn revoke_access_token(&self, jti: &str, expires_at: u64) -> Result<(), StoreError> {
        sqlx::query("INSERT OR IGNORE INTO revoked_access_tokens (jti, expires_at) VALUES (?, ?)")
            .bind(jti)
            .bind(expires_at as i64)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn revoked_access_tokens(&self, now: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let rows =
            sqlx::query("SELECT jti, expires_at FROM revoked_access_tokens WHERE expires_at > ?")
                .bind(now as i64)
                .fetch_all(&self.read)
                .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get("jti"), r.get::<i64, _>("expires_at") as u64))
            .collect())
    }

    async fn purge_expired(&self, now: u64) -> Result<u64, StoreError> {
        let now_ms = now.saturating_mul(1000) as i64;
        let now = now as i64;
        let mut removed = 0;
        for (sql, at) in [
            ("DELETE FROM refresh_tokens WHERE expires_at <= ?", now),
            ("DELETE FROM revoked_families WHERE expires_at <= ?", now),
            (
                "DELETE FROM family_access_tokens WHERE expires_at <= ?",
                now,
            ),
            (
                "DELETE FROM revoked_access_tokens WHERE expires_at <= ?",
                now,
            ),
            ("DELETE FROM codes WHERE forget_at <= ?", now_ms),
            ("DELETE FROM states WHERE expires_at <= ?", now_ms),
            ("DELETE FROM counters WHERE expires_at <= ?", now_ms),
        ] {
            removed += sqlx::query(sql)
                .bind(at)
                .execute(&self.write)
                .await?
                .rows_affected();
        }
        Ok(removed)
    }
}

#[async_trait]
impl ConsentStore for SqliteStore {
    async fn has_consent(
        &self,
        subject: &str,
        client_id: &str,
        scope: &str,
    ) -> Result<bool, StoreError> {
        let row =
            sqlx::query("SELECT 1 FROM consents WHERE subject = ? AND client_id = ? AND scope = ?")
                .bind(subject)
                .bind(client_id)
                .bind(scope)
                .fetch_optional(&self.read)
                .await?;
        Ok(row.is_some())
    }

    async fn put_consent(
        &self,
        subject: &str,
        client_id: &str,
        scope: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT OR IGNORE INTO consents (subject, client_id, scope) VALUES (?, ?, ?)")
            .bind(subject)
            .bind(client_id)
            .bind(scope)
            .execute(&self.write)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl PersonStore for SqliteStore {
    async fn put_person(&self, subject: &str, person: &PersonRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO people (subject, claims, idp_refresh_token, signed_in_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (subject) DO UPDATE SET claims = excluded.claims, \
             idp_refresh_token = excluded.idp_refresh_token, signed_in_at = excluded.signed_in_at",
        )
        .bind(subject)
        .bind(&person.claims)
        .bind(&person.idp_refresh_token)
        .bind(person.signed_in_at as i64)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn person(&self, subject: &str) -> Result<Option<PersonRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT claims, idp_refresh_token, signed_in_at FROM people WHERE subject = ?",
        )
        .bind(subject)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| PersonRecord {
            claims: r.get("claims"),
            idp_refresh_token: r.get("idp_refresh_token"),
            signed_in_at: r.get::<i64, _>("signed_in_at") as u64,
        }))
    }
}

#[async_trait]
impl CodeStore for SqliteStore {
    async fn put_code(
        &self,
        hash: &[u8],
        grant: &str,
        family_id: &str,
        expires_at: u64,
        forget_at: u64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO codes (code_hash, grant_json, family_id, expires_at, forget_at) VALUES (?, ?, ?, ?, ?)")
            .bind(hash)
            .bind(grant)
            .bind(family_id)
            .bind(expires_at as i64)
            .bind(forget_at as i64)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn take_code(&self, hash: &[u8], now: u64) -> Result<TakenCode, StoreError> {
        let mut tx = self.write_tx().await?;
        let taken = sqlx::query(
            "UPDATE codes SET used = 1 WHERE code_hash = ? AND used = 0 RETURNING grant_json, expires_at",
        )
        .bind(hash)
        .fetch_optional(&mut *tx)
        .await?;
        let found = match taken {
            Some(row) if row.get::<i64, _>("expires_at") > now as i64 => {
                TakenCode::Fresh(row.get("grant_json"))
            }
            Some(_) => TakenCode::Unknown,
            None => sqlx::query("SELECT family_id FROM codes WHERE code_hash = ?")
                .bind(hash)
                .fetch_optional(&mut *tx)
                .await?
                .map_or(TakenCode::Unknown, |r| {
                    TakenCode::Replayed(r.get("family_id"))
                }),
        };
        tx.commit().await?;
        Ok(found)
    }
}

fn counter_from(row: &sqlx::sqlite::SqliteRow) -> Counter {
    Counter {
        count: u32::try_from(row.get::<i64, _>("count")).unwrap_or(u32::MAX),
        started_at: row.get::<i64, _>("started_at") as u64,
        last_at: row.get::<i64, _>("last_at") as u64,
    }
}

#[async_trait]
impl StateStore for SqliteStore {
    async fn put_state(
        &self,
        kind: &str,
        key: &[u8],
        value: &str,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT OR REPLACE INTO states (kind, key, value, expires_at) VALUES (?, ?, ?, ?)",
        )
        .bind(kind)
        .bind(key)
        .bind(value)
        .bind(expires_at as i64)
        .execute(&self.write)
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
            "SELECT value, expires_at FROM states WHERE kind = ? AND key = ? AND expires_at > ?",
        )
        .bind(kind)
        .bind(key)
        .bind(now as i64)
        .fetch_optional(&self.read)
        .await?
        .map(|r| (r.get("value"), r.get::<i64, _>("expires_at") as u64)))
    }

    async fn take_state(
        &self,
        kind: &str,
        key: &[u8],
        now: u64,
    ) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query(
                "DELETE FROM states WHERE kind = ? AND key = ? RETURNING value, expires_at",
            )
            .bind(kind)
            .bind(key)
            .fetch_optional(&self.write)
            .await?
            .filter(|r| r.get::<i64, _>("expires_at") > now as i64)
            .map(|r| r.get("value")),
        )
    }

    async fn bump_counter(
        &self,
        kind: &str,
        key: &[u8],
        now: u64,
        window: u64,
    ) -> Result<Counter, StoreError> {
        let row = sqlx::query(COUNT_ONE)
            .bind(kind)
            .bind(key)
            .bind(now as i64)
            .bind(now.saturating_add(window) as i64)
            .fetch_one(&self.write)
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
            "SELECT count, started_at, last_at FROM counters WHERE kind = ? AND key = ? AND expires_at > ?",
        )
        .bind(kind)
        .bind(key)
        .bind(now as i64)
        .fetch_optional(&self.read)
        .await?
        .map(|r| counter_from(&r)))
    }

    async fn reset_counter(&self, kind: &str, key: &[u8]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM counters WHERE kind = ? AND key = ?")
            .bind(kind)
            .bind(key)
            .execute(&self.write)
            .await?;
        Ok(())
    }
}

/// Counts one event (kind ?1, key ?2, now ?3, a new window's end ?4): a
/// new counter, one more in the current window, or a new window. One
/// statement, so concurrent counts each see their own.
const COUNT_ONE: &str = "INSERT INTO counters (kind, key, count, started_at, last_at, expires_at) \
    VALUES (?1, ?2, 1, ?3, ?3, ?4) \
    ON CONFLICT (kind, key) DO UPDATE SET \
    count = CASE WHEN counters.expires_at <= ?3 THEN 1 ELSE counters.count + 1 END, \
    started_at = CASE WHEN counters.expires_at <= ?3 THEN ?3 ELSE counters.started_at END, \
    expires_at = CASE WHEN counters.expires_at <= ?3 THEN ?4 ELSE counters.expires_at END, \
    last_at = ?3 \
    RETURNING count, started_at, last_at";
