//! Node flags shared by `k3rs server` (for its own node) and `k3rs agent`, and the
//! `agent` subcommand's own flags, resolved into [`AgentSettings`] and [`AgentConfig`].

use std::net::IpAddr;
use std::path::PathBuf;

use clap::ArgAction;

use crate::cni::ipam::Ipv4Subnet;
use crate::cni::Backend;

use super::{check, parse_bool, parse_dns_name, parse_ip, parse_port, ConfigError, Host};

/// Node settings shared by `k3rs server` (its own node) and `k3rs agent`.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    /// `--node-ip`: the node's InternalIP (default: the default route's interface address).
    pub node_ip: Option<IpAddr>,
    /// `--node-label key=value` pairs, in order.
    pub node_labels: Vec<(String, String)>,
    /// `--container-runtime-endpoint`: use this containerd instead of our own.
    pub container_runtime_endpoint: Option<String>,
    /// The kubelet endpoint's port (10250).
    pub kubelet_port: u16,
    /// Runtime state: containerd socket, pod network namespaces (`/run/k3rs`).
    pub run_dir: PathBuf,
    /// Container logs (`/var/log/pods`).
    pub pod_log_dir: PathBuf,
    /// `--private-registry`: registry mirrors and credentials (k3s's registries.yaml).
    pub private_registry: PathBuf,
    /// `--flannel-backend`: how pods reach pods on other nodes.
    pub flannel_backend: Backend,
    /// `--cluster-cidr`: the IPv4 range every node's pod subnet comes from; pod traffic
    /// leaving it is masqueraded.
    pub cluster_cidr: Ipv4Subnet,
    /// `--resolv-conf`: the resolv.conf with the node's upstream nameservers (for
    /// cluster DNS forwarding and pods with dnsPolicy Default); `None`: k3s's choice
    /// (see `agent::dns::upstream::node_resolv_conf`).
    pub resolv_conf: Option<PathBuf>,
    /// `--disable-metrics` (hidden): the kubelet's stats and metrics paths answer 404, to
    /// measure what the metrics path costs.
    pub disable_metrics: bool,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            node_ip: None,
            node_labels: Vec::new(),
            container_runtime_endpoint: None,
            kubelet_port: 10250,
            run_dir: PathBuf::from("/run/k3rs"),
            pod_log_dir: PathBuf::from("/var/log/pods"),
            private_registry: PathBuf::from("/etc/k3rs/registries.yaml"),
            flannel_backend: Backend::Vxlan,
            cluster_cidr: Ipv4Subnet::new(std::net::Ipv4Addr::new(10, 42, 0, 0), 16)
                .expect("a /16 is a valid subnet"),
            resolv_conf: None,
            disable_metrics: false,
        }
    }
}

/// Everything `k3rs agent` needs: either a kubeconfig with the node's credentials, or
/// `join` (server URL and token; the kubeconfig is then the one the join writes).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub data_dir: PathBuf,
    pub node_name: String,
    pub kubeconfig: PathBuf,
    /// `--server` (with `--token`): join, or confirm the node has joined, before running.
    pub join: Option<crate::agent::join::JoinOptions>,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    pub settings: AgentSettings,
    pub debug: bool,
}

/// Node flags of both `server` and `agent` (k3s's names).
#[derive(clap::Args, Debug)]
pub(super) struct NodeArgs {
    /// IPv4/IPv6 addresses to advertise for node
    #[arg(short = 'i', long, env = "K3RS_NODE_IP", value_name = "IP")]
    node_ip: Option<String>,
    /// Registering and starting kubelet with set of labels
    #[arg(long, env = "K3RS_NODE_LABEL", action = ArgAction::Append, value_name = "KEY=VALUE")]
    node_label: Vec<String>,
    /// Disable embedded containerd and use the CRI socket at the given path
    #[arg(long, env = "K3RS_CONTAINER_RUNTIME_ENDPOINT", value_name = "PATH")]
    container_runtime_endpoint: Option<String>,
    /// Private registry configuration file
    #[arg(
        long,
        env = "K3RS_PRIVATE_REGISTRY",
        default_value = "/etc/k3rs/registries.yaml",
        value_name = "FILE"
    )]
    private_registry: String,
    /// Port of the node's kubelet endpoint (logs, exec, port-forward)
    #[arg(
        long,
        env = "K3RS_KUBELET_PORT",
        default_value = "10250",
        value_name = "PORT",
        hide = true
    )]
    kubelet_port: String,
    /// Directory for runtime state: containerd socket, pod network namespaces
    #[arg(
        long,
        env = "K3RS_RUN_DIR",
        default_value = "/run/k3rs",
        value_name = "DIR",
        hide = true
    )]
    run_dir: String,
    /// Directory for container logs
    #[arg(
        long,
        env = "K3RS_POD_LOG_DIR",
        default_value = "/var/log/pods",
        value_name = "DIR",
        hide = true
    )]
    pod_log_dir: String,
    /// Kubelet resolv.conf file
    #[arg(long, env = "K3RS_RESOLV_CONF", value_name = "FILE")]
    resolv_conf: Option<String>,
    /// Turn the kubelet's /stats and /metrics paths off (for measuring their cost)
    #[arg(long, env = "K3RS_DISABLE_METRICS", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_name = "BOOL", hide = true)]
    disable_metrics: Option<String>,
}

