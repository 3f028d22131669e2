//! TLS material read from PEM files: the CA bundle and client certificate
//! an `https://` upstream is reached with. Read by `check-config` (through
//! [`crate::config::Config::load`]) and again when the routes are built,
//! and checked here, so a bad file is an error naming it, never a panic in
//! the connector.

use crate::config::UpstreamTls;
use pingora::tls::{
    install_default_crypto_provider, version, CertificateDer, ClientConfig, PrivateKeyDer,
    RootCertStore,
};
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
use rustls_pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;

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
