//! The floor `bench/run.sh` measures the gateway against: pingora's own
//! proxy loop forwarding every request to one HTTP/1.1 upstream, with
//! nothing of the gateway's (no routing, body check, auth, metrics or logs).
//! Whatever the gateway costs above this is the gateway's own work.
//!
//!   cargo run --release --example bare_pingora -- <listen> <upstream> [threads]
//!   e.g. bare_pingora 127.0.0.1:18100 127.0.0.1:18099 1

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use std::sync::Arc;

/// The gateway's allocator, so the floor differs from it only in the work.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Forwards everything to `upstream` over pooled keep-alive connections.
struct Forward {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Forward {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            &*self.upstream,
            false,
            String::new(),
        )))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, upstream) = match &args[..] {
        [listen, upstream, ..] => (listen.clone(), upstream.clone()),
        _ => panic!("usage: bare_pingora <listen> <upstream> [threads]"),
    };
    let threads = args
        .get(2)
        .map_or(1, |t| t.parse().expect("threads is a number"));
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&Arc::clone(&server.configuration), Forward { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
