//! Rate limits as configured: per upstream, token buckets per subject, per
//! client id and per tool rule (see `crate::ratelimit`); and, under
//! `limits`, one per client address for requests without a valid token.

use super::raw::RawRateLimits;
use super::ConfigError;
use crate::policy::Glob;
use crate::ratelimit::Rate;

/// Token-bucket limits on one upstream's authenticated callers. Each
/// JSON-RPC message of a request counts one (a GET or DELETE counts one).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimits {
    /// Messages per subject (issuer and `sub`).
    pub per_subject: Option<Rate>,
    /// Messages per OAuth client id (tokens without one are not counted).
    pub per_client: Option<Rate>,
    /// `tools/call`s per subject of the tools a rule matches, in matching
    /// order: exact names, then globs most specific first. A tool matches
    /// at most one rule.
    pub per_tool: Vec<(Glob, Rate)>,
}

impl RateLimits {
    /// Whether any limit is set.
    pub fn is_empty(&self) -> bool {
        self.per_subject.is_none() && self.per_client.is_none() && self.per_tool.is_empty()
    }

    /// One line per limit, for `check-config`.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(r) = &self.per_subject {
            lines.push(format!("per subject: {r}"));
        }
        if let Some(r) = &self.per_client {
            lines.push(format!("per client: {r}"));
        }
        for (glob, r) in &self.per_tool {
            lines.push(format!("per subject and tool `{}`: {r}", glob.as_str()));
        }
        lines
    }
}

/// The limits of the upstream at `at`; they need tokens to know a subject
/// or a client, so with authentication disabled they are an error.
pub(super) fn validate_rate_limits(
    raw: &RawRateLimits,
    at: &str,
    auth_disabled: bool,
    errors: &mut Vec<ConfigError>,
) -> RateLimits {
    let mut per_tool = Vec::new();
    for (pattern, rate) in &raw.per_tool {
        if pattern.is_empty() {
            errors.push(ConfigError::new(
                &format!("{at}.rate_limits.per_tool"),
                "empty tool pattern",
                "write a tool name or a glob such as `search_*`",
            ));
            continue;
        }
        per_tool.push((Glob::new(pattern), rate.0));
    }
    per_tool.sort_by(|(a, _), (b, _)| {
        b.is_exact()
            .cmp(&a.is_exact())
            .then_with(|| a.cmp_specificity(b))
    });
    let limits = RateLimits {
        per_subject: raw.per_subject.map(|r| r.0),
        per_client: raw.per_client.map(|r| r.0),
        per_tool,
    };
    if auth_disabled && !limits.is_empty() {
        errors.push(ConfigError::new(
            &format!("{at}.rate_limits"),
            "authentication is disabled, so there is no subject or client to count",
            "enable `auth`, or limit unauthenticated callers with `limits.unauthenticated_per_address`",
        ));
    }
    limits
}
