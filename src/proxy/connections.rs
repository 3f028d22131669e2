//! Limits on client connections, before pingora parses anything: at most
//! `max_connections_per_address` open connections per client address, and
//! a request head that, once its first byte has arrived, must be complete
//! within `header_timeout`.
//!
//! Pingora times each read of a request head separately (60 s), so a client
//! sending one byte every few seconds (slowloris) held its connection
//! forever (issue 11.6: 200 such connections stayed open for 150 s). The
//! head deadline lives in [`HeadDeadline`], a transport wrapper around each
//! accepted connection: reads during a head fail once the deadline passes,
//! and pingora closes the connection. The proxy marks the head complete in
//! its first phase and the next head as started when a request ends; the
//! wait between keep-alive requests stays bounded by pingora's keep-alive
//! timeout. The body has its own total deadline (`proxy::body`).

use crate::metrics::metrics;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The configured limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time from a request head's first byte to its end.
    pub header_timeout: Duration,
    /// Open connections per client address; 0: unlimited.
    pub max_per_address: usize,
}

/// A pingora application behind the connection limits.
pub struct Limited<A> {
    inner: Arc<A>,
    limits: ConnectionLimits,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl<A> Limited<A> {
    /// Puts `inner` behind `limits`.
    pub fn new(inner: A, limits: ConnectionLimits) -> Self {
        Self {
            inner: Arc::new(inner),
            limits,
            open: Mutex::default(),
        }
    }

    /// Takes one connection slot of `ip`, or `None` when it has none left.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot<A>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_default();
        if self.limits.max_per_address > 0 && *count >= self.limits.max_per_address {
            return None;
        }
        *count += 1;
        Some(Slot {
            owner: self.clone(),
            ip,
        })
    }
}

/// One open connection of an address, given back when dropped.
struct Slot<A> {
    owner: Arc<Limited<A>>,
    ip: IpAddr,
}

impl<A> Drop for Slot<A> {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Counts a connection the gateway closed for one of its limits.
fn count_closed(reason: &str) {
    metrics()
        .connections_closed
        .with_label_values(&[reason])
        .inc();
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Limited<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let _slot = match ip.map(|ip| (ip, self.admit(ip))) {
            Some((_, Some(slot))) => Some(slot),
            Some((ip, None)) => {
                count_closed("address_limit");
                tracing::warn!(%ip, limit = self.limits.max_per_address, "connection refused: too many open connections from this address");
                refuse_connection(&mut stream).await;
                return None;
            }
            None => None,
        };
        // HTTP/2 (ALPN h2) multiplexes heads as frames: the head deadline
        // is an HTTP/1 rule.
        let http1 = !matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        let guarded: Stream =
            Box::new(HeadDeadline::new(stream, self.limits.header_timeout, http1));
        self.inner.process_new(guarded, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// The answer to a connection over the per-address limit; nothing of it
/// has been read.
async fn refuse_connection(stream: &mut Stream) {
    use tokio::io::AsyncWriteExt;
    let body = r#"{"error":"too_many_connections","error_description":"too many open connections from this address; close some and retry"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A client connection whose request heads must arrive within a deadline.
#[derive(Debug)]
pub struct HeadDeadline {
    inner: Stream,
    timeout: Duration,
    /// Whether a request head is being read (set between requests, cleared
    /// once the proxy has the head).
    awaiting_head: AtomicBool,
    /// Armed at the first byte of a head.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl HeadDeadline {
    fn new(inner: Stream, timeout: Duration, http1: bool) -> Self {
        Self {
            inner,
            timeout,
            awaiting_head: AtomicBool::new(http1),
            deadline: None,
        }
    }

    fn of(session: &Session) -> Option<&Self> {
        session
            .downstream_session
            .stream()?
            .as_any()
            .downcast_ref::<Self>()
    }

    /// The proxy has this request's head: its deadline no longer applies.
    pub fn head_complete(session: &Session) {
        if let Some(conn) = Self::of(session) {
            conn.awaiting_head.store(false, Ordering::Release);
        }
    }

    /// The request is over: the next bytes are a new head (HTTP/1 only:
    /// an HTTP/2 session has no transport of its own here).
    pub fn request_done(session: &Session) {
        if let Some(conn) = Self::of(session) {
            conn.awaiting_head.store(true, Ordering::Release);
        }
    }
}

impl HeadDeadline {
    /// The error that ends a connection whose head came too slowly.
    fn too_slow(&self) -> io::Error {
        count_closed("header_timeout");
        tracing::info!(timeout = ?self.timeout, "request head not complete in time; closing the connection");
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("request head not complete within {:?}", self.timeout),
        )
    }
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.awaiting_head.load(Ordering::Acquire) {
            this.deadline = None;
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if this.deadline.as_ref().is_some_and(|d| d.is_elapsed()) {
            return Poll::Ready(Err(this.too_slow()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        match (&read, &mut this.deadline) {
            (Poll::Ready(Ok(())), None) if buf.filled().len() > before => {
                let at = Instant::now() + this.timeout;
                this.deadline = Some(Box::pin(tokio::time::sleep_until(at)));
                read
            }
            // Polling the deadline registers its wakeup while the client is
            // quiet.
            (Poll::Pending, Some(deadline)) => match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(this.too_slow())),
                Poll::Pending => Poll::Pending,
            },
            _ => read,
        }
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeadDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for HeadDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadDeadline {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for HeadDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.inner.set_socket_digest(socket_digest);
    }
}

#[async_trait]
impl Peek for HeadDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
