//! Logging: the tracing subscriber, in JSON or human-readable form.
//!
//! `RUST_LOG` overrides the configured level. Pingora's own `log` records are
//! routed into the same subscriber.

use crate::config::LogFormat;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; later calls are ignored (tests start
/// several gateways in one process). Lines go to stderr in batches (see
/// `Batch`); a panic writes out what is pending before its message.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a log file or collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| BatchedStderr);
    let installed = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    if installed.is_err() {
        tracing::debug!("a tracing subscriber was already installed");
        return;
    }
    BATCH.start_writer();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush_logs();
        previous(info);
    }));
}

/// Writes out every pending log line; called right before the process
/// exits (and on a panic).
pub fn flush_logs() {
    BATCH.write_out();
}

/// How often the writer thread writes out pending lines.
const WRITE_INTERVAL: Duration = Duration::from_millis(10);

/// Pending lines past which the logging thread writes them out itself
/// rather than wait for the writer thread: memory stays bounded and no
/// line is dropped.
const MAX_PENDING_BYTES: usize = 256 * 1024;

/// Log lines bound for stderr, collected and written out every
/// [`WRITE_INTERVAL`] in one `write`. Written one by one, each line cost a
/// `write(2)` on the proxy worker that logged it: at the default level the
/// audit line of every allowed call, 15-20 µs of CPU per call (issue 17).
/// A queue with a writer thread woken per line (tracing-appender) cost
/// more still: its receiver spins between lines.
struct Batch {
    pending: Mutex<Vec<u8>>,
    /// Held while a batch is written, so batches leave in order.
    output: Mutex<()>,
}

static BATCH: Batch = Batch {
    pending: Mutex::new(Vec::new()),
    output: Mutex::new(()),
};

impl Batch {
    fn push(&self, line: &[u8]) {
        let full = {
            let mut pending = lock(&self.pending);
            pending.extend_from_slice(line);
            pending.len() >= MAX_PENDING_BYTES
        };
        if full {
            self.write_out();
        }
    }

    /// Writes what is pending to stderr, in one call when it can.
    fn write_out(&self) {
        let _order = lock(&self.output);
        let batch = std::mem::take(&mut *lock(&self.pending));
        if !batch.is_empty() {
            // Nowhere to report a failing stderr: the lines are lost, as
            // they would be written one by one.
            let _ = std::io::stderr().lock().write_all(&batch);
        }
    }

    fn start_writer(&'static self) {
        let started = std::thread::Builder::new()
            .name("mcpgw-log-writer".into())
            .spawn(move || loop {
                std::thread::sleep(WRITE_INTERVAL);
                self.write_out();
            });
        if let Err(e) = started {
            // Lines still leave, each time MAX_PENDING_BYTES fill up and at
            // exit: say so where it is seen at once.
            let _ = writeln!(std::io::stderr(), "cannot start the log writer thread: {e}");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the subscriber writes each formatted line to.
struct BatchedStderr;

impl Write for BatchedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        BATCH.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
