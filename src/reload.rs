//! Live configuration reloads: on SIGHUP, and when the file's content
//! changes (checked every `server.config_watch_interval`), the file is
//! loaded and validated in full; an invalid one changes nothing. A valid
//! one is built into a new [`Live`] for the proxy and new settings for the
//! authorization server, each swapped whole: requests and streams under
//! way finish on the configuration they started with.
//!
//! The listeners, the store, the process settings and the caches sized at
//! start are not rebuilt: a change to those is logged as needing a
//! restart and the running value kept ([`keep_restart_only`]).
//!
//! The same background service keeps the JWKS of the current token
//! sources fresh, so a reload that changes `auth` moves the refresh to
//! the new issuers.

use crate::auth::RefreshTasks;
use crate::authserver::AuthServer;
use crate::config::Config;
use crate::metrics::metrics;
use crate::proxy::{Live, LiveState};
use crate::tls::{files_fingerprint, upstream_files, ServerCertificate};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Mutex;

/// The reload service (see the module docs).
pub struct Reloader {
    live: LiveState,
    authserver: Option<AuthServer>,
    /// The listener's certificate, read again when its files change.
    certificate: Option<Arc<ServerCertificate>>,
    /// The configuration running now, and what the file held when it was
    /// last read.
    running: Mutex<Running>,
}

struct Running {
    config: Config,
    fingerprint: Option<[u8; 32]>,
    /// What the key files it names (identity key, upstream TLS files)
    /// held when last read.
    material: Option<[u8; 32]>,
}

/// What a reload did, the label of `mcpgw_config_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Unchanged,
    Invalid,
    Failed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Unchanged => "unchanged",
            Self::Invalid => "invalid",
            Self::Failed => "failed",
        }
    }
}

impl Reloader {
    /// The reloader of `config` (reloads need its `source` file), swapping
    /// `live` and the settings of `authserver`, and re-reading the files of
    /// the listener's `certificate`.
    pub fn new(
        config: &Config,
        live: LiveState,
        authserver: Option<AuthServer>,
        certificate: Option<Arc<ServerCertificate>>,
    ) -> Self {
        for outcome in [
            Outcome::Applied,
            Outcome::Unchanged,
            Outcome::Invalid,
            Outcome::Failed,
        ] {
            // Every outcome is a series from the start, at 0.
            metrics()
                .config_reloads
                .with_label_values(&[outcome.label()]);
        }
        let fingerprint = config.source.as_deref().and_then(fingerprint);
        let material = key_material(config);
        Self {
            live,
            authserver,
            certificate,
            running: Mutex::new(Running {
                config: config.clone(),
                fingerprint,
                material,
            }),
        }
    }

    /// Loads the file again and applies it if it is valid; `trigger` is
    /// for the log.
    pub async fn reload(&self, trigger: &str) -> Outcome {
        let mut running = self.running.lock().await;
        let outcome = self.reload_locked(&mut running, trigger);
        metrics()
            .config_reloads
            .with_label_values(&[outcome.label()])
            .inc();
        outcome
    }

