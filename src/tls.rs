//! TLS material read from PEM files: the CA bundle and client certificate
//! an `https://` upstream is reached with, and the listener's own
//! certificate ([`ServerCertificate`]). Read by `check-config` (through
//! [`crate::config::Config::load`]) and again when the routes and the
//! listener are built, and checked here, so a bad file is an error naming
//! it, never a panic in the connector or the acceptor.

use crate::config::{ListenTls, UpstreamTls};
use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{
    install_default_crypto_provider, version, CertificateDer, ClientConfig, ClientHello,
    CryptoProvider, PrivateKeyDer, ResolvesServerCert, RootCertStore,
};
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What pingora's connector needs for one upstream, loaded.
pub struct UpstreamTlsMaterial {
    /// Trust anchors replacing the system's roots, when configured.
    pub ca: Option<Arc<[WrappedX509]>>,
    /// The client certificate chain and key (mTLS), when configured.
    pub client_cert: Option<Arc<CertKey>>,
}

/// A file that could not be used, and which setting named it.
#[derive(Debug)]
pub struct TlsFileError {
    /// The setting under `tls` (`ca_file`, `client_cert_file`, ...).
    pub field: &'static str,
    /// What is wrong, naming the file.
    pub problem: String,
}

impl UpstreamTlsMaterial {
    /// Reads and checks the files `tls` names.
    pub fn load(tls: &UpstreamTls) -> Result<Self, TlsFileError> {
        let ca = tls.ca_file.as_deref().map(load_ca).transpose()?;
        let client_cert = tls
            .client_cert
            .as_ref()
            .map(|c| load_client_cert(&c.cert_file, &c.key_file))
            .transpose()?;
        Ok(Self { ca, client_cert })
    }
}

/// The certificates of a CA bundle, each checked to be a usable trust
/// anchor.
fn load_ca(path: &Path) -> Result<Arc<[WrappedX509]>, TlsFileError> {
    let certs = read_certs(path, "ca_file")?;
    let mut store = RootCertStore::empty();
    for cert in &certs {
        store.add(cert.clone()).map_err(|e| TlsFileError {
            field: "ca_file",
            problem: format!("{}: not a usable CA certificate ({e})", path.display()),
        })?;
    }
    Ok(certs
        .iter()
        .map(|c| WrappedX509::new(c.to_vec(), parse_x509))
        .collect())
}

/// A certificate chain and its key, checked to belong together.
fn load_client_cert(cert_file: &Path, key_file: &Path) -> Result<Arc<CertKey>, TlsFileError> {
    let certs = read_certs(cert_file, "client_cert_file")?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsFileError {
        field: "client_key_file",
        problem: format!("{}: no private key read ({e})", key_file.display()),
    })?;
    install_default_crypto_provider();
    ClientConfig::builder_with_protocol_versions(&[&version::TLS12, &version::TLS13])
        .with_root_certificates(RootCertStore::empty())
        .with_client_auth_cert(certs.clone(), key.clone_key())
        .map_err(|e| TlsFileError {
            field: "client_key_file",
            problem: format!(
                "{} does not fit the certificate in {} ({e})",
                key_file.display(),
                cert_file.display()
            ),
        })?;
    let chain = certs.iter().map(|c| c.to_vec()).collect();
    Ok(Arc::new(CertKey::new(chain, key.secret_der().to_vec())))
}

/// Every `CERTIFICATE` block of a PEM file; at least one.
fn read_certs(
    path: &Path,
    field: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let failed = |problem: String| TlsFileError {
        field,
        problem: format!("{}: {problem}", path.display()),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| failed(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(e.to_string()))?;
    if certs.is_empty() {
        return Err(failed("no CERTIFICATE block found".to_owned()));
    }
    Ok(certs)
}

/// The listener's certificate chain and key: every handshake takes the one
/// current when it starts, and [`ServerCertificate::reload`] swaps in what
/// the files hold now, so a renewed certificate is served without a
/// restart while open connections and streams carry on.
pub struct ServerCertificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// What the two files held when last read.
    fingerprint: Mutex<Option<[u8; 32]>>,
}

impl ServerCertificate {
    /// Reads and checks the files `tls` names.
    pub fn load(tls: &ListenTls) -> Result<Self, TlsFileError> {
        // Taken before reading: files renewed in between are read again at
        // the next check.
        let fingerprint = files_fingerprint([tls.cert_file.as_path(), tls.key_file.as_path()]);
        let key = load_certified_key(&tls.cert_file, &tls.key_file)?;
        Ok(Self {
            fingerprint: Mutex::new(fingerprint),
            cert_file: tls.cert_file.clone(),
            key_file: tls.key_file.clone(),
            current: ArcSwap::from_pointee(key),
        })
    }

    /// Reads the files again when their content changed since the last
    /// read (always, with `force`) and serves them if they are usable;
    /// `Ok(true)` when a new certificate is served. Unusable files leave
    /// the current one in place; they are not read again until they change.
    pub fn reload(&self, force: bool) -> Result<bool, TlsFileError> {
        let now = files_fingerprint([self.cert_file.as_path(), self.key_file.as_path()]);
        {
            let mut seen = self.fingerprint.lock().expect("fingerprint lock");
            if !force && *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        let key = load_certified_key(&self.cert_file, &self.key_file)?;
        self.current.store(Arc::new(key));
        Ok(true)
    }
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl std::fmt::Debug for ServerCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCertificate")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish()
    }
}

/// The SHA-256 of the files' content, in order; `None` while one is
/// unreadable. What a reload compares to see whether key material changed.
pub fn files_fingerprint<'a>(files: impl IntoIterator<Item = &'a Path>) -> Option<[u8; 32]> {
    let mut h = Sha256::new();
    for file in files {
        h.update(std::fs::read(file).ok()?);
        h.update([0]);
    }
    Some(h.finalize().into())
}

/// The files an upstream's TLS settings name: CA bundle, client
/// certificate and key.
pub fn upstream_files(tls: &UpstreamTls) -> impl Iterator<Item = &Path> {
    let client = tls.client_cert.as_ref();
    tls.ca_file
        .as_deref()
        .into_iter()
        .chain(client.map(|c| c.cert_file.as_path()))
        .chain(client.map(|c| c.key_file.as_path()))
}

/// A server certificate chain and the key of its first certificate.
fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsFileError> {
    let certs = read_certs(cert_file, "cert_file")?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsFileError {
        field: "key_file",
        problem: format!("{}: no private key read ({e})", key_file.display()),
    })?;
    install_default_crypto_provider();
    let provider = CryptoProvider::get_default().ok_or_else(|| TlsFileError {
        field: "key_file",
        problem: "no TLS crypto provider is installed".to_owned(),
    })?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| TlsFileError {
        field: "key_file",
        problem: format!(
            "{} does not fit the certificate in {} ({e})",
            key_file.display(),
            cert_file.display()
        ),
    })
}