/// The raw `agent` flags.
#[derive(clap::Args, Debug)]
pub(super) struct AgentArgs {
    /// Load configuration from FILE
    #[arg(short = 'c', long, env = "K3RS_CONFIG_FILE", value_name = "FILE")]
    pub(super) config: Option<String>,
    /// Server to connect to
    #[arg(short = 's', long, env = "K3RS_URL", value_name = "URL")]
    server: Option<String>,
    /// Token to use for authentication
    #[arg(
        short = 't',
        long,
        env = "K3RS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Token file to use for authentication
    #[arg(long, env = "K3RS_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<String>,
    /// Append id to node name
    #[arg(long, env = "K3RS_WITH_NODE_ID", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_name = "BOOL")]
    with_node_id: Option<String>,
    /// The node password file
    #[arg(
        long,
        env = "K3RS_NODE_PASSWORD_FILE",
        default_value = "/etc/k3rs/node/password",
        value_name = "FILE",
        hide = true
    )]
    node_password_file: String,
    /// Kubeconfig with the node's credentials for the server (instead of joining with a token)
    #[arg(long, env = "K3RS_KUBECONFIG", value_name = "FILE")]
    kubeconfig: Option<String>,
    /// Folder to hold state (default: /var/lib/k3rs or ${HOME}/.k3rs if not root)
    #[arg(short = 'd', long, env = "K3RS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<String>,
    /// Node name (default: the hostname, lower-cased)
    #[arg(long, env = "K3RS_NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,
    /// IPv4 Cluster IP for coredns service
    #[arg(
        long,
        env = "K3RS_CLUSTER_DNS",
        default_value = "10.43.0.10",
        value_name = "IP"
    )]
    cluster_dns: String,
    /// Cluster Domain
    #[arg(
        long,
        env = "K3RS_CLUSTER_DOMAIN",
        default_value = "cluster.local",
        value_name = "DOMAIN"
    )]
    cluster_domain: String,
    /// Turn on debug logs
    #[arg(long, env = "K3RS_DEBUG", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_name = "BOOL")]
    debug: Option<String>,
    /// Cross-node pod network backend (set by the server when joining with a token)
    #[arg(
        long,
        env = "K3RS_FLANNEL_BACKEND",
        default_value = "vxlan",
        value_name = "BACKEND",
        hide = true
    )]
    flannel_backend: String,
    /// IPv4 network CIDR the server gives pod subnets from (set by the server when joining)
    #[arg(
        long,
        env = "K3RS_CLUSTER_CIDR",
        default_value = "10.42.0.0/16",
        value_name = "CIDR",
        hide = true
    )]
    cluster_cidr: String,
    #[command(flatten)]
    node: NodeArgs,
}

/// `--flannel-backend`: k3s's names; only the backends k3rs builds in.
pub(super) fn parse_backend(s: &str) -> Result<Backend, String> {
    match s {
        "vxlan" => Ok(Backend::Vxlan),
        "host-gw" => Ok(Backend::HostGw),
        "none" => Ok(Backend::None),
        "wireguard-native" | "ipsec" | "wireguard" => Err(format!(
            "backend {s} is not built into k3rs; use vxlan, host-gw or none"
        )),
        _ => Err("must be one of vxlan, host-gw, none".into()),
    }
}

/// The IPv4 range of a `--cluster-cidr` list (pods get IPv4 addresses from it).
pub(super) fn ipv4_cluster_cidr(list: &str) -> Result<Ipv4Subnet, String> {
    list.split(',')
        .map(str::trim)
        .find(|c| !c.contains(':'))
        .ok_or_else(|| {
            "needs an IPv4 range (IPv6-only pod networks are not supported)".to_string()
        })?
        .parse::<Ipv4Subnet>()
        .map_err(|e| e.to_string())
}