    fn reload_locked(&self, running: &mut Running, trigger: &str) -> Outcome {
        let Some(path) = running.config.source.clone() else {
            return Outcome::Unchanged;
        };
        running.fingerprint = fingerprint(&path);
        let material_before = running.material;
        running.material = key_material(&running.config);
        let mut config = match Config::load(&path) {
            Ok(c) => c,
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!(file = %path.display(), trigger, path = %e.path, error = %e, "configuration reload refused; the running configuration stays");
                }
                return Outcome::Invalid;
            }
        };
        if let Some((field, why)) = needs_restart_whole(&running.config, &config) {
            tracing::error!(file = %path.display(), trigger, path = field, "configuration reload refused: {why}, so it changes only with a restart; the running configuration stays");
            return Outcome::Invalid;
        }
        for field in keep_restart_only(&running.config, &mut config) {
            tracing::warn!(file = %path.display(), path = field, "this change needs a restart; the running value stays until then");
        }
        let material = key_material(&config);
        if config == running.config && material == material_before {
            tracing::info!(file = %path.display(), trigger, "configuration unchanged");
            return Outcome::Unchanged;
        }
        let previous = self.live.load_full();
        let live = match Live::build(&config, self.authserver.as_ref(), Some(&previous)) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(file = %path.display(), trigger, error = %e, "configuration reload failed; the running configuration stays");
                return Outcome::Failed;
            }
        };
        if let Some(a) = &self.authserver {
            a.reload(&config);
        }
        let changed = changed_sections(&running.config, &config);
        self.live.store(Arc::new(live));
        for w in &config.warnings {
            tracing::warn!(path = %w.path, "{w}");
        }
        tracing::info!(file = %path.display(), trigger, changed = %changed.join(", "), "configuration reloaded");
        running.config = config;
        running.material = material;
        Outcome::Applied
    }

    /// Serves the listener's certificate files anew when they changed
    /// (`force`: read them regardless); unusable files leave the served
    /// certificate in place.
    fn reload_certificate(&self, force: bool) {
        let Some(certificate) = &self.certificate else {
            return;
        };
        let outcome = match certificate.reload(force) {
            Ok(false) => return,
            Ok(true) => {
                tracing::info!(
                    "TLS certificate reloaded; new connections get it, open ones keep theirs"
                );
                "applied"
            }
            Err(e) => {
                tracing::error!(path = %format!("tls.{}", e.field), error = %e.problem, "TLS certificate reload refused; the served certificate stays");
                "invalid"
            }
        };
        metrics()
            .tls_certificate_reloads
            .with_label_values(&[outcome])
            .inc();
    }

    /// Whether the file, or a key file it names, differs from what was
    /// last read.
    async fn file_changed(&self) -> bool {
        let running = self.running.lock().await;
        let Some(path) = running.config.source.as_deref() else {
            return false;
        };
        fingerprint(path) != running.fingerprint
            || key_material(&running.config) != running.material
    }
}

/// The fingerprint of the key files `config` names: the identity key and
/// every upstream's CA bundle and client certificate.
fn key_material(config: &Config) -> Option<[u8; 32]> {
    let upstream_files = config
        .upstreams
        .iter()
        .filter_map(|u| u.tls.as_ref())
        .flat_map(upstream_files);
    files_fingerprint(
        config
            .identity_key_file
            .as_deref()
            .into_iter()
            .chain(upstream_files),
    )
}

/// The SHA-256 of the file's content (`None` when unreadable: a file being
/// replaced is read again on the next check).
fn fingerprint(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(b).into())
}

/// A change that other settings derive from, which a restart must apply:
/// its YAML path and why.
fn needs_restart_whole(running: &Config, new: &Config) -> Option<(&'static str, &'static str)> {
    if running.public_url != new.public_url {
        return Some((
            "public_url",
            "public_url is in every published URL and token audience",
        ));
    }
    if running.auth.is_some() != new.auth.is_some() {
        return Some((
            "auth",
            "turning authentication on or off opens or closes every upstream at once",
        ));
    }
    if running.authorization_server.is_some() != new.authorization_server.is_some() {
        return Some((
            "authorization_server",
            "the authorization server's store and keys open at start, and the resource metadata names it",
        ));
    }
    None
}

