//! Command-line flags, `K3RS_*` environment variables and `/etc/k3rs/config.yaml`
//! (k3s-compatible key names), resolved into the settings each mode runs with.
//!
//! Precedence, as in k3s: command line > config file(s) > environment > defaults. The config
//! file (and its `config.yaml.d/*.yaml` drop-ins, in name order) is turned into `--key=value`
//! arguments inserted right after the subcommand, so flags typed on the command line come later
//! and win (single-value flags override, list flags such as `--tls-san` append). Environment
//! variables are clap's fallback for flags that appear nowhere in the arguments.

mod agent;
mod file;
mod values;

use agent::{parse_label, resolve_agent, resolve_node, resolve_node_name, AgentArgs, NodeArgs};
pub use agent::{AgentConfig, AgentSettings};

use clap::{Arg, ArgAction, CommandFactory, FromArgMatches, Parser, Subcommand};
use file::{flag_spec, load_config_files};
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use values::*;
pub use values::{nth_address, parse_cidr};

/// Everything `k3rs server` needs, resolved from flags, env and config file.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Root of all state (`/var/lib/k3rs`, or `~/.k3rs` for non-root users). Always absolute.
    pub data_dir: PathBuf,
    /// Address the HTTPS listener binds (default 0.0.0.0).
    pub bind_address: IpAddr,
    /// HTTPS port (default 6443).
    pub https_listen_port: u16,
    /// Address advertised to the cluster (default: the node IP).
    pub advertise_address: Option<IpAddr>,
    /// Extra subject alternative names for the serving certificate (deduplicated, in order).
    pub tls_san: Vec<String>,
    /// Pod network, e.g. 10.42.0.0/16 (a comma-separated list for dual stack).
    pub cluster_cidr: String,
    /// Service network, e.g. 10.43.0.0/16 (a comma-separated list for dual stack).
    pub service_cidr: String,
    /// Prefix length of the IPv4 pod subnet each node gets from the cluster CIDR (default
    /// 24; IPv6 node subnets are always /64).
    pub node_cidr_mask_size: u8,
    /// Cluster DNS domain (cluster.local), lower-cased.
    pub cluster_domain: String,
    /// The shared secret or full `K10…` token, when given (from `--token`, or read from
    /// `--token-file` when `--token` is not set).
    pub token: Option<String>,
    /// `--agent-token` (or read from `--agent-token-file`): a join-only secret for agents.
    pub agent_token: Option<String>,
    /// This node's name (default: the hostname, lower-cased).
    pub node_name: String,
    /// Run the control plane without a local agent.
    pub disable_agent: bool,
    /// `--secrets-encryption`: store Secrets encrypted (aescbc) at rest.
    pub secrets_encryption: bool,
    /// Settings of the agent this server runs for its own node.
    pub agent: AgentSettings,
    /// Where to write the admin kubeconfig.
    pub write_kubeconfig: PathBuf,
    /// File mode of the kubeconfig (default 0600).
    pub write_kubeconfig_mode: u32,
    /// `--debug`: log at debug level.
    pub debug: bool,
    /// `-v N`: log verbosity (0 = info, 1-4 = debug, 5+ = trace).
    pub verbosity: u8,
    /// The config files that were read, in the order they were applied.
    pub config_files: Vec<PathBuf>,
    /// Settings of the in-server controllers and admission defaults.
    pub controllers: ControllerSettings,
}

