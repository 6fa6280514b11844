//! The HTTPS client a joining agent uses before it has credentials of its own: one HTTP/1.1
//! request per connection, trusting either nothing yet (only to download `/cacerts`, whose
//! hash is then checked against the token) or exactly the pinned cluster CA, optionally with
//! the node's existing client certificate (renewal without a token).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer accepted (certificates and small JSON).
const MAX_ANSWER: usize = 1024 * 1024;

/// A transport failure (the server was not reached, or TLS failed).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

/// `https://host[:port]` split up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUrl {
    /// The URL as given, without a trailing slash.
    pub url: String,
    /// Host name or address (no brackets).
    pub host: String,
    /// Port (default 6443, k3s's).
    pub port: u16,
}

impl ServerUrl {
    /// Parses `https://host[:port][/]`.
    pub fn parse(s: &str) -> Result<ServerUrl, String> {
        let s = s.trim().trim_end_matches('/');
        let rest = s
            .strip_prefix("https://")
            .ok_or_else(|| format!("server URL {s:?} must start with https://"))?;
        if rest.is_empty() || rest.contains('/') || rest.contains('@') {
            return Err(format!("server URL {s:?} must be https://<host>[:<port>]"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("server URL {s:?}: unclosed [ in the address"))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("server URL {s:?}: invalid port"))?,
            None => 6443,
        };
        if host.is_empty() {
            return Err(format!("server URL {s:?} has no host"));
        }
        Ok(ServerUrl {
            url: s.to_string(),
            host,
            port,
        })
    }
}

/// Who the client trusts and how it identifies itself.
pub enum Trust<'a> {
    /// Any server certificate (only to download the CA bundle before checking its hash).
    Unverified,
    /// Exactly these CA certificates (PEM), optionally presenting a client certificate.
    Pinned {
        /// The CA bundle.
        ca_pem: &'a [u8],
        /// Client certificate chain and key (PEM).
        client: Option<(&'a [u8], &'a [u8])>,
    },
}

fn tls_config(trust: &Trust<'_>) -> Result<rustls::ClientConfig, TransportError> {
    let err = |m: String| TransportError(m);
    let provider = crate::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?;
    let mut cfg = match trust {
        Trust::Unverified => builder
            .dangerous()
            .with_custom_certificate_verifier(crate::tls::SkipServerVerification::new(provider))
            .with_no_client_auth(),
        Trust::Pinned { ca_pem, client } => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca_pem) {
                let cert = cert.map_err(|e| err(format!("CA bundle: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| err(format!("CA bundle: {e}")))?;
            }
            if roots.is_empty() {
                return Err(err("the CA bundle holds no certificate".into()));
            }
            let b = builder.with_root_certificates(roots);
            match client {
                None => b.with_no_client_auth(),
                Some((cert, key)) => {
                    let chain = CertificateDer::pem_slice_iter(cert)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| err(format!("client certificate: {e}")))?;
                    let key = PrivateKeyDer::from_pem_slice(key)
                        .map_err(|e| err(format!("client key: {e}")))?;
                    b.with_client_auth_cert(chain, key)
                        .map_err(|e| err(format!("client certificate: {e}")))?
                }
            }
        }
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Sends one request; returns the status and body.
pub async fn request(
    server: &ServerUrl,
    trust: &Trust<'_>,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: Vec<u8>,
) -> Result<(StatusCode, Bytes), TransportError> {
    let cfg = tls_config(trust)?;
    let fut = async {
        let tcp = tokio::net::TcpStream::connect((server.host.as_str(), server.port))
            .await
            .map_err(|e| TransportError(e.to_string()))?;
        let name = ServerName::try_from(server.host.clone())
            .map_err(|_| TransportError(format!("{:?} is not a valid host name", server.host)))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(|e| TransportError(format!("TLS handshake: {e}")))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| TransportError(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(
                http::header::HOST,
                format!("{}:{}", server.host, server.port),
            )
            .header(
                http::header::USER_AGENT,
                format!("k3rs-agent/{}", crate::version::git_version()),
            );
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| TransportError(e.to_string()))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| TransportError(e.to_string()))?;
        let status = resp.status();
        let bytes = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| TransportError(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok((status, bytes))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .map_err(|_| TransportError("timed out".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let u = ServerUrl::parse("https://10.0.0.1:6443/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("10.0.0.1", 6443));
        assert_eq!(u.url, "https://10.0.0.1:6443");
        let u = ServerUrl::parse("https://k3rs.lan").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("k3rs.lan", 6443));
        let u = ServerUrl::parse("https://[fd00::1]:7443").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fd00::1", 7443));
        for bad in [
            "http://x:6443",
            "https://",
            "https://x:0",
            "https://x:abc",
            "https://x/p",
        ] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
