//! Protected Resource Metadata (RFC 9728), one document per upstream.
//!
//! Served at the path-inserted well-known URL of each upstream
//! (`/a/mcp` -> `/.well-known/oauth-protected-resource/a/mcp`), and at the
//! bare well-known path when there is exactly one upstream. Every URL in it
//! is built from the configured public URL, never from the request.

use crate::config::{Config, PublicUrl};
use bytes::Bytes;
use serde_json::json;
use std::collections::HashMap;

/// The well-known prefix of PRM documents.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The PRM URL of the upstream at `path`, as published in challenges.
pub fn metadata_url(public_url: &PublicUrl, path: &str) -> String {
    public_url.join(&format!("{WELL_KNOWN}{path}"))
}

/// Every PRM document, by request path, serialised once at startup.
#[derive(Debug, Default)]
pub struct ProtectedResources(HashMap<String, Bytes>);

impl ProtectedResources {
    /// The documents for `config` (none when authentication is disabled:
    /// nothing is protected).
    pub fn new(config: &Config) -> Self {
        let Some(auth) = &config.auth else {
            return Self::default();
        };
        let mut docs = HashMap::new();
        for u in &config.upstreams {
            let doc = json!({
                "resource": u.resource,
                "authorization_servers": auth.authorization_servers,
                "scopes_supported": u.policy.scopes_supported(),
                "bearer_methods_supported": ["header"],
                "resource_name": u.resource_name,
            });
            let body = Bytes::from(doc.to_string());
            if config.upstreams.len() == 1 {
                docs.insert(WELL_KNOWN.to_owned(), body.clone());
            }
            docs.insert(format!("{WELL_KNOWN}{}", u.path), body);
        }
        Self(docs)
    }

    /// The document served at `path`, if any.
    pub fn get(&self, path: &str) -> Option<&Bytes> {
        self.0.get(path)
    }
}
