//! Joining a cluster with a token (`k3rs agent --server URL --token T`), following k3s's agent
//! bootstrap: download `/cacerts` and check its SHA-256 against the token's CA hash before
//! trusting anything, fetch `/v1-k3rs/config` and the CA certificates, create the node password
//! (`/etc/k3rs/node/password`, 0600), generate the node's keys locally (they never leave it),
//! have the server sign CSRs for the kubelet client and serving certificates, and write the
//! same files the agent embedded in `k3rs server` gets under `<data-dir>/agent`.
//!
//! Later starts with valid certificates need no token; certificates that expire within 90
//! days are renewed at start, authenticated by the token or, without one, by the node's
//! current client certificate. Every file is written only once everything was fetched, so a
//! refused join leaves nothing behind in the data directory.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

#[path = "join_http.rs"]
pub mod http_client;
use http_client::{request, ServerUrl, Trust};

use crate::server::join::token::{parse_join_token, Credential, JoinToken};
use crate::server::join::{ClusterConfig, NODE_IP_HEADER, NODE_NAME_HEADER, NODE_PASSWORD_HEADER};
use crate::server::pki::{
    write_private, AGENT_CLIENT_CA, AGENT_CLIENT_KUBELET, AGENT_KUBECONFIG, AGENT_SERVER_CA,
    AGENT_SERVING_KUBELET,
};

/// Where the cluster settings fetched at join are kept, under the agent directory.
pub const CLUSTER_CONFIG_FILE: &str = "cluster-config.json";
/// Where `--with-node-id`'s suffix is kept, under the agent directory.
pub const NODE_ID_FILE: &str = "node-id";
/// The default node password file (k3s: /etc/rancher/node/password).
pub const DEFAULT_PASSWORD_FILE: &str = "/etc/k3rs/node/password";
/// Certificates closer than this to expiry are renewed at start.
const RENEW_BEFORE_SECS: i64 = 90 * 86400;

/// k3s's message when the downloaded CA does not match the token.
pub const CA_MISMATCH: &str = "token CA hash does not match the Cluster CA certificate hash";

/// Why joining failed. Each message is one line that says what to do; none holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The token or server URL is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The node has no certificates and no token was given.
    #[error(
        "this node has not joined a cluster yet: pass --token (or K3RS_TOKEN, or --token-file) \
         with the server's token"
    )]
    NoToken,
    /// The server could not be reached.
    #[error("cannot reach the server at {url}: {message}; check --server and that the server is running")]
    Unreachable {
        /// The server URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// The CA the server presents is not the one the token names.
    #[error("{CA_MISMATCH}: the server at {url} is not the cluster this token belongs to (or the token was altered)")]
    CaMismatch {
        /// The server URL.
        url: String,
    },
    /// The server refused the credentials.
    #[error("the server at {url} rejected the token (wrong, expired or deleted): check --token")]
    Unauthorized {
        /// The server URL.
        url: String,
    },
    /// The server refused the node password, or the request.
    #[error("{0}")]
    Forbidden(String),
    /// Any other answer.
    #[error("the server at {url} answered {code} to {path}: {message}")]
    Server {
        /// The server URL.
        url: String,
        /// The request path.
        path: String,
        /// HTTP status.
        code: u16,
        /// The server's message.
        message: String,
    },
    /// A local file could not be read or written.
    #[error("{0}")]
    Local(String),
}

/// What `k3rs agent` needs to join (or confirm it has joined).
#[derive(Clone)]
pub struct JoinOptions {
    /// `--server`.
    pub server: String,
    /// `--token` (or its file / env); never logged.
    pub token: Option<String>,
    /// The node name before any `--with-node-id` suffix.
    pub node_name: String,
    /// `--with-node-id`: append a random id kept in `<agent-dir>/node-id`.
    pub with_node_id: bool,
    /// The node's addresses (serving certificate SANs).
    pub node_ips: Vec<IpAddr>,
    /// `<data-dir>/agent`.
    pub agent_dir: PathBuf,
    /// The node password file.
    pub password_file: PathBuf,
}

