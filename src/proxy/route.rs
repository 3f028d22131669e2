//! Which upstream a request path belongs to, and the path it has there.

use super::rate_limit::CallerLimits;
use crate::config::{Target, Upstream, UpstreamTarget, UpstreamTls};
use crate::identity::{Assertions, IdentitySigner};
use crate::stdio::StdioPool;
use crate::tls::{files_fingerprint, upstream_files, UpstreamTlsMaterial};
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long an idle upstream connection stays in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One upstream behind its public path, with its connection settings ready.
#[derive(Debug)]
pub struct Route {
    /// The configured upstream.
    pub upstream: Upstream,
    backend: Backend,
    /// Its rate limits, when it has any.
    pub limits: Option<CallerLimits>,
    /// Its signed identity JWTs, when it gets them.
    pub assertions: Option<Assertions>,
    /// What its TLS files held when the route was built.
    tls_files: Option<[u8; 32]>,
}

/// What reaches an upstream.
enum Backend {
    /// A Streamable HTTP server, through pingora's connection pool.
    Http(Box<HttpPeer>),
    /// A stdio program's processes.
    Stdio(Arc<StdioPool>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http(peer) => write!(f, "Http({peer})"),
            Self::Stdio(pool) => write!(f, "Stdio({} running)", pool.running()),
        }
    }
}

impl Route {
    fn new(upstream: Upstream, signer: Option<&Arc<IdentitySigner>>) -> std::io::Result<Self> {
        let tls_files = upstream
            .tls
            .as_ref()
            .and_then(|t| files_fingerprint(upstream_files(t)));
        let backend = match &upstream.target {
            Target::Http(target) => Backend::Http(Box::new(http_peer(&upstream, target)?)),
            Target::Stdio(command) => {
                Backend::Stdio(StdioPool::new(&upstream.name, command.clone()))
            }
        };
        let limits = CallerLimits::new(&upstream.rate_limits);
        let jwt = upstream.identity.as_ref().and_then(|i| i.jwt.as_ref());
        let assertions = jwt
            .zip(signer)
            .map(|(jwt, signer)| Assertions::new(signer.clone(), jwt.audience.clone(), jwt.ttl));
        Ok(Self {
            upstream,
            backend,
            limits,
            assertions,
            tls_files,
        })
    }

    /// The upstream as a pingora peer (connection pool key and options);
    /// `None` for a stdio upstream.
    pub fn peer(&self) -> Option<HttpPeer> {
        match &self.backend {
            Backend::Http(peer) => Some(HttpPeer::clone(peer)),
            Backend::Stdio(_) => None,
        }
    }

    /// The processes of a stdio upstream; `None` for an HTTP one.
    pub fn stdio(&self) -> Option<&Arc<StdioPool>> {
        match &self.backend {
            Backend::Stdio(pool) => Some(pool),
            Backend::Http(_) => None,
        }
    }

    /// How long a pooled connection to this upstream may stay idle.
    pub fn pool_idle_timeout(&self) -> Option<Duration> {
        match &self.backend {
            Backend::Http(peer) => peer.options.idle_timeout,
            Backend::Stdio(_) => None,
        }
    }

    /// Maps a public path and query (`/demo/mcp/x?y`) to the upstream's
    /// (`/mcp/x?y`): the public prefix is replaced by the upstream URL's path.
    pub fn upstream_path(&self, public_path: &str, query: Option<&str>) -> String {
        let rest = &public_path[self.upstream.path.len()..];
        let base = match &self.upstream.target {
            Target::Http(t) => t.path.as_str(),
            Target::Stdio(_) => "",
        };
        let mut path = format!("{base}{rest}");
        if path.is_empty() {
            path.push('/');
        }
        if let Some(q) = query {
            path.push('?');
            path.push_str(q);
        }
        path
    }
}

/// The pingora peer of an HTTP upstream, with its timeouts and TLS.
fn http_peer(upstream: &Upstream, target: &UpstreamTarget) -> std::io::Result<HttpPeer> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(target.host.as_str(), target.port))?
        .next()
        .ok_or_else(|| {
            std::io::Error::other(format!("`{}` resolves to no address", target.host))
        })?;
    let mut peer = match &upstream.tls {
        Some(tls) => tls_peer(addr, &upstream.name, tls)?,
        None => HttpPeer::new(addr, false, String::new()),
    };
    peer.options.connection_timeout = Some(upstream.timeouts.connect);
    peer.options.total_connection_timeout = Some(upstream.timeouts.connect);
    peer.options.read_timeout = upstream.timeouts.idle;
    peer.options.idle_timeout = Some(POOL_IDLE_TIMEOUT);
    Ok(peer)
}

