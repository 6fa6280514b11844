//! Command-line flags, `K3RS_*` environment variables and `/etc/k3rs/config.yaml`
//! (k3s-compatible key names), resolved into the settings each mode runs with.
//! (CLI parsing being written.)

use std::net::IpAddr;
use std::path::PathBuf;

/// Everything `k3rs server` needs, resolved from flags, env and config file.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Root of all state (`/var/lib/k3rs`, or `~/.k3rs` for non-root users).
    pub data_dir: PathBuf,
    /// Address the HTTPS listener binds (default 0.0.0.0).
    pub bind_address: IpAddr,
    /// HTTPS port (default 6443).
    pub https_listen_port: u16,
    /// Address advertised to the cluster (default: the node IP).
    pub advertise_address: Option<IpAddr>,
    /// Extra subject alternative names for the serving certificate.
    pub tls_san: Vec<String>,
    /// Pod network, e.g. 10.42.0.0/16.
    pub cluster_cidr: String,
    /// Service network, e.g. 10.43.0.0/16.
    pub service_cidr: String,
    /// Cluster DNS domain (cluster.local).
    pub cluster_domain: String,
    /// The shared secret or full `K10…` token, when given.
    pub token: Option<String>,
    /// This node's name (default: the hostname, lower-cased).
    pub node_name: String,
    /// Run the control plane without a local agent.
    pub disable_agent: bool,
    /// Where to write the admin kubeconfig.
    pub write_kubeconfig: PathBuf,
    /// File mode of the kubeconfig (default 0600).
    pub write_kubeconfig_mode: u32,
}