/// Settings of the controllers that k3s passes as kube-controller-manager and
/// kube-apiserver arguments (upstream's flag names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerSettings {
    /// `--node-monitor-grace-period`: how long a node may go without renewing its Lease
    /// before it is marked Unknown and tainted unreachable (default 40 s).
    pub node_monitor_grace_period: std::time::Duration,
    /// `--default-not-ready-toleration-seconds`: the tolerationSeconds new pods get for
    /// the not-ready NoExecute taint (default 300).
    pub default_not_ready_toleration_seconds: i64,
    /// `--default-unreachable-toleration-seconds`: the same for the unreachable taint.
    pub default_unreachable_toleration_seconds: i64,
    /// `--service-node-port-range`: the ports NodePort services get (default 30000-32767).
    pub service_node_port_range: crate::server::services::alloc::PortRange,
    /// `--default-local-storage-path`: where local-path volumes live (None: the
    /// default, `<data-dir>/storage`).
    pub default_local_storage_path: Option<PathBuf>,
    /// `--event-ttl`: how long an Event is kept after its last update (default 1 h).
    pub event_ttl: std::time::Duration,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        ControllerSettings {
            node_monitor_grace_period: std::time::Duration::from_secs(40),
            default_not_ready_toleration_seconds: 300,
            default_unreachable_toleration_seconds: 300,
            service_node_port_range: Default::default(),
            default_local_storage_path: None,
            event_ttl: std::time::Duration::from_secs(3600),
        }
    }
}

impl ServerConfig {
    /// The ClusterIP of the `kubernetes` service: the first address of the (first) service
    /// CIDR, e.g. 10.43.0.1. It belongs in the serving certificate.
    pub fn api_service_ip(&self) -> Option<IpAddr> {
        let first = self.service_cidr.split(',').next()?;
        let (addr, prefix) = parse_cidr(first.trim()).ok()?;
        Some(nth_address(addr, prefix, 1))
    }

    /// The cluster DNS service IP: the tenth address of the (first) service CIDR, e.g.
    /// 10.43.0.10 (k3s's default).
    pub fn cluster_dns(&self) -> Option<IpAddr> {
        let first = self.service_cidr.split(',').next()?;
        let (addr, prefix) = parse_cidr(first.trim()).ok()?;
        Some(nth_address(addr, prefix, 10))
    }

    /// The tracing level these flags ask for (`RUST_LOG` overrides it in main).
    pub fn log_level(&self) -> tracing::Level {
        match (self.debug, self.verbosity) {
            (_, v) if v >= 5 => tracing::Level::TRACE,
            (true, _) | (_, 1..) => tracing::Level::DEBUG,
            _ => tracing::Level::INFO,
        }
    }
}

/// What the command line asks k3rs to do.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // built once per process
pub enum Command {
    /// `k3rs server`.
    Server(ServerConfig),
    /// `k3rs agent`.
    Agent(AgentConfig),
    /// `k3rs version` or `k3rs --version`.
    Version,
    /// A subcommand that this build does not implement yet (`agent`, `token`, ...).
    NotAvailable(&'static str),
    /// `k3rs check-config`.
    CheckConfig,
    /// `k3rs token ...`.
    Token(crate::cli::token::TokenArgs),
    /// `k3rs secrets-encrypt ...`.
    SecretsEncrypt(crate::cli::secrets_encrypt::SecretsEncryptArgs),
    /// `k3rs certificate ...`.
    Certificate(crate::cli::certificate::CertificateArgs),
    /// `k3rs kubectl ARGS...`: the kubectl on PATH, with the cluster's kubeconfig.
    Kubectl(Vec<OsString>),
    /// `k3rs ctr ARGS...`: containerd's ctr on PATH, pointed at k3rs's containerd.
    Ctr(Vec<OsString>),
}

/// A command line or config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Clap's own outcome: usage errors, `--help`. Print it with `exit()` (clap's exit code).
    #[error("{}", first_line(&.0.to_string()))]
    Cli(clap::Error),
    /// A config file that cannot be read or used.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A flag value that does not parse.
    #[error("invalid value \"{value}\" for --{flag}: {reason}")]
    Invalid {
        /// The flag's long name.
        flag: String,
        /// The offending value.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// Anything else (unreadable token file, no home directory, ...).
    #[error("{0}")]
    Other(String),
}

fn first_line(s: &str) -> String {
    let line = s.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    line.trim_start_matches("error: ").to_string()
}

/// The environment facts the defaults depend on (injectable for tests).
#[derive(Clone, Debug)]
pub struct Host {
    /// Running as root (euid 0).
    pub root: bool,
    /// `$HOME`.
    pub home: Option<PathBuf>,
    /// The machine's hostname.
    pub hostname: String,
    /// Current directory, to make relative paths absolute.
    pub cwd: PathBuf,
    /// The config file read when neither `--config` nor `K3RS_CONFIG_FILE` is given.
    pub default_config: PathBuf,
}

/// Default config file path.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/k3rs/config.yaml";

impl Host {
    /// The facts of the running process.
    pub fn current() -> Host {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        Host {
            root,
            home: std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from),
            hostname: hostname().unwrap_or_default(),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            default_config: PathBuf::from(DEFAULT_CONFIG_FILE),
        }
    }
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `len` bytes; gethostname NUL-terminates on success
    // (and we cap at the buffer length regardless).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

fn version_line() -> &'static str {
    static LINE: OnceLock<String> = OnceLock::new();
    LINE.get_or_init(|| {
        format!(
            "version {} ({})",
            crate::version::git_version(),
            crate::version::git_commit()
        )
    })
}

