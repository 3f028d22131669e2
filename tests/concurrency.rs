//! Correctness under concurrency, through the real binary: many keep-alive
//! connections sending requests back to back (and pipelined), against
//! upstreams of different speeds. Every request must get its own answer on
//! its own connection; a lost byte is a request-desync defect (issue 11.1).

mod common;

use common::binary::Binary;
use common::http1::{post, Conn};
use common::*;
use std::time::Duration;

fn tools_call(id: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"request {id}"}}}}}}"#
    )
}

/// The `id` of the one JSON-RPC message in a JSON or SSE body.
fn response_id(content_type: &str, body: &str) -> Option<u64> {
    rpc_messages(content_type, body)
        .first()
        .and_then(|m| m["id"].as_u64())
}

/// What went wrong on one connection, if anything.
async fn run_connection(
    addr: std::net::SocketAddr,
    path: String,
    first_id: u64,
    requests: u64,
    pipelined: bool,
) -> Vec<String> {
    let mut conn = Conn::open(addr).await;
    let mut failures = Vec::new();
    let step = if pipelined { 2 } else { 1 };
    let mut id = first_id;
    while id < first_id + requests {
        let ids: Vec<u64> = (id..id + step).collect();
        let mut bytes = Vec::new();
        for i in &ids {
            bytes.extend(post(&path, &tools_call(*i), ""));
        }
        conn.send(&bytes).await;
        for i in &ids {
            match conn.read_response().await {
                Ok(r) => {
                    let ct = r.header("content-type").unwrap_or("").to_owned();
                    let got = response_id(&ct, &r.text());
                    if r.status != 200 || got != Some(*i) || r.header("connection") == Some("close")
                    {
                        failures.push(format!(
                            "request {i}: {} {:?} {}",
                            r.status,
                            r.header("connection"),
                            r.text()
                        ));
                    }
                }
                Err(e) => {
                    failures.push(format!("request {i}: {e}"));
                    return failures;
                }
            }
        }
        id += step;
    }
    failures
}

/// `connections` keep-alive connections, each sending `requests` POSTs one
/// after the other (two per write when `pipelined`); returns every failure.
async fn load(
    addr: std::net::SocketAddr,
    path: &str,
    connections: u64,
    requests: u64,
    pipelined: bool,
) -> Vec<String> {
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            tokio::spawn(run_connection(
                addr,
                path.to_owned(),
                c * requests,
                requests,
                pipelined,
            ))
        })
        .collect();
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    failures
}

async fn gateway_binary(upstream: &Upstream) -> Binary {
    let port = free_port();
    let yaml = format!(
        "{}server: {{ worker_threads: 2 }}\n",
        config_yaml(port, upstream.addr, "", "")
    );
    Binary::serve(&yaml, port).await
}

