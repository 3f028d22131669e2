//! Gateway configuration: the YAML schema, `${VAR}` expansion, defaults and
//! validation.
//!
//! Loading is three steps, each reporting errors with the YAML path they
//! concern (`upstreams[1].url`): parse the YAML, expand environment variables
//! in string values, then deserialize and validate into [`Config`], whose
//! types only hold valid values. All validation errors are collected, so an
//! operator fixes a file in one pass.

mod auth;
mod authserver;
mod env;
mod federation;
mod identity;
mod rate_limits;
mod raw;
mod stdio;
mod structure;
mod validate;

pub use crate::policy::{UnlistedMethods, UnlistedTools};
pub(crate) use auth::check_endpoint_url;
pub use auth::{AuthConfig, IntrospectionEndpoint, JwtIssuer, Secret};
pub use authserver::{
    logo_data_url, AuthServerConfig, ClientMetadataDocuments, PostgresConfig, StoreConfig, User,
};
pub use federation::{AccessRule, IdentityProvider};
pub use identity::{ForwardIdentity, IdentityJwt};
pub use rate_limits::RateLimits;
pub use raw::{ProviderKind, RegistrationPolicy, SigningAlgorithm};
pub use stdio::{Isolation, StdioCommand};
pub(crate) use validate::normalise_origin;

use crate::policy::ScopePolicy;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A validated gateway configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Canonical external URL (scheme, host, optional port and path, no
    /// trailing slash). Every public URL the gateway prints or publishes is
    /// built from it, never from a request's `Host` header.
    pub public_url: PublicUrl,
    /// Address the public listener binds.
    pub listen: SocketAddr,
    /// Worker threads of the proxy service.
    pub worker_threads: usize,
    /// How long in-flight requests and streams may run on after SIGTERM.
    pub shutdown_grace_period: Duration,
    /// Request size, time and connection limits.
    pub limits: Limits,
    /// Origins (`scheme://host[:port]`) allowed to send requests; the public
    /// URL's origin is always allowed.
    pub allowed_origins: Vec<String>,
    /// The upstream MCP servers, in file order.
    pub upstreams: Vec<Upstream>,
    /// Token sources; `None` when authentication is disabled
    /// (`auth: { disabled: true }`, local development only).
    pub auth: Option<AuthConfig>,
    /// The built-in authorization server, when enabled.
    pub authorization_server: Option<AuthServerConfig>,
    /// Where `/metrics` is served (a listener of its own), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Problems that do not stop the gateway (unreachable policy rules...).
    pub warnings: Vec<ConfigError>,
    /// Log output.
    pub log_format: LogFormat,
    /// Default log filter (`RUST_LOG` overrides it).
    pub log_level: String,
    /// The P-256 key signing identity JWTs for upstreams; `None`: one is
    /// generated at start.
    pub identity_key_file: Option<PathBuf>,
    /// How often the file is checked for changes to reload (zero: only on
    /// SIGHUP).
    pub config_watch_interval: Duration,
    /// The file it was loaded from (`None` when built from text): the one
    /// a reload reads.
    pub source: Option<PathBuf>,
    /// HTTPS on the public listener, when configured.
    pub listen_tls: Option<ListenTls>,
}

/// The public listener's certificate: reloaded when the files change.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenTls {
    /// Certificate chain (PEM), the server's certificate first.
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Offer HTTP/2 by ALPN (HTTP/1.1 always).
    pub http2: bool,
}

/// Limits on what one client may send and hold open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest request body accepted, in bytes (413 above).
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers), in bytes (431
    /// above, before anything is forwarded).
    pub max_header_bytes: usize,
    /// Time from a request head's first byte to its end; the connection is
    /// closed after it.
    pub header_timeout: Duration,
    /// Time to receive a whole POST body (408 after it).
    pub body_timeout: Duration,
    /// Open connections per client address (0: no limit).
    pub max_connections_per_address: usize,
    /// Requests without a valid token per client address (IPv6 by /64):
    /// the authorization server's endpoints and documents, preflights, and
    /// MCP requests whose token is missing or refused. `None`: no limit.
    pub unauthenticated_per_address: Option<crate::ratelimit::Rate>,
}

/// The canonical external base URL, without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl(String);

impl PublicUrl {
    /// The URL as configured, normalised (no trailing slash).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The public URL of a path served by the gateway (`path` starts with `/`).
    pub fn join(&self, path: &str) -> String {
        format!("{}{}", self.0, path)
    }

