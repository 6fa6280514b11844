//! Reading a kubeconfig (the current context's cluster and user; inline `-data` or file
//! references) into what [`super::ApiClient`] needs: the server URL split into host and
//! port, the CA to trust, and the client certificate.

use std::path::{Path, PathBuf};

use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("cannot read kubeconfig {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("kubeconfig {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("TLS setup for the API server: {0}")]
    Tls(String),
}

/// A resolved kubeconfig context. Holds private key material: never log it.
#[derive(Clone)]
pub struct Kubeconfig {
    /// `https://host:port`, no trailing slash.
    pub server: String,
    pub host: String,
    pub port: u16,
    pub server_name: ServerName<'static>,
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for Kubeconfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubeconfig")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Loads the current context of the kubeconfig at `path`.
pub fn load_kubeconfig(path: &Path) -> Result<Kubeconfig, KubeconfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| KubeconfigError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base).map_err(|message| KubeconfigError::Invalid {
        path: path.to_path_buf(),
        message,
    })
}

fn named<'a>(list: &'a Value, name: &str, field: &str) -> Option<&'a Value> {
    list.as_array()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
        .map(|e| &e[field])
}

fn data_or_file(obj: &Value, key: &str, base: &Path) -> Result<Vec<u8>, String> {
    use base64::Engine;
    if let Some(d) = obj[format!("{key}-data")].as_str() {
        return base64::engine::general_purpose::STANDARD
            .decode(d.trim())
            .map_err(|e| format!("{key}-data is not base64: {e}"));
    }
    if let Some(f) = obj[key].as_str() {
        let p = base.join(f);
        return std::fs::read(&p).map_err(|e| format!("{key} {}: {e}", p.display()));
    }
    Err(format!("no {key} or {key}-data"))
}

fn parse(text: &str, base: &Path) -> Result<Kubeconfig, String> {
    let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let context_name = doc["current-context"].as_str().unwrap_or_default();
    let context = if context_name.is_empty() {
        doc["contexts"][0]["context"].clone()
    } else {
        named(&doc["contexts"], context_name, "context")
            .cloned()
            .ok_or_else(|| format!("context {context_name:?} not found"))?
    };
    let cluster = match context["cluster"].as_str() {
        Some(n) => named(&doc["clusters"], n, "cluster").cloned(),
        None => doc["clusters"][0].get("cluster").cloned(),
    }
    .ok_or("no cluster")?;
    let user = match context["user"].as_str() {
        Some(n) => named(&doc["users"], n, "user").cloned(),
        None => doc["users"][0].get("user").cloned(),
    }
    .ok_or("no user")?;
    let server = cluster["server"]
        .as_str()
        .ok_or("cluster has no server")?
        .trim_end_matches('/')
        .to_string();
    let rest = server
        .strip_prefix("https://")
        .ok_or_else(|| format!("server {server:?} is not an https:// URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) =
        split_host_port(authority).ok_or_else(|| format!("server {server:?} has no valid host"))?;
    let server_name =
        ServerName::try_from(host.clone()).map_err(|e| format!("server host {host:?}: {e}"))?;
    Ok(Kubeconfig {
        server,
        host,
        port,
        server_name,
        ca_pem: data_or_file(&cluster, "certificate-authority", base)?,
        cert_pem: data_or_file(&user, "client-certificate", base)?,
        key_pem: data_or_file(&user, "client-key", base)?,
    })
}

fn split_host_port(authority: &str) -> Option<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => 443,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => Some((h.to_string(), p.parse().ok()?)),
        _ if !authority.is_empty() => Some((authority.to_string(), 443)),
        _ => None,
    }
}

impl Kubeconfig {
    /// rustls client configuration: trust exactly the kubeconfig's CA, present its
    /// client certificate, speak h2.
    pub fn tls_config(&self) -> Result<rustls::ClientConfig, KubeconfigError> {
        let tls = |e: String| KubeconfigError::Tls(e);
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca_pem) {
            let cert = cert.map_err(|e| tls(format!("CA certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| tls(format!("CA certificate: {e}")))?;
        }
        let chain = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls(format!("client certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| tls(format!("client key: {e}")))?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls(format!("client certificate: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_split() {
        assert_eq!(
            split_host_port("127.0.0.1:6443"),
            Some(("127.0.0.1".into(), 6443))
        );
        assert_eq!(split_host_port("[::1]:6443"), Some(("::1".into(), 6443)));
        assert_eq!(
            split_host_port("k3rs.local"),
            Some(("k3rs.local".into(), 443))
        );
        assert_eq!(split_host_port(""), None);
    }

    #[test]
    fn parses_inline_kubeconfig() {
        let text = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0E=\n    server: https://127.0.0.1:6443/\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nusers:\n- name: default\n  user:\n    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n";
        let k = parse(text, Path::new("/")).expect("parse");
        assert_eq!(k.server, "https://127.0.0.1:6443");
        assert_eq!(k.port, 6443);
        assert_eq!(k.ca_pem, b"CA");
        assert_eq!(k.cert_pem, b"CERT");
        assert_eq!(k.key_pem, b"KEY");
        let err =
            parse(&text.replace("https://", "http://"), Path::new("/")).expect_err("http refused");
        assert!(err.contains("not an https:// URL"), "{err}");
    }
}
