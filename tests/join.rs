//! Secure join end to end. On the multi-node harness (every harness agent joins with the
//! server's full token): a `k3rs token create` token joins a node; a tampered CA hash, a
//! wrong secret and an expired bootstrap token are each refused with one clear line, exit 1
//! and nothing left in the agent's data dir; a second machine claiming a joined node's name
//! with another password gets k3s's 403 message; rotated kubelet certificates keep the node
//! working without re-joining. On loopback (no root needed): the `k3rs token` and
//! `k3rs certificate` subcommands.
//!
//! Agents run by hand here are `nsenter --net=<node netns> k3rs agent ...` (the token in
//! `K3RS_TOKEN`, never in argv), like a second machine on the node's LAN.

mod common;

use common::cluster::{Cluster, ClusterBuilder};
use common::{eventually, free_port, Run, Server};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn server() -> Server {
    Server::start_with(&["--flannel-backend", "none"])
}

fn server_token(s: &Server) -> String {
    read_token(&s.data_dir())
}

fn read_token(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("server/token"))
        .expect("server token")
        .trim()
        .to_string()
}

fn url(s: &Server) -> String {
    format!("https://127.0.0.1:{}", s.port)
}

fn run(c: &mut Command) -> Run {
    let out = c.output().expect("run k3rs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `k3rs <args>` with no K3RS_* settings from the environment.
fn k3rs_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_k3rs"));
    c.env_remove("K3RS_TOKEN")
        .env_remove("K3RS_URL")
        .env("K3RS_CONFIG_FILE", "/dev/null")
        .stdin(Stdio::null());
    c
}

fn k3rs(args: &[&str]) -> Run {
    run(k3rs_command().args(args))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

/// Every file under `dir` (recursively); empty when `dir` does not exist.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Asserts a refused join: exit 1, exactly one error line (returned), no secret in it and
/// nothing written under `data_dir`.
#[track_caller]
fn assert_refused(out: &Output, data_dir: &Path, secret: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "the agent should exit 1: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one error line: {err}");
    assert!(!err.contains(secret), "the secret is in the error: {err}");
    let left = files_under(data_dir);
    assert!(left.is_empty(), "files left behind: {left:?}");
    errors[0].to_string()
}

/// A hand-run agent of the cluster test: `k3rs agent --server <server>` inside node
/// `ns_node`'s network namespace, with its own dirs under `dir`.
struct HandAgent<'a> {
    c: &'a Cluster,
    ns_node: usize,
    name: String,
    ip: String,
    data_dir: PathBuf,
    run_dir: PathBuf,
    pod_log_dir: PathBuf,
    password_file: PathBuf,
    config_file: PathBuf,
}