/// `k3rs version v1.35.0+k3rs1 (<commit>)`: what `k3rs --version` and `k3rs version` print.
pub fn version_text() -> String {
    format!("k3rs {}", version_line())
}

#[derive(Parser, Debug)]
#[command(
    name = "k3rs",
    about = "Lightweight Kubernetes for the edge",
    disable_version_flag = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    sub: Sub,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)]
enum Sub {
    /// Run management server
    #[command(args_override_self = true)]
    Server(ServerArgs),
    /// Print the version
    Version,
    /// Run node agent
    Agent(AgentArgs),
    /// Manage bootstrap tokens
    Token(crate::cli::token::TokenArgs),
    /// Control secrets encryption and keys rotation
    SecretsEncrypt(crate::cli::secrets_encrypt::SecretsEncryptArgs),
    /// Manage certificates
    Certificate(crate::cli::certificate::CertificateArgs),
    /// Check the host for the kernel features and programs k3rs needs
    CheckConfig,
    /// Run kubectl with the cluster's kubeconfig
    #[command(disable_help_flag = true)]
    Kubectl(Passthrough),
    /// Run containerd's ctr against the k3rs containerd
    #[command(disable_help_flag = true, hide = true)]
    Ctr(Passthrough),
}

#[derive(clap::Args, Debug)]
struct Passthrough {
    #[arg(num_args = 0.., trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// The raw `server` flags. Values stay strings so that every check produces the same one-line
/// error, whether the value came from the command line, the environment or a config file.
#[derive(clap::Args, Debug)]
struct ServerArgs {
    /// Load configuration from FILE
    #[arg(short = 'c', long, env = "K3RS_CONFIG_FILE", value_name = "FILE")]
    config: Option<String>,
    /// Turn on debug logs
    #[arg(long, env = "K3RS_DEBUG", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_name = "BOOL")]
    debug: Option<String>,
    /// Number for the log level verbosity
    #[arg(short = 'v', value_name = "N")]
    v: Option<String>,
    /// Folder to hold state (default: /var/lib/k3rs or ${HOME}/.k3rs if not root)
    #[arg(short = 'd', long, env = "K3RS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<String>,
    /// IP address the HTTPS listener binds
    #[arg(
        long,
        env = "K3RS_BIND_ADDRESS",
        default_value = "0.0.0.0",
        value_name = "IP"
    )]
    bind_address: String,
    /// HTTPS listen port
    #[arg(
        long,
        env = "K3RS_HTTPS_LISTEN_PORT",
        default_value = "6443",
        value_name = "PORT"
    )]
    https_listen_port: String,
    /// IP address the apiserver advertises to members of the cluster (default: node IP)
    #[arg(long, env = "K3RS_ADVERTISE_ADDRESS", value_name = "IP")]
    advertise_address: Option<String>,
    /// Add additional hostnames or IPv4/IPv6 addresses as Subject Alternative Names on the
    /// server TLS cert
    #[arg(long, env = "K3RS_TLS_SAN", action = ArgAction::Append, value_delimiter = ',',
          value_name = "NAME")]
    tls_san: Vec<String>,
    /// IPv4/IPv6 network CIDRs to use for pod IPs
    #[arg(
        long,
        env = "K3RS_CLUSTER_CIDR",
        default_value = "10.42.0.0/16",
        value_name = "CIDR"
    )]
    cluster_cidr: String,
    /// IPv4 prefix length of the pod subnet each node gets from the cluster CIDR (IPv6: 64)
    #[arg(
        long,
        env = "K3RS_NODE_CIDR_MASK_SIZE",
        default_value = "24",
        value_name = "BITS"
    )]
    node_cidr_mask_size: String,
    /// Backend (valid values: 'none', 'vxlan', 'host-gw')
    #[arg(
        long,
        env = "K3RS_FLANNEL_BACKEND",
        default_value = "vxlan",
        value_name = "BACKEND"
    )]
    flannel_backend: String,
    /// IPv4/IPv6 network CIDRs to use for service IPs
    #[arg(
        long,
        env = "K3RS_SERVICE_CIDR",
        default_value = "10.43.0.0/16",
        value_name = "CIDR"
    )]
    service_cidr: String,
    /// Cluster Domain
    #[arg(
        long,
        env = "K3RS_CLUSTER_DOMAIN",
        default_value = "cluster.local",
        value_name = "DOMAIN"
    )]
    cluster_domain: String,
    /// Shared secret used to join a server or agent to a cluster
    #[arg(
        short = 't',
        long,
        env = "K3RS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// File containing the token
    #[arg(long, env = "K3RS_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<String>,
    /// Shared secret used to join agents to the cluster, but not servers
    #[arg(
        long,
        env = "K3RS_AGENT_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    agent_token: Option<String>,
    /// File containing the agent secret
    #[arg(long, env = "K3RS_AGENT_TOKEN_FILE", value_name = "FILE")]
    agent_token_file: Option<String>,
    /// Node name (default: the hostname, lower-cased)
    #[arg(long, env = "K3RS_NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,
    /// Do not run a local agent and register a local kubelet
    #[arg(long, env = "K3RS_DISABLE_AGENT", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_name = "BOOL")]
    disable_agent: Option<String>,
    /// Enable secret encryption at rest
    #[arg(long, env = "K3RS_SECRETS_ENCRYPTION", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_name = "BOOL")]
    secrets_encryption: Option<String>,
    #[command(flatten)]
    node: NodeArgs,
    /// Write kubeconfig for admin client to this file (default: /etc/k3rs/k3rs.yaml, or
    /// ${HOME}/.kube/k3rs.yaml if not root)
    #[arg(short = 'o', long, env = "K3RS_KUBECONFIG_OUTPUT", value_name = "FILE")]
    write_kubeconfig: Option<String>,
    /// Write kubeconfig with this mode
    #[arg(
        long,
        env = "K3RS_KUBECONFIG_MODE",
        default_value = "0600",
        value_name = "MODE"
    )]
    write_kubeconfig_mode: String,
    /// Time a node may go without renewing its Lease before it is marked Unknown
    #[arg(
        long,
        env = "K3RS_NODE_MONITOR_GRACE_PERIOD",
        default_value = "40s",
        value_name = "DURATION",
        hide = true
    )]
    node_monitor_grace_period: String,
    /// tolerationSeconds of the not-ready NoExecute toleration added to every pod
    #[arg(
        long,
        env = "K3RS_DEFAULT_NOT_READY_TOLERATION_SECONDS",
        default_value = "300",
        value_name = "SECONDS",
        hide = true
    )]
    default_not_ready_toleration_seconds: String,
    /// tolerationSeconds of the unreachable NoExecute toleration added to every pod
    #[arg(
        long,
        env = "K3RS_DEFAULT_UNREACHABLE_TOLERATION_SECONDS",
        default_value = "300",
        value_name = "SECONDS",
        hide = true
    )]
    default_unreachable_toleration_seconds: String,
    /// Amount of time to retain events
    #[arg(
        long,
        env = "K3RS_EVENT_TTL",
        default_value = "1h",
        value_name = "DURATION",
        hide = true
    )]
    event_ttl: String,
    /// A port range to reserve for services with NodePort visibility
    #[arg(
        long,
        env = "K3RS_SERVICE_NODE_PORT_RANGE",
        default_value = "30000-32767",
        value_name = "RANGE"
    )]
    service_node_port_range: String,
    /// Default local storage path for local provisioner storage class
    #[arg(long, env = "K3RS_DEFAULT_LOCAL_STORAGE_PATH", value_name = "PATH")]
    default_local_storage_path: Option<String>,
}

