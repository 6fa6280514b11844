//! Command-line flags, `K3RS_*` environment variables and `/etc/k3rs/config.yaml`
//! (k3s-compatible key names), resolved into the settings each mode runs with.
//!
//! Precedence, as in k3s: command line > config file(s) > environment > defaults. The config
//! file (and its `config.yaml.d/*.yaml` drop-ins, in name order) is turned into `--key=value`
//! arguments inserted right after the subcommand, so flags typed on the command line come later
//! and win (single-value flags override, list flags such as `--tls-san` append). Environment
//! variables are clap's fallback for flags that appear nowhere in the arguments.

use clap::{Arg, ArgAction, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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
    /// Cluster DNS domain (cluster.local), lower-cased.
    pub cluster_domain: String,
    /// The shared secret or full `K10…` token, when given (from `--token`, or read from
    /// `--token-file` when `--token` is not set).
    pub token: Option<String>,
    /// This node's name (default: the hostname, lower-cased).
    pub node_name: String,
    /// Run the control plane without a local agent.
    pub disable_agent: bool,
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
}

impl ServerConfig {
    /// The ClusterIP of the `kubernetes` service: the first address of the (first) service
    /// CIDR, e.g. 10.43.0.1. It belongs in the serving certificate.
    pub fn api_service_ip(&self) -> Option<IpAddr> {
        let first = self.service_cidr.split(',').next()?;
        let (addr, prefix) = parse_cidr(first.trim()).ok()?;
        Some(nth_address(addr, prefix, 1))
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
    /// `k3rs version` or `k3rs --version`.
    Version,
    /// A subcommand that this build does not implement yet (`agent`, `token`, ...).
    NotAvailable(&'static str),
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
    /// Run node agent (not available yet)
    #[command(disable_help_flag = true)]
    Agent(Passthrough),
    /// Manage bootstrap tokens (not available yet)
    #[command(disable_help_flag = true)]
    Token(Passthrough),
    /// Manage certificates (not available yet)
    #[command(disable_help_flag = true)]
    Certificate(Passthrough),
    /// Check the host for required kernel features (not available yet)
    #[command(disable_help_flag = true)]
    CheckConfig(Passthrough),
    /// Run kubectl (not available yet)
    #[command(disable_help_flag = true)]
    Kubectl(Passthrough),
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
    /// Node name (default: the hostname, lower-cased)
    #[arg(long, env = "K3RS_NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,
    /// Do not run a local agent and register a local kubelet
    #[arg(long, env = "K3RS_DISABLE_AGENT", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_name = "BOOL")]
    disable_agent: Option<String>,
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
}

fn cli_command() -> clap::Command {
    Cli::command().version(version_line()).arg(
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
pub fn parse_with(args: Vec<OsString>, host: &Host) -> Result<Command, ConfigError> {
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
        Sub::Agent(_) => return Ok(Command::NotAvailable("agent")),
        Sub::Token(_) => return Ok(Command::NotAvailable("token")),
        Sub::Certificate(_) => return Ok(Command::NotAvailable("certificate")),
        Sub::CheckConfig(_) => return Ok(Command::NotAvailable("check-config")),
        Sub::Kubectl(_) => return Ok(Command::NotAvailable("kubectl")),
    };

    // Where is the config file, and was it asked for explicitly?
    let (config_path, explicit) = match server.config.as_deref().filter(|s| !s.is_empty()) {
        Some(p) => (host.cwd.join(p), true),
        None => (host.default_config.clone(), false),
    };
    let spec = flag_spec(&cli_command(), "server");
    let (file_args, files) = load_config_files(&config_path, explicit, &spec)?;

    let server = if file_args.is_empty() {
        server
    } else {
        // Insert the file's arguments right after the subcommand so the command line wins.
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
        match Cli::from_arg_matches(&m).map_err(ConfigError::Cli)?.sub {
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

/// The flags a subcommand accepts, as config-file keys.
struct FlagSpec {
    /// (key, canonical long name or short, is list) for every flag.
    flags: Vec<(String, FlagTarget, bool)>,
}

#[derive(Clone, Debug)]
enum FlagTarget {
    Long(String),
    Short(char),
}

impl FlagSpec {
    fn lookup(&self, key: &str) -> Option<(&FlagTarget, bool)> {
        self.flags
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, t, list)| (t, *list))
    }
}

fn flag_spec(root: &clap::Command, sub: &str) -> FlagSpec {
    let mut flags = Vec::new();
    if let Some(cmd) = root.get_subcommands().find(|c| c.get_name() == sub) {
        for arg in cmd.get_arguments() {
            if matches!(arg.get_action(), ArgAction::Help | ArgAction::Version) {
                continue;
            }
            let list = matches!(arg.get_action(), ArgAction::Append);
            match (arg.get_long(), arg.get_short()) {
                (Some(long), short) => {
                    flags.push((long.to_string(), FlagTarget::Long(long.into()), list));
                    if let Some(s) = short {
                        flags.push((s.to_string(), FlagTarget::Long(long.into()), list));
                    }
                }
                (None, Some(s)) => flags.push((s.to_string(), FlagTarget::Short(s), list)),
                (None, None) => {}
            }
        }
    }
    FlagSpec { flags }
}

/// Reads the config file and its drop-ins into `--key=value` arguments (k3s semantics: keys
/// in first-seen order, a later file replaces a key unless it is written `key+`, which
/// appends). Returns the arguments and the files read.
fn load_config_files(
    path: &Path,
    explicit: bool,
    spec: &FlagSpec,
) -> Result<(Vec<String>, Vec<PathBuf>), ConfigError> {
    let mut files = Vec::new();
    match std::fs::metadata(path) {
        Ok(_) => files.push(path.to_path_buf()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {}
        Err(e) => {
            return Err(ConfigError::File {
                path: path.to_path_buf(),
                line: None,
                message: format!("cannot read config file: {e}"),
            })
        }
    }
    files.extend(drop_in_files(path)?);

    // key -> (target, values); order of first appearance.
    let mut merged: Vec<(String, FlagTarget, Vec<String>)> = Vec::new();
    for file in &files {
        for (key, append, values) in read_one_file(file)? {
            let file_err = |message: String| ConfigError::File {
                path: file.clone(),
                line: None,
                message,
            };
            let Some((target, list)) = spec.lookup(&key) else {
                return Err(file_err(format!("unknown key \"{key}\"")));
            };
            if key == "config" || key == "c" {
                return Err(file_err(format!(
                    "key \"{key}\" cannot be set in a config file"
                )));
            }
            if !list && (append || values.len() != 1) {
                let what = if append {
                    format!("\"{key}+\" appends, but {key} takes a single value")
                } else {
                    format!("{key} takes a single value, not a list")
                };
                return Err(file_err(what));
            }
            let canonical = match target {
                FlagTarget::Long(l) => l.clone(),
                FlagTarget::Short(s) => s.to_string(),
            };
            for v in &values {
                if let Err(reason) = validate(&canonical, v) {
                    return Err(file_err(format!(
                        "invalid value \"{v}\" for {key}: {reason}"
                    )));
                }
            }
            match merged.iter_mut().find(|(k, _, _)| *k == canonical) {
                Some((_, _, old)) if append => old.extend(values),
                Some((_, _, old)) => *old = values,
                None => merged.push((canonical, target.clone(), values)),
            }
        }
    }

    let mut args = Vec::new();
    for (_, target, values) in merged {
        for v in values {
            match &target {
                FlagTarget::Long(l) => args.push(format!("--{l}={v}")),
                FlagTarget::Short(s) => {
                    args.push(format!("-{s}"));
                    args.push(v);
                }
            }
        }
    }
    Ok((args, files))
}

/// `<config>.d/*.yaml|*.yml`, in name order.
fn drop_in_files(config: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let mut dir = config.as_os_str().to_owned();
    dir.push(".d");
    let dir = PathBuf::from(dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ConfigError::File {
                path: dir,
                line: None,
                message: format!("cannot read config directory: {e}"),
            })
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ConfigError::File {
            path: dir.clone(),
            line: None,
            message: format!("cannot read config directory: {e}"),
        })?;
        let name = entry.file_name().to_string_lossy().to_lowercase();
        let is_file = entry.file_type().map(|t| !t.is_dir()).unwrap_or(false);
        if is_file && (name.ends_with(".yaml") || name.ends_with(".yml")) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// One file's `(key without +, appends?, values)` entries, in file order.
fn read_one_file(path: &Path) -> Result<Vec<(String, bool, Vec<String>)>, ConfigError> {
    let err = |line: Option<usize>, message: String| ConfigError::File {
        path: path.to_path_buf(),
        line,
        message,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(None, format!("cannot read config file: {e}")))?;
    let doc: serde_yaml_ng::Value = match serde_yaml_ng::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            let line = e.location().map(|l| l.line());
            let mut msg = e.to_string();
            // The library appends " at line L column C"; the line is already in the prefix.
            if let Some(i) = msg.find(" at line ") {
                msg.truncate(i);
            }
            return Err(err(line, format!("invalid YAML: {msg}")));
        }
    };
    let map = match doc {
        serde_yaml_ng::Value::Null => return Ok(Vec::new()),
        serde_yaml_ng::Value::Mapping(m) => m,
        _ => {
            return Err(err(
                None,
                "expected a mapping of flag names to values".into(),
            ))
        }
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let key = match scalar_string(&k) {
            Some(k) => k,
            None => return Err(err(None, "keys must be flag names".into())),
        };
        let (key, append) = match key.strip_suffix('+') {
            Some(k) => (k.to_string(), true),
            None => (key, false),
        };
        let values = match &v {
            serde_yaml_ng::Value::Null => continue,
            serde_yaml_ng::Value::Sequence(items) => {
                let mut vals = Vec::new();
                for item in items {
                    match scalar_string(item) {
                        Some(s) => vals.push(s),
                        None => {
                            return Err(err(None, format!("{key}: list items must be scalars")))
                        }
                    }
                }
                vals
            }
            other => match scalar_string(other) {
                Some(s) => vec![s],
                None => return Err(err(None, format!("{key}: expected a value, not a mapping"))),
            },
        };
        out.push((key, append, values));
    }
    Ok(out)
}

fn scalar_string(v: &serde_yaml_ng::Value) -> Option<String> {
    match v {
        serde_yaml_ng::Value::String(s) => Some(s.clone()),
        serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        serde_yaml_ng::Value::Tagged(t) => scalar_string(&t.value),
        _ => None,
    }
}

/// Checks one flag value (long name, or the short letter for short-only flags).
fn validate(flag: &str, value: &str) -> Result<(), String> {
    match flag {
        "bind-address" | "advertise-address" => parse_ip(value).map(drop),
        "https-listen-port" => parse_port(value).map(drop),
        "tls-san" => parse_san(value).map(drop),
        "cluster-cidr" | "service-cidr" => parse_cidr_list(value).map(drop),
        "cluster-domain" => parse_dns_name(value).map(drop),
        "node-name" => parse_dns_name(value).map(drop),
        "write-kubeconfig-mode" => parse_mode(value).map(drop),
        "debug" | "disable-agent" => parse_bool(value).map(drop),
        "v" => parse_verbosity(value).map(drop),
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
    let cluster_domain = check("cluster-domain", a.cluster_domain.trim(), parse_dns_name)?;

    let token = match (nonempty(a.token), nonempty(a.token_file)) {
        (Some(t), _) => Some(t),
        (None, Some(file)) => {
            let path = host.cwd.join(&file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::Other(format!("cannot read --token-file {}: {e}", path.display()))
            })?;
            let t = text.trim().to_string();
            if t.is_empty() {
                return Err(ConfigError::Other(format!(
                    "--token-file {} is empty",
                    path.display()
                )));
            }
            Some(t)
        }
        (None, None) => None,
    };

    let node_name = match nonempty(a.node_name) {
        Some(n) => check("node-name", &n, parse_dns_name)?,
        None => {
            let h = host.hostname.trim().to_lowercase();
            parse_dns_name(&h).map_err(|reason| {
                ConfigError::Other(format!(
                    "hostname \"{h}\" is not a valid node name ({reason}); set --node-name"
                ))
            })?
        }
    };
    let disable_agent = match nonempty(a.disable_agent) {
        Some(v) => check("disable-agent", &v, parse_bool)?,
        None => false,
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

    Ok(ServerConfig {
        data_dir,
        bind_address,
        https_listen_port,
        advertise_address,
        tls_san,
        cluster_cidr,
        service_cidr,
        cluster_domain,
        token,
        node_name,
        disable_agent,
        write_kubeconfig,
        write_kubeconfig_mode,
        debug,
        verbosity,
        config_files,
    })
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map_err(|_| "not an IPv4 or IPv6 address".to_string())
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err("must be a port number between 1 and 65535".into()),
    }
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "t" | "1" | "yes" | "on" => Ok(true),
        "false" | "f" | "0" | "no" | "off" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}

fn parse_verbosity(s: &str) -> Result<u8, String> {
    s.parse::<u8>()
        .map_err(|_| "must be a number from 0 to 255".into())
}

/// `0644`, `644` or `0o644` → 0o644; at most 0777.
fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err("must be an octal file mode such as 0600 or 0644".into());
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|e| e.to_string())?;
    if mode > 0o777 {
        return Err("must be at most 0777".into());
    }
    Ok(mode)
}

/// Parses `a.b.c.d/n` or `ipv6/n`.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("\"{s}\" is not a CIDR (expected address/prefix-length)"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("\"{addr}\" is not an IPv4 or IPv6 address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = match prefix.parse::<u8>() {
        Ok(p) if p <= max => p,
        _ => return Err(format!("prefix length \"{prefix}\" must be 0 to {max}")),
    };
    Ok((addr, prefix))
}