impl<'a> HandAgent<'a> {
    /// An agent that has nothing yet, in `dir`, calling itself `name`.
    fn fresh(c: &'a Cluster, ns_node: usize, name: &str, dir: &Path) -> HandAgent<'a> {
        std::fs::create_dir_all(dir).expect("agent dir");
        let config_file = dir.join("config.yaml");
        std::fs::write(&config_file, "# settings come from flags\n").expect("config file");
        HandAgent {
            c,
            ns_node,
            name: name.to_string(),
            ip: c.node_ip(ns_node).to_string(),
            data_dir: dir.join("data"),
            run_dir: dir.join("run"),
            pod_log_dir: dir.join("pod-logs"),
            password_file: dir.join("node/password"),
            config_file,
        }
    }

    /// Harness node `i`'s own dirs (same layout as tests/common/cluster/nodes.rs).
    fn of_node(c: &'a Cluster, i: usize) -> HandAgent<'a> {
        let dir = c.dir().join(format!("node-{i}"));
        HandAgent {
            c,
            ns_node: i,
            name: c.node_name(i),
            ip: c.node_ip(i).to_string(),
            data_dir: c.data_dir(i),
            run_dir: c.run_dir(i),
            pod_log_dir: c.pod_log_dir(i),
            password_file: dir.join("node/password"),
            config_file: dir.join("config.yaml"),
        }
    }

    fn command(&self, token: Option<&str>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!(
            "--net={}",
            self.c.netns_path(self.ns_node).display()
        ))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_k3rs"))
        .args(["agent", "--server", &self.c.server_url()])
        .arg("--data-dir")
        .arg(&self.data_dir)
        .args(["--node-name", &self.name, "--node-ip", &self.ip])
        .arg("--run-dir")
        .arg(&self.run_dir)
        .arg("--pod-log-dir")
        .arg(&self.pod_log_dir)
        .arg("--node-password-file")
        .arg(&self.password_file)
        .env_remove("K3RS_TOKEN")
        .env_remove("K3RS_URL")
        .env("K3RS_CONFIG_FILE", &self.config_file)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
        if let Some(t) = token {
            cmd.env("K3RS_TOKEN", t);
        }
        cmd
    }

    /// Runs the agent with `token`, expecting it to be refused; returns the error line.
    #[track_caller]
    fn refused(&self, token: &str, secret: &str) -> String {
        let out = self.command(Some(token)).output().expect("run agent");
        assert_refused(&out, &self.data_dir, secret)
    }

    /// Starts the agent in the background, its output appended to `log`.
    fn spawn(&self, token: Option<&str>, log: &Path) -> Child {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("agent log");
        self.command(token)
            .stdout(f.try_clone().expect("agent log"))
            .stderr(f)
            .spawn()
            .expect("start agent")
    }
}

fn stop_child(mut child: Child) {
    // SAFETY: kill(2) has no memory preconditions; the child is not reaped yet.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let done = eventually(30, || matches!(child.try_wait(), Ok(Some(_))));
    if !done {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `k3rs token create <args>` against the cluster (inside node 1's namespace).
fn cluster_token_create(c: &Cluster, args: &[&str]) -> String {
    let kc = c.kubeconfig();
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", c.netns_path(1).display()))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_k3rs"))
        .args(["token", "create", "--kubeconfig"])
        .arg(&kc)
        .args(args)
        .env_remove("K3RS_TOKEN")
        .env("K3RS_CONFIG_FILE", "/dev/null")
        .stdin(Stdio::null());
    run(&mut cmd).ok().trim().to_string()
}

#[test]
fn agents_join_the_cluster_and_bad_tokens_are_refused() {
    let mut c = ClusterBuilder::new(2).start();
    let token = read_token(&c.data_dir(1));
    let (hash, secret) = token
        .strip_prefix("K10")
        .and_then(|t| t.split_once("::server:"))
        .expect("the server token is K10<hash>::server:<secret>");

    // node-2 joined with the full server token (the harness does that): private keys 0600,
    // the node password 0600 in a 0700 dir, stored hashed on the server, no secret logged.
    let agent = c.data_dir(2).join("agent");
    for key in [
        "client-kubelet.key",
        "serving-kubelet.key",
        "kubelet.kubeconfig",
    ] {
        assert_eq!(mode(&agent.join(key)), 0o600, "{key}");
    }
    let pw_file = c.dir().join("node-2/node/password");
    assert_eq!(mode(&pw_file), 0o600);
    assert_eq!(mode(pw_file.parent().unwrap()), 0o700);
    let hashed = c.kubectl(&[
        "get",
        "secret",
        "-n",
        "kube-system",
        "node-2.node-password.k3rs",
        "-o",
        "jsonpath={.data.hash}",
    ]);
    assert!(!hashed.ok().is_empty());
    let password = std::fs::read_to_string(&pw_file).unwrap();
    let log = c.log(2);
    assert!(!log.contains(password.trim()), "node password in the log");
    assert!(!log.contains(secret), "token secret in the log");

    // Refusals, from a second machine on node 2's LAN address with nothing joined yet.
    let tmp = c.dir().join("hand-agents");
    let stranger = HandAgent::fresh(&c, 2, "stranger", &tmp.join("stranger"));
    let mut bad_hash = hash.as_bytes().to_vec();
    bad_hash[0] = if bad_hash[0] == b'a' { b'b' } else { b'a' };
    let tampered = format!(
        "K10{}::server:{secret}",
        String::from_utf8(bad_hash).unwrap()
    );
    let line = stranger.refused(&tampered, secret);
    assert!(
        line.contains("token CA hash does not match the Cluster CA certificate hash"),
        "{line}"
    );
    let line = stranger.refused(&format!("K10{hash}::server:wrongsecret"), "wrongsecret");
    assert!(line.contains("rejected the token"), "{line}");

    let expiring = cluster_token_create(&c, &["--ttl", "1s"]);
    let bootstrap = expiring.rsplit("::").next().unwrap().to_string();
    let bootstrap_secret = bootstrap.split('.').nth(1).expect("id.secret").to_string();
    // Expired once a second has passed; the wait is on the token, not a duration check.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let line = stranger.refused(&expiring, &bootstrap_secret);
    assert!(line.contains("rejected the token"), "{line}");

    // The same node name from another machine (another password): k3s's 403 message.
    let twin = HandAgent::fresh(&c, 2, "node-2", &tmp.join("twin"));
    let line = twin.refused(&token, secret);
    assert!(
        line.contains("Node password rejected, duplicate hostname"),
        "{line}"
    );

    // A `k3rs token create` token joins: node-2 is wiped (certificates and Node object; its
    // password stays) and joins again with it, then the harness restarts it without a token.
    let fresh = cluster_token_create(&c, &[]);
    assert!(fresh.starts_with(&format!("K10{hash}::")), "{fresh}");
    c.stop_node(2);
    c.kubectl(&["delete", "node", "node-2"]).ok();
    for f in std::fs::read_dir(&agent).unwrap().filter_map(|e| e.ok()) {
        if f.path().is_file() {
            std::fs::remove_file(f.path()).unwrap();
        }
    }
    let hand = HandAgent::of_node(&c, 2);
    let log = c.dir().join("hand-agents/node-2.log");
    let child = hand.spawn(Some(&fresh), &log);
    let registered = eventually(120, || {
        c.kubectl(&["get", "node", "node-2", "-o", "name"]).code == 0
    });
    let hand_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(registered, "node-2 did not register again:\n{hand_log}");
    assert!(hand_log.contains("joined the cluster"), "{hand_log}");
    stop_child(child);
    c.start_node(2);
    c.wait_node_ready(2);

    // Rotated kubelet certificates: renewed with the current ones at the next start, no
    // token, and the node keeps working.
    let cert = agent.join("client-kubelet.crt");
    let before = std::fs::read_to_string(&cert).unwrap();
    c.stop_node(2);
    let data = c.data_dir(2);
    k3rs(&[
        "certificate",
        "rotate",
        "--data-dir",
        data.to_str().unwrap(),
    ])
    .ok();
    c.start_node(2);
    let renewed = eventually(60, || {
        std::fs::read_to_string(&cert).unwrap_or_default() != before
    });
    assert!(
        renewed,
        "client certificate not renewed:\n{}",
        c.logs_tail()
    );
    c.wait_node_ready(2);
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: after-rotation\nspec:\n  nodeName: node-2\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {}\n    command: [\"sh\", \"-c\", \"echo rotated-ok; sleep 3600\"]\n",
        common::cluster::IMAGE
    );
    c.apply(&pod);
    let logs = eventually(90, || {
        c.kubectl(&["logs", "after-rotation"])
            .stdout
            .contains("rotated-ok")
    });
    assert!(logs, "kubectl logs after rotation:\n{}", c.logs_tail());
}

/// A loopback agent that is expected to be refused (no root needed).
fn refused_on_loopback(s: &Server, token: &str, secret: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = k3rs_command()
        .args(["agent", "--server", &url(s), "--node-name", "loopback"])
        .arg("--data-dir")
        .arg(&data)
        .arg("--node-password-file")
        .arg(dir.path().join("node/password"))
        .env("K3RS_TOKEN", token)
        .output()
        .expect("run agent");
    assert_refused(&out, &data, secret)
}

#[test]
fn unreachable_server_and_missing_token_are_one_line_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = k3rs_command()
        .args(["agent", "--node-name", "lonely"])
        .args(["--server", &format!("https://127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(&data)
        .env("K3RS_TOKEN", "K10abc::server:s3cret-value")
        .output()
        .expect("run agent");
    // The CA hash is malformed, so the token is refused before anything is sent.
    let line = assert_refused(&out, &data, "s3cret-value");
    assert!(line.contains("token"), "{line}");
    let out = k3rs_command()
        .args(["agent", "--node-name", "lonely"])
        .args(["--server", &format!("https://127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(&data)
        .env("K3RS_TOKEN", "s3cret-value")
        .output()
        .expect("run agent");
    let line = assert_refused(&out, &data, "s3cret-value");
    assert!(line.contains("cannot reach the server"), "{line}");
    let out = k3rs_command()
        .args([
            "agent",
            "--node-name",
            "lonely",
            "--server",
            "https://127.0.0.1:1",
        ])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("run agent");
    let line = assert_refused(&out, &data, "no secret here");
    assert!(line.contains("pass --token"), "{line}");
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
    let old_secret = old.rsplit(':').next().unwrap_or_default().to_string();
    let err = refused_on_loopback(&s, &old, &old_secret);
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
