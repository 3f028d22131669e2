//! Logging: the tracing subscriber, in JSON or human-readable form.
//!
//! `RUST_LOG` overrides the configured level. Pingora's own `log` records are
//! routed into the same subscriber.

use crate::config::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; later calls are ignored (tests start
/// several gateways in one process).
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a log file or collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    if installed.is_err() {
        tracing::debug!("a tracing subscriber was already installed");
    }
}

/// The request id of a request: the client's `X-Request-Id` when it is 1-128
/// characters of `A-Z a-z 0-9 - _ . :` (safe in logs and headers), else a
/// new random one.
pub fn request_id(header: Option<&http::HeaderValue>) -> String {
    let usable = |v: &&http::HeaderValue| {
        let b = v.as_bytes();
        (1..=128).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
    };
    match header.filter(usable).and_then(|v| v.to_str().ok()) {
        Some(id) => id.to_owned(),
        None => {
            use aws_lc_rs::rand::SecureRandom;
            let mut bytes = [0u8; 12];
            // On failure the id is all zeros: still a valid, if useless, id.
            let _ = aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes);
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let mut id = String::with_capacity(2 * bytes.len());
            for b in bytes {
                id.push(char::from(HEX[usize::from(b >> 4)]));
                id.push(char::from(HEX[usize::from(b & 0xf)]));
            }
            id
        }
    }
}

/// One SSE stream in the `mcpgw_open_sse_streams` gauge, until dropped.
pub struct OpenStream(());

impl OpenStream {
    /// Counts a stream as open.
    pub fn start() -> Self {
        crate::metrics::metrics().open_streams.inc();
        Self(())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        crate::metrics::metrics().open_streams.dec();
    }
}
