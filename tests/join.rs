//! Secure join end to end: a real `k3rs server` (control plane only, `--flannel-backend none`)
//! on loopback, and standalone `k3rs agent --server ... --token ...` processes in the host
//! namespace. Refusals (tampered CA hash, wrong secret, expired bootstrap token, unreachable
//! server) need no root; the joins that run pods need root, containerd, runc and
//! busybox-static and fail loudly without them.

mod common;
#[path = "common/images.rs"]
mod images;

use common::{eventually, free_port, Run, Server};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "k3rs.test/busybox:1";

fn server() -> Server {
    Server::start_with(&["--flannel-backend", "none"])
}

fn server_token(s: &Server) -> String {
    std::fs::read_to_string(s.data_dir().join("server/token"))
        .expect("server token")
        .trim()
        .to_string()
}

fn url(s: &Server) -> String {
    format!("https://127.0.0.1:{}", s.port)
}

fn k3rs(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_k3rs"))
        .args(args)
        .env_remove("K3RS_TOKEN")
        .env_remove("K3RS_URL")
        .env("K3RS_CONFIG_FILE", "/nonexistent/k3rs-test-config.yaml")
        .output()
        .expect("run k3rs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A standalone agent's directories and ports.
struct Agent {
    dir: tempfile::TempDir,
    name: String,
    kubelet_port: u16,
    child: Option<Child>,
}

impl Agent {
    fn new(name: &str) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("config.yaml"),
            "# settings come from flags\n",
        )
        .expect("config file");
        Agent {
            dir,
            name: name.to_string(),
            kubelet_port: free_port(),
            child: None,
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn agent_dir(&self) -> PathBuf {
        self.data_dir().join("agent")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    fn command(&self, server: &str, token: Option<&str>) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_k3rs"));
        c.args(["agent", "join", "--server", server])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--node-name", &self.name, "--node-ip", "127.0.0.1"])
            .arg("--run-dir")
            .arg(self.dir.path().join("run"))
            .arg("--pod-log-dir")
            .arg(self.dir.path().join("logs"))
            .args(["--kubelet-port", &self.kubelet_port.to_string()])
            .arg("--node-password-file")
            .arg(self.dir.path().join("node/password"))
            .env_remove("K3RS_TOKEN")
            .env_remove("K3RS_URL")
            .env("K3RS_CONFIG_FILE", self.dir.path().join("config.yaml"))
            .env("RUST_LOG", "info");
        // The token goes through the environment, never argv.
        if let Some(t) = token {
            c.env("K3RS_TOKEN", t);
        }
        c
    }

    /// Runs the agent until it exits (a refused join); returns its stderr.
    fn refused(&self, server: &str, token: &str) -> String {
        let out = self
            .command(server, Some(token))
            .stdin(Stdio::null())
            .output()
            .expect("run agent");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "agent should exit 1: {err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "one error line: {err}");
        let left: Vec<_> = std::fs::read_dir(self.agent_dir())
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "files left behind: {left:?}");
        err
    }

    fn start(&mut self, server: &str, token: Option<&str>) {
        std::fs::create_dir_all(self.agent_dir().join("images")).expect("images");
        images::write_oci_archive(&self.agent_dir().join("images/busybox.tar"), IMAGE, false);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .expect("log");
        let child = self
            .command(server, token)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start agent");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill has no memory preconditions.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn wait_ready(&mut self, s: &Server) {
        let name = self.name.clone();
        let ok = eventually(120, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("agent {name} exited ({status}); log:\n{}", self.log());
            }
            let r = s.kubectl(&[
                "get",
                "node",
                &name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            r.code == 0 && r.stdout.trim() == "True"
        });
        assert!(ok, "node {name} not Ready; agent log:\n{}", self.log());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

#[test]
fn refused_joins_say_why_and_leave_nothing_behind() {
    let s = server();
    let token = server_token(&s);
    let (hash, secret) = token
        .strip_prefix("K10")
        .and_then(|t| t.split_once("::server:"))
        .expect("full token");
    let a = Agent::new("refused-1");

    // A tampered CA hash.
    let mut bad_hash: Vec<u8> = hash.as_bytes().to_vec();
    bad_hash[0] = if bad_hash[0] == b'a' { b'b' } else { b'a' };
    let tampered = format!(
        "K10{}::server:{secret}",
        String::from_utf8(bad_hash).unwrap()
    );
    let err = a.refused(&url(&s), &tampered);
    assert!(
        err.contains("token CA hash does not match the Cluster CA certificate hash"),
        "{err}"
    );

    // A wrong secret, in full and bare form.
    for wrong in [
        format!("K10{hash}::server:wrongsecret"),
        "wrongsecret".to_string(),
    ] {
        let err = a.refused(&url(&s), &wrong);
        assert!(err.contains("rejected the token"), "{err}");
        assert!(!err.contains("wrongsecret"), "secret in the error: {err}");
    }

    // An expired bootstrap token: refused, and its Secret is removed.
    let expired = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bootstrap-token-abcdef\n  namespace: kube-system\ntype: bootstrap.kubernetes.io/token\nstringData:\n  token-id: abcdef\n  token-secret: 0123456789abcdef\n  expiration: \"2001-01-01T00:00:00Z\"\n  usage-bootstrap-authentication: \"true\"\n  usage-bootstrap-signing: \"true\"\n";
    s.kubectl_stdin(&["apply", "-f", "-"], expired).ok();
    let err = a.refused(&url(&s), &format!("K10{hash}::abcdef.0123456789abcdef"));
    assert!(err.contains("rejected the token"), "{err}");
    let gone = s.kubectl(&[
        "get",
        "secret",
        "-n",
        "kube-system",
        "bootstrap-token-abcdef",
    ]);
    assert!(gone.err().contains("NotFound"), "{}", gone.stderr);

    // Nothing listening.
    let err = a.refused(&format!("https://127.0.0.1:{}", free_port()), &token);
    assert!(err.contains("cannot reach the server"), "{err}");

    // No token and no certificates.
    let out = a.command(&url(&s), None).output().expect("run agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pass --token"), "{err}");
    assert!(!a.agent_dir().join("kubelet.kubeconfig").exists());
}

#[test]
fn token_subcommands_create_list_delete_and_rotate() {
    let s = server();
    let kc = s.kubeconfig();
    let kc = kc.to_str().unwrap();
    let created = k3rs(&[
        "token",
        "create",
        "--kubeconfig",
        kc,
        "--ttl",
        "2h",
        "--description",
        "for pi",
    ]);
    let token = created.ok().trim().to_string();
    let hash = server_token(&s)[3..67].to_string();
    assert!(token.starts_with(&format!("K10{hash}::")), "{token}");
    let bootstrap = token.rsplit("::").next().unwrap().to_string();
    let id = bootstrap.split('.').next().unwrap().to_string();
    let secret = s.kubectl(&[
        "get",
        "secret",
        "-n",
        "kube-system",
        &format!("bootstrap-token-{id}"),
        "-o",
        "jsonpath={.type}",
    ]);
    assert_eq!(secret.ok(), "bootstrap.kubernetes.io/token");

    let list = k3rs(&["token", "list", "--kubeconfig", kc]);
    let out = list.ok();
    assert!(out.starts_with("TOKEN"), "{out}");
    assert!(out.contains("EXTRA GROUPS"), "{out}");
    let row = out.lines().find(|l| l.starts_with(&bootstrap)).expect(out);
    assert!(
        row.contains("2h") && row.contains("for pi") && row.contains("authentication,signing"),
        "{row}"
    );

    k3rs(&["token", "delete", "--kubeconfig", kc, &id]).ok();
    assert!(!k3rs(&["token", "list", "--kubeconfig", kc])
        .ok()
        .contains(&bootstrap));
    assert!(k3rs(&["token", "delete", "--kubeconfig", kc, &id])
        .err()
        .contains("not found"));

    // Rotation: the old secret stops working, the new one works.
    let old = server_token(&s);
    let rotated = k3rs(&[
        "token",
        "rotate",
        "--kubeconfig",
        kc,
        "--new-token",
        "new-secret-123",
    ]);
    assert!(
        rotated.ok().contains("::server:new-secret-123"),
        "{}",
        rotated.stdout
    );
    assert_eq!(
        server_token(&s),
        format!("K10{hash}::server:new-secret-123")
    );
    let a = Agent::new("rotated-1");
    let err = a.refused(&url(&s), &old);
    assert!(err.contains("rejected the token"), "{err}");
}

#[test]
fn certificate_check_lists_files_and_rotate_reissues_them() {
    let mut s = server();
    let data = s.data_dir();
    let data = data.to_str().unwrap();
    let check = k3rs(&["certificate", "check", "--data-dir", data]);
    let out = check.ok();
    assert!(out.starts_with("FILENAME"), "{out}");
    assert!(
        out.contains("serving-kube-apiserver.crt") && out.contains("server-ca.crt"),
        "{out}"
    );
    assert!(
        out.lines().skip(1).all(|l| l.trim_end().ends_with("OK")),
        "{out}"
    );
    let serving = s.data_dir().join("server/tls/serving-kube-apiserver.crt");
    let ca = s.data_dir().join("server/tls/server-ca.crt");
    let before = std::fs::read_to_string(&serving).unwrap();
    let ca_before = std::fs::read_to_string(&ca).unwrap();

    s.stop();
    k3rs(&["certificate", "rotate", "--data-dir", data]).ok();
    assert!(!serving.exists());
    s.start_again();
    assert_ne!(std::fs::read_to_string(&serving).unwrap(), before);
    assert_eq!(
        std::fs::read_to_string(&ca).unwrap(),
        ca_before,
        "the CA is kept"
    );
    s.kubectl(&["get", "ns", "default"]).ok();
}

#[test]
fn agents_join_run_pods_and_restart_without_a_token() {
    images::require_agent_environment("join");
    let s = server();
    let token = server_token(&s);

    // Full server token.
    let mut a = Agent::new("joined-1");
    a.start(&url(&s), Some(&token));
    a.wait_ready(&s);
    let dir = a.agent_dir();
    for key in [
        "client-kubelet.key",
        "serving-kubelet.key",
        "kubelet.kubeconfig",
    ] {
        assert_eq!(mode(&dir.join(key)), 0o600, "{key}");
    }
    for f in [
        "client-kubelet.crt",
        "serving-kubelet.crt",
        "client-ca.crt",
        "server-ca.crt",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    assert_eq!(mode(&a.dir.path().join("node/password")), 0o600);
    assert_eq!(mode(&a.dir.path().join("node")), 0o700);
    let pw_secret = s.kubectl(&[
        "get",
        "secret",
        "-n",
        "kube-system",
        "joined-1.node-password.k3rs",
        "-o",
        "jsonpath={.data.hash}",
    ]);
    assert!(!pw_secret.ok().is_empty());
    let password = std::fs::read_to_string(a.dir.path().join("node/password")).unwrap();
    assert!(!a.log().contains(password.trim()), "password in the log");
    assert!(!a.log().contains(&token[70..]), "token in the log");

    // logs and exec go through the joined node's kubelet endpoint.
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p1\nspec:\n  nodeName: joined-1\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"echo hello-from-joined; sleep 3600\"]\n"
    );
    s.kubectl_stdin(&["apply", "-f", "-"], &pod).ok();
    let running = eventually(90, || {
        s.kubectl(&["get", "pod", "p1", "-o", "jsonpath={.status.phase}"])
            .stdout
            .trim()
            == "Running"
    });
    assert!(running, "pod not running; agent log:\n{}", a.log());
    let logs = eventually(30, || {
        s.kubectl(&["logs", "p1"])
            .stdout
            .contains("hello-from-joined")
    });
    assert!(logs, "kubectl logs: {}", s.kubectl(&["logs", "p1"]).stderr);
    let exec = s.kubectl(&["exec", "p1", "--", "echo", "exec-ok"]);
    assert_eq!(exec.ok().trim(), "exec-ok");

    // Same node name, another password: refused with k3s's message.
    let other = Agent::new("joined-1");
    let err = other.refused(&url(&s), &token);
    assert!(
        err.contains("Node password rejected, duplicate hostname"),
        "{err}"
    );

    // A restart needs no token.
    a.stop();
    a.start(&url(&s), None);
    a.wait_ready(&s);
    // The restarted agent serves exec again (the Node stays Ready meanwhile, so poll).
    let again = eventually(60, || {
        s.kubectl(&["exec", "p1", "--", "echo", "again"])
            .stdout
            .contains("again")
    });
    assert!(again, "exec after restart; agent log:\n{}", a.log());
    s.kubectl(&["delete", "pod", "p1", "--timeout=60s"]).ok();

    // A bootstrap token from `k3rs token create`.
    let kc = s.kubeconfig();
    let bt = k3rs(&["token", "create", "--kubeconfig", kc.to_str().unwrap()]);
    let bt = bt.ok().trim().to_string();
    let mut b = Agent::new("joined-2");
    b.start(&url(&s), Some(&bt));
    b.wait_ready(&s);
    assert!(b.agent_dir().join("kubelet.kubeconfig").exists());

    // Agent-side rotation renews the kubelet certificates with the current one, no token.
    let before = std::fs::read_to_string(b.agent_dir().join("client-kubelet.crt")).unwrap();
    b.stop();
    let data = b.data_dir();
    let rot = k3rs(&[
        "certificate",
        "rotate",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    rot.ok();
    b.start(&url(&s), None);
    let cert = b.agent_dir().join("client-kubelet.crt");
    let renewed = eventually(60, || {
        std::fs::read_to_string(&cert).unwrap_or_default() != before
    });
    assert!(
        renewed,
        "client certificate not renewed; agent log:\n{}",
        b.log()
    );
    b.wait_ready(&s);
    let marker = b.agent_dir().join("rotate-certificates");
    assert!(eventually(10, || !marker.exists()), "rotation marker left");
}
