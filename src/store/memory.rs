//! The in-memory backend: the same behaviour as SQLite, nothing durable.
//! For tests and throwaway runs.

use super::{
    ClientRecord, ClientStore, CodeStore, ConsentStore, Counter, GrantStore, KeyStore,
    PersonRecord, PersonStore, RefreshRecord, StateStore, StoreError, StoredKey, TakenCode,
};
use async_trait::async_trait;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

#[derive(Default)]
struct Inner {
    keys: Vec<StoredKey>,
    clients: HashMap<String, ClientRecord>,
    refresh: HashMap<Vec<u8>, RefreshRecord>,
    revoked_families: HashMap<String, u64>,
    family_tokens: HashMap<String, (String, u64)>,
    revoked_tokens: HashMap<String, u64>,
    consents: BTreeSet<(String, String, String)>,
    people: HashMap<String, PersonRecord>,
    codes: HashMap<Vec<u8>, Code>,
    states: HashMap<(String, Vec<u8>), (String, u64)>,
    counters: HashMap<(String, Vec<u8>), (Counter, u64)>,
}

/// A code's record.
struct Code {
    grant: String,
    family_id: String,
    expires_at: u64,
    forget_at: u64,
    used: bool,
}

/// The in-memory store.
#[derive(Default)]
pub struct MemoryStore(Mutex<Inner>);

impl MemoryStore {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let mut keys = self.inner().keys.clone();
        keys.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
        Ok(keys)
    }

    async fn add_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.inner().keys.push(key.clone());
        Ok(())
    }

    async fn remove_signing_key(&self, kid: &str) -> Result<(), StoreError> {
        self.inner().keys.retain(|k| k.kid != kid);
        Ok(())
    }
}

#[async_trait]
impl ClientStore for MemoryStore {
    async fn put_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
        let mut inner = self.inner();
        if inner.clients.contains_key(&client.client_id) {
            return Err(StoreError(format!("client `{}` exists", client.client_id)));
        }
        inner
            .clients
            .insert(client.client_id.clone(), client.clone());
        Ok(())
    }

    async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        Ok(self.inner().clients.get(client_id).cloned())
    }
}

#[async_trait]
impl GrantStore for MemoryStore {
    async fn refresh_token(&self, hash: &[u8]) -> Result<Option<RefreshRecord>, StoreError> {
        let inner = self.inner();
        Ok(inner
            .refresh
            .get(hash)
            .filter(|r| !inner.revoked_families.contains_key(&r.family_id))
            .cloned())
    }

    async fn rotate_refresh_token(&self, hash: &[u8]) -> Result<bool, StoreError> {
        Ok(match self.inner().refresh.get_mut(hash) {
            Some(r) if !r.rotated => {
                r.rotated = true;
                true
            }
            _ => false,
        })
    }

    async fn record_issue(
        &self,
        family_id: &str,
        jti: &str,
        access_expires_at: u64,
        refresh: Option<&RefreshRecord>,
    ) -> Result<bool, StoreError> {
        let mut inner = self.inner();
        if inner.revoked_families.contains_key(family_id) {
            return Ok(false);
        }
        inner
            .family_tokens
            .insert(jti.to_owned(), (family_id.to_owned(), access_expires_at));
        if let Some(token) = refresh {
            inner
                .refresh
                .insert(token.token_hash.clone(), token.clone());
        }
        Ok(true)
    }

    async fn revoke_family(
        &self,
        family_id: &str,
        now: u64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let mut inner = self.inner();
        let until = inner
            .refresh
            .values()
            .filter(|r| r.family_id == family_id)
            .map(|r| r.expires_at)
            .max()
            .unwrap_or(now + 86_400);
        inner
            .revoked_families
            .entry(family_id.to_owned())
            .or_insert(until);
        let live: Vec<(String, u64)> = inner
            .family_tokens
            .iter()
            .filter(|(_, (f, exp))| f == family_id && *exp > now)
            .map(|(jti, (_, exp))| (jti.clone(), *exp))
            .collect();
        for (jti, exp) in &live {
            inner.revoked_tokens.entry(jti.clone()).or_insert(*exp);
        }
        Ok(live)
    }

    async fn revoke_access_token(&self, jti: &str, expires_at: u64) -> Result<(), StoreError> {
        self.inner()
            .revoked_tokens
            .entry(jti.to_owned())
            .or_insert(expires_at);
        Ok(())
    }

    async fn revoked_access_tokens(&self, now: u64) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self
            .inner()
            .revoked_tokens
            .iter()
            .filter(|(_, exp)| **exp > now)
            .map(|(j, e)| (j.clone(), *e))
            .collect())
    }

    async fn purge_expired(&self, now: u64) -> Result<u64, StoreError> {
        let now_ms = now.saturating_mul(1000);
        let mut inner = self.inner();
        let before = inner.rows();
        inner.refresh.retain(|_, r| r.expires_at > now);
        inner.revoked_families.retain(|_, exp| *exp > now);
        inner.family_tokens.retain(|_, (_, exp)| *exp > now);
        inner.revoked_tokens.retain(|_, exp| *exp > now);
        inner.codes.retain(|_, c| c.forget_at > now_ms);
        inner.states.retain(|_, (_, exp)| *exp > now_ms);
        inner.counters.retain(|_, (_, exp)| *exp > now_ms);
        Ok((before - inner.rows()) as u64)
    }
}

