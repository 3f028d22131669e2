//! A recording front proxy for the end-to-end tests: clients talk to it,
//! it relays every request to the gateway unchanged (responses stream
//! through, SSE included) and keeps one line per exchange: method, URL,
//! status, the `WWW-Authenticate` challenge and, for errors, a body
//! excerpt. When a test fails, the exchanges are printed, whichever client
//! (TypeScript, Python, Rust, Inspector, browser) made them.
//!
//! It also stands for the TLS-terminating load balancer of a real
//! deployment: the gateway's `public_url` is the relay's address. Like
//! one, it re-frames HTTP/1.1 (its own connections, chunking and lengths),
//! so the clients whose scripts record their own exchanges talk to the
//! gateway directly. In front of several replicas (`start_balancing`) it
//! sends each request to the next one in turn (round robin, whatever
//! connection the request came on), skipping a replica that refuses the
//! connection, as a balancer's health checks would; each line says which
//! replica answered (`@0`, `@1`, ...).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Requests are small JSON-RPC messages and forms; the gateway applies its
/// own limits behind this one.
const MAX_REQUEST_BYTES: usize = 16 << 20;
const BODY_EXCERPT_CHARS: usize = 300;

/// Hop-by-hop headers (RFC 9110 section 7.6.1): a proxy does not forward
/// them; content-length is set again for the body it sends.
const NOT_RELAYED: [&str; 8] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

struct Shared {
    replicas: Vec<SocketAddr>,
    next: std::sync::atomic::AtomicUsize,
    http: reqwest::Client,
    exchanges: Mutex<Vec<String>>,
}

/// The relay: `addr` is where clients connect.
pub struct Relay {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: tokio_util::sync::CancellationToken,
}

impl Relay {
    /// Binds the relay now (so its address can go into the gateway's
    /// config); it relays to `gateway` once `start` is called.
    pub async fn bind() -> (tokio::net::TcpListener, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    pub fn start(listener: tokio::net::TcpListener, gateway: SocketAddr) -> Self {
        Self::start_balancing(listener, vec![gateway])
    }

    /// Relays each request to the next of `replicas` in turn.
    pub fn start_balancing(listener: tokio::net::TcpListener, replicas: Vec<SocketAddr>) -> Self {
        let addr = listener.local_addr().unwrap();
        // In front of replicas, a connection per request: a pooled one to
        // a replica killed meanwhile would fail the request instead of
        // being refused at connect, which is what skips a dead replica.
        let pool = if replicas.len() > 1 { 0 } else { usize::MAX };
        let shared = Arc::new(Shared {
            replicas,
            next: std::sync::atomic::AtomicUsize::new(0),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(pool)
                .build()
                .unwrap(),
            exchanges: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(relay)
            .with_state(shared.clone());
        let stop = tokio_util::sync::CancellationToken::new();
        let cancelled = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(cancelled.cancelled_owned())
                .await
        });
        Self { addr, shared, stop }
    }

    /// Every exchange so far, one line each.
    pub fn exchanges(&self) -> Vec<String> {
        self.shared.exchanges.lock().unwrap().clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
        if std::thread::panicking() {
            eprintln!(
                "HTTP exchanges through the gateway ({}):\n{}",
                self.addr,
                self.exchanges().join("\n")
            );
        }
    }
}

/// The replica an exchange line says answered (`@<n>` after the status).
pub fn replica_of(line: &str) -> Option<usize> {
    let (_, after) = line.split_once(" @")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

async fn relay(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let shown = parts.uri.to_string();
    let record = |line: String| shared.exchanges.lock().unwrap().push(line);
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST_BYTES).await else {
        record(format!(
            "{} {shown} -> relay refused: body over {MAX_REQUEST_BYTES} bytes",
            parts.method
        ));
        return Response::builder().status(413).body(Body::empty()).unwrap();
    };
    let n = shared.replicas.len();
    let first = shared
        .next
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut answered = None;
    for i in (first..first + n).map(|i| i % n) {
        let target = format!(
            "http://{}{}",
            shared.replicas[i],
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        );
        let mut out = shared
            .http
            .request(parts.method.clone(), &target)
            .body(body.clone());
        for (name, value) in &parts.headers {
            if !NOT_RELAYED.contains(&name.as_str()) {
                out = out.header(name, value);
            }
        }
        match out.send().await {
            Ok(resp) => {
                answered = Some((i, resp));
                break;
            }
            Err(e) if e.is_connect() && i != (first + n - 1) % n => {}
            Err(e) => {
                record(format!("{} {shown} -> relay error: {e}", parts.method));
                return Response::builder().status(502).body(Body::empty()).unwrap();
            }
        }
    }
    let (replica, resp) = answered.expect("a replica answered or the loop returned");
    let status = resp.status();
    let mut line = format!("{} {shown} -> {}", parts.method, status.as_u16());
    if n > 1 {
        line += &format!(" @{replica}");
    }
    if let Some(challenge) = resp.headers().get("www-authenticate") {
        line += &format!(" [{}]", String::from_utf8_lossy(challenge.as_bytes()));
    }
    let mut back = Response::builder().status(status);
    for (name, value) in resp.headers() {
        if !NOT_RELAYED.contains(&name.as_str()) {
            back = back.header(name, value);
        }
    }
    if status.as_u16() >= 400 {
        let bytes = resp.bytes().await.unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        line += &format!(
            " {}",
            text.chars().take(BODY_EXCERPT_CHARS).collect::<String>()
        );
        record(line);
        return back.body(Body::from(bytes)).unwrap();
    }
    record(line);
    back.body(Body::from_stream(resp.bytes_stream())).unwrap()
}