/// Puts the running value back into `new` wherever a change needs a
/// restart (listeners, process settings, the store and keys, caches sized
/// at start); the YAML paths of those changes.
pub fn keep_restart_only(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    let k = &mut kept;
    restore(k, "listen", &running.listen, &mut new.listen);
    restore(
        k,
        "metrics.listen",
        &running.metrics_listen,
        &mut new.metrics_listen,
    );
    restore(
        k,
        "server.worker_threads",
        &running.worker_threads,
        &mut new.worker_threads,
    );
    restore(
        k,
        "server.shutdown_grace_period",
        &running.shutdown_grace_period,
        &mut new.shutdown_grace_period,
    );
    restore(
        k,
        "server.config_watch_interval",
        &running.config_watch_interval,
        &mut new.config_watch_interval,
    );
    let (old, limits) = (&running.limits, &mut new.limits);
    restore(
        k,
        "limits.header_timeout",
        &old.header_timeout,
        &mut limits.header_timeout,
    );
    restore(
        k,
        "limits.max_connections_per_address",
        &old.max_connections_per_address,
        &mut limits.max_connections_per_address,
    );
    restore(
        k,
        "logging.format",
        &running.log_format,
        &mut new.log_format,
    );
    restore(k, "logging.level", &running.log_level, &mut new.log_level);
    restore(k, "tls", &running.listen_tls, &mut new.listen_tls);
    if let (Some(old), Some(auth)) = (&running.auth, &mut new.auth) {
        restore(
            k,
            "auth.token_cache.max_entries",
            &old.token_cache_entries,
            &mut auth.token_cache_entries,
        );
        restore(
            k,
            "auth.sessions.secret",
            &old.session_secret,
            &mut auth.session_secret,
        );
    }
    if let (Some(old), Some(a)) = (&running.authorization_server, &mut new.authorization_server) {
        restore(
            k,
            "authorization_server.data_dir",
            &old.data_dir,
            &mut a.data_dir,
        );
        restore(
            k,
            "authorization_server.signing_algorithm",
            &old.signing_algorithm,
            &mut a.signing_algorithm,
        );
        restore(
            k,
            "authorization_server.code_ttl",
            &old.code_ttl,
            &mut a.code_ttl,
        );
        restore(
            k,
            "authorization_server.client_metadata_documents",
            &old.client_metadata_documents,
            &mut a.client_metadata_documents,
        );
    }
    kept
}

/// Sets `new` back to `running`, noting `path` when they differed.
fn restore<T: PartialEq + Clone>(
    kept: &mut Vec<&'static str>,
    path: &'static str,
    running: &T,
    new: &mut T,
) {
    if running != new {
        kept.push(path);
        new.clone_from(running);
    }
}

/// The top-level sections that differ, for the log.
fn changed_sections(old: &Config, new: &Config) -> Vec<&'static str> {
    [
        (old.upstreams != new.upstreams, "upstreams"),
        (old.auth != new.auth, "auth"),
        (
            old.authorization_server != new.authorization_server,
            "authorization_server",
        ),
        (
            old.allowed_origins != new.allowed_origins,
            "allowed_origins",
        ),
        (old.limits != new.limits, "limits"),
        (
            old.identity_key_file != new.identity_key_file,
            "identity_key_file",
        ),
    ]
    .into_iter()
    .filter_map(|(changed, section)| changed.then_some(section))
    .collect()
}

/// Runs the JWKS refresh of the current token sources.
struct Refresh {
    live: Arc<Live>,
    _tasks: Option<RefreshTasks>,
}

impl Refresh {
    fn of(live: Arc<Live>) -> Self {
        let tasks = live.key_refresher().map(|r| r.spawn());
        Self {
            live,
            _tasks: tasks,
        }
    }

    /// Moves the refresh to `current`'s sources when they are new. Either
    /// way only `current` is held from now on: an old state kept here
    /// would keep its routes alive (a replaced stdio upstream's processes
    /// among them).
    fn follow(&mut self, current: Arc<Live>) {
        if self.live.same_token_sources(&current) {
            self.live = current;
        } else {
            *self = Self::of(current);
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut refresh = Refresh::of(self.live.load_full());
        let (watch, source) = {
            let running = self.running.lock().await;
            (
                running.config.config_watch_interval,
                running.config.source.clone(),
            )
        };
        if source.is_none() && self.certificate.is_none() {
            let _ = shutdown.changed().await;
            return;
        }
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reloads follow file changes only");
                None
            }
        };
        let mut tick = tokio::time::interval(if watch.is_zero() {
            Duration::from_secs(3600)
        } else {
            watch
        });
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if let Some(source) = &source {
            log_watch(source, watch);
        }
        loop {
            let forced = tokio::select! {
                Some(()) = recv(&mut hangup) => true,
                _ = tick.tick(), if !watch.is_zero() => false,
                _ = shutdown.changed() => return,
            };
            self.reload_certificate(forced);
            if source.is_none() || !(forced || self.file_changed().await) {
                continue;
            }
            let trigger = if forced { "SIGHUP" } else { "file change" };
            if self.reload(trigger).await == Outcome::Applied {
                refresh.follow(self.live.load_full());
            }
        }
    }
}