impl Inner {
    /// Rows of what `purge_expired` purges.
    fn rows(&self) -> usize {
        self.refresh.len()
            + self.revoked_families.len()
            + self.family_tokens.len()
            + self.revoked_tokens.len()
            + self.codes.len()
            + self.states.len()
            + self.counters.len()
    }
}

#[async_trait]
impl ConsentStore for MemoryStore {
    async fn has_consent(
        &self,
        subject: &str,
        client_id: &str,
        scope: &str,
    ) -> Result<bool, StoreError> {
        let key = (subject.to_owned(), client_id.to_owned(), scope.to_owned());
        Ok(self.inner().consents.contains(&key))
    }

    async fn put_consent(
        &self,
        subject: &str,
        client_id: &str,
        scope: &str,
    ) -> Result<(), StoreError> {
        self.inner()
            .consents
            .insert((subject.to_owned(), client_id.to_owned(), scope.to_owned()));
        Ok(())
    }
}

#[async_trait]
impl PersonStore for MemoryStore {
    async fn put_person(&self, subject: &str, person: &PersonRecord) -> Result<(), StoreError> {
        self.inner()
            .people
            .insert(subject.to_owned(), person.clone());
        Ok(())
    }

    async fn person(&self, subject: &str) -> Result<Option<PersonRecord>, StoreError> {
        Ok(self.inner().people.get(subject).cloned())
    }
}

#[async_trait]
impl CodeStore for MemoryStore {
    async fn put_code(
        &self,
        hash: &[u8],
        grant: &str,
        family_id: &str,
        expires_at: u64,
        forget_at: u64,
    ) -> Result<(), StoreError> {
        let code = Code {
            grant: grant.to_owned(),
            family_id: family_id.to_owned(),
            expires_at,
            forget_at,
            used: false,
        };
        self.inner().codes.insert(hash.to_vec(), code);
        Ok(())
    }

    async fn take_code(&self, hash: &[u8], now: u64) -> Result<TakenCode, StoreError> {
        let mut inner = self.inner();
        Ok(match inner.codes.get_mut(hash) {
            None => TakenCode::Unknown,
            Some(c) if c.used => TakenCode::Replayed(c.family_id.clone()),
            Some(c) => {
                c.used = true;
                if c.expires_at > now {
                    TakenCode::Fresh(c.grant.clone())
                } else {
                    TakenCode::Unknown
                }
            }
        })
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn put_state(
        &self,
        kind: &str,
        key: &[u8],
        value: &str,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        self.inner().states.insert(
            (kind.to_owned(), key.to_vec()),
            (value.to_owned(), expires_at),
        );
        Ok(())
    }

    async fn state(
        &self,
        kind: &str,
        key: &[u8],
        now: u64,
    ) -> Result<Option<(String, u64)>, StoreError> {
        Ok(self
            .inner()
            .states
            .get(&(kind.to_owned(), key.to_vec()))
            .filter(|(_, exp)| *exp > now)
            .cloned())
    }

    async fn take_state(
        &self,
        kind: &str,
        key: &[u8],
        now: u64,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .inner()
            .states
            .remove(&(kind.to_owned(), key.to_vec()))
            .filter(|(_, exp)| *exp > now)
            .map(|(value, _)| value))
    }

    async fn bump_counter(
        &self,
        kind: &str,
        key: &[u8],
        now: u64,
        window: u64,
    ) -> Result<Counter, StoreError> {
        let mut inner = self.inner();
        let fresh = (
            Counter {
                count: 0,
                started_at: now,
                last_at: now,
            },
            now.saturating_add(window),
        );
        let entry = inner
            .counters
            .entry((kind.to_owned(), key.to_vec()))
            .or_insert(fresh);
        if entry.1 <= now {
            *entry = fresh;
        }
        entry.0.count = entry.0.count.saturating_add(1);
        entry.0.last_at = now;
        Ok(entry.0)
    }

    async fn counter(
        &self,
        kind: &str,
        key: &[u8],
        now: u64,
    ) -> Result<Option<Counter>, StoreError> {
        Ok(self
            .inner()
            .counters
            .get(&(kind.to_owned(), key.to_vec()))
            .filter(|(_, exp)| *exp > now)
            .map(|(c, _)| *c))
    }

    async fn reset_counter(&self, kind: &str, key: &[u8]) -> Result<(), StoreError> {
        self.inner()
            .counters
            .remove(&(kind.to_owned(), key.to_vec()));
        Ok(())
    }
}
