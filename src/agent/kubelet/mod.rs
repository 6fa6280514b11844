//! The agent's kubelet endpoint (TLS, port 10250): what the API server proxies
//! `kubectl logs`, `exec`, `attach` and `port-forward` to, at upstream kubelet's paths
//! and with the wire protocols real kubectl speaks:
//!
//! - `GET /containerLogs/{ns}/{pod}/{container}` — CRI log files as plain text
//!   ([`logs`]);
//! - `/exec/{ns}/{pod}/{container}` and `/attach/...` — WebSocket
//!   `v5.channel.k8s.io` / `v4.channel.k8s.io` (kubectl ≥1.30) or SPDY/3.1 with
//!   `v4.channel.k8s.io` (older kubectl, and the fallback) ([`remote`], [`exec`],
//!   [`attach`]);
//! - `/portForward/{ns}/{pod}` — SPDY/3.1 `portforward.k8s.io`, directly or tunnelled
//!   through a WebSocket (`SPDY/3.1+portforward.k8s.io`, kubectl ≥1.31)
//!   ([`portforward`]);
//! - `GET /healthz`.
//!
//! Callers authenticate with a certificate from the client CA or a bearer token the API
//! server vouches for (TokenReview); `system:masters` (the API server's kubelet-client
//! identity) may do anything, others what a SubjectAccessReview on `nodes/<subresource>`
//! allows ([`auth`], [`server`]). Containers are found
//! by the labels the pod worker puts on them ([`crate::agent::layout`]).

pub mod attach;
pub mod auth;
pub mod containers;
pub mod exec;
pub mod logs;
pub mod portforward;
pub mod remote;
pub mod server;
pub mod spdy;
pub mod upgrade;
pub mod websocket;

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use server::{serve, serve_with_auth};

/// The group whose members may use the kubelet endpoint.
pub const ADMIN_GROUP: &str = "system:masters";

/// What failed in the kubelet endpoint.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The TLS material is unusable.
    #[error("kubelet TLS configuration: {0}")]
    Tls(String),
    /// A request that cannot be served; `message` is the text the client sees.
    #[error("{message}")]
    Request {
        status: http::StatusCode,
        message: String,
    },
    /// containerd failed.
    #[error("container runtime: {0}")]
    Runtime(#[from] crate::agent::runtime::Error),
}

impl KubeletError {
    /// A 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> KubeletError {
        KubeletError::Request {
            status: http::StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// A 404 with `message`.
    pub fn not_found(message: impl Into<String>) -> KubeletError {
        KubeletError::Request {
            status: http::StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> http::StatusCode {
        match self {
            KubeletError::Request { status, .. } => *status,
            KubeletError::Runtime(crate::agent::runtime::Error::NotFound(_)) => {
                http::StatusCode::NOT_FOUND
            }
            _ => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The endpoint's TLS configuration: our serving certificate (chain) and key, client
/// certificates verified against `client_ca_pem` (one or more PEM certificates) when
/// offered — bearer-token callers send none, and requests without either are a 401 —
/// ALPN http/1.1 only (upgrades need HTTP/1.1), ring provider.
pub fn tls_config(
    serving_cert_pem: &str,
    serving_key_pem: &str,
    client_ca_pem: &str,
) -> Result<rustls::ServerConfig, KubeletError> {
    let tls = |what: &str| {
        let what = what.to_string();
        move |e: &dyn std::fmt::Display| KubeletError::Tls(format!("{what}: {e}"))
    };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(serving_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| tls("serving certificate PEM")(&e))?;
    if chain.is_empty() {
        return Err(KubeletError::Tls(
            "serving certificate PEM holds no certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(serving_key_pem.as_bytes())
        .map_err(|e| tls("serving key PEM")(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| tls("client CA PEM")(&e))?;
        roots.add(ca).map_err(|e| tls("client CA")(&e))?;
    }
    if roots.is_empty() {
        return Err(KubeletError::Tls(
            "client CA PEM holds no certificate".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| tls("client certificate verifier")(&e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls("TLS versions")(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls("serving certificate and key")(&e))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}