impl std::fmt::Debug for JoinOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinOptions")
            .field("server", &self.server)
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

/// The outcome of [`ensure_joined`].
#[derive(Clone, Debug)]
pub struct Joined {
    /// The node name to register (with the `--with-node-id` suffix).
    pub node_name: String,
    /// `<agent-dir>/kubelet.kubeconfig`.
    pub kubeconfig: PathBuf,
    /// The cluster settings the server gave (None when unknown: files from an older version).
    pub cluster: Option<ClusterConfig>,
}

/// Joins the cluster unless the node already holds valid certificates for it, renewing them
/// when they expire within 90 days.
pub async fn ensure_joined(opts: &JoinOptions) -> Result<Joined, JoinError> {
    let server = ServerUrl::parse(&opts.server).map_err(JoinError::Invalid)?;
    let token = match opts
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        Some(t) => Some(parse_join_token(t).map_err(|e| JoinError::Invalid(e.to_string()))?),
        None => None,
    };
    let dir = &opts.agent_dir;
    let (node_id, node_id_is_new) = match opts.with_node_id {
        false => (None, false),
        true => match std::fs::read_to_string(dir.join(NODE_ID_FILE)) {
            Ok(id) if !id.trim().is_empty() => (Some(id.trim().to_string()), false),
            _ => (Some(random_hex(4)?), true),
        },
    };
    let node_name = match &node_id {
        Some(id) => format!("{}-{id}", opts.node_name),
        None => opts.node_name.clone(),
    };
    let joined = Joined {
        node_name: node_name.clone(),
        kubeconfig: dir.join(AGENT_KUBECONFIG),
        cluster: read_cluster_config(dir),
    };
    let mut state = existing_state(dir, &node_name);
    let marker = dir.join(crate::cli::certificate::ROTATE_MARKER);
    if state == Existing::Valid && marker.exists() {
        state = Existing::Renew;
    }
    if state == Existing::Valid {
        return Ok(joined);
    }
    let (trust_pem, credential) = match (&token, state) {
        (Some(t), _) => (
            verify_ca(&server, t).await?,
            Auth::Token(t.credential.clone()),
        ),
        (None, Existing::Renew) => {
            tracing::info!("renewing the kubelet certificates (rotation asked for, or they expire within 90 days)");
            let ca = read(dir, AGENT_SERVER_CA)?;
            let cert = read(dir, &format!("{AGENT_CLIENT_KUBELET}.crt"))?;
            let key = read(dir, &format!("{AGENT_CLIENT_KUBELET}.key"))?;
            (ca, Auth::Cert { cert, key })
        }
        (None, _) => return Err(JoinError::NoToken),
    };
    let session = Session {
        server: &server,
        ca_pem: trust_pem.as_bytes(),
        auth: &credential,
    };
    let cluster_json = session.get("config").await?;
    let cluster: ClusterConfig = serde_json::from_slice(&cluster_json).map_err(|e| {
        JoinError::Invalid(format!(
            "the server's /v1-k3rs/config is not understood: {e}"
        ))
    })?;
    let client_ca = session.get("client-ca.crt").await?;
    let server_ca = session.get("server-ca.crt").await?;
    let password = ensure_password(&opts.password_file)?;

    let mut headers = HeaderMap::new();
    let hv = |s: &str| {
        HeaderValue::from_str(s)
            .map_err(|_| JoinError::Invalid(format!("{s:?} cannot be sent in a header")))
    };
    headers.insert(NODE_NAME_HEADER, hv(&node_name)?);
    headers.insert(NODE_PASSWORD_HEADER, hv(&password)?);
    let ips: Vec<String> = opts.node_ips.iter().map(|ip| ip.to_string()).collect();
    if !ips.is_empty() {
        headers.insert(NODE_IP_HEADER, hv(&ips.join(","))?);
    }
    let client_key = generate_key()?;
    let client_csr = csr(&client_key, &format!("system:node:{node_name}"))?;
    let client_pem = session
        .post("client-kubelet.crt", &headers, client_csr)
        .await?;
    let serving_key = generate_key()?;
    let serving_csr = csr(&serving_key, &node_name)?;
    let serving_pem = session
        .post("serving-kubelet.crt", &headers, serving_csr)
        .await?;

    let text = |b: &[u8], what: &str| {
        String::from_utf8(b.to_vec())
            .map_err(|_| JoinError::Invalid(format!("the server's {what} is not PEM text")))
    };
    let server_ca = text(&server_ca, "server CA")?;
    let client_pem = text(&client_pem, "client certificate")?;
    let client_key_pem = client_key.serialize_pem();
    let kubeconfig =
        crate::server::pki::node_kubeconfig(&server.url, &server_ca, &client_pem, &client_key_pem);
    let mut files: Vec<(String, Vec<u8>, u32)> = vec![
        (AGENT_SERVER_CA.into(), server_ca.into_bytes(), 0o644),
        (AGENT_CLIENT_CA.into(), client_ca.to_vec(), 0o644),
        (
            format!("{AGENT_CLIENT_KUBELET}.crt"),
            client_pem.into_bytes(),
            0o644,
        ),
        (
            format!("{AGENT_CLIENT_KUBELET}.key"),
            client_key_pem.into_bytes(),
            0o600,
        ),
        (
            format!("{AGENT_SERVING_KUBELET}.crt"),
            serving_pem.to_vec(),
            0o644,
        ),
        (
            format!("{AGENT_SERVING_KUBELET}.key"),
            serving_key.serialize_pem().into_bytes(),
            0o600,
        ),
        (AGENT_KUBECONFIG.into(), kubeconfig.into_bytes(), 0o600),
        (CLUSTER_CONFIG_FILE.into(), cluster_json.to_vec(), 0o644),
    ];
    if let (Some(id), true) = (&node_id, node_id_is_new) {
        files.push((NODE_ID_FILE.into(), format!("{id}\n").into_bytes(), 0o644));
    }
    write_all(dir, &files)?;
    let _ = std::fs::remove_file(&marker);
    tracing::info!(node = %node_name, server = %server.url, "joined the cluster: kubelet certificates written");
    Ok(Joined {
        cluster: Some(cluster),
        ..joined
    })
}