    /// The origin (`scheme://host[:port]`) browsers send for pages of this URL.
    pub fn origin(&self) -> String {
        let url = url::Url::parse(&self.0).expect("validated at load");
        url.origin().ascii_serialization()
    }
}

impl fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One upstream MCP server behind a public path.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// Short name used in logs and as the `upstream` metric label.
    pub name: String,
    /// Public path prefix, starting with `/`, without a trailing slash.
    pub path: String,
    /// Where requests go.
    pub target: Target,
    /// Headers added to every upstream request (e.g. an upstream API key).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Connection and response timeouts.
    pub timeouts: Timeouts,
    /// The canonical resource URL (`public_url` + `path`): the PRM
    /// `resource` and the audience its tokens must carry (RFC 8707).
    pub resource: String,
    /// Further accepted token audiences.
    pub extra_audiences: Vec<String>,
    /// Human-readable name published as the PRM `resource_name`.
    pub resource_name: String,
    /// What each scope allows, in words, where `scopes` says.
    pub scope_descriptions: BTreeMap<String, String>,
    /// Scopes each request needs.
    pub policy: Arc<ScopePolicy>,
    /// TLS settings, for an `https://` upstream.
    pub tls: Option<UpstreamTls>,
    /// Token-bucket limits on its callers.
    pub rate_limits: RateLimits,
    /// What it is told about its caller, when anything.
    pub identity: Option<ForwardIdentity>,
}

/// TLS to an `https://` upstream: certificate and host name verified
/// against the system's roots or the upstream's own CA bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// Sent as SNI and verified against the certificate: the URL's host
    /// unless `server_name` is set.
    pub server_name: String,
    /// CA certificates (PEM) trusted for this upstream instead of the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// Certificate chain and key (PEM) presented to the upstream (mTLS).
    pub client_cert: Option<ClientCertFiles>,
    /// Offer HTTP/2 by ALPN (HTTP/1.1 always).
    pub http2: bool,
    /// Verify the certificate and its name; off only by
    /// `insecure_skip_verify`.
    pub verify: bool,
}

impl UpstreamTls {
    /// One line for `check-config`: what is verified against what.
    pub fn describe(&self) -> String {
        let trust = match (&self.ca_file, self.verify) {
            (_, false) => "NOT VERIFIED (insecure_skip_verify)".to_owned(),
            (Some(ca), true) => format!(
                "certificate for `{}` verified against {}",
                self.server_name,
                ca.display()
            ),
            (None, true) => format!(
                "certificate for `{}` verified against the system's roots",
                self.server_name
            ),
        };
        let client = match &self.client_cert {
            Some(c) => format!("; client certificate {}", c.cert_file.display()),
            None => String::new(),
        };
        let alpn = if self.http2 {
            "h2, http/1.1"
        } else {
            "http/1.1"
        };
        format!("{trust}{client}; ALPN {alpn}")
    }
}

/// A client certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCertFiles {
    /// Leaf first, then intermediates.
    pub cert_file: PathBuf,
    /// PKCS#8, PKCS#1 or SEC1.
    pub key_file: PathBuf,
}

/// What serves an upstream's requests.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A Streamable HTTP server at a `url`.
    Http(UpstreamTarget),
    /// A local program speaking MCP over stdio (`command`).
    Stdio(StdioCommand),
}

impl Target {
    /// The URL or the command line, for logs.
    pub fn describe(&self) -> String {
        match self {
            Self::Http(t) => t.url.clone(),
            Self::Stdio(c) => c.describe(),
        }
    }
}

/// The parsed upstream `url`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTarget {
    /// The URL as configured.
    pub url: String,
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `host[:port]` as sent in the upstream `Host` header.
    pub authority: String,
    /// Path of the upstream endpoint, without a trailing slash (may be empty).
    pub path: String,
    /// `https://`: reached over TLS (see [`UpstreamTls`]).
    pub tls: bool,
}

/// Per-upstream timeouts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// From the end of the request to the upstream's response headers.
    pub response: Duration,
    /// Longest silence between two chunks of a response body; `None` lets a
    /// quiet SSE stream stay open as long as the upstream keeps it.
    pub idle: Option<Duration>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Pretty,
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// YAML path of the offending value (`upstreams[1].url`); empty for the
    /// document as a whole.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl ConfigError {
    pub(crate) fn new(path: &str, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            message: message.into(),
            hint: hint.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)?;
        if !self.hint.is_empty() {
            write!(f, "\n    hint: {}", self.hint)?;
        }
        Ok(())
    }
}

