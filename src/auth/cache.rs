//! The verified-token cache: SHA-256 of the token to the verdict about it.
//!
//! Valid tokens stay until they expire (at most an hour, so that a key
//! removed from a JWKS stops counting); introspection's inactive answers and
//! tokens that can never become valid (bad signature, expired...) stay
//! briefly, so a flood of the same bad token costs one check. Failures of the
//! gateway's own dependencies are never cached. Concurrent lookups of one
//! token share a single verification.

use super::{now_secs, AuthFailure, Principal};
use moka::future::Cache;
use moka::Expiry;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest time a valid token's verdict is reused.
const MAX_VALID_TTL: Duration = Duration::from_secs(3600);

/// The outcome of verifying a token, with how long it may be reused.
pub(super) enum Verdict {
    Valid(Arc<Principal>, Duration),
    Refused(AuthFailure, Option<Duration>),
}

impl Verdict {
    /// A JWT's outcome: valid until its `exp`.
    pub(super) fn from_jwt(result: Result<Principal, AuthFailure>) -> Self {
        match result {
            Ok(p) => {
                let ttl = p.expires_at.map_or(MAX_VALID_TTL, |exp| {
                    Duration::from_secs(exp.saturating_sub(now_secs()))
                });
                Self::Valid(Arc::new(p), ttl.min(MAX_VALID_TTL))
            }
            Err(e) => {
                let ttl = e.cache_for();
                Self::Refused(e, ttl)
            }
        }
    }

    /// An active introspection result, reusable for `ttl`.
    pub(super) fn valid(p: Principal, ttl: Duration) -> Self {
        Self::Valid(Arc::new(p), ttl.min(MAX_VALID_TTL))
    }

    /// An inactive introspection result, reusable for `ttl`.
    pub(super) fn inactive(ttl: Duration) -> Self {
        Self::Refused(AuthFailure::Inactive, (!ttl.is_zero()).then_some(ttl))
    }

    /// A failure that must not be cached.
    pub(super) fn failed(e: AuthFailure) -> Self {
        Self::Refused(e, None)
    }
}

#[derive(Clone)]
struct Entry {
    result: Result<Arc<Principal>, AuthFailure>,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<[u8; 32], Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &[u8; 32], value: &Entry, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Bounded cache of token verdicts, keyed by the token's SHA-256 (the token
/// itself is never stored).
pub struct TokenCache(Cache<[u8; 32], Entry>);

impl TokenCache {
    /// A cache holding at most `max_entries` verdicts.
    pub fn new(max_entries: u64) -> Self {
        Self(
            Cache::builder()
                .max_capacity(max_entries)
                .expire_after(PerEntryTtl)
                .build(),
        )
    }

    /// The cached verdict for `token`, or the one `verify` reaches (shared
    /// by every concurrent caller with the same token).
    pub(super) async fn get_or_verify<F, Fut>(
        &self,
        token: &str,
        verify: F,
    ) -> Result<Arc<Principal>, AuthFailure>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Verdict>,
    {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let missed = std::sync::atomic::AtomicBool::new(false);
        let entry = self
            .0
            .try_get_with(key, async {
                missed.store(true, std::sync::atomic::Ordering::Relaxed);
                match verify().await {
                    Verdict::Valid(p, ttl) => Ok(Entry { result: Ok(p), ttl }),
                    Verdict::Refused(e, Some(ttl)) => Ok(Entry {
                        result: Err(e),
                        ttl,
                    }),
                    Verdict::Refused(e, None) => Err(e),
                }
            })
            .await
            .map_err(|e| (*e).clone());
        let result = if missed.load(std::sync::atomic::Ordering::Relaxed) {
            "miss"
        } else {
            "hit"
        };
        crate::metrics::metrics()
            .token_cache
            .with_label_values(&[result])
            .inc();
        let entry = entry?;
        entry.result
    }
}
