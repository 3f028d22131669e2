//! Throttling: failed logins per user and per address with exponential
//! backoff, password checks at once, and registrations per address. The
//! counts are in the store, so that spreading attempts over the replicas
//! gains nothing; the password checks at once are counted per process (each
//! check is this process's CPU and memory).

use crate::auth::now_millis;
use crate::store::{Store, StoreError};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Failed logins per user and per address, with exponential backoff after
/// five failures; and registrations per address.
pub struct LoginLimiter {
    store: Arc<dyn Store>,
    /// Password checks running at once (each costs ~19 MiB and a core).
    pub checks: tokio::sync::Semaphore,
}

/// Failures allowed before the backoff starts.
const FREE_FAILURES: u32 = 5;

/// The longest wait between attempts once the backoff has grown.
const MAX_BACKOFF: Duration = Duration::from_secs(900);

/// A run of failed logins is forgotten this long after it began (or at the
/// first success).
const FAILURE_WINDOW: u64 = 24 * 3_600_000;

/// The window registrations per address are counted in.
const REGISTRATION_WINDOW: u64 = 3_600_000;

const FAILURES: &str = "login_failures";
const REGISTRATIONS: &str = "registrations";

impl LoginLimiter {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            checks: tokio::sync::Semaphore::new(2),
        }
    }

    /// How long `key` must still wait before its next attempt.
    pub(super) async fn wait(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let now = now_millis();
        let Some(failures) = self.store.counter(FAILURES, key.as_bytes(), now).await? else {
            return Ok(None);
        };
        let Some(over) = failures.count.checked_sub(FREE_FAILURES) else {
            return Ok(None);
        };
        let backoff = Duration::from_secs(1u64 << over.min(10)).min(MAX_BACKOFF);
        let since = Duration::from_millis(now.saturating_sub(failures.last_at));
        Ok(backoff.checked_sub(since))
    }

    /// Counts a failed attempt against `key` (before the check, so that
    /// concurrent guesses cannot all slip in under the limit).
    pub(super) async fn failed(&self, key: &str) -> Result<(), StoreError> {
        self.store
            .bump_counter(FAILURES, key.as_bytes(), now_millis(), FAILURE_WINDOW)
            .await
            .map(drop)
    }

    /// Forgets `key`'s failures after a success.
    pub(super) async fn succeeded(&self, key: &str) -> Result<(), StoreError> {
        self.store.reset_counter(FAILURES, key.as_bytes()).await
    }

    /// Counts one registration from `ip` against `per_hour`; `Ok(Err)` says
    /// how long until the address may register again.
    pub async fn allow_registration(
        &self,
        ip: IpAddr,
        per_hour: u32,
    ) -> Result<Result<(), Duration>, StoreError> {
        let now = now_millis();
        let counted = self
            .store
            .bump_counter(
                REGISTRATIONS,
                ip.to_string().as_bytes(),
                now,
                REGISTRATION_WINDOW,
            )
            .await?;
        if counted.count > per_hour {
            let ends = counted.started_at.saturating_add(REGISTRATION_WINDOW);
            return Ok(Err(Duration::from_millis(ends.saturating_sub(now))));
        }
        Ok(Ok(()))
    }
}
