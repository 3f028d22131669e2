//! Rate limits in the pipeline: per upstream, token buckets per subject,
//! per client id and per tool rule, checked once the caller is known and
//! the policy allows the request; and one bucket per client address for
//! requests that carry no valid token. Buckets are per process (per
//! replica), like every limit of the gateway.

use super::error::GatewayError;
use crate::auth::Principal;
use crate::config::RateLimits;
use crate::mcp::McpPost;
use crate::policy::Glob;
use crate::ratelimit::{Buckets, Exhausted, Rate};
use std::fmt;
use std::net::IpAddr;

/// Most keys (subjects, clients, addresses) one limit tracks at once.
const MAX_KEYS: u64 = 100_000;

/// One upstream's limits on its authenticated callers.
pub struct CallerLimits {
    per_subject: Option<Buckets<String>>,
    per_client: Option<Buckets<String>>,
    /// In matching order (see [`RateLimits::per_tool`]), keyed by subject.
    per_tool: Vec<(Glob, Buckets<String>)>,
}

impl fmt::Debug for CallerLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallerLimits")
            .field("per_subject", &self.per_subject.as_ref().map(Buckets::rate))
            .field("per_client", &self.per_client.as_ref().map(Buckets::rate))
            .field("per_tool", &self.per_tool.len())
            .finish()
    }
}

impl CallerLimits {
    /// Buckets for the configured limits (`None` when there are none).
    pub fn new(limits: &RateLimits) -> Option<Self> {
        let buckets = |rate: Rate| Buckets::new(rate, MAX_KEYS);
        (!limits.is_empty()).then(|| Self {
            per_subject: limits.per_subject.map(buckets),
            per_client: limits.per_client.map(buckets),
            per_tool: limits
                .per_tool
                .iter()
                .map(|(glob, rate)| (glob.clone(), buckets(*rate)))
                .collect(),
        })
    }

    /// Spends what the request costs: one per JSON-RPC message (one for a
    /// GET or DELETE) from the subject's and the client's buckets, one per
    /// `tools/call` from the bucket of the tool rule it matches.
    pub fn check(&self, principal: &Principal, post: Option<&McpPost>) -> Result<(), GatewayError> {
        let subject = format!("{}\n{}", principal.issuer, principal.subject);
        let messages = post.map_or(1, |p| count(p.messages.len()));
        if let Some(buckets) = &self.per_subject {
            buckets
                .take(subject.as_str(), messages)
                .map_err(|e| refusal("subject", "per subject", buckets.rate(), e))?;
        }
        if let (Some(buckets), Some(client)) = (&self.per_client, &principal.client_id) {
            buckets
                .take(client.as_str(), messages)
                .map_err(|e| refusal("client", "per client", buckets.rate(), e))?;
        }
        let Some(post) = post.filter(|_| !self.per_tool.is_empty()) else {
            return Ok(());
        };
        let mut calls = vec![0u32; self.per_tool.len()];
        for tool in post.messages.iter().filter_map(|m| m.tool.as_deref()) {
            if let Some(i) = self.per_tool.iter().position(|(g, _)| g.matches(tool)) {
                calls[i] += 1;
            }
        }
        for ((glob, buckets), n) in self.per_tool.iter().zip(calls) {
            if n > 0 {
                buckets.take(subject.as_str(), n).map_err(|e| {
                    let what = format!("per subject for tool `{}`", glob.as_str());
                    refusal("tool", &what, buckets.rate(), e)
                })?;
            }
        }
        Ok(())
    }
}

/// The bucket per client address for requests without a valid token.
pub struct AddressLimit(Buckets<IpAddr>);

impl AddressLimit {
    /// Buckets of `rate` per address.
    pub fn new(rate: Rate) -> Self {
        Self(Buckets::new(rate, MAX_KEYS))
    }

    /// Spends one request of `ip` (an IPv6 address counts as its /64, the
    /// block one host usually holds); an unknown address is not limited.
    pub fn check(&self, ip: Option<IpAddr>) -> Result<(), GatewayError> {
        let Some(ip) = ip else { return Ok(()) };
        let key = match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !0u128 << 64).into()),
        };
        self.0.take(&key, 1).map_err(|e| {
            refusal(
                "address",
                "for requests without a valid token per address",
                self.0.rate(),
                e,
            )
        })
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The 429 for an exhausted bucket of `limit` (the metric label), saying
/// which limit (`what`) and when to retry.
fn refusal(limit: &'static str, what: &str, rate: &Rate, e: Exhausted) -> GatewayError {
    let detail = match e.retry_after {
        Some(wait) => format!(
            "rate limit {what} ({rate}) exceeded; retry after {} s",
            super::error::retry_after_seconds(wait)
        ),
        None => format!("rate limit {what} ({rate}): this request alone exceeds the burst; send fewer messages at once"),
    };
    GatewayError::RateLimited {
        limit,
        detail,
        retry_after: e.retry_after,
    }
}
