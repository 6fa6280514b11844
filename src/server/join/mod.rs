//! The node bootstrap endpoints under `/v1-k3rs/` (k3s's `/v1-k3s/` supervisor routes): what
//! a joining agent fetches after it has pinned the CA from `/cacerts` — the cluster settings,
//! the CA certificates, and its kubelet client and serving certificates signed from CSRs —
//! plus `readyz` and the token rotation `k3rs token rotate` calls.
//!
//! These endpoints authenticate on their own, before the API's authorization: HTTP Basic
//! `server:<secret>` or `node:<secret>` (the server token, or the `--agent-token`), a bootstrap
//! token as `Bearer <id>.<secret>`, or an existing kubelet client certificate (renewal). Every
//! secret is compared in constant time, and an address that keeps failing is slowed down.
//!
//! - [`token`]: token forms and bootstrap token Secrets.
//! - [`password`]: node password hashes.
//! - [`sign`]: CSR checks and signing.
//! - [`limiter`]: the per-address failure limiter.

pub mod limiter;
pub mod password;
pub mod sign;
pub mod token;

#[path = "handlers.rs"]
mod handlers;
pub use handlers::handle_request;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::config::ServerConfig;
use crate::server::registry::Registry;

/// The URL prefix of the bootstrap endpoints.
pub const PREFIX: &str = "/v1-k3rs/";
/// Header carrying the node name of a certificate request.
pub const NODE_NAME_HEADER: &str = "k3rs-node-name";
/// Header carrying the node password.
pub const NODE_PASSWORD_HEADER: &str = "k3rs-node-password";
/// Header carrying the node's addresses (comma-separated).
pub const NODE_IP_HEADER: &str = "k3rs-node-ip";
/// The file under the server directory that holds the agent token.
pub const AGENT_TOKEN_FILE: &str = "agent-token";

/// The cluster settings a joining agent applies (`GET /v1-k3rs/config`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    /// Pod network (comma-separated for dual stack).
    pub cluster_cidr: String,
    /// Service network.
    pub service_cidr: String,
    /// The cluster DNS service IP.
    pub cluster_dns: String,
    /// The cluster domain.
    pub cluster_domain: String,
    /// `vxlan`, `host-gw` or `none`.
    pub flannel_backend: String,
}

impl ClusterConfig {
    /// The settings of a server started with `cfg`.
    pub fn from_server(cfg: &ServerConfig) -> ClusterConfig {
        use crate::cni::Backend;
        ClusterConfig {
            cluster_cidr: cfg.cluster_cidr.clone(),
            service_cidr: cfg.service_cidr.clone(),
            cluster_dns: cfg
                .cluster_dns()
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            cluster_domain: cfg.cluster_domain.clone(),
            flannel_backend: match cfg.agent.flannel_backend {
                Backend::Vxlan => "vxlan",
                Backend::HostGw => "host-gw",
                Backend::None => "none",
            }
            .to_string(),
        }
    }
}

/// Errors setting up the join endpoints.
#[derive(Debug, thiserror::Error)]
pub enum JoinSetupError {
    /// The agent token is malformed or for another CA.
    #[error("--agent-token: {0}")]
    AgentToken(String),
    /// Writing the agent token file failed.
    #[error(transparent)]
    Write(#[from] crate::server::pki::PkiError),
}

/// What the bootstrap endpoints need.
pub struct JoinState {
    registry: Registry,
    tls_dir: PathBuf,
    server_dir: PathBuf,
    server_ca_pem: String,
    server_secret: RwLock<String>,
    agent_secret: Option<String>,
    cluster: ClusterConfig,
    limiter: limiter::Limiter,
    /// Secrets encryption, when the server has a configuration (`/v1-k3rs/encrypt/*`).
    encryption: Option<crate::server::encryption::http::Live>,
}

impl JoinState {
    /// Serves `/v1-k3rs/encrypt/*` for this secrets-encryption state.
    pub fn with_encryption(mut self, live: Option<crate::server::encryption::http::Live>) -> Self {
        self.encryption = live;
        self
    }

    /// Sets up the endpoints for a server whose full token is `server_token` (from
    /// [`crate::server::bootstrap::ensure_token`]). With `agent_token` (bare secret or full
    /// `K10…::node:<secret>`), nodes may also join with it; it is written to
    /// `<server_dir>/agent-token`. Without it, `agent-token` is a link to `token`, as in k3s.
    pub fn new(
        registry: Registry,
        server_dir: &Path,
        server_ca_pem: &str,
        server_token: &str,
        agent_token: Option<&str>,
        cluster: ClusterConfig,
    ) -> Result<JoinState, JoinSetupError> {
        let server_secret = crate::server::bootstrap::parse_token(server_token)
            .map(|t| t.secret)
            .map_err(|e| JoinSetupError::AgentToken(e.to_string()))?;
        let agent_path = server_dir.join(AGENT_TOKEN_FILE);
        let agent_secret = match agent_token.map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => {
                let parsed = crate::server::bootstrap::parse_token(t)
                    .map_err(|e| JoinSetupError::AgentToken(e.to_string()))?;
                let hash = crate::server::bootstrap::ca_hash(server_ca_pem);
                if parsed.ca_hash.as_ref().is_some_and(|h| *h != hash) {
                    return Err(JoinSetupError::AgentToken(
                        "the token's CA hash does not match this cluster's CA".into(),
                    ));
                }
                let full = format!(
                    "{}{hash}::{}:{}\n",
                    crate::server::bootstrap::TOKEN_PREFIX,
                    token::NODE_USER,
                    parsed.secret
                );
                if std::fs::symlink_metadata(&agent_path).is_ok_and(|m| m.is_symlink()) {
                    let _ = std::fs::remove_file(&agent_path);
                }
                crate::server::pki::write_private(&agent_path, full.as_bytes(), 0o600)?;
                Some(parsed.secret)
            }
            None => {
                if std::fs::symlink_metadata(&agent_path).is_err() {
                    let _ = std::os::unix::fs::symlink(
                        crate::server::bootstrap::TOKEN_FILE,
                        &agent_path,
                    );
                }
                None
            }
        };
        Ok(JoinState {
            registry,
            tls_dir: server_dir.join("tls"),
            server_dir: server_dir.to_path_buf(),
            server_ca_pem: server_ca_pem.to_string(),
            server_secret: RwLock::new(server_secret),
            agent_secret,
            cluster,
            limiter: limiter::Limiter::default(),
            encryption: None,
        })
    }

    fn server_secret(&self) -> String {
        self.server_secret
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Whether `path` is one of the bootstrap endpoints.
pub fn is_join_path(path: &str) -> bool {
    path.starts_with(PREFIX)
}

/// Parses the `K3rs-Node-IP` header: comma-separated addresses.
fn parse_node_ips(v: &str) -> Option<Vec<IpAddr>> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect()
}

/// A node name as Kubernetes accepts it: a lower-case DNS subdomain.
pub fn valid_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

#[cfg(test)]
#[path = "fuzz_tests.rs"]
mod fuzz_tests;