/// Every error found in a configuration, in document order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads, expands and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError::new(
                "",
                format!("cannot read {}: {e}", path.display()),
                "check the path given to --config",
            )])
        })?;
        let mut config = Self::from_yaml(&text)?;
        config.resolve_relative_paths(path);
        config.check_files()?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Reads the files the configuration names (TLS certificates and
    /// keys), so a bad one is reported with its YAML path before anything
    /// starts.
    fn check_files(&self) -> Result<(), ConfigErrors> {
        let mut errors: Vec<ConfigError> = self
            .upstreams
            .iter()
            .enumerate()
            .filter_map(|(i, u)| Some((i, u.tls.as_ref()?)))
            .filter_map(|(i, tls)| {
                crate::tls::UpstreamTlsMaterial::load(tls)
                    .err()
                    .map(|e| (i, e))
            })
            .map(|(i, e)| {
                ConfigError::new(
                    &format!("upstreams[{i}].tls.{}", e.field),
                    e.problem,
                    "give a readable PEM file (certificates, or a PKCS#8, PKCS#1 or SEC1 key)",
                )
            })
            .collect();
        if let Some(e) = self
            .listen_tls
            .as_ref()
            .and_then(|tls| crate::tls::ServerCertificate::load(tls).err())
        {
            errors.push(ConfigError::new(
                &format!("tls.{}", e.field),
                e.problem,
                "give the certificate chain (server certificate first) and its key as PEM files",
            ));
        }
        if let Some(Err(e)) = self
            .authorization_server
            .as_ref()
            .and_then(|a| a.logo_file.as_deref())
            .map(authserver::logo_data_url)
        {
            errors.push(ConfigError::new(
                "authorization_server.branding.logo_file",
                e,
                "give a PNG, SVG, JPEG or WebP file of at most 64 KiB",
            ));
        }
        if let Some(path) = &self.identity_key_file {
            if let Err(e) =
                crate::identity::IdentitySigner::new(self.public_url.as_str(), Some(path))
            {
                errors.push(ConfigError::new(
                    "identity_key_file",
                    e.to_string(),
                    "give a PEM file with a PKCS#8 P-256 key (`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`)",
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Relative paths in a configuration file mean relative to that file,
    /// not to wherever the gateway was started.
    fn resolve_relative_paths(&mut self, file: &Path) {
        let base = std::path::absolute(file)
            .ok()
            .and_then(|f| f.parent().map(Path::to_path_buf));
        let Some(base) = base else { return };
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        if let Some(a) = self.authorization_server.as_mut() {
            resolve(&mut a.data_dir);
        }
        if let Some(key) = self.identity_key_file.as_mut() {
            resolve(key);
        }
        if let Some(logo) = self
            .authorization_server
            .as_mut()
            .and_then(|a| a.logo_file.as_mut())
        {
            resolve(logo);
        }
        if let Some(tls) = self.listen_tls.as_mut() {
            resolve(&mut tls.cert_file);
            resolve(&mut tls.key_file);
        }
        for tls in self.upstreams.iter_mut().filter_map(|u| u.tls.as_mut()) {
            if let Some(ca_file) = tls.ca_file.as_mut() {
                resolve(ca_file);
            }
            if let Some(c) = tls.client_cert.as_mut() {
                resolve(&mut c.cert_file);
                resolve(&mut c.key_file);
            }
        }
    }

    /// Parses, expands and validates configuration text.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigErrors> {
        let mut doc: yaml_serde::Value = yaml_serde::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError::new(
                "",
                format!("not valid YAML: {e}"),
                "fix the syntax at the line and column given",
            )])
        })?;
        let mut errors = Vec::new();
        env::expand_env(&mut doc, "", &mut errors);
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let raw = structure::read_raw(doc).map_err(ConfigErrors)?;
        validate::validate(raw)
    }

    /// A human-readable summary of what this configuration sets up.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "public URL: {}\nlisten:     {}\nbody limit: {} bytes; worker threads: {}; shutdown grace: {:?}\n",
            self.public_url, self.listen, self.limits.max_body_bytes, self.worker_threads, self.shutdown_grace_period
        );
        if let Some(tls) = &self.listen_tls {
            out.push_str(&format!(
                "listener TLS: {} + {} (TLS 1.2/1.3, {}; reloaded when the files change)\n",
                tls.cert_file.display(),
                tls.key_file.display(),
                if tls.http2 {
                    "h2 and http/1.1"
                } else {
                    "http/1.1"
                }
            ));
        }
        out.push_str(&format!(
            "allowed origins: {} (always) {}\n",
            self.public_url.origin(),
            self.allowed_origins.join(" ")
        ));
        match &self.auth {
            None => out.push_str("auth: DISABLED (every upstream is open)\n"),
            Some(a) => out.push_str(&format!(
                "auth: {} JWT issuer(s), {} introspection endpoint(s); authorization servers: {}\n",
                a.jwt_issuers.len(),
                a.introspection.len(),
                a.authorization_servers.join(" ")
            )),
        }
        if let Some(a) = &self.authorization_server {
            let store = match &a.store {
                StoreConfig::Sqlite => format!("SQLite in {}", a.data_dir.display()),
                StoreConfig::Postgres(pg) => {
                    format!("PostgreSQL (pool of {}; the URL is secret)", pg.pool_size)
                }
            };
            out.push_str(&format!(
                "authorization server: {} local user(s), {} access rule(s); store: {store}\n",
                a.users.len(),
                a.access.len()
            ));
            for p in &a.identity_providers {
                out.push_str(&format!(
                    "  sign in with {} ({}): issuer {}, callback {}\n",
                    p.display_name,
                    p.id,
                    p.issuer,
                    self.public_url.join(&format!("/callback/{}", p.id))
                ));
            }
        }
        out.push_str("routes:\n");
        for u in &self.upstreams {
            let t = u.timeouts;
            let settings = match &u.target {
                Target::Http(_) => format!(
                    "connect {:?}, response {:?}, idle {}, {} extra header(s)",
                    t.connect,
                    t.response,
                    t.idle.map_or("none".to_owned(), |d| format!("{d:?}")),
                    u.headers.len()
                ),
                Target::Stdio(c) => format!(
                    "stdio: isolation {}, at most {} processes, idle timeout {:?}, startup timeout {:?}, {} environment variable(s){}",
                    c.isolation.as_str(),
                    c.max_processes,
                    c.idle_timeout,
                    c.startup_timeout,
                    c.env.len(),
                    if c.caller_env { " + the caller's" } else { "" }
                ),
            };
            out.push_str(&format!(
                "  {:<12} {} -> {}  ({settings})\n",
                u.name,
                self.public_url.join(&u.path),
                u.target.describe(),
            ));
            if let Some(tls) = &u.tls {
                out.push_str(&format!("  {:<12} tls: {}\n", "", tls.describe()));
            }
            let p = &u.policy;
            out.push_str(&format!(
                "  {:<12} scopes: {}; base: {}; unlisted tools: {:?}; tools/list filtered: {}\n",
                "",
                p.scopes.join(" "),
                p.base.join(" "),
                p.unlisted,
                p.filter_tools_list
            ));
            if let Some(identity) = &u.identity {
                let names: Vec<&str> = identity.header_names().map(|n| n.as_str()).collect();
                out.push_str(&format!(
                    "  {:<12} caller identity in: {}\n",
                    "",
                    names.join(", ")
                ));
            }
            for line in u.rate_limits.describe() {
                out.push_str(&format!("  {:<12} rate limit {line}\n", ""));
            }
        }
        if self
            .upstreams
            .iter()
            .any(|u| u.identity.as_ref().is_some_and(|i| i.jwt.is_some()))
        {
            let key = self
                .identity_key_file
                .as_ref()
                .map_or("generated at start (one per process)".to_owned(), |p| {
                    p.display().to_string()
                });
            out.push_str(&format!(
                "identity JWT key: {key}; JWKS at {}\n",
                self.public_url.join(crate::identity::IDENTITY_JWKS_PATH)
            ));
        }
        if let Some(r) = &self.limits.unauthenticated_per_address {
            out.push_str(&format!("unauthenticated requests per address: {r}\n"));
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        out
    }
}

/// serde_path_to_error writes `.` for the root and `upstreams[1].url` below it.
#[cfg(test)]
mod tests;
