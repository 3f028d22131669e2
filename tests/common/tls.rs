//! TLS for the upstream tests: a private CA (rcgen) that issues server and
//! client certificates into a temporary directory, and the test upstream
//! (`super::upstream_app`) served over TLS by rustls.

use super::upstream_app;
use axum::serve::Listener;
use pingora::tls::{
    CertificateDer, PrivateKeyDer, RootCertStore, ServerConfig, TlsAcceptor, WebPkiClientVerifier,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls_pki_types::PrivatePkcs8KeyDer;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A private certificate authority with its files in a directory of its
/// own (removed on drop).
pub struct Pki {
    pub dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate the CA issued, with its key.
pub struct Issued {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// How a server certificate is made.
pub struct ServerCert<'a> {
    /// Its subject alternative names.
    pub names: &'a [&'a str],
    /// Valid only in 2020 (long expired).
    pub expired: bool,
}

impl Pki {
    pub fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "mcpgw-pki-{label}-{}-{}",
            std::process::id(),
            super::free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("test CA {label}"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Self { dir, ca }
    }

    /// The CA certificate (PEM), as an upstream's `ca_file`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The CA as a root store (for a server verifying client certificates).
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        roots
    }

    /// A server certificate for `cert.names`.
    pub fn server(&self, file: &str, cert: ServerCert<'_>) -> Issued {
        let mut params =
            CertificateParams::new(cert.names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if cert.expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        self.issue(file, params)
    }

    /// A client certificate for `name` (mTLS).
    pub fn client(&self, file: &str, name: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(file, params)
    }

    fn issue(&self, file: &str, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let cert_file = self.dir.join(format!("{file}.pem"));
        let key_file = self.dir.join(format!("{file}.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        Issued {
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            cert_file,
            key_file,
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How the TLS upstream serves.
pub struct TlsServing<'a> {
    pub cert: &'a Issued,
    /// Require a client certificate issued by this CA.
    pub client_ca: Option<&'a Pki>,
    /// Offer HTTP/2 by ALPN (HTTP/1.1 always).
    pub http2: bool,
}

/// The test upstream (demo MCP server and raw routes) over TLS.
pub struct TlsUpstream {
    pub addr: SocketAddr,
    /// Every request received, as `METHOD /path`.
    pub seen: Arc<Mutex<Vec<String>>>,
    shutdown: CancellationToken,
}

impl TlsUpstream {
    pub async fn start(serving: TlsServing<'_>) -> Self {
        pingora::tls::install_default_crypto_provider();
        let builder = ServerConfig::builder();
        let builder = match serving.client_ca {
            Some(pki) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder(Arc::new(pki.roots()))
                    .build()
                    .unwrap(),
            ),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(serving.cert.chain.clone(), serving.cert.key.clone_key())
            .unwrap();
        config.alpn_protocols = if serving.http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let app = upstream_app(&seen, &shutdown, &CancellationToken::new());
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        };
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled_owned().await })
                .await
                .unwrap();
        });
        Self {
            addr,
            seen,
            shutdown,
        }
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Accepts TCP connections and completes their TLS handshakes; a failed
/// handshake (the gateway refusing the certificate) is skipped.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl Listener for TlsListener {
    type Io = pingora::tls::ServerTlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            let handshake = self.acceptor.accept(tcp);
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), handshake).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// YAML for an upstream `name` at `https://127.0.0.1:<port><path>`, with
/// `tls` as its TLS settings (a flow mapping's inside).
pub fn https_upstream_yaml(name: &str, addr: SocketAddr, path: &str, tls: &str) -> String {
    format!(
        "  - name: {name}
    path: /{name}
    url: https://{addr}{path}
    tls: {{ {tls} }}
"
    )
}

/// `path` as a YAML scalar.
pub fn yaml_path(path: &Path) -> String {
    format!("'{}'", path.display())
}