fn cli_command() -> clap::Command {
    Cli::command().version(version_line()).term_width(160).arg(
        Arg::new("version")
            .short('v')
            .long("version")
            .action(ArgAction::Version)
            .help("Print the version"),
    )
}

/// Parses `args` (including the program name) against the real environment.
pub fn parse(args: Vec<OsString>) -> Result<Command, ConfigError> {
    parse_with(args, &Host::current())
}

/// [`parse`] with explicit host facts (defaults, default config path).
pub fn parse_with(mut args: Vec<OsString>, host: &Host) -> Result<Command, ConfigError> {
    // `k3rs agent join ...` is `k3rs agent ...` (k3s's spelling of joining a node).
    if args.get(1).is_some_and(|a| a == "agent") && args.get(2).is_some_and(|a| a == "join") {
        args.remove(2);
    }
    let first = match cli_command().try_get_matches_from(&args) {
        Ok(m) => m,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayVersion => {
            return Ok(Command::Version)
        }
        Err(e) => return Err(ConfigError::Cli(e)),
    };
    let cli = Cli::from_arg_matches(&first).map_err(ConfigError::Cli)?;
    let server = match cli.sub {
        Sub::Server(a) => a,
        Sub::Version => return Ok(Command::Version),
        Sub::Agent(a) => {
            let (file_args, _) = config_file_args(a.config.as_deref(), "agent", host)?;
            let a = if file_args.is_empty() {
                a
            } else {
                match reparse_with_file_args(&args, file_args)? {
                    Sub::Agent(a) => a,
                    _ => {
                        return Err(ConfigError::Other(
                            "config file changed the subcommand".into(),
                        ))
                    }
                }
            };
            return resolve_agent(a, host).map(Command::Agent);
        }
        Sub::Token(a) => return Ok(Command::Token(a)),
        Sub::SecretsEncrypt(a) => return Ok(Command::SecretsEncrypt(a)),
        Sub::Certificate(a) => return Ok(Command::Certificate(a)),
        Sub::CheckConfig => return Ok(Command::CheckConfig),
        Sub::Kubectl(a) => return Ok(Command::Kubectl(a.args)),
        Sub::Ctr(a) => return Ok(Command::Ctr(a.args)),
    };

    let (file_args, files) = config_file_args(server.config.as_deref(), "server", host)?;
    let server = if file_args.is_empty() {
        server
    } else {
        match reparse_with_file_args(&args, file_args)? {
            Sub::Server(a) => a,
            _ => {
                return Err(ConfigError::Other(
                    "config file changed the subcommand".into(),
                ))
            }
        }
    };
    resolve_server(server, host, files).map(Command::Server)
}