/// The next SIGHUP; never, without a handler.
async fn recv(hangup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hangup {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

fn log_watch(source: &Path, watch: Duration) {
    if watch.is_zero() {
        tracing::info!(file = %source.display(), "configuration reloads on SIGHUP");
    } else {
        tracing::info!(file = %source.display(), every = ?watch, "configuration reloads on SIGHUP and when the file changes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "
public_url: https://mcp.example.com
listen: 127.0.0.1:8080
auth: { jwt_issuers: [{ issuer: 'https://idp.example.com' }] }
upstreams:
  - { name: demo, path: /demo/mcp, url: 'http://127.0.0.1:3001/mcp' }
";

    fn config(extra: &str) -> Config {
        Config::from_yaml(&format!("{BASE}{extra}")).unwrap()
    }

    #[test]
    fn restart_only_changes_are_named_and_put_back_the_rest_kept() {
        let running = config("");
        let mut new = Config::from_yaml(
            &BASE.replace("127.0.0.1:8080", "0.0.0.0:9090").replace(
                "auth: {",
                "server: { worker_threads: 4 }\nlimits: { header_timeout: 5s, max_body_bytes: 2048 }\nlogging: { level: debug }\nauth: { sessions: { secret: 'a-new-secret-of-at-least-32-characters' }, ",
            ),
        )
        .unwrap();
        let kept = keep_restart_only(&running, &mut new);
        assert_eq!(
            kept,
            [
                "listen",
                "server.worker_threads",
                "limits.header_timeout",
                "logging.level",
                "auth.sessions.secret"
            ]
        );
        assert_eq!(new.listen, running.listen);
        assert_eq!(new.worker_threads, running.worker_threads);
        assert_eq!(new.limits.header_timeout, running.limits.header_timeout);
        assert_eq!(new.limits.max_body_bytes, 2048, "reloadable: kept new");
        assert_eq!(changed_sections(&running, &new), ["limits"]);
    }

    #[test]
    fn a_new_public_url_or_authorization_server_refuses_the_whole_reload() {
        let running = config("");
        let with_as = config("authorization_server: { users: [] }\n");
        let path = |a: &Config, b: &Config| needs_restart_whole(a, b).map(|(path, _)| path);
        assert_eq!(path(&running, &with_as), Some("authorization_server"));
        assert_eq!(path(&with_as, &running), Some("authorization_server"));
        let moved = Config::from_yaml(&BASE.replace("mcp.example.com", "mcp.example.org")).unwrap();
        assert_eq!(path(&running, &moved), Some("public_url"));
        let open = Config::from_yaml(&BASE.replace(
            "auth: { jwt_issuers: [{ issuer: 'https://idp.example.com' }] }",
            "auth: { disabled: true }",
        ))
        .unwrap();
        assert_eq!(
            path(&running, &open),
            Some("auth"),
            "never opened by a reload"
        );
        assert_eq!(path(&open, &running), Some("auth"));
        assert_eq!(path(&running, &config("")), None);
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let running = config("");
        let mut new = config("");
        assert!(keep_restart_only(&running, &mut new).is_empty());
        assert_eq!(new, running);
        assert!(changed_sections(&running, &new).is_empty());
    }
}
