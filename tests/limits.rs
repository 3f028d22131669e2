//! Limits on what one client may send and hold open, through the real
//! binary (issue 11.6): request heads that trickle in, bodies that never
//! finish, too many connections from one address, oversized heads.

mod common;

use common::binary::Binary;
use common::http1::{post, Conn};
use common::*;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

/// A gateway with tight limits and a metrics listener; returns it and the
/// metrics port.
async fn limited_gateway(up: &Upstream, limits: &str) -> (Binary, u16) {
    let port = free_port();
    let yaml = format!(
        "{}limits: {{ {limits} }}\n",
        config_yaml(port, up.addr, "", "")
    );
    Binary::serve_with_metrics(&yaml, port).await
}

/// Sends `head` one byte every 100 ms; returns how long until the gateway
/// closed the connection (or `None` if it never did within 10 s).
async fn trickle(addr: std::net::SocketAddr, head: &[u8]) -> Option<Duration> {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    for byte in head.iter().cycle() {
        if socket.write_all(&[*byte]).await.is_err() {
            return Some(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(10) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_that_trickle_in_are_cut_off_at_the_header_timeout() {
    let up = Upstream::start().await;
    let (gw, metrics_port) = limited_gateway(&up, "header_timeout: 1s").await;
    let head = b"POST /raw/inspect HTTP/1.1\r\nHost: gw\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let slow: Vec<_> = (0..20)
        .map(|_| tokio::spawn(trickle(gw.addr, head)))
        .collect();
    for conn in slow {
        let closed_after = conn
            .await
            .unwrap()
            .expect("a trickling client was never cut off");
        assert!(
            closed_after < Duration::from_secs(4),
            "closed after {closed_after:?}"
        );
    }
    assert!(
        metric(
            metrics_port,
            "mcpgw_connections_closed_total{reason=\"header_timeout\"}"
        )
        .await
            >= 20.0
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_timeout_spares_idle_keepalive_and_long_streams() {
    let up = Upstream::start().await;
    let (gw, _) = limited_gateway(&up, "header_timeout: 1s").await;
    let mut conn = Conn::open(gw.addr).await;
    for _ in 0..2 {
        conn.send(&post("/raw/inspect", PING, "")).await;
        assert_eq!(conn.read_response().await.unwrap().status, 200);
        // Idle between requests is not head time.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    // An SSE stream with a 1.5 s quiet gap outlives the header timeout.
    conn.send(b"GET /raw/sse-gap HTTP/1.1\r\nHost: gw\r\nAccept: text/event-stream\r\n\r\n")
        .await;
    let stream = conn.read_response().await.unwrap();
    assert!(stream.text().contains("data: 2"), "{}", stream.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_finishes_gets_408() {
    let up = Upstream::start().await;
    let (gw, metrics_port) = limited_gateway(&up, "body_timeout: 1s").await;
    let mut conn = Conn::open(gw.addr).await;
    let started = Instant::now();
    conn.send(b"POST /raw/inspect HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\"").await;
    let r = conn.read_response().await.unwrap();
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(r.text().contains("not received within"), "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(
        metric(
            metrics_port,
            "mcpgw_connections_closed_total{reason=\"body_timeout\"}"
        )
        .await,
        1.0
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_address_cap_get_503_and_are_closed() {
    let up = Upstream::start().await;
    let (gw, metrics_port) = limited_gateway(&up, "max_connections_per_address: 4").await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut conn = Conn::open(gw.addr).await;
        conn.send(&post("/raw/inspect", PING, "")).await;
        assert_eq!(conn.read_response().await.unwrap().status, 200);
        held.push(conn);
    }
    let mut fifth = Conn::open(gw.addr).await;
    let refused = fifth.read_response().await.unwrap();
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.text().contains("too_many_connections"));
    assert!(fifth.closed_within(Duration::from_secs(2)).await);
    assert_eq!(
        metric(
            metrics_port,
            "mcpgw_connections_closed_total{reason=\"address_limit\"}"
        )
        .await,
        1.0
    );
    // A slot given back is usable again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = Conn::open(gw.addr).await;
    again.send(&post("/raw/inspect", PING, "")).await;
    assert_eq!(again.read_response().await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431_and_are_never_forwarded() {
    let up = Upstream::start().await;
    let (gw, _) = limited_gateway(&up, "max_header_bytes: 4096").await;
    for (size, status) in [(3000, 200), (5000, 431), (64 * 1024, 431)] {
        let mut conn = Conn::open(gw.addr).await;
        let header = format!("X-Big: {}\r\n", "b".repeat(size));
        conn.send(&post("/raw/inspect", PING, &header)).await;
        let r = conn.read_response().await.unwrap();
        assert_eq!(r.status, status, "{size}: {}", r.text());
        if status == 431 {
            assert!(
                r.text()
                    .contains("request head exceeds the limit of 4096 bytes"),
                "{}",
                r.text()
            );
        }
    }
    assert_eq!(
        up.count(),
        1,
        "only the head within the limit reached the upstream"
    );
}

/// The authorization server's endpoints read their bodies under the same
/// deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_authorization_server_request_gets_408() {
    let up = Upstream::start().await;
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("mcpgw-limits-{}-{port}", std::process::id()));
    let yaml = format!(
        "public_url: http://127.0.0.1:{port}\nlisten: 127.0.0.1:{port}\nlimits: {{ body_timeout: 1s }}\n\
         authorization_server: {{ data_dir: '{}' }}\n\
         upstreams:\n  - {{ name: demo, path: /demo/mcp, url: 'http://{}/mcp', scopes: [mcp] }}\n",
        dir.display(),
        up.addr
    );
    let gw = Binary::serve(&yaml, port).await;
    let mut conn = Conn::open(gw.addr).await;
    conn.send(b"POST /token HTTP/1.1\r\nHost: gw\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\ngrant_type=").await;
    let r = conn.read_response().await.unwrap();
    assert_eq!(r.status, 408, "{}", r.text());
    let _ = std::fs::remove_dir_all(&dir);
}
