//! Tests of flag, environment and config-file resolution.

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
        parse_with(argv(&["k3rs", "token", "list"]), &h),
        Ok(Command::Token(_))
    ));
    match parse_with(
        argv(&[
            "k3rs",
            "agent",
            "--kubeconfig",
            "k.yaml",
            "--node-name",
            "pi-2",
        ]),
        &h,
    ) {
        Ok(Command::Agent(a)) => {
            assert_eq!(a.node_name, "pi-2");
            assert!(a.kubeconfig.ends_with("k.yaml"));
            assert_eq!(a.cluster_dns, vec!["10.43.0.10".to_string()]);
            assert_eq!(a.settings.kubelet_port, 10250);
        }
        other => panic!("agent: {other:?}"),
    }
    match parse_with(
        argv(&[
            "k3rs",
            "agent",
            "--server",
            "https://s:6443",
            "--token",
            "T",
        ]),
        &h,
    ) {
        Ok(Command::Agent(a)) => {
            let j = a.join.expect("join options");
            assert_eq!(j.server, "https://s:6443");
            assert_eq!(j.token.as_deref(), Some("T"));
            assert!(!format!("{j:?}").contains("\"T\""));
        }
        other => panic!("agent join: {other:?}"),
    }
    match parse_with(
        argv(&[
            "k3rs",
            "agent",
            "join",
            "--server",
            "https://s",
            "--with-node-id",
        ]),
        &h,
    ) {
        Ok(Command::Agent(a)) => assert!(a.join.expect("join").with_node_id),
        other => panic!("agent join: {other:?}"),
    }
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
    let cfg = env.write("c.yaml", "node-name: a\negress-selector-mode: agent\n");
    let msg = env
        .server(&["-c", cfg.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("egress-selector-mode"), "{msg}");
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

#[test]
fn short_keys_and_booleans_in_file() {
    let env = Env::new();
    let cfg = env.write("s.yaml", "v: 2\ndebug: true\nt: tok\no: kc.yaml\n");
    let c = env.server(&["-c", cfg.to_str().unwrap()]).unwrap();
    assert_eq!(c.verbosity, 2);
    assert!(c.debug);
    assert_eq!(c.token.as_deref(), Some("tok"));
    assert_eq!(c.write_kubeconfig, env.dir.path().join("kc.yaml"));
    let c = env
        .server(&["-c", cfg.to_str().unwrap(), "-v", "0", "--debug=false"])
        .unwrap();
    assert_eq!(c.verbosity, 0);
    assert!(!c.debug);
    assert_eq!(c.log_level(), tracing::Level::INFO);
}

#[test]
fn node_cidr_mask_size_defaults_to_24_and_must_fit_the_cluster_cidr() {
    let env = Env::new();
    assert_eq!(env.server(&[]).unwrap().node_cidr_mask_size, 24);
    let c = env.server(&["--node-cidr-mask-size", "26"]).unwrap();
    assert_eq!(c.node_cidr_mask_size, 26);
    let e = env.server(&["--node-cidr-mask-size", "31"]).unwrap_err();
    assert!(e.to_string().contains("from 8 to 30"), "{e}");
    let e = env
        .server(&[
            "--cluster-cidr",
            "10.42.0.0/16",
            "--node-cidr-mask-size",
            "12",
        ])
        .unwrap_err();
    assert!(e.to_string().contains("at least 16"), "{e}");
    let e = env
        .server(&["--cluster-cidr", "10.42.0.0/16,fd00::/96"])
        .unwrap_err();
    assert!(e.to_string().contains("/64 or shorter"), "{e}");
}

#[test]
fn flannel_backend_takes_k3s_names_and_the_ipv4_cluster_cidr() {
    let env = Env::new();
    let c = env.server(&[]).unwrap();
    assert_eq!(c.agent.flannel_backend, crate::cni::Backend::Vxlan);
    assert_eq!(c.agent.cluster_cidr.to_string(), "10.42.0.0/16");
    let c = env
        .server(&[
            "--flannel-backend",
            "host-gw",
            "--cluster-cidr",
            "fd00:42::/56,10.100.0.0/16",
        ])
        .unwrap();
    assert_eq!(c.agent.flannel_backend, crate::cni::Backend::HostGw);
    assert_eq!(c.agent.cluster_cidr.to_string(), "10.100.0.0/16");
    let e = env
        .server(&["--flannel-backend", "wireguard-native"])
        .unwrap_err();
    assert!(e.to_string().contains("not built into k3rs"), "{e}");
    let e = env.server(&["--flannel-backend", "bogus"]).unwrap_err();
    assert!(
        e.to_string()
            .contains("must be one of vxlan, host-gw, none"),
        "{e}"
    );
}