/// A peer reached over TLS: SNI and the verified name are `server_name`
/// (pingora skips verification without SNI, so it is always set), trust is
/// the upstream's CA bundle or the system's roots, HTTP/2 offered by ALPN
/// unless turned off.
fn tls_peer(addr: SocketAddr, name: &str, tls: &UpstreamTls) -> std::io::Result<HttpPeer> {
    let material = UpstreamTlsMaterial::load(tls)
        .map_err(|e| std::io::Error::other(format!("tls.{}: {}", e.field, e.problem)))?;
    let mut peer = HttpPeer::new(addr, true, tls.server_name.clone());
    peer.options.alpn = if tls.http2 { ALPN::H2H1 } else { ALPN::H1 };
    peer.options.ca = material.ca;
    peer.client_cert_key = material.client_cert;
    if !tls.verify {
        tracing::warn!(
            upstream = %name,
            "TLS VERIFICATION IS OFF for this upstream (insecure_skip_verify): anyone on the network path can impersonate it and read every request, tokens and data included"
        );
        peer.options.verify_cert = false;
        peer.options.verify_hostname = false;
    }
    Ok(peer)
}

/// The routing table: public path prefixes to upstreams.
#[derive(Debug)]
pub struct Routes(Vec<Arc<Route>>);

impl Routes {
    /// Builds the table, resolving each upstream host once; `signer`
    /// signs the identity JWTs of the upstreams that get them. A route of
    /// `previous` (a reload) whose upstream is configured exactly the same,
    /// with TLS files of the same content, and signed by the same key when
    /// it gets JWTs, is kept as it is, with its rate-limit buckets and
    /// identity assertions.
    pub fn new(
        upstreams: &[Upstream],
        signer: Option<&Arc<IdentitySigner>>,
        previous: Option<(&Routes, Option<&Arc<IdentitySigner>>)>,
    ) -> std::io::Result<Self> {
        let same_signer = previous.is_some_and(|(_, old)| match (old, signer) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        });
        upstreams
            .iter()
            .map(|u| {
                let signs = u.identity.as_ref().is_some_and(|i| i.jwt.is_some());
                let tls_files = u
                    .tls
                    .as_ref()
                    .and_then(|t| files_fingerprint(upstream_files(t)));
                let kept = previous
                    .filter(|_| same_signer || !signs)
                    .and_then(|(routes, _)| {
                        routes
                            .0
                            .iter()
                            .find(|r| r.upstream == *u && r.tls_files == tls_files)
                    });
                if let Some(route) = kept {
                    return Ok(route.clone());
                }
                Route::new(u.clone(), signer).map(Arc::new).map_err(|e| {
                    std::io::Error::other(format!(
                        "upstream `{}` ({}): {e}",
                        u.name,
                        u.target.describe()
                    ))
                })
            })
            .collect::<std::io::Result<_>>()
            .map(Self)
    }

    /// The route whose path `path` is or is under.
    pub fn find(&self, path: &str) -> Option<&Arc<Route>> {
        self.0.iter().find(|r| {
            let prefix = r.upstream.path.as_str();
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn routes() -> Routes {
        let c = Config::from_yaml(
            "public_url: http://gw
auth: { disabled: true }
upstreams:
  - { name: a, path: /a/mcp, url: 'http://127.0.0.1:1/mcp' }
  - { name: b, path: /b, url: 'http://127.0.0.1:2' }
",
        )
        .unwrap();
        Routes::new(&c.upstreams, None, None).unwrap()
    }

    #[test]
    fn prefixes_match_on_segment_boundaries_only() {
        let r = routes();
        assert_eq!(r.find("/a/mcp").unwrap().upstream.name, "a");
        assert_eq!(r.find("/a/mcp/sub").unwrap().upstream.name, "a");
        assert!(r.find("/a/mcpx").is_none());
        assert!(r.find("/a").is_none());
        assert!(r.find("/").is_none());
    }

    #[test]
    fn public_prefix_is_replaced_by_the_upstream_path() {
        let r = routes();
        let a = r.find("/a/mcp").unwrap();
        assert_eq!(a.upstream_path("/a/mcp", None), "/mcp");
        assert_eq!(a.upstream_path("/a/mcp/x", Some("k=v")), "/mcp/x?k=v");
        let b = r.find("/b").unwrap();
        assert_eq!(b.upstream_path("/b", None), "/");
    }
}
