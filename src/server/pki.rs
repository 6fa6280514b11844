//! The cluster's certificates: CAs, serving and admin certificates. (Being written.)

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::IpAddr;
use std::path::Path;

/// What goes into the serving certificate's subject alternative names.
#[derive(Clone, Debug, Default)]
pub struct Sans {
    /// DNS names (hostname, --tls-san names, kubernetes.default.svc.<domain>, ...).
    pub dns: Vec<String>,
    /// IP addresses (127.0.0.1, ::1, node/advertise IP, first service IP, --tls-san IPs).
    pub ips: Vec<IpAddr>,
}

/// Errors creating or loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A certificate or key could not be generated or parsed.
    #[error("{0}")]
    Cert(String),
}

/// The loaded PKI of a server.
pub struct Pki {
    /// PEM of the server CA certificate (what clients trust; served at /cacerts).
    pub server_ca_pem: String,
    /// Serving certificate chain (leaf first).
    pub serving_chain: Vec<CertificateDer<'static>>,
    /// Serving key.
    pub serving_key: PrivateKeyDer<'static>,
    /// Client CA certificates that authenticate client certificates.
    pub client_ca: Vec<CertificateDer<'static>>,
    /// Admin client certificate (CN=system:admin, O=system:masters), PEM.
    pub admin_cert_pem: String,
    /// Admin client key, PEM.
    pub admin_key_pem: String,
}

/// Loads the PKI from `tls_dir`, creating what is missing. (Stub.)
pub fn ensure(_tls_dir: &Path, _sans: &Sans) -> Result<Pki, PkiError> {
    Err(PkiError::Cert("not implemented".into()))
}

/// rustls config for the API listener: serving cert, optional client certs verified
/// against the client CA, ALPN h2 and http/1.1. (Stub.)
pub fn server_tls_config(_pki: &Pki) -> Result<rustls::ServerConfig, PkiError> {
    Err(PkiError::Cert("not implemented".into()))
}

/// Admin kubeconfig YAML for `server_url` (e.g. https://127.0.0.1:6443). (Stub.)
pub fn admin_kubeconfig(_server_url: &str, _pki: &Pki) -> String {
    String::new()
}

/// The user (CN) and groups (O) of a client certificate. (Stub.)
pub fn client_identity(_cert_der: &[u8]) -> Option<(String, Vec<String>)> {
    None
}

/// Writes a file atomically with `mode`, creating the parent directory. (Stub.)
pub fn write_private(_path: &Path, _bytes: &[u8], _mode: u32) -> std::io::Result<()> {
    Ok(())
}