/// A comma-separated list of one or two CIDRs (dual stack), normalised without spaces.
fn parse_cidr_list(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.len() > 2 {
        return Err("at most two CIDRs (one IPv4, one IPv6) are allowed".into());
    }
    let mut v4 = 0;
    for p in &parts {
        let (addr, _) = parse_cidr(p)?;
        v4 += usize::from(addr.is_ipv4());
    }
    if parts.len() == 2 && v4 != 1 {
        return Err("two CIDRs must be one IPv4 and one IPv6".into());
    }
    Ok(parts.join(","))
}

/// The `n`-th address of the network `addr/prefix` (host bits of `addr` cleared first).
pub fn nth_address(addr: IpAddr, prefix: u8, n: u128) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4(((u32::from(a) & mask).wrapping_add(n as u32)).into())
        }
        IpAddr::V6(a) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6(((u128::from(a) & mask).wrapping_add(n)).into())
        }
    }
}

/// A DNS name (RFC 1123 subdomain), returned lower-cased.
fn parse_dns_name(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    if lower.is_empty() || lower.len() > 253 {
        return Err("must be a DNS name of 1 to 253 characters".into());
    }
    for label in lower.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "\"{label}\" is not a valid DNS label (letters, digits and '-', at most 63 \
                 characters, not starting or ending with '-')"
            ));
        }
    }
    Ok(lower)
}