pub(super) fn resolve_node(a: NodeArgs, host: &Host) -> Result<AgentSettings, ConfigError> {
    let nonempty = |o: Option<String>| o.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let node_ip = match nonempty(a.node_ip) {
        Some(v) => Some(check("node-ip", &v, parse_ip)?),
        None => None,
    };
    let mut node_labels = Vec::new();
    for l in a
        .node_label
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        node_labels.push(check("node-label", l, parse_label)?);
    }
    Ok(AgentSettings {
        node_ip,
        node_labels,
        container_runtime_endpoint: nonempty(a.container_runtime_endpoint),
        kubelet_port: check("kubelet-port", a.kubelet_port.trim(), parse_port)?,
        run_dir: host.cwd.join(a.run_dir.trim()),
        pod_log_dir: host.cwd.join(a.pod_log_dir.trim()),
        private_registry: host.cwd.join(a.private_registry.trim()),
        resolv_conf: nonempty(a.resolv_conf).map(|p| host.cwd.join(p)),
        disable_metrics: match a.disable_metrics {
            Some(v) => check("disable-metrics", v.trim(), parse_bool)?,
            None => false,
        },
        ..AgentSettings::default()
    })
}

/// `--node-name`, or the hostname lower-cased.
pub(super) fn resolve_node_name(flag: Option<String>, host: &Host) -> Result<String, ConfigError> {
    match flag {
        Some(n) => check("node-name", &n, parse_dns_name),
        None => {
            let h = host.hostname.trim().to_lowercase();
            parse_dns_name(&h).map_err(|reason| {
                ConfigError::Other(format!(
                    "hostname \"{h}\" is not a valid node name ({reason}); set --node-name"
                ))
            })
        }
    }
}

pub(super) fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| "must be key=value".to_string())?;
    let bad = |c: char| !(c.is_ascii_alphanumeric() || "-_./".contains(c));
    if k.is_empty() || k.chars().any(bad) || v.chars().any(bad) || v.len() > 63 {
        return Err("not a valid label key=value".into());
    }
    Ok((k.to_string(), v.to_string()))
}

pub(super) fn resolve_agent(a: AgentArgs, host: &Host) -> Result<AgentConfig, ConfigError> {
    let nonempty = |o: Option<String>| o.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let data_dir = match nonempty(a.data_dir) {
        Some(d) => host.cwd.join(d),
        None if host.root => PathBuf::from("/var/lib/k3rs"),
        None => host
            .home
            .clone()
            .ok_or_else(|| {
                ConfigError::Other("cannot determine the home directory; pass --data-dir".into())
            })?
            .join(".k3rs"),
    };
    let token = super::read_token(
        nonempty(a.token),
        nonempty(a.token_file),
        "token-file",
        host,
    )?;
    let server = nonempty(a.server);
    let kubeconfig_flag = nonempty(a.kubeconfig).map(|k| host.cwd.join(k));
    let kubeconfig = kubeconfig_flag
        .clone()
        .unwrap_or_else(|| data_dir.join("agent").join("kubelet.kubeconfig"));
    if server.is_none() && token.is_some() && kubeconfig_flag.is_none() {
        return Err(ConfigError::Other(
            "--token needs --server (or K3RS_URL): the URL of the server to join".into(),
        ));
    }
    let with_node_id = match nonempty(a.with_node_id) {
        Some(v) => check("with-node-id", &v, parse_bool)?,
        None => false,
    };
    let node_name = resolve_node_name(nonempty(a.node_name), host)?;
    let cluster_dns = check("cluster-dns", a.cluster_dns.trim(), parse_ip)?;
    let cluster_domain = check("cluster-domain", a.cluster_domain.trim(), parse_dns_name)?;
    let debug = match nonempty(a.debug) {
        Some(v) => check("debug", &v, parse_bool)?,
        None => false,
    };
    let join = match (server, kubeconfig_flag) {
        (Some(server), None) => Some(crate::agent::join::JoinOptions {
            server,
            token,
            node_name: node_name.clone(),
            with_node_id,
            node_ips: Vec::new(),
            agent_dir: data_dir.join("agent"),
            password_file: host.cwd.join(a.node_password_file.trim()),
        }),
        _ => None,
    };
    Ok(AgentConfig {
        data_dir,
        node_name,
        kubeconfig,
        join,
        cluster_dns: vec![cluster_dns.to_string()],
        cluster_domain,
        settings: AgentSettings {
            flannel_backend: check("flannel-backend", a.flannel_backend.trim(), parse_backend)?,
            cluster_cidr: check("cluster-cidr", a.cluster_cidr.trim(), ipv4_cluster_cidr)?,
            ..resolve_node(a.node, host)?
        },
        debug,
    })
}
