//! The `k3rs` command line: version, start-up errors and graceful shutdown, run against
//! the real binary.

mod common;

use common::Server;
use std::process::Command;

fn k3rs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_k3rs"))
}

#[test]
fn version_flag_and_subcommand() {
    for args in [vec!["--version"], vec!["version"]] {
        let out = k3rs().args(&args).output().expect("run k3rs");
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("k3rs version v1.35.0+k3rs1"), "{text}");
    }
}

#[test]
fn busy_port_is_a_one_line_error() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "").unwrap();
    let out = k3rs()
        .args([
            "server",
            "--disable-agent",
            "--bind-address",
            "127.0.0.1",
            "--https-listen-port",
            &s.port.to_string(),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--write-kubeconfig")
        .arg(dir.path().join("kc.yaml"))
        .env("K3RS_CONFIG_FILE", &cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "k3rs: error: listen tcp 127.0.0.1:{}: bind: address already in use",
            s.port
        )),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Nothing was written for the failed server.
    assert!(!dir.path().join("data/server/tls").exists());
    assert!(!dir.path().join("kc.yaml").exists());
}

#[test]
fn corrupt_config_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "tls-san: [a, b\nhttps-listen-port: : 7\n").unwrap();
    let out = k3rs()
        .args(["server", "--disable-agent"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("K3RS_CONFIG_FILE", &cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("k3rs: error: ") && err.contains(cfg.to_str().unwrap()),
        "{err}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing may be written on a config error"
    );

    std::fs::write(&cfg, "no-such-flag: 1\n").unwrap();
    let out = k3rs()
        .args(["server", "--disable-agent"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("K3RS_CONFIG_FILE", &cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-flag"));
}

#[test]
fn unwritable_data_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "").unwrap();
    // A regular file where the data dir should be: not writable as a directory even for root.
    let blocker = dir.path().join("data");
    std::fs::write(&blocker, "not a directory").unwrap();
    let port = common::free_port();
    let out = k3rs()
        .args([
            "server",
            "--disable-agent",
            "--bind-address",
            "127.0.0.1",
            "--https-listen-port",
            &port.to_string(),
        ])
        .arg("--data-dir")
        .arg(&blocker)
        .arg("--write-kubeconfig")
        .arg(dir.path().join("kc.yaml"))
        .env("K3RS_CONFIG_FILE", &cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("data directory") && err.contains(blocker.to_str().unwrap()),
        "{err}"
    );
}

#[test]
fn sigterm_stops_gracefully_and_state_persists() {
    let mut s = Server::start();
    s.kubectl(&["create", "namespace", "keep"]).ok();
    s.stop();
    assert!(s.log().contains("shutting down"), "{}", s.log());
    s.start_again();
    s.kubectl(&["get", "namespace", "keep"]).ok();
    // The key files are private.
    use std::os::unix::fs::PermissionsExt;
    for f in [
        "server/tls/server-ca.key",
        "server/tls/client-ca.key",
        "server/tls/serving-kube-apiserver.key",
        "server/token",
    ] {
        let mode = std::fs::metadata(s.data_dir().join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let kc = std::fs::metadata(s.kubeconfig())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(kc, 0o600);
    let token = std::fs::read_to_string(s.data_dir().join("server/token")).unwrap();
    assert!(
        token.starts_with("K10") && token.contains("::server:"),
        "token format"
    );
}

#[test]
fn new_tls_san_reissues_only_the_serving_certificate() {
    let mut s = Server::start();
    let tls = s.data_dir().join("server/tls");
    let ca = std::fs::read(tls.join("server-ca.crt")).unwrap();
    let serving = std::fs::read(tls.join("serving-kube-apiserver.crt")).unwrap();
    s.stop();
    s.start_again_with(&["--tls-san", "k3rs.example.test"]);
    assert_eq!(
        std::fs::read(tls.join("server-ca.crt")).unwrap(),
        ca,
        "the CA must be kept"
    );
    let serving2 = std::fs::read(tls.join("serving-kube-apiserver.crt")).unwrap();
    assert_ne!(
        serving2, serving,
        "the serving certificate must be reissued"
    );
    // The kubeconfig written before still works (same CA, same admin certificate).
    s.kubectl(&["get", "ns", "default"]).ok();
}

#[test]
fn agent_without_root_is_a_clear_error() {
    // Run the server as `nobody` (setpriv from util-linux): the control plane could
    // start, the agent cannot, and says what to do.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test drops privileges and needs root; CI (.ci/run) runs it as root"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "").unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_k3rs"))
        .args([
            "server",
            "--bind-address",
            "127.0.0.1",
            "--https-listen-port",
        ])
        .arg(common::free_port().to_string())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--write-kubeconfig")
        .arg(dir.path().join("kc.yaml"))
        .env("K3RS_CONFIG_FILE", &cfg)
        .env("HOME", dir.path())
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("k3rs: error: agent: the node agent needs root")
            && last.contains("--disable-agent"),
        "{err}"
    );
}
