//! What the proxy serves from the configuration: routes with their
//! policies, limits and identity settings, token sources, origins and
//! documents. Built whole from one [`Config`] and swapped whole on a
//! reload; every request takes the snapshot current when it starts and
//! finishes on it, streams included.

use super::access::Access;
use super::rate_limit::AddressLimit;
use super::route::Routes;
use crate::auth::prm::ProtectedResources;
use crate::auth::KeyRefresher;
use crate::authserver::AuthServer;
use crate::config::{Config, Limits};
use crate::identity::IdentitySigner;
use crate::tls::files_fingerprint;
use arc_swap::ArcSwap;
use std::collections::HashSet;
use std::sync::Arc;

/// The proxy's configuration-derived state (see the module docs).
pub struct Live {
    /// The configuration it was built from.
    pub config: Arc<Config>,
    pub(super) routes: Routes,
    pub(super) allowed_origins: HashSet<String>,
    pub(super) limits: Limits,
    /// Requests without a valid token per client address, when limited.
    pub(super) anonymous_limit: Option<Arc<AddressLimit>>,
    /// `None` when authentication is disabled.
    pub(super) access: Option<Arc<Access>>,
    pub(super) prm: ProtectedResources,
    /// Signs the identity JWTs of upstreams that get them; its key is
    /// published at `identity::IDENTITY_JWKS_PATH`.
    pub(super) identity_signer: Option<Arc<IdentitySigner>>,
    /// What `identity_key_file` held when the signer was made.
    identity_key: Option<[u8; 32]>,
}

/// The current [`Live`], shared by the proxy and the reloader.
pub type LiveState = Arc<ArcSwap<Live>>;

impl Live {
    /// The state for `config`; `builtin` is the authorization server to
    /// trust, if any. On a reload, `previous` lends what has not changed,
    /// so that caches, buckets and keys survive it: the token sources and
    /// their caches when `auth` is unchanged (the session bindings
    /// always), each route whose upstream is unchanged, the identity key
    /// when its file is, the per-address bucket when its rate is.
    pub fn build(
        config: &Config,
        builtin: Option<&AuthServer>,
        previous: Option<&Live>,
    ) -> std::io::Result<Self> {
        let identity_key = config
            .identity_key_file
            .as_deref()
            .and_then(|f| files_fingerprint([f]));
        let identity_signer = identity_signer(config, identity_key, previous)?;
        let old_routes = previous.map(|p| (&p.routes, p.identity_signer.as_ref()));
        let routes = Routes::new(&config.upstreams, identity_signer.as_ref(), old_routes)?;
        let mut allowed_origins: HashSet<String> = config.allowed_origins.iter().cloned().collect();
        allowed_origins.insert(config.public_url.origin());
        let anonymous_limit = config.limits.unauthenticated_per_address.map(|rate| {
            previous
                .filter(|p| p.config.limits.unauthenticated_per_address == Some(rate))
                .and_then(|p| p.anonymous_limit.clone())
                .unwrap_or_else(|| Arc::new(AddressLimit::new(rate)))
        });
        let access = config.auth.as_ref().map(|auth| {
            let unchanged = previous.filter(|p| p.config.auth.as_ref() == Some(auth));
            match unchanged.and_then(|p| p.access.clone()) {
                Some(access) => access,
                None => Arc::new(Access::new(
                    auth,
                    config.public_url.clone(),
                    builtin.map(AuthServer::issuer),
                    previous
                        .and_then(|p| p.access.as_ref())
                        .map(|a| a.sessions()),
                )),
            }
        });
        Ok(Self {
            config: Arc::new(config.clone()),
            routes,
            allowed_origins,
            limits: config.limits,
            anonymous_limit,
            access,
            prm: ProtectedResources::new(config),
            identity_signer,
            identity_key,
        })
    }

    /// The job keeping the JWKS of its token sources fresh, when
    /// authentication is enabled.
    pub fn key_refresher(&self) -> Option<KeyRefresher> {
        self.access.as_ref().map(|a| a.key_refresher())
    }

    /// Whether `other` verifies tokens with the very same sources (and
    /// caches) as this one.
    pub fn same_token_sources(&self, other: &Live) -> bool {
        match (&self.access, &other.access) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

/// The identity key, when some upstream gets JWTs: the previous one while
/// `identity_key_file` names the same file with the same content
/// (`key_file_content`), else read (or generated) now.
fn identity_signer(
    config: &Config,
    key_file_content: Option<[u8; 32]>,
    previous: Option<&Live>,
) -> std::io::Result<Option<Arc<IdentitySigner>>> {
    let signs = config
        .upstreams
        .iter()
        .any(|u| u.identity.as_ref().is_some_and(|i| i.jwt.is_some()));
    if !signs {
        return Ok(None);
    }
    let kept = previous
        .filter(|p| p.config.identity_key_file == config.identity_key_file)
        .filter(|p| p.identity_key == key_file_content)
        .and_then(|p| p.identity_signer.clone());
    if kept.is_some() {
        return Ok(kept);
    }
    IdentitySigner::new(
        config.public_url.as_str(),
        config.identity_key_file.as_deref(),
    )
    .map(|s| Some(Arc::new(s)))
    .map_err(|e| std::io::Error::other(format!("identity_key_file: {e}")))
}