/// A `--tls-san`: an IP address, or a DNS name (optionally `*.` wildcard).
fn parse_san(s: &str) -> Result<String, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    match s.strip_prefix("*.") {
        Some(rest) => parse_dns_name(rest).map(|n| format!("*.{n}")),
        None => parse_dns_name(s),
    }
    .map_err(|_| "must be an IP address or a DNS name".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Tests that parse read the process environment; run them one at a time.
    static ENV_LOCK: Mutex<()> = Mutex::new(());

    const ENV_VARS: &[&str] = &[
        "K3RS_CONFIG_FILE",
        "K3RS_DEBUG",
        "K3RS_DATA_DIR",
        "K3RS_BIND_ADDRESS",
        "K3RS_HTTPS_LISTEN_PORT",
        "K3RS_ADVERTISE_ADDRESS",
        "K3RS_TLS_SAN",
        "K3RS_CLUSTER_CIDR",
        "K3RS_SERVICE_CIDR",
        "K3RS_CLUSTER_DOMAIN",
        "K3RS_TOKEN",
        "K3RS_TOKEN_FILE",
        "K3RS_NODE_NAME",
        "K3RS_DISABLE_AGENT",
        "K3RS_KUBECONFIG_OUTPUT",
        "K3RS_KUBECONFIG_MODE",
    ];

    struct Env<'a> {
        _guard: std::sync::MutexGuard<'a, ()>,
        dir: tempfile::TempDir,
    }

    impl Env<'_> {
        fn new() -> Env<'static> {
            let guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            for v in ENV_VARS {
                std::env::remove_var(v);
            }
            Env {
                _guard: guard,
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn host(&self, root: bool) -> Host {
            Host {
                root,
                home: Some(PathBuf::from("/home/alice")),
                hostname: "Edge-Box-1".into(),
                cwd: self.dir.path().to_path_buf(),
                default_config: self.dir.path().join("etc/config.yaml"),
            }
        }

        fn write(&self, rel: &str, text: &str) -> PathBuf {
            let p = self.dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            p
        }

        fn server(&self, args: &[&str]) -> Result<ServerConfig, ConfigError> {
            self.server_as(false, args)
        }

        fn server_as(&self, root: bool, args: &[&str]) -> Result<ServerConfig, ConfigError> {
            let mut argv: Vec<OsString> = vec!["k3rs".into(), "server".into()];
            argv.extend(args.iter().map(OsString::from));
            match parse_with(argv, &self.host(root))? {
                Command::Server(c) => Ok(c),
                other => panic!("expected server, got {other:?}"),
            }
        }
    }

    impl Drop for Env<'_> {
        fn drop(&mut self) {
            for v in ENV_VARS {
                std::env::remove_var(v);
            }
        }
    }

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn defaults_non_root_and_root() {
        let env = Env::new();
        let c = env.server(&[]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/home/alice/.k3rs"));
        assert_eq!(
            c.write_kubeconfig,
            PathBuf::from("/home/alice/.kube/k3rs.yaml")
        );
        assert_eq!(c.bind_address, "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(c.https_listen_port, 6443);
        assert_eq!(c.advertise_address, None);
        assert!(c.tls_san.is_empty());
        assert_eq!(c.cluster_cidr, "10.42.0.0/16");
        assert_eq!(c.service_cidr, "10.43.0.0/16");
        assert_eq!(c.cluster_domain, "cluster.local");
        assert_eq!(c.token, None);
        assert_eq!(c.node_name, "edge-box-1");
        assert!(!c.disable_agent);
        assert_eq!(c.write_kubeconfig_mode, 0o600);
        assert!(c.config_files.is_empty());
        assert_eq!(c.api_service_ip(), Some("10.43.0.1".parse().unwrap()));
        assert_eq!(c.log_level(), tracing::Level::INFO);

        let r = env.server_as(true, &[]).unwrap();
        assert_eq!(r.data_dir, PathBuf::from("/var/lib/k3rs"));
        assert_eq!(r.write_kubeconfig, PathBuf::from("/etc/k3rs/k3rs.yaml"));
    }

    #[test]
    fn version_forms() {
        let env = Env::new();
        let h = env.host(false);
        for args in [
            &["k3rs", "--version"][..],
            &["k3rs", "-v"],
            &["k3rs", "version"],
        ] {
            assert!(matches!(parse_with(argv(args), &h), Ok(Command::Version)));
        }
        assert!(version_text().starts_with("k3rs version v1.35.0+k3rs1 ("));
        assert!(matches!(
            parse_with(argv(&["k3rs", "agent", "--server", "x"]), &h),
            Ok(Command::NotAvailable("agent"))
        ));
        match parse_with(argv(&["k3rs", "server", "--help"]), &h) {
            Err(ConfigError::Cli(e)) => {
                assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cli_flags_and_short_forms() {
        let env = Env::new();
        let c = env
            .server(&[
                "-d",
                "state",
                "--bind-address",
                "127.0.0.1",
                "--https-listen-port=7443",
                "--advertise-address",
                "192.168.1.5",
                "--tls-san",
                "a.example.com,10.0.0.1",
                "--tls-san",
                "B.example.com",
                "-t",
                "s3cret",
                "--node-name",
                "n1",
                "--disable-agent",
                "-o",
                "/tmp/kc.yaml",
                "--write-kubeconfig-mode",
                "644",
                "--debug",
                "--cluster-cidr",
                "10.42.0.0/16,fd00:42::/56",
            ])
            .unwrap();
        assert_eq!(c.data_dir, env.dir.path().join("state"));
        assert_eq!(c.bind_address, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(c.https_listen_port, 7443);
        assert_eq!(c.advertise_address, Some("192.168.1.5".parse().unwrap()));
        assert_eq!(
            c.tls_san,
            vec!["a.example.com", "10.0.0.1", "b.example.com"]
        );
        assert_eq!(c.token.as_deref(), Some("s3cret"));
        assert_eq!(c.node_name, "n1");
        assert!(c.disable_agent);
        assert_eq!(c.write_kubeconfig, PathBuf::from("/tmp/kc.yaml"));
        assert_eq!(c.write_kubeconfig_mode, 0o644);
        assert!(c.debug);
        assert_eq!(c.cluster_cidr, "10.42.0.0/16,fd00:42::/56");
        let c = env.server(&["--disable-agent=false", "-v", "6"]).unwrap();
        assert!(!c.disable_agent);
        assert_eq!(c.log_level(), tracing::Level::TRACE);
    }

    #[test]
    fn env_vars_apply_and_cli_beats_env() {
        let env = Env::new();
        std::env::set_var("K3RS_TOKEN", "from-env");
        std::env::set_var("K3RS_HTTPS_LISTEN_PORT", "8443");
        std::env::set_var("K3RS_KUBECONFIG_MODE", "0644");
        std::env::set_var("K3RS_TLS_SAN", "x.example,y.example");
        std::env::set_var("K3RS_DISABLE_AGENT", "true");
        let c = env.server(&[]).unwrap();
        assert_eq!(c.token.as_deref(), Some("from-env"));
        assert_eq!(c.https_listen_port, 8443);
        assert_eq!(c.write_kubeconfig_mode, 0o644);
        assert_eq!(c.tls_san, vec!["x.example", "y.example"]);
        assert!(c.disable_agent);
        let c = env.server(&["--https-listen-port", "9443"]).unwrap();
        assert_eq!(c.https_listen_port, 9443);
    }

    #[test]
    fn token_file_is_read_when_no_token() {
        let env = Env::new();
        let f = env.write("tok", "  abc123\n");
        let c = env.server(&["--token-file", f.to_str().unwrap()]).unwrap();
        assert_eq!(c.token.as_deref(), Some("abc123"));
        let c = env
            .server(&["--token-file", f.to_str().unwrap(), "--token", "direct"])
            .unwrap();
        assert_eq!(c.token.as_deref(), Some("direct"));
        let e = env.server(&["--token-file", "missing"]).unwrap_err();
        assert!(e.to_string().contains("cannot read --token-file"), "{e}");
    }

    #[test]
    fn config_file_values_and_cli_wins() {
        let env = Env::new();
        let cfg = env.write(
            "c.yaml",
            "https-listen-port: 7443\n\
             write-kubeconfig-mode: \"0644\"\n\
             tls-san:\n  - one.example\n  - 10.1.1.1\n\
             disable-agent: true\n\
             token: filetoken\n\
             node-name: fromfile\n\
             d: /srv/k3rs\n",
        );
        let c = env.server(&["--config", cfg.to_str().unwrap()]).unwrap();
        assert_eq!(c.https_listen_port, 7443);
        assert_eq!(c.write_kubeconfig_mode, 0o644);
        assert_eq!(c.tls_san, vec!["one.example", "10.1.1.1"]);
        assert!(c.disable_agent);
        assert_eq!(c.token.as_deref(), Some("filetoken"));
        assert_eq!(c.node_name, "fromfile");
        assert_eq!(c.data_dir, PathBuf::from("/srv/k3rs"));
        assert_eq!(c.config_files, vec![cfg.clone()]);

        // Command line beats the file; list flags append.
        let c = env
            .server(&[
                "-c",
                cfg.to_str().unwrap(),
                "--https-listen-port",
                "9443",
                "--node-name=cli",
                "--tls-san",
                "two.example",
                "--disable-agent=false",
            ])
            .unwrap();
        assert_eq!(c.https_listen_port, 9443);
        assert_eq!(c.node_name, "cli");
        assert_eq!(c.tls_san, vec!["one.example", "10.1.1.1", "two.example"]);
        assert!(!c.disable_agent);

        // The file beats the environment (as in k3s, where file values become arguments).
        std::env::set_var("K3RS_NODE_NAME", "fromenv");
        std::env::set_var("K3RS_CLUSTER_DOMAIN", "env.local");
        let c = env.server(&["-c", cfg.to_str().unwrap()]).unwrap();
        assert_eq!(c.node_name, "fromfile");
        assert_eq!(c.cluster_domain, "env.local");
    }

    #[test]
    fn config_file_from_env_var_and_default_path() {
        let env = Env::new();
        let cfg = env.write("other.yaml", "cluster-domain: from.env.file\n");
        std::env::set_var("K3RS_CONFIG_FILE", cfg.to_str().unwrap());
        assert_eq!(env.server(&[]).unwrap().cluster_domain, "from.env.file");
        std::env::remove_var("K3RS_CONFIG_FILE");

        // The default path is optional...
        assert_eq!(env.server(&[]).unwrap().cluster_domain, "cluster.local");
        // ...and read when present.
        env.write("etc/config.yaml", "cluster-domain: default.file\n");
        assert_eq!(env.server(&[]).unwrap().cluster_domain, "default.file");

        // An explicit file that is missing is an error.
        let e = env.server(&["--config", "nope.yaml"]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("nope.yaml") && msg.contains("cannot read"),
            "{msg}"
        );
    }

    #[test]
    fn drop_ins_merge_in_name_order_with_append() {
        let env = Env::new();
        let cfg = env.write(
            "etc/config.yaml",
            "tls-san: [base.example]\nnode-name: base\ncluster-domain: base.local\n",
        );
        env.write(
            "etc/config.yaml.d/20-b.yaml",
            "node-name: second\ntls-san+: [b.example]\n",
        );
        env.write(
            "etc/config.yaml.d/10-a.yml",
            "node-name: first\ntls-san+: a.example\n",
        );
        env.write("etc/config.yaml.d/30-ignored.txt", "node-name: ignored\n");
        env.write("etc/config.yaml.d/40-c.yaml", "cluster-domain: c.local\n");
        let c = env.server(&[]).unwrap();
        assert_eq!(c.node_name, "second");
        assert_eq!(c.tls_san, vec!["base.example", "a.example", "b.example"]);
        assert_eq!(c.cluster_domain, "c.local");
        assert_eq!(c.config_files.len(), 4);
        assert_eq!(c.config_files[0], cfg);
        assert!(c.config_files[1].ends_with("10-a.yml"));

        // A later file without "+" replaces the list.
        env.write("etc/config.yaml.d/50-d.yaml", "tls-san: [only.example]\n");
        let c = env.server(&["--tls-san", "cli.example"]).unwrap();
        assert_eq!(c.tls_san, vec!["only.example", "cli.example"]);
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let env = Env::new();
        let cfg = env.write("c.yaml", "node-name: a\nflannel-backend: vxlan\n");
        let msg = env
            .server(&["-c", cfg.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("flannel-backend"), "{msg}");
        assert!(msg.contains(cfg.to_str().unwrap()), "{msg}");
        assert_eq!(msg.lines().count(), 1);
    }

    #[test]
    fn corrupt_yaml_names_file_and_line() {
        let env = Env::new();
        let cfg = env.write("bad.yaml", "node-name: a\ntls-san: [x\ntoken: y\n");
        let e = env.server(&["-c", cfg.to_str().unwrap()]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with(cfg.to_str().unwrap()), "{msg}");
        assert!(
            matches!(e, ConfigError::File { line: Some(_), .. }),
            "{msg}"
        );
        assert!(msg.contains("invalid YAML"), "{msg}");
        assert_eq!(msg.lines().count(), 1);

        let cfg = env.write("list.yaml", "- a\n- b\n");
        let msg = env
            .server(&["-c", cfg.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("expected a mapping"), "{msg}");
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        let env = Env::new();
        let cases: &[(&[&str], &str)] = &[
            (&["--cluster-cidr", "10.42.0.0/33"], "--cluster-cidr"),
            (&["--service-cidr", "10.43.0.0"], "--service-cidr"),
            (&["--cluster-cidr", "banana/16"], "--cluster-cidr"),
            (&["--https-listen-port", "0"], "--https-listen-port"),
            (&["--https-listen-port", "70000"], "--https-listen-port"),
            (
                &["--write-kubeconfig-mode", "0999"],
                "--write-kubeconfig-mode",
            ),
            (
                &["--write-kubeconfig-mode", "1777"],
                "--write-kubeconfig-mode",
            ),
            (&["--cluster-domain", "bad_domain"], "--cluster-domain"),
            (&["--bind-address", "nowhere"], "--bind-address"),
            (&["--tls-san", "not a name"], "--tls-san"),
            (&["--disable-agent=maybe"], "--disable-agent"),
        ];
        for (args, flag) in cases {
            let e = env.server(args).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, ConfigError::Invalid { .. }), "{args:?}: {msg}");
            assert!(msg.contains(flag), "{args:?}: {msg}");
            assert_eq!(msg.lines().count(), 1, "{msg}");
        }
        // IPv6 CIDR is fine.
        let c = env.server(&["--service-cidr", "fd00:43::/112"]).unwrap();
        assert_eq!(c.api_service_ip(), Some("fd00:43::1".parse().unwrap()));

        // Bad values in a file name the file.
        let cfg = env.write("c.yaml", "cluster-cidr: 10.42.0.0/40\n");
        let msg = env
            .server(&["-c", cfg.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(cfg.to_str().unwrap()) && msg.contains("cluster-cidr"),
            "{msg}"
        );
    }

    #[test]
    fn yaml_mode_number_and_single_value_rules() {
        let env = Env::new();
        let cfg = env.write("m.yaml", "write-kubeconfig-mode: 0644\n");
        let c = env.server(&["-c", cfg.to_str().unwrap()]).unwrap();
        assert_eq!(c.write_kubeconfig_mode, 0o644);
        let cfg = env.write("m2.yaml", "write-kubeconfig-mode: 644\n");
        let c = env.server(&["-c", cfg.to_str().unwrap()]).unwrap();
        assert_eq!(c.write_kubeconfig_mode, 0o644);

        let cfg = env.write("l.yaml", "node-name: [a, b]\n");
        let msg = env
            .server(&["-c", cfg.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("single value"), "{msg}");
    }

    #[test]
    fn cidr_helpers() {
        assert_eq!(
            parse_cidr("10.43.0.0/16").unwrap(),
            ("10.43.0.0".parse().unwrap(), 16)
        );
        assert!(parse_cidr("::/129").is_err());
        assert_eq!(
            nth_address("10.43.7.9".parse().unwrap(), 16, 1),
            "10.43.0.1".parse::<IpAddr>().unwrap()
        );
        assert!(parse_cidr_list("10.0.0.0/8,10.1.0.0/16").is_err());
    }
}
