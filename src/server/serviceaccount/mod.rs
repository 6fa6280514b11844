//! Service accounts: the `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap in
//! every namespace ([`controller`]), the token signer ([`jwt`]), the bearer-token
//! authenticator for service-account JWTs ([`authn`]), the TokenRequest subresource
//! (`kubectl create token`, [`token_request`]), the ServiceAccount admission that mounts a
//! projected token into pods ([`admission`]), and the CertificateSigningRequest API's
//! approval and signers ([`csr`]).

pub mod admission;
pub mod authn;
pub mod controller;
pub mod csr;
pub mod jwt;
pub mod token_request;

use crate::server::registry::Registry;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use jwt::{JwtError, TokenSigner, API_AUDIENCES, ISSUER};

/// What the API handlers need for tokens and CSRs.
pub struct ServiceAccounts {
    /// Signs and verifies service-account tokens.
    pub signer: Arc<TokenSigner>,
    /// The store.
    pub registry: Registry,
    /// The server's tls directory (the CAs that sign approved CSRs).
    pub tls_dir: PathBuf,
}

impl ServiceAccounts {
    /// Loads (or creates) the signing key under `tls_dir`.
    pub fn new(registry: Registry, tls_dir: &Path) -> Result<ServiceAccounts, JwtError> {
        Ok(ServiceAccounts {
            signer: Arc::new(TokenSigner::load_or_create(tls_dir)?),
            registry,
            tls_dir: tls_dir.to_path_buf(),
        })
    }

    /// The bearer-token authenticator to register with the API's authentication chain.
    pub fn authenticator(&self) -> Arc<authn::JwtAuthenticator> {
        Arc::new(authn::JwtAuthenticator::new(
            self.signer.clone(),
            self.registry.clone(),
        ))
    }
}

/// `system:serviceaccount:<ns>:<name>`.
pub fn user_name(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}