/// One request to `/v1-k3rs/<what>` of the server `token` belongs to, like k3s's CLI
/// talking to its supervisor: the CA is verified against the token first, then the request
/// is authenticated with it. Returns the answer's body (errors say what the server said).
pub async fn token_request(
    server: &str,
    token: &str,
    method: Method,
    what: &str,
    body: Vec<u8>,
) -> Result<bytes::Bytes, JoinError> {
    let server = ServerUrl::parse(server).map_err(JoinError::Invalid)?;
    let token = parse_join_token(token).map_err(|e| JoinError::Invalid(e.to_string()))?;
    let ca = verify_ca(&server, &token).await?;
    let auth = Auth::Token(token.credential.clone());
    let session = Session {
        server: &server,
        ca_pem: ca.as_bytes(),
        auth: &auth,
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    session.send(method, what, &headers, body).await
}

/// The credentials of the bootstrap requests.
enum Auth {
    Token(Credential),
    Cert { cert: String, key: String },
}

/// Requests to `/v1-k3rs/*`, pinned to the cluster CA.
struct Session<'a> {
    server: &'a ServerUrl,
    ca_pem: &'a [u8],
    auth: &'a Auth,
}

impl Session<'_> {
    async fn get(&self, what: &str) -> Result<bytes::Bytes, JoinError> {
        self.send(Method::GET, what, &HeaderMap::new(), Vec::new())
            .await
    }

    async fn post(
        &self,
        what: &str,
        headers: &HeaderMap,
        body: String,
    ) -> Result<bytes::Bytes, JoinError> {
        self.send(Method::POST, what, headers, body.into_bytes())
            .await
    }

    async fn send(
        &self,
        method: Method,
        what: &str,
        extra: &HeaderMap,
        body: Vec<u8>,
    ) -> Result<bytes::Bytes, JoinError> {
        use base64::Engine;
        let path = format!("{}{what}", crate::server::join::PREFIX);
        let mut headers = extra.clone();
        let client = match self.auth {
            Auth::Token(Credential::Basic { user, secret }) => {
                let b64 =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
                let v = HeaderValue::from_str(&format!("Basic {b64}")).map_err(|_| {
                    JoinError::Invalid("the token cannot be sent in a header".into())
                })?;
                headers.insert(http::header::AUTHORIZATION, v);
                None
            }
            Auth::Token(Credential::Bootstrap(b)) => {
                let v = HeaderValue::from_str(&format!("Bearer {}", b.text())).map_err(|_| {
                    JoinError::Invalid("the token cannot be sent in a header".into())
                })?;
                headers.insert(http::header::AUTHORIZATION, v);
                None
            }
            Auth::Cert { cert, key } => Some((cert.as_bytes(), key.as_bytes())),
        };
        let trust = Trust::Pinned {
            ca_pem: self.ca_pem,
            client,
        };
        let (code, bytes) = request(self.server, &trust, method, &path, &headers, body)
            .await
            .map_err(|e| JoinError::Unreachable {
                url: self.server.url.clone(),
                message: e.0,
            })?;
        match code {
            c if c.is_success() => Ok(bytes),
            StatusCode::UNAUTHORIZED => Err(JoinError::Unauthorized {
                url: self.server.url.clone(),
            }),
            StatusCode::FORBIDDEN => Err(JoinError::Forbidden(status_message(&bytes))),
            c => Err(JoinError::Server {
                url: self.server.url.clone(),
                path,
                code: c.as_u16(),
                message: status_message(&bytes),
            }),
        }
    }
}