/// The config file's (and drop-ins') arguments for subcommand `sub`, and the files read.
fn config_file_args(
    flag: Option<&str>,
    sub: &str,
    host: &Host,
) -> Result<(Vec<String>, Vec<PathBuf>), ConfigError> {
    // Where is the config file, and was it asked for explicitly?
    let (config_path, explicit) = match flag.filter(|s| !s.is_empty()) {
        Some(p) => (host.cwd.join(p), true),
        None => (host.default_config.clone(), false),
    };
    let spec = flag_spec(&cli_command(), sub);
    load_config_files(&config_path, explicit, &spec)
}

/// Parses `args` again with `file_args` inserted right after the subcommand, so the command
/// line wins.
fn reparse_with_file_args(args: &[OsString], file_args: Vec<String>) -> Result<Sub, ConfigError> {
    let sub_at = args
        .iter()
        .skip(1)
        .position(|a| !a.to_string_lossy().starts_with('-'))
        .map(|i| i + 1)
        .unwrap_or(1);
    let mut merged: Vec<OsString> = args[..=sub_at].to_vec();
    merged.extend(file_args.into_iter().map(OsString::from));
    merged.extend(args[sub_at + 1..].iter().cloned());
    let m = cli_command()
        .try_get_matches_from(merged)
        .map_err(ConfigError::Cli)?;
    Ok(Cli::from_arg_matches(&m).map_err(ConfigError::Cli)?.sub)
}

