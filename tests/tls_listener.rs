//! TLS termination (issue 16 §2), through the real binary with a test CA:
//! HTTPS on `listen` over HTTP/1.1 and HTTP/2 (ALPN), SSE streamed over
//! both, TLS 1.2 and 1.3 only, and a certificate swapped on disk served to
//! new connections without a restart while a stream opened before the swap
//! carries on; and the official TypeScript SDK through the whole OAuth flow
//! over HTTPS.

mod common;

use common::binary::Binary;
use common::e2e::{ensure_setup, node22, run_client_with, Everything, OAuthGateway};
use common::idp::{Idp, TestKey};
use common::tls::{yaml_path, Issued, Pki, ServerCert};
use common::{await_metric, free_port, wait_for_port, Upstream};
use futures_util::StreamExt;
use reqwest::tls::Version as TlsVersion;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#;

struct Setup {
    upstream: Upstream,
    idp: Idp,
    key: TestKey,
    pki: Pki,
    cert: Issued,
    addr: SocketAddr,
    metrics_port: u16,
    gw: Binary,
}

impl Setup {
    /// The binary serving HTTPS (`http2` offered or not) with a
    /// certificate for `localhost` from a test CA.
    async fn start(http2: bool) -> Self {
        let key = TestKey::ec1();
        let idp = Idp::start(&[&key]).await;
        let upstream = Upstream::start().await;
        let pki = Pki::new("listener");
        let cert = pki.server(
            "gateway",
            ServerCert {
                names: &["localhost"],
                expired: false,
            },
        );
        let (port, metrics_port) = (free_port(), free_port());
        let yaml = format!(
            "public_url: https://localhost:{port}
listen: 127.0.0.1:{port}
server: {{ config_watch_interval: 200ms }}
metrics: {{ listen: '127.0.0.1:{metrics_port}' }}
tls: {{ cert_file: {cert}, key_file: {key_file}, http2: {http2} }}
auth:
  jwt_issuers: [{{ issuer: {iss} }}]
upstreams:
  - name: raw
    path: /raw
    url: http://{up}
    policy: {{ base_scopes: [mcp], unlisted_tools: base }}
",
            cert = yaml_path(&cert.cert_file),
            key_file = yaml_path(&cert.key_file),
            iss = idp.issuer,
            up = upstream.addr,
        );
        let gw = Binary::serve(&yaml, port).await;
        wait_for_port(format!("127.0.0.1:{metrics_port}").parse().unwrap()).await;
        Self {
            upstream,
            idp,
            key,
            pki,
            cert,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            metrics_port,
            gw,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// A client trusting only the test CA, reaching `localhost` at the
    /// gateway; `configure` narrows it (HTTP/1.1 only, TLS versions).
    fn client(
        &self,
        configure: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
    ) -> reqwest::Client {
        let ca =
            reqwest::Certificate::from_pem(&std::fs::read(self.pki.ca_file()).unwrap()).unwrap();
        configure(
            reqwest::Client::builder()
                .tls_certs_only([ca])
                .resolve("localhost", self.addr)
                .tls_info(true)
                .timeout(Duration::from_secs(30)),
        )
        .build()
        .unwrap()
    }

    fn token(&self) -> String {
        self.key
            .sign(&self.idp.claims("alice", &self.url("/raw"), "mcp"))
    }

    /// A `tools/call` through the gateway: status, HTTP version and the
    /// certificate the gateway presented.
    async fn call(&self, c: &reqwest::Client) -> (u16, reqwest::Version, Vec<u8>) {
        let resp = c
            .post(self.url("/raw/inspect"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .bearer_auth(self.token())
            .body(CALL)
            .send()
            .await
            .unwrap_or_else(|e| panic!("HTTPS call failed: {e:?}"));
        let cert = presented(&resp);
        let (status, version) = (resp.status().as_u16(), resp.version());
        let headers = format!("{:?}", resp.headers());
        let body = resp.text().await.unwrap();
        assert_eq!(
            status,
            200,
            "{version:?} {headers} {body}\n{}",
            self.gw.log()
        );
        (status, version, cert)
    }

    /// Waits until `mcpgw_tls_certificate_reloads_total{outcome}` is `n`.
    async fn await_certificate_reloads(&self, outcome: &str, n: u64) {
        let series = format!("mcpgw_tls_certificate_reloads_total{{outcome=\"{outcome}\"}}");
        await_metric(self.metrics_port, &series, n as f64, || self.gw.log()).await;
    }

    /// Replaces the certificate files with `next`'s, each by a rename.
    fn swap_in(&self, next: &Issued) {
        for (from, to) in [
            (&next.key_file, &self.cert.key_file),
            (&next.cert_file, &self.cert.cert_file),
        ] {
            let staged = to.with_extension("staged");
            std::fs::copy(from, &staged).unwrap();
            std::fs::rename(&staged, to).unwrap();
        }
    }
}

/// The DER of the certificate the server presented.
fn presented(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("TLS info")
        .to_vec()
}

/// Opens `/raw/held` (one event now, the next when the upstream releases
/// it) and returns the rest of the stream after the first event.
async fn open_held_stream(
    s: &Setup,
    c: &reqwest::Client,
) -> (
    reqwest::Version,
    impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>>,
) {
    let resp = c
        .get(s.url("/raw/held"))
        .header("accept", "text/event-stream")
        .bearer_auth(s.token())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let version = resp.version();
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: one"));
    (version, stream)
}

async fn rest_of(
    mut stream: impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
) -> String {
    let mut rest = String::new();
    while let Some(chunk) = stream.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http2_and_http11_and_streams_sse_over_both() {
    let s = Setup::start(true).await;
    let h2 = s.client(|b| b);
    let (_, version, cert) = s.call(&h2).await;
    assert_eq!(version, reqwest::Version::HTTP_2, "ALPN h2");
    assert_eq!(cert, s.cert.chain[0].to_vec());
    let h1 = s.client(|b| b.http1_only());
    assert_eq!(s.call(&h1).await.1, reqwest::Version::HTTP_11);

    let (v2, stream2) = open_held_stream(&s, &h2).await;
    let (v1, stream1) = open_held_stream(&s, &h1).await;
    assert_eq!(
        (v2, v1),
        (reqwest::Version::HTTP_2, reqwest::Version::HTTP_11)
    );
    s.upstream.release_held();
    for (stream, what) in [(Box::pin(stream2), "h2"), (Box::pin(stream1), "HTTP/1.1")] {
        let rest = rest_of(stream).await;
        assert!(rest.contains("event: two"), "{what} SSE: {rest:?}");
    }
    // Without http2 the listener offers only HTTP/1.1.
    let h1_only = Setup::start(false).await;
    assert_eq!(
        h1_only.call(&h1_only.client(|b| b)).await.1,
        reqwest::Version::HTTP_11
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tls_12_and_13_are_spoken() {
    let s = Setup::start(true).await;
    for version in [TlsVersion::TLS_1_2, TlsVersion::TLS_1_3] {
        let c = s.client(|b| b.tls_version_min(version).tls_version_max(version));
        assert_eq!(s.call(&c).await.0, 200, "{version:?}");
    }
    // OpenSSL can still offer TLS 1.1 (at security level 0): refused, while
    // the same command with TLS 1.2 gets through.
    let attempt = |flag: &str| {
        Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &s.addr.to_string(),
                "-servername",
                "localhost",
            ])
            .args([flag, "-cipher", "DEFAULT@SECLEVEL=0"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl (Debian's package) runs")
    };
    let old = attempt("-tls1_1");
    assert!(
        !old.status.success(),
        "a TLS 1.1 handshake succeeded: {}",
        String::from_utf8_lossy(&old.stdout)
    );
    let current = attempt("-tls1_2");
    assert!(
        current.status.success(),
        "openssl cannot reach the listener at all: {}",
        String::from_utf8_lossy(&current.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_certificate_is_served_without_a_restart_and_open_streams_survive() {
    let mut s = Setup::start(true).await;
    let before = s.client(|b| b);
    let (version, stream) = open_held_stream(&s, &before).await;
    assert_eq!(version, reqwest::Version::HTTP_2);

    let next = s.pki.server(
        "gateway-renewed",
        ServerCert {
            names: &["localhost"],
            expired: false,
        },
    );
    s.swap_in(&next);
    s.await_certificate_reloads("applied", 1).await;
    let (_, _, served) = s.call(&s.client(|b| b)).await;
    assert_eq!(
        served,
        next.chain[0].to_vec(),
        "new connections get the new one"
    );
    assert!(s.gw.running());
    s.upstream.release_held();
    let rest = rest_of(Box::pin(stream)).await;
    assert!(
        rest.contains("event: two"),
        "the open stream survived: {rest:?}"
    );

    // Unusable files are refused and the served certificate stays.
    std::fs::write(&s.cert.cert_file, "not a certificate").unwrap();
    s.await_certificate_reloads("invalid", 1).await;
    let (_, _, served) = s.call(&s.client(|b| b)).await;
    assert_eq!(served, next.chain[0].to_vec());
    assert!(
        s.gw.log().contains("TLS certificate reload refused"),
        "{}",
        s.gw.log()
    );
    // A fixed file is served again (SIGHUP also rereads the files).
    std::fs::copy(&next.cert_file, &s.cert.cert_file).unwrap();
    s.gw.signal("HUP");
    s.await_certificate_reloads("applied", 2).await;
    assert_eq!(s.call(&s.client(|b| b)).await.2, next.chain[0].to_vec());
}

/// The TypeScript SDK (2.x) through the whole flow against a gateway that
/// serves HTTPS itself: discovery, registration, login, token, calls,
/// step-up, refresh and revocation, all over TLS with the test CA trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_completes_oauth_over_https() {
    ensure_setup();
    let pki = Pki::new("sdk");
    let cert = pki.server(
        "gateway",
        ServerCert {
            names: &["127.0.0.1"],
            expired: false,
        },
    );
    let everything = Everything::start().await;
    let oauth = OAuthGateway::over_tls(&everything, &cert).await;
    let url = oauth.mcp_url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = pki.ca_file();
    let seen = run_client_with(
        node22(),
        ["ts_sdk_v2_oauth.mjs", &url, "alice", "pw"]
            .map(String::from)
            .to_vec(),
        &[("NODE_EXTRA_CA_CERTS", ca.as_os_str())],
    )
    .await;
    assert_eq!(seen["echo"], "Echo: hi", "{seen}");
    assert_eq!(seen["sum"], "The sum of 20 and 22 is 42.");
    assert_eq!(seen["stepUpAuthorizations"], 1);
    assert_eq!(seen["refreshed"], true);
    assert_eq!(seen["progress"].as_array().map(Vec::len), Some(3));
}
