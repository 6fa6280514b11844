//! TLS client settings for the connections from the API server to kubelets
//! ([`KubeletClient`]): the
//! `client-kube-apiserver` certificate, HTTP/1.1 only (upgrades need it), and either a check
//! of the kubelet's serving certificate against the server CA or, for logs requested with
//! `insecureSkipTLSVerifyBackend`, no check of it at all.

use crate::server::pki::{Pki, PkiError};
use crate::tls::provider;
use rustls::pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// TLS client settings for connections to kubelets.
pub struct KubeletClient {
    /// Verifies the kubelet against the server CA; presents `client-kube-apiserver`.
    pub(super) verified: Arc<rustls::ClientConfig>,
    /// For `insecureSkipTLSVerifyBackend=true` on logs: same client certificate, no check
    /// of the kubelet's certificate (upstream offers this for kubelets with broken certs).
    pub(super) insecure: Arc<rustls::ClientConfig>,
}

impl KubeletClient {
    /// Builds the TLS settings from the server's PKI (server CA, kubelet client certificate).
    pub fn new(pki: &Pki) -> Result<KubeletClient, PkiError> {
        let chain = CertificateDer::pem_slice_iter(pki.kubelet_client_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PkiError::Cert(format!("kubelet client certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(pki.kubelet_client_key_pem.as_bytes())
            .map_err(|e| PkiError::Cert(format!("kubelet client key: {e}")))?;
        let ca = CertificateDer::from_pem_slice(pki.server_ca_pem.as_bytes())
            .map_err(|e| PkiError::Cert(format!("server CA: {e}")))?;
        Ok(KubeletClient {
            verified: Arc::new(verified(ca, chain.clone(), key.clone_key())?),
            insecure: Arc::new(insecure(chain, key)?),
        })
    }
}

fn finish(
    builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ClientConfig, PkiError> {
    let mut cfg = builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| PkiError::Cert(format!("kubelet client certificate: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Trusts kubelets whose serving certificate the server CA signed.
pub(super) fn verified(
    server_ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ClientConfig, PkiError> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(server_ca)
        .map_err(|e| PkiError::Cert(format!("server CA: {e}")))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Cert(format!("TLS versions: {e}")))?
        .with_root_certificates(roots);
    finish(builder, chain, key)
}

/// Accepts any kubelet certificate (the handshake signature is still checked).
pub(super) fn insecure(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ClientConfig, PkiError> {
    let verifier = crate::tls::SkipServerVerification::new(provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Cert(format!("TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    finish(builder, chain, key)
}