/// Checks one flag value (long name, or the short letter for short-only flags).
fn validate(flag: &str, value: &str) -> Result<(), String> {
    match flag {
        "bind-address" | "advertise-address" => parse_ip(value).map(drop),
        "https-listen-port" => parse_port(value).map(drop),
        "tls-san" => parse_san(value).map(drop),
        "cluster-cidr" | "service-cidr" => parse_cidr_list(value).map(drop),
        "node-cidr-mask-size" => parse_node_mask(value).map(drop),
        "cluster-domain" => parse_dns_name(value).map(drop),
        "node-name" => parse_dns_name(value).map(drop),
        "node-ip" => parse_ip(value).map(drop),
        "node-label" => parse_label(value).map(drop),
        "kubelet-port" => parse_port(value).map(drop),
        "write-kubeconfig-mode" => parse_mode(value).map(drop),
        "debug" | "disable-agent" | "secrets-encryption" => parse_bool(value).map(drop),
        "node-monitor-grace-period" => parse_go_duration(value).map(drop),
        "default-not-ready-toleration-seconds" | "default-unreachable-toleration-seconds" => {
            parse_seconds(value).map(drop)
        }
        "v" => parse_verbosity(value).map(drop),
        "service-node-port-range" => parse_port_range(value).map(drop),
        _ => Ok(()),
    }
}

fn check<T>(flag: &str, value: &str, f: fn(&str) -> Result<T, String>) -> Result<T, ConfigError> {
    f(value).map_err(|reason| ConfigError::Invalid {
        flag: flag.to_string(),
        value: value.to_string(),
        reason,
    })
}

