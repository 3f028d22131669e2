//! Logging: the tracing subscriber, in JSON or human-readable form.
//!
//! `RUST_LOG` overrides the configured level. Pingora's own `log` records are
//! routed into the same subscriber.

use crate::config::LogFormat;
use std::io::IsTerminal;
use std::sync::Mutex;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; later calls are ignored (tests start
/// several gateways in one process).
///
/// Lines go to stderr through a writer thread (`tracing-appender`): a proxy
/// worker formats its line and queues it, and the writer thread writes what
/// has queued up in one go and flushes whenever the queue is empty, so a
/// quiet gateway's lines appear at once and a busy one's cost a write per
/// batch, not per line. The queue is not lossy: when it is full (128k
/// lines), the logging thread waits rather than drop an audit line.
/// [`flush_logs`] writes out what is queued before the process exits.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("mcpgw-log-writer")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    // Colours only on a terminal: a log file or collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let installed = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    match installed {
        Ok(()) => *WRITER.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard),
        Err(_) => tracing::debug!("a tracing subscriber was already installed"),
    }
}

/// The writer thread's guard: dropping it writes out the queue and stops it.
static WRITER: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// Writes out every queued log line and stops the writer thread; called
/// right before the process exits (later lines are not written).
pub fn flush_logs() {
    drop(WRITER.lock().unwrap_or_else(|e| e.into_inner()).take());
}

/// The request id of a request: the client's `X-Request-Id` when it is 1-128
/// characters of `A-Z a-z 0-9 - _ . :` (safe in logs and headers), else a
/// new one: 24 hex digits, a random prefix drawn once per process (so
/// replicas do not collide) and a 48-bit counter (so ids never repeat
/// within a process). Not a secret, so not a random draw per request: that
/// cost more than the rest of the id handling (issue 17's profile).
pub fn request_id(header: Option<&http::HeaderValue>) -> String {
    let usable = |v: &&http::HeaderValue| {
        let b = v.as_bytes();
        (1..=128).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
    };
    match header.filter(usable).and_then(|v| v.to_str().ok()) {
        Some(id) => id.to_owned(),
        None => new_request_id(),
    }
}

fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::LazyLock;
    static PREFIX: LazyLock<[u8; 6]> = LazyLock::new(|| {
        use aws_lc_rs::rand::SecureRandom;
        let mut bytes = [0u8; 6];
        // On failure the prefix is all zeros: ids stay unique in the process.
        let _ = aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes);
        bytes
    });
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(24);
    for b in PREFIX.iter().chain(&count[2..]) {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    id
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

#[cfg(test)]
mod tests {
    use super::request_id;

    #[test]
    fn new_request_ids_are_24_hex_digits_and_never_repeat() {
        let ids: Vec<String> = (0..1000).map(|_| request_id(None)).collect();
        assert!(ids
            .iter()
            .all(|id| id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit())));
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[test]
    fn a_usable_client_id_is_kept_and_an_unsafe_one_replaced() {
        let kept = http::HeaderValue::from_static("abc-123_x.y:z");
        assert_eq!(request_id(Some(&kept)), "abc-123_x.y:z");
        let unsafe_id = http::HeaderValue::from_static("a b");
        assert_ne!(request_id(Some(&unsafe_id)), "a b");
    }
}