fn assert_no_failures(what: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{what}: {} failed requests, first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_posts_keep_every_byte_at_every_upstream_speed() {
    let up = Upstream::start().await;
    let gw = gateway_binary(&up).await;
    for pace in ["instant", "1ms", "jitter", "sse"] {
        let failures = load(gw.addr, &format!("/raw/paced/{pace}"), 16, 150, false).await;
        assert_no_failures(pace, &failures);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_posts_each_get_their_own_answer_in_order() {
    let up = Upstream::start().await;
    let gw = gateway_binary(&up).await;
    for pace in ["instant", "1ms", "jitter", "sse"] {
        let failures = load(gw.addr, &format!("/raw/paced/{pace}"), 8, 60, true).await;
        assert_no_failures(pace, &failures);
    }
}

/// An upstream that answers any request with an SSE head and one event,
/// then stays quiet; it reports (once) when the gateway closes the
/// connection.
async fn quiet_sse_upstream() -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = vec![0; 8192];
        let _ = socket.read(&mut buf).await.unwrap();
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\nd\r\ndata: first\n\n\r\n")
            .await
            .unwrap();
        while !matches!(socket.read(&mut buf).await, Ok(0) | Err(_)) {}
        let _ = closed_tx.send(());
    });
    (addr, closed_rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_a_quiet_post_stream_closes_the_upstream_request() {
    let (upstream, closed) = quiet_sse_upstream().await;
    let port = free_port();
    let yaml = format!(
        "public_url: http://127.0.0.1:{port}\nlisten: 127.0.0.1:{port}\nauth: {{ disabled: true }}\n\
         upstreams:\n  - {{ name: quiet, path: /quiet/mcp, url: 'http://{upstream}/mcp' }}\n"
    );
    let gw = Binary::serve(&yaml, port).await;
    let mut conn = Conn::open(gw.addr).await;
    conn.send(&post("/quiet/mcp", &tools_call(1), "")).await;
    conn.read_until("data: first").await.unwrap();
    drop(conn);
    // The upstream sends nothing more: the gateway must notice the client
    // leaving by itself, and close the upstream connection.
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the upstream connection is still open 5 s after the client left")
        .unwrap();
}

/// What a one-shot raw upstream does with each connection it accepts.
#[derive(Clone, Copy)]
enum Accepted {
    /// Closes without reading: the request is left unread (a reset).
    CloseUnread,
    /// Reads the whole request, then closes without answering (a FIN).
    ReadThenClose,
    /// Reads the request and answers with a JSON-RPC result.
    Answer,
}

/// An upstream that treats its connections in the order given (then
/// answers), counting the requests it read in full.
async fn scripted_upstream(
    script: Vec<Accepted>,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let read_in_full = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = read_in_full.clone();
    tokio::spawn(async move {
        let mut script = script.into_iter();
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let what = script.next().unwrap_or(Accepted::Answer);
            let counter = counter.clone();
            tokio::spawn(async move {
                if let Accepted::CloseUnread = what {
                    // Let the request arrive, unread, so the close resets.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return;
                }
                loop {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.ends_with(b"}}}") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    if let Accepted::ReadThenClose = what {
                        return;
                    }
                    let body = br#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(body).await;
                }
            });
        }
    });
    (addr, read_in_full)
}

async fn gateway_for(upstream: std::net::SocketAddr) -> Binary {
    let port = free_port();
    let yaml = format!(
        "public_url: http://127.0.0.1:{port}\nlisten: 127.0.0.1:{port}\nauth: {{ disabled: true }}\n\
         upstreams:\n  - {{ name: scripted, path: /s/mcp, url: 'http://{upstream}/mcp' }}\n"
    );
    Binary::serve(&yaml, port).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_the_upstream_reset_unread_is_sent_again_on_a_new_connection() {
    let (upstream, read_in_full) = scripted_upstream(vec![Accepted::CloseUnread]).await;
    let gw = gateway_for(upstream).await;
    let mut conn = Conn::open(gw.addr).await;
    conn.send(&post("/s/mcp", &tools_call(1), "")).await;
    let r = conn.read_response().await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(read_in_full.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_the_upstream_read_before_closing_is_never_sent_twice() {
    let (upstream, read_in_full) = scripted_upstream(vec![Accepted::ReadThenClose]).await;
    let gw = gateway_for(upstream).await;
    let mut conn = Conn::open(gw.addr).await;
    conn.send(&post("/s/mcp", &tools_call(1), "")).await;
    let r = conn.read_response().await.unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(read_in_full.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// The data segments `socket` has received so far (Linux `TCP_INFO`).
fn data_segments_in(socket: &tokio::net::TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    // SAFETY: `tcp_info` is plain integers, for which all zeroes is a value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the socket is open for the call, and `info` and `len` are
    // live and describe the buffer the kernel writes.
    let got = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::from_mut(&mut info).cast(),
            &mut len,
        )
    };
    assert_eq!(got, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_data_segs_in
}

/// An upstream that reads each request in full (head and `Content-Length`
/// body), sends how many TCP data segments it arrived in, and answers.
async fn segment_counting_upstream() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<u32>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = vec![0u8; 65536];
                // Counted when a request is read in full: the next one is
                // sent only once this one is answered.
                let mut counted = 0;
                loop {
                    let full = loop {
                        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head =
                                String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                            let length: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse().unwrap());
                            if request.len() >= end + 4 + length {
                                break end + 4 + length;
                            }
                        }
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    };
                    request.drain(..full);
                    let now = data_segments_in(&socket);
                    let _ = tx.send(now - counted);
                    counted = now;
                    let body = br#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = socket.write_all(&[answer.as_bytes(), body].concat()).await;
                }
            });
        }
    });
    (addr, rx)
}

/// Issue 17: a forwarded POST leaves as one write, head and body together
/// (pingora flushes them apart), so the upstream is woken once per call.
/// Loopback's MSS (64 KiB) holds each request here in one segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_post_reaches_the_upstream_in_one_segment() {
    let (upstream, mut segments) = segment_counting_upstream().await;
    let gw = gateway_for(upstream).await;
    let mut conn = Conn::open(gw.addr).await;
    let large = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{}"}}}}}}"#,
        "x".repeat(16 * 1024)
    );
    for body in [tools_call(1), large, tools_call(3)] {
        conn.send(&post("/s/mcp", &body, "")).await;
        let r = conn.read_response().await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let arrived_in = segments.recv().await.unwrap();
        assert_eq!(
            arrived_in,
            1,
            "a {}-byte body arrived in {arrived_in} segments",
            body.len()
        );
    }
}

/// Issue 11.6: a client that leaves before the upstream answers is a client
/// disconnect (its own metric), never an upstream failure: the upstream-down
/// alert counts `mcpgw_upstream_errors_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_leaving_early_are_disconnects_not_upstream_errors() {
    let up = Upstream::start().await;
    let port = free_port();
    let (gw, metrics_port) =
        Binary::serve_with_metrics(&config_yaml(port, up.addr, "", ""), port).await;
    // /raw/slow answers after 3 s; each client gives up after 100 ms.
    let get = b"GET /raw/slow HTTP/1.1\r\nHost: gw\r\nAccept: text/event-stream\r\n\r\n".to_vec();
    let post_slow = post("/raw/slow", &tools_call(1), "");
    for request in [get, post_slow] {
        let mut conn = Conn::open(gw.addr).await;
        conn.send(&request).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(conn);
    }
    // Both are counted as soon as the gateway notices (at once, but on a
    // loaded machine give it time); the upstream's own timeout is 700 ms.
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let mut metrics = get_text(&metrics_url).await;
    for _ in 0..30 {
        if metrics.contains("mcpgw_client_disconnects_total{upstream=\"raw\"} 2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        metrics = get_text(&metrics_url).await;
    }
    assert!(
        !metrics.contains("mcpgw_upstream_errors_total{"),
        "a client leaving is not an upstream error:\n{metrics}"
    );
    assert!(
        metrics.contains("mcpgw_client_disconnects_total{upstream=\"raw\"} 2"),
        "{metrics}"
    );
}
