//! The composition root: every part of a running gateway is built here and
//! handed to the others. The authorization server (when configured) is
//! started first and given to the proxy, which serves its paths and trusts
//! its tokens; its upkeep (key reloads, purges), the configuration reloader (which
//! also refreshes the proxy's JWKS) and the metrics listener run as
//! background services; the proxy listens behind the connection limits.

use crate::authserver::AuthServer;
use crate::config::Config;
use crate::metrics::MetricsEndpoint;
use crate::proxy::{proxy_service, Gateway, InFlight};
use crate::reload::Reloader;
use crate::tls::ServerCertificate;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use std::sync::Arc;

/// Time pingora gets to stop its runtimes after the grace period.
const RUNTIME_SHUTDOWN_TIMEOUT_SECS: u64 = 5;

/// The pingora server for `config`, with the configured threads and grace
/// period, counting requests in `in_flight`.
pub fn build(config: &Config, in_flight: Arc<InFlight>) -> std::io::Result<Server> {
    let conf = ServerConf {
        threads: config.worker_threads,
        grace_period_seconds: Some(config.shutdown_grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(RUNTIME_SHUTDOWN_TIMEOUT_SECS),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let authserver = AuthServer::start(config)
        .map_err(|e| std::io::Error::other(format!("authorization server: {e}")))?;
    if let Some(authserver) = &authserver {
        let upkeep = authserver.maintenance();
        server.add_service(background_service("authserver upkeep", upkeep));
    }
    let certificate = config
        .listen_tls
        .as_ref()
        .map(|tls| {
            ServerCertificate::load(tls)
                .map(Arc::new)
                .map_err(|e| std::io::Error::other(format!("tls.{}: {}", e.field, e.problem)))
        })
        .transpose()?;
    let gateway = Gateway::new(config, in_flight, authserver.as_ref())?;
    let reloader = Reloader::new(
        config,
        gateway.live(),
        authserver.clone(),
        certificate.clone(),
    );
    server.add_service(background_service(
        "config reload and jwks refresh",
        reloader,
    ));
    if let Some(addr) = config.metrics_listen {
        server.add_service(background_service("metrics", MetricsEndpoint(addr)));
    }
    server.add_service(proxy_service(
        &server.configuration,
        config,
        gateway,
        certificate,
    )?);
    Ok(server)
}
