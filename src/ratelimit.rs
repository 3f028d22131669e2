//! Token buckets: a key (a subject, a client, an address) may spend up to
//! `burst` requests at once, and its bucket refills continuously at the
//! configured rate. A leaf like `policy`: it knows nothing of HTTP or the
//! configuration file.
//!
//! Buckets live in a bounded cache. A bucket untouched for as long as it
//! takes to refill completely is dropped: a fresh one is full, so nothing
//! is lost by forgetting it. Under more distinct keys than the capacity the
//! least recently used buckets go first, which can only ever be lenient
//! (a forgotten bucket starts full again), never refuse a caller wrongly.

use moka::sync::Cache;
use std::borrow::Borrow;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `count` requests per `period`, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: u32,
    period: Duration,
    burst: u32,
}

impl Rate {
    /// A rate of `count` per `period` with bursts of up to `burst`
    /// (`count`, `period` and `burst` above zero: `config` checks).
    pub fn new(count: u32, period: Duration, burst: u32) -> Self {
        Self {
            count,
            period,
            burst,
        }
    }

    /// Requests refilled per second.
    fn per_second(&self) -> f64 {
        f64::from(self.count) / self.period.as_secs_f64()
    }

    /// The time an empty bucket takes to fill up again.
    fn full_refill(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.burst) / self.per_second())
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s".to_owned(),
            60 => "min".to_owned(),
            3600 => "h".to_owned(),
            s => format!("{s}s"),
        };
        write!(f, "{}/{unit}, burst {}", self.count, self.burst)
    }
}

/// A request the bucket could not pay for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    /// How long until the bucket holds enough for the request again;
    /// `None` when the request costs more than the whole burst, so waiting
    /// cannot help.
    pub retry_after: Option<Duration>,
}

/// One key's tokens as of `updated`.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// Refills for the time since the last update, then takes `cost` if
    /// the bucket holds it.
    fn take(&mut self, rate: &Rate, cost: u32, now: Instant) -> Result<(), Exhausted> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second()).min(f64::from(rate.burst));
        self.updated = now;
        let cost = f64::from(cost);
        if cost > f64::from(rate.burst) {
            return Err(Exhausted { retry_after: None });
        }
        if self.tokens >= cost {
            self.tokens -= cost;
            return Ok(());
        }
        let wait = (cost - self.tokens) / rate.per_second();
        Err(Exhausted {
            retry_after: Some(Duration::from_secs_f64(wait)),
        })
    }
}

/// One token bucket per key, all with the same rate.
pub struct Buckets<K> {
    rate: Rate,
    buckets: Cache<K, Arc<Mutex<Bucket>>>,
}

impl<K: Hash + Eq + Send + Sync + 'static> Buckets<K> {
    /// Buckets of `rate` for at most `max_keys` keys at once.
    pub fn new(rate: Rate, max_keys: u64) -> Self {
        Self {
            rate,
            buckets: Cache::builder()
                .max_capacity(max_keys)
                .time_to_idle(rate.full_refill().max(Duration::from_secs(1)))
                .build(),
        }
    }

    /// The rate every bucket refills at.
    pub fn rate(&self) -> &Rate {
        &self.rate
    }

    /// Takes `cost` tokens from `key`'s bucket now.
    pub fn take<Q>(&self, key: &Q, cost: u32) -> Result<(), Exhausted>
    where
        K: Borrow<Q>,
        Q: ToOwned<Owned = K> + Hash + Eq + ?Sized,
    {
        self.take_at(key, cost, Instant::now())
    }

    fn take_at<Q>(&self, key: &Q, cost: u32, now: Instant) -> Result<(), Exhausted>
    where
        K: Borrow<Q>,
        Q: ToOwned<Owned = K> + Hash + Eq + ?Sized,
    {
        let bucket = self.buckets.get_with_by_ref(key, || {
            Arc::new(Mutex::new(Bucket {
                tokens: f64::from(self.rate.burst),
                updated: now,
            }))
        });
        let mut bucket = bucket.lock().expect("bucket lock");
        bucket.take(&self.rate, cost, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(count: u32, period: Duration, burst: u32) -> Buckets<String> {
        Buckets::new(Rate::new(count, period, burst), 100)
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_bucket_starts_full_and_refuses_past_its_burst() {
        let b = buckets(2, SECOND, 3);
        let t = Instant::now();
        for _ in 0..3 {
            b.take_at("alice", 1, t).unwrap();
        }
        let refused = b.take_at("alice", 1, t).unwrap_err();
        assert_eq!(refused.retry_after, Some(Duration::from_millis(500)));
    }

    #[test]
    fn a_bucket_refills_at_the_configured_rate_up_to_the_burst() {
        let b = buckets(4, SECOND, 2);
        let t = Instant::now();
        b.take_at("alice", 2, t).unwrap();
        // 4/s: one token every 250 ms.
        assert!(b
            .take_at("alice", 1, t + Duration::from_millis(200))
            .is_err());
        b.take_at("alice", 1, t + Duration::from_millis(250))
            .unwrap();
        assert!(b
            .take_at("alice", 1, t + Duration::from_millis(260))
            .is_err());
        // Ten seconds refill ten times the burst, but the bucket holds two.
        let later = t + 10 * SECOND;
        b.take_at("alice", 2, later).unwrap();
        assert!(b.take_at("alice", 1, later).is_err());
    }

    #[test]
    fn refusals_do_not_spend_tokens() {
        let b = buckets(1, SECOND, 1);
        let t = Instant::now();
        b.take_at("alice", 1, t).unwrap();
        for ms in [100, 200, 300] {
            assert!(b
                .take_at("alice", 1, t + Duration::from_millis(ms))
                .is_err());
        }
        b.take_at("alice", 1, t + SECOND).unwrap();
    }

    #[test]
    fn keys_have_buckets_of_their_own() {
        let b = buckets(1, Duration::from_secs(60), 1);
        let t = Instant::now();
        b.take_at("alice", 1, t).unwrap();
        assert!(b.take_at("alice", 1, t).is_err());
        b.take_at("bob", 1, t).unwrap();
    }

    #[test]
    fn a_cost_above_the_burst_can_never_be_paid() {
        let b = buckets(10, SECOND, 5);
        let refused = b.take_at("alice", 6, Instant::now()).unwrap_err();
        assert_eq!(refused.retry_after, None);
        b.take_at("alice", 5, Instant::now()).unwrap();
    }

    #[test]
    fn rates_print_as_written() {
        assert_eq!(
            Rate::new(10, Duration::from_secs(60), 3).to_string(),
            "10/min, burst 3"
        );
        assert_eq!(Rate::new(5, SECOND, 5).to_string(), "5/s, burst 5");
    }
}
