//! Throttling: failed logins per user and per address with exponential
//! backoff, password checks at once, and registrations per address.

use moka::sync::Cache;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failed logins per user and per address, with exponential backoff after
/// five failures; and registrations per address.
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    /// Password checks running at once (each costs ~19 MiB and a core).
    pub checks: tokio::sync::Semaphore,
    registrations: Cache<IpAddr, Arc<Mutex<(u32, Instant)>>>,
}

/// Failures allowed before the backoff starts.
const FREE_FAILURES: u32 = 5;

/// The window registrations per address are counted in.
const REGISTRATION_WINDOW: Duration = Duration::from_secs(3600);

impl LoginLimiter {
    pub fn new() -> Self {
        Self {
            failures: Mutex::default(),
            checks: tokio::sync::Semaphore::new(2),
            registrations: Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
        }
    }

    /// How long `key` must still wait before its next attempt.
    pub(super) fn wait(&self, key: &str) -> Option<Duration> {
        let map = self.failures.lock().expect("limiter lock");
        let (count, last) = map.get(key)?;
        let over = count.checked_sub(FREE_FAILURES)?;
        let backoff = Duration::from_secs(1u64 << over.min(10)).min(Duration::from_secs(900));
        backoff.checked_sub(last.elapsed())
    }

    pub(super) fn record(&self, key: &str, failed: bool) {
        let mut map = self.failures.lock().expect("limiter lock");
        if map.len() > 100_000 {
            map.retain(|_, (_, last)| last.elapsed() < Duration::from_secs(900));
        }
        if failed {
            let entry = map.entry(key.to_owned()).or_insert((0, Instant::now()));
            *entry = (entry.0 + 1, Instant::now());
        } else {
            map.remove(key);
        }
    }

    /// Counts one registration from `ip` against `per_hour`; `Err` says
    /// how long until the address may register again.
    pub fn allow_registration(&self, ip: IpAddr, per_hour: u32) -> Result<(), Duration> {
        let entry = self
            .registrations
            .get_with(ip, || Arc::new(Mutex::new((0, Instant::now()))));
        let mut e = entry.lock().expect("limiter lock");
        if e.1.elapsed() > REGISTRATION_WINDOW {
            *e = (0, Instant::now());
        }
        if e.0 >= per_hour {
            return Err(REGISTRATION_WINDOW.saturating_sub(e.1.elapsed()));
        }
        e.0 += 1;
        Ok(())
    }
}