fn resolve_server(
    a: ServerArgs,
    host: &Host,
    config_files: Vec<PathBuf>,
) -> Result<ServerConfig, ConfigError> {
    let nonempty = |o: Option<String>| o.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());

    let home = || {
        host.home.clone().ok_or_else(|| {
            ConfigError::Other(
                "cannot determine the home directory ($HOME is not set); pass --data-dir and \
                 --write-kubeconfig"
                    .into(),
            )
        })
    };
    let data_dir = match nonempty(a.data_dir) {
        Some(d) => host.cwd.join(d),
        None if host.root => PathBuf::from("/var/lib/k3rs"),
        None => home()?.join(".k3rs"),
    };
    let write_kubeconfig = match nonempty(a.write_kubeconfig) {
        Some(p) => host.cwd.join(p),
        None if host.root => PathBuf::from("/etc/k3rs/k3rs.yaml"),
        None => home()?.join(".kube").join("k3rs.yaml"),
    };

    let bind_address = check("bind-address", a.bind_address.trim(), parse_ip)?;
    let https_listen_port = check("https-listen-port", a.https_listen_port.trim(), parse_port)?;
    let advertise_address = match nonempty(a.advertise_address) {
        Some(v) => Some(check("advertise-address", &v, parse_ip)?),
        None => None,
    };
    let mut tls_san: Vec<String> = Vec::new();
    for san in a.tls_san.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let san = check("tls-san", san, parse_san)?;
        if !tls_san.contains(&san) {
            tls_san.push(san);
        }
    }
    let cluster_cidr = check("cluster-cidr", a.cluster_cidr.trim(), parse_cidr_list)?;
    let service_cidr = check("service-cidr", a.service_cidr.trim(), parse_cidr_list)?;
    let node_cidr_mask_size = check(
        "node-cidr-mask-size",
        a.node_cidr_mask_size.trim(),
        parse_node_mask,
    )?;
    check_node_masks(&cluster_cidr, node_cidr_mask_size)?;
    let cluster_domain = check("cluster-domain", a.cluster_domain.trim(), parse_dns_name)?;

    let token = read_token(
        nonempty(a.token),
        nonempty(a.token_file),
        "token-file",
        host,
    )?;
    let agent_token = read_token(
        nonempty(a.agent_token),
        nonempty(a.agent_token_file),
        "agent-token-file",
        host,
    )?;

    let node_name = resolve_node_name(nonempty(a.node_name), host)?;
    let disable_agent = match nonempty(a.disable_agent) {
        Some(v) => check("disable-agent", &v, parse_bool)?,
        None => false,
    };
    let secrets_encryption = match nonempty(a.secrets_encryption) {
        Some(v) => check("secrets-encryption", &v, parse_bool)?,
        None => false,
    };
    let agent = crate::config::AgentSettings {
        flannel_backend: check(
            "flannel-backend",
            a.flannel_backend.trim(),
            agent::parse_backend,
        )?,
        cluster_cidr: check("cluster-cidr", &cluster_cidr, agent::ipv4_cluster_cidr)?,
        ..resolve_node(a.node, host)?
    };
    let debug = match nonempty(a.debug) {
        Some(v) => check("debug", &v, parse_bool)?,
        None => false,
    };
    let verbosity = match nonempty(a.v) {
        Some(v) => check("v", &v, parse_verbosity)?,
        None => 0,
    };
    let write_kubeconfig_mode = check(
        "write-kubeconfig-mode",
        a.write_kubeconfig_mode.trim(),
        parse_mode,
    )?;

    let controllers = ControllerSettings {
        node_monitor_grace_period: check(
            "node-monitor-grace-period",
            a.node_monitor_grace_period.trim(),
            parse_go_duration,
        )?,
        default_not_ready_toleration_seconds: check(
            "default-not-ready-toleration-seconds",
            a.default_not_ready_toleration_seconds.trim(),
            parse_seconds,
        )?,
        default_unreachable_toleration_seconds: check(
            "default-unreachable-toleration-seconds",
            a.default_unreachable_toleration_seconds.trim(),
            parse_seconds,
        )?,
        service_node_port_range: check(
            "service-node-port-range",
            a.service_node_port_range.trim(),
            parse_port_range,
        )?,
        default_local_storage_path: nonempty(a.default_local_storage_path)
            .map(|p| host.cwd.join(p)),
        event_ttl: check("event-ttl", a.event_ttl.trim(), parse_go_duration)?,
    };

    Ok(ServerConfig {
        controllers,
        data_dir,
        bind_address,
        https_listen_port,
        advertise_address,
        tls_san,
        cluster_cidr,
        service_cidr,
        node_cidr_mask_size,
        cluster_domain,
        token,
        agent_token,
        node_name,
        disable_agent,
        secrets_encryption,
        agent,
        write_kubeconfig,
        write_kubeconfig_mode,
        debug,
        verbosity,
        config_files,
    })
}

fn parse_port_range(v: &str) -> Result<crate::server::services::alloc::PortRange, String> {
    v.parse()
}

/// A secret from its flag, else from its file (trimmed; an empty file is an error).
pub(crate) fn read_token(
    value: Option<String>,
    file: Option<String>,
    file_flag: &str,
    host: &Host,
) -> Result<Option<String>, ConfigError> {
    match (value, file) {
        (Some(t), _) => Ok(Some(t)),
        (None, Some(file)) => {
            let path = host.cwd.join(&file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::Other(format!("cannot read --{file_flag} {}: {e}", path.display()))
            })?;
            let t = text.trim().to_string();
            if t.is_empty() {
                return Err(ConfigError::Other(format!(
                    "--{file_flag} {} is empty",
                    path.display()
                )));
            }
            Ok(Some(t))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests;
