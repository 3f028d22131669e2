//! Stopping the gateway: in-flight request tracking and the SIGTERM drain
//! (the server itself is put together in `crate::server`).
//!
//! Pingora's graceful terminate closes the listeners and then waits the whole
//! grace period before stopping. The gateway counts in-flight requests (an
//! SSE stream is in flight until it ends) so that after SIGTERM it exits 0 as
//! soon as the last one has finished, and at the latest when the grace period
//! is over.

use super::connections::{ConnectionLimits, Limited};
use super::Gateway;
use crate::config::Config;
use crate::tls::ServerCertificate;
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::proxy::http_proxy;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// Number of requests being served right now.
#[derive(Debug, Default)]
pub struct InFlight(AtomicUsize);

impl InFlight {
    /// A new counter at zero.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Requests currently being served.
    pub fn current(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    pub(super) fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }
}

/// Counts one request as in flight until dropped with its request context.
pub(super) struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Read buffer of a plain-HTTP client connection. Pingora's default is
/// 64 KiB per connection, for TLS, which reads 16 KiB records; MCP request
/// heads and bodies are small, and a connection holding an SSE stream open
/// keeps its buffer for as long: 16 KiB took about 47 KB off each open
/// stream (bench/memory.sh, issue 17) at no cost to throughput.
const PLAIN_READ_BUFFER: usize = 16 * 1024;

/// The public listener's service: the gateway behind the connection limits
/// (`connections`), listening on `config.listen`, over TLS with
/// `certificate` when `config.listen_tls` is set (TLS 1.2 and 1.3 only, as
/// rustls implements nothing older; HTTP/2 by ALPN unless turned off).
pub fn proxy_service(
    server_conf: &Arc<ServerConf>,
    config: &Config,
    gateway: Gateway,
    certificate: Option<Arc<ServerCertificate>>,
) -> std::io::Result<impl pingora::services::Service + 'static> {
    let limits = ConnectionLimits {
        header_timeout: config.limits.header_timeout,
        max_per_address: config.limits.max_connections_per_address,
    };
    let proxy = http_proxy(server_conf, gateway);
    let mut service = Service::new("mcp gateway".into(), Limited::new(proxy, limits));
    let listen = config.listen.to_string();
    match (&config.listen_tls, certificate) {
        (Some(tls), Some(certificate)) => {
            let mut settings = TlsSettings::intermediate("", "")
                .map_err(|e| std::io::Error::other(format!("tls: {e}")))?;
            settings.set_cert_resolver(certificate);
            if tls.http2 {
                settings.enable_h2();
            }
            service.add_tls_with_settings(&listen, None, settings);
        }
        (None, _) => service.add_listener(
            ListenerConfig::tcp(&listen)
                .l4_buffer(L4BufferSettings::default().read(PLAIN_READ_BUFFER)),
        ),
        (Some(_), None) => {
            return Err(std::io::Error::other(
                "tls is configured but no certificate was loaded",
            ))
        }
    }
    Ok(service)
}

/// Runs `server` until SIGTERM (drain, then exit 0) or SIGINT (stop now).
pub fn run_until_terminated(server: Server, in_flight: Arc<InFlight>) -> ! {
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainOnTerminate { in_flight }),
    });
    crate::stdio::stop_all_now();
    tracing::info!("gateway stopped");
    crate::telemetry::flush_logs();
    std::process::exit(0)
}

/// SIGTERM: graceful, exit once drained; SIGINT: fast shutdown.
struct DrainOnTerminate {
    in_flight: Arc<InFlight>,
}

#[async_trait]
impl ShutdownSignalWatch for DrainOnTerminate {
    async fn recv(&self) -> ShutdownSignal {
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot install signal handlers; stopping");
                return ShutdownSignal::FastShutdown;
            }
        };
        tokio::select! {
            _ = term.recv() => {
                tracing::info!(in_flight = self.in_flight.current(), "SIGTERM: no longer accepting; draining in-flight requests");
                exit_when_drained(self.in_flight.clone());
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: stopping now");
                // Stdio processes hear of it before the runtime goes (and
                // their stdin with it); `stop_all_now` waits for them.
                crate::stdio::terminate_all();
                ShutdownSignal::FastShutdown
            }
        }
    }
}

/// Exits the process with status 0 once no request is in flight. The grace
/// period still bounds the wait: pingora stops everything when it ends.
fn exit_when_drained(in_flight: Arc<InFlight>) {
    std::thread::spawn(move || {
        // Let pingora close its listeners before counting down.
        std::thread::sleep(Duration::from_millis(100));
        while in_flight.current() > 0 {
            std::thread::sleep(Duration::from_millis(25));
        }
        tracing::info!("all in-flight requests finished; exiting");
        crate::stdio::stop_all_now();
        crate::telemetry::flush_logs();
        std::process::exit(0);
    });
}
