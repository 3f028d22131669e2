//! Which subject each MCP session belongs to.
//!
//! When an `initialize` through the gateway creates a session (the upstream
//! answers with `Mcp-Session-Id`), the session is bound to the token's
//! (issuer, subject). A later request carrying that session id with another
//! subject's token is refused as if the session did not exist (404), and so
//! is a session id the gateway never saw created: a session id is never a
//! credential (MCP spec, "Sessions are not authentication"). Keys are
//! SHA-256 hashes of (upstream, session id), so memory per session is fixed;
//! the table is bounded and forgets sessions idle longer than configured.

use super::Principal;
use moka::sync::Cache;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// Why a session id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRefusal {
    /// Not created through this gateway (or forgotten).
    Unknown,
    /// Created for another subject.
    OtherSubject,
}

/// The session table (a clone shares it).
#[derive(Clone)]
pub struct SessionBindings(Cache<[u8; 32], Arc<(String, String)>>);

fn key(upstream: &str, session_id: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(upstream.as_bytes());
    h.update([0]);
    h.update(session_id);
    h.finalize().into()
}

impl SessionBindings {
    /// A table of at most `max_entries` sessions, each forgotten after
    /// `idle` without use.
    pub fn new(max_entries: u64, idle: Duration) -> Self {
        Self(
            Cache::builder()
                .max_capacity(max_entries)
                .time_to_idle(idle)
                .build(),
        )
    }

    /// Records that `principal` created `session_id` on `upstream`.
    pub fn bind(&self, upstream: &str, session_id: &[u8], principal: &Principal) {
        self.0.insert(
            key(upstream, session_id),
            Arc::new((principal.issuer.clone(), principal.subject.clone())),
        );
    }

    /// Whether `principal` may use `session_id` on `upstream`.
    pub fn check(
        &self,
        upstream: &str,
        session_id: &[u8],
        principal: &Principal,
    ) -> Result<(), SessionRefusal> {
        match self.0.get(&key(upstream, session_id)) {
            None => Err(SessionRefusal::Unknown),
            Some(owner) if owner.0 == principal.issuer && owner.1 == principal.subject => Ok(()),
            Some(_) => Err(SessionRefusal::OtherSubject),
        }
    }

    /// Forgets a session its owner deleted.
    pub fn forget(&self, upstream: &str, session_id: &[u8]) {
        self.0.invalidate(&key(upstream, session_id));
    }
}