/// The `message` of a Status answer, or the text.
fn status_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| {
            String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(300)
                .collect()
        })
}

/// k3s's CA verification: download `/cacerts` without trusting anything, check its hash
/// against the token (when it has one), then fetch it again pinned to the downloaded bundle
/// to prove the server's certificate chains to it. Returns the bundle.
async fn verify_ca(server: &ServerUrl, token: &JoinToken) -> Result<String, JoinError> {
    let unreachable = |message: String| JoinError::Unreachable {
        url: server.url.clone(),
        message,
    };
    let none = HeaderMap::new();
    let (code, bundle) = request(
        server,
        &Trust::Unverified,
        Method::GET,
        "/cacerts",
        &none,
        vec![],
    )
    .await
    .map_err(|e| unreachable(e.0))?;
    if !code.is_success() || bundle.is_empty() {
        return Err(unreachable(format!(
            "GET /cacerts answered {code}: is this a k3rs server?"
        )));
    }
    let bundle = String::from_utf8(bundle.to_vec())
        .map_err(|_| unreachable("/cacerts did not return PEM text".into()))?;
    let hash = crate::server::bootstrap::ca_hash(&bundle);
    match &token.ca_hash {
        Some(want)
            if !crate::server::bootstrap::constant_time_eq(want.as_bytes(), hash.as_bytes()) =>
        {
            return Err(JoinError::CaMismatch {
                url: server.url.clone(),
            })
        }
        Some(_) => {}
        None => tracing::warn!(
            "the token has no CA hash: trusting the server's CA without verification; use the \
             full K10<hash>::... token from the server to pin it"
        ),
    }
    let trust = Trust::Pinned {
        ca_pem: bundle.as_bytes(),
        client: None,
    };
    request(server, &trust, Method::GET, "/cacerts", &none, vec![])
        .await
        .map_err(|e| {
            unreachable(format!(
                "the server's certificate does not chain to its own CA bundle ({})",
                e.0
            ))
        })?;
    Ok(bundle)
}

/// What the agent directory holds already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Existing {
    /// Nothing usable: a token is needed.
    Missing,
    /// Valid certificates for this node, good for more than 90 days.
    Valid,
    /// Certificates for this node that expire within 90 days (or whose serving cert is gone).
    Renew,
}

fn existing_state(dir: &Path, node_name: &str) -> Existing {
    let required = [
        AGENT_KUBECONFIG.to_string(),
        AGENT_SERVER_CA.into(),
        AGENT_CLIENT_CA.into(),
        format!("{AGENT_CLIENT_KUBELET}.key"),
    ];
    if required.iter().any(|f| !dir.join(f).exists()) {
        return Existing::Missing;
    }
    let now = jiff::Timestamp::now().as_second();
    let client = cert_info(&dir.join(format!("{AGENT_CLIENT_KUBELET}.crt")));
    match client {
        Some((cn, not_after)) if cn == format!("system:node:{node_name}") && not_after > now => {
            let serving = cert_info(&dir.join(format!("{AGENT_SERVING_KUBELET}.crt")));
            let serving_ok =
                serving.is_some_and(|(cn, na)| cn == node_name && na > now + RENEW_BEFORE_SECS);
            if not_after > now + RENEW_BEFORE_SECS && serving_ok {
                Existing::Valid
            } else {
                Existing::Renew
            }
        }
        _ => Existing::Missing,
    }
}

/// (subject CN, notAfter as Unix seconds) of a PEM certificate file.
pub fn cert_info(path: &Path) -> Option<(String, i64)> {
    let pem = std::fs::read(path).ok()?;
    let der = CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or_default()
        .to_string();
    Some((cn, cert.validity().not_after.timestamp()))
}

fn read_cluster_config(dir: &Path) -> Option<ClusterConfig> {
    let bytes = std::fs::read(dir.join(CLUSTER_CONFIG_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn read(dir: &Path, name: &str) -> Result<String, JoinError> {
    let p = dir.join(name);
    std::fs::read_to_string(&p).map_err(|e| JoinError::Local(format!("{}: {e}", p.display())))
}

/// Reads the node password, creating it (16 random bytes, hex; file 0600, directory 0700).
fn ensure_password(path: &Path) -> Result<String, JoinError> {
    let local = |e: String| JoinError::Local(format!("node password {}: {e}", path.display()));
    match std::fs::read_to_string(path) {
        Ok(p) if !p.trim().is_empty() => return Ok(p.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(local(e.to_string())),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| local(e.to_string()))?;
        }
    }
    let pw = random_hex(16)?;
    write_private(path, format!("{pw}\n").as_bytes(), 0o600).map_err(|e| local(e.to_string()))?;
    Ok(pw)
}

fn random_hex(n: usize) -> Result<String, JoinError> {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| JoinError::Local("no randomness available".into()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn generate_key() -> Result<KeyPair, JoinError> {
    KeyPair::generate().map_err(|e| JoinError::Local(format!("generating the node key: {e}")))
}

fn csr(key: &KeyPair, cn: &str) -> Result<String, JoinError> {
    let bad = |e: rcgen::Error| JoinError::Local(format!("building a certificate request: {e}"));
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(bad)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.serialize_request(key).map_err(bad)?.pem().map_err(bad)
}

/// Writes every file (each atomically). When one fails, the files this call created are
/// removed again, so a failed join leaves no half-written set behind.
fn write_all(dir: &Path, files: &[(String, Vec<u8>, u32)]) -> Result<(), JoinError> {
    let mut created = Vec::new();
    let fresh_dir = !dir.exists();
    for (name, bytes, mode) in files {
        let path = dir.join(name);
        let existed = path.exists();
        if let Err(e) = write_private(&path, bytes, *mode) {
            for p in &created {
                let _ = std::fs::remove_file(p);
            }
            if fresh_dir {
                let _ = std::fs::remove_dir(dir);
            }
            return Err(JoinError::Local(e.to_string()));
        }
        if !existed {
            created.push(path);
        }
    }
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_file_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("node").join("password");
        let pw = ensure_password(&path).unwrap();
        assert_eq!(pw.len(), 32);
        assert_eq!(ensure_password(&path).unwrap(), pw);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn empty_agent_dir_needs_a_token() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(existing_state(d.path(), "n1"), Existing::Missing);
        let err = JoinError::NoToken.to_string();
        assert!(err.contains("--token"), "{err}");
    }
}
