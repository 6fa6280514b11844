//! Shared harness for the end-to-end tests: start the real `k3rs` binary on a free
//! loopback port with a temporary data dir, and drive it with the real `kubectl`.
//!
//! `kubectl` is taken from `K3RS_TEST_KUBECTL` (default: `kubectl` on PATH). These tests
//! need no root. Every helper fails the test loudly when a tool is missing.

#![allow(dead_code)]

pub mod cluster;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The kubectl binaries under test: `K3RS_TEST_KUBECTLS` (colon-separated paths) or
/// `kubectl` on PATH.
pub fn kubectls() -> Vec<String> {
    match std::env::var("K3RS_TEST_KUBECTLS") {
        Ok(v) if !v.trim().is_empty() => v
            .split(':')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => vec!["kubectl".to_string()],
    }
}

/// The minor version of a kubectl binary (`1.32.4` → 32).
pub fn kubectl_minor(bin: &str) -> u32 {
    let out = Command::new(bin)
        .args(["version", "--client", "-o", "json"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}; install kubectl (see README)"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["clientVersion"]["minor"]
        .as_str()
        .unwrap_or("0")
        .trim_end_matches('+')
        .parse()
        .unwrap_or(0)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A running k3rs server under test.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub kubectl_bin: String,
    child: Option<Child>,
    extra_args: Vec<String>,
    /// Runs the embedded agent (root, containerd); see [`Server::start_with_agent`].
    agent: bool,
}

/// Result of a kubectl run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "command failed (exit {}):\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Asserts failure and returns stderr.
    #[track_caller]
    pub fn err(&self) -> &str {
        assert_ne!(
            self.code, 0,
            "command unexpectedly succeeded:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        &self.stderr
    }
}

impl Server {
    /// Starts a server with `--disable-agent` and waits until it is ready.
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Starts a server with extra flags.
    pub fn start_with(extra: &[&str]) -> Server {
        let mut s = Server::unstarted(extra, false);
        s.spawn();
        s
    }

    fn unstarted(extra: &[&str], agent: bool) -> Server {
        Server {
            dir: tempfile::tempdir().expect("tempdir"),
            port: free_port(),
            kubectl_bin: "kubectl".into(),
            child: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            agent,
        }
    }

    /// Starts a server with its embedded agent: a containerd of its own under a private
    /// run dir, logs in the test dir, the kubelet endpoint on a free port, node IP
    /// 127.0.0.1. `before_start` gets the data dir first (to drop image tarballs into
    /// `<data-dir>/agent/images`). Then waits until the node is Ready.
    pub fn start_with_agent(extra: &[&str], before_start: impl FnOnce(&Path)) -> Server {
        let mut s = Server::unstarted(extra, true);
        std::fs::create_dir_all(s.data_dir().join("agent").join("images")).expect("images dir");
        before_start(&s.data_dir());
        s.spawn();
        s.wait_node_ready();
        s
    }

    /// The agent's run dir (containerd socket, pod network namespaces).
    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Where the agent writes container logs.
    pub fn pod_log_dir(&self) -> PathBuf {
        self.dir.path().join("pods-logs")
    }

    /// Waits until `kubectl get node test-node` says Ready.
    pub fn wait_node_ready(&self) {
        let ok = eventually(120, || {
            let r = self.kubectl(&[
                "get",
                "node",
                "test-node",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            r.code == 0 && r.stdout.trim() == "True"
        });
        assert!(
            ok,
            "node test-node not Ready after 120s; log:\n{}",
            self.log()
        );
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The kubeconfig the server wrote.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The command line the harness starts.
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_k3rs"));
        c.arg("server")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args([
                "--bind-address",
                "127.0.0.1",
                "--https-listen-port",
                &self.port.to_string(),
                "--node-name",
                "test-node",
            ])
            .arg("--write-kubeconfig")
            .arg(self.kubeconfig())
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .env_remove("K3RS_TOKEN")
            .env("K3RS_CONFIG_FILE", self.dir.path().join("config.yaml"));
        if self.agent {
            c.arg("--run-dir")
                .arg(self.run_dir())
                .arg("--pod-log-dir")
                .arg(self.pod_log_dir())
                .args(["--node-ip", "127.0.0.1"])
                .args(["--kubelet-port", &self.kubelet_port().to_string()]);
            // The single-node harness runs in the host's network namespace, where tests
            // must not create links or routes: its pods get loopback only. Pod networking
            // is tested on the multi-node clusters (common::cluster), in namespaces.
            if !self.extra_args.iter().any(|a| a == "--flannel-backend") {
                c.args(["--flannel-backend", "none"]);
            }
        } else {
            c.arg("--disable-agent");
        }
        c
    }

    /// The kubelet endpoint's port (derived from the API port, so restarts keep it).
    pub fn kubelet_port(&self) -> u16 {
        if self.port > 20000 {
            self.port - 10000
        } else {
            self.port + 10000
        }
    }

    fn spawn(&mut self) {
        let cfg = self.dir.path().join("config.yaml");
        if !cfg.exists() {
            std::fs::write(&cfg, "# k3rs test config: settings come from flags\n")
                .expect("config file");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start k3rs");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits for /readyz through kubectl.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("k3rs server exited early ({status}); log:\n{}", self.log());
                }
            }
            if self.kubeconfig().exists() {
                let r = self.kubectl(&["get", "--raw", "/readyz"]);
                if r.code == 0 && r.stdout.trim() == "ok" {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!("k3rs server not ready after 90s; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs kubectl (the harness's binary) against this server.
    pub fn kubectl(&self, args: &[&str]) -> Run {
        self.kubectl_with(&self.kubectl_bin, args, None)
    }

    /// Runs kubectl with input on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Run {
        self.kubectl_with(&self.kubectl_bin, args, Some(input))
    }

    /// Runs a given kubectl binary.
    pub fn kubectl_with(&self, bin: &str, args: &[&str], input: Option<&str>) -> Run {
        self.kubectl_env(bin, args, input, &[])
    }

    /// Runs a given kubectl binary with extra environment variables.
    pub fn kubectl_env(
        &self,
        bin: &str,
        args: &[&str],
        input: Option<&str>,
        envs: &[(&str, &str)],
    ) -> Run {
        let mut c = Command::new(bin);
        c.envs(envs.iter().copied());
        c.args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("KUBECACHEDIR", self.dir.path().join("kube-cache"))
            .env("HOME", self.dir.path())
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap_or_else(|e| {
            panic!("cannot run {bin}: {e}; kubectl must be on PATH (see README)")
        });
        if let Some(i) = input {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(i.as_bytes())
                .expect("write stdin");
        }
        Run::from(child.wait_with_output().expect("kubectl"))
    }

    /// Spawns a long-running kubectl (e.g. `get -w`) with output to a file.
    pub fn kubectl_background(&self, args: &[&str], out: &Path) -> Child {
        self.kubectl_background_with(&self.kubectl_bin, args, out)
    }

    /// Spawns a long-running run of a given kubectl binary with output to a file.
    pub fn kubectl_background_with(&self, bin: &str, args: &[&str], out: &Path) -> Child {
        let f = std::fs::File::create(out).expect("out file");
        Command::new(bin)
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("KUBECACHEDIR", self.dir.path().join("kube-cache"))
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("out"))
            .stderr(f)
            .spawn()
            .expect("kubectl")
    }

    /// Writes a manifest into the temp dir and returns its path.
    pub fn manifest(&self, name: &str, yaml: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, yaml).expect("write manifest");
        p.to_string_lossy().into_owned()
    }

    /// Stops the server with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        panic!(
                            "k3rs did not stop within 30s of SIGTERM; log:\n{}",
                            self.log()
                        );
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }

    /// Kills the server with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same data dir and port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts the server again after a kill.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Starts the server again (after stop or kill) with different extra flags.
    pub fn start_again_with(&mut self, extra: &[&str]) {
        self.extra_args = extra.iter().map(|s| s.to_string()).collect();
        self.spawn();
    }

    /// Exit status of a stopped server process, waiting for it.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.child.take().expect("running").wait().expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.agent && self.child.is_some() {
            // Let the agent stop and remove every pod's containers, then stop it (and its
            // containerd) so nothing of the test stays behind.
            let _ = self.kubectl(&[
                "delete",
                "pods",
                "--all",
                "--all-namespaces",
                "--grace-period=1",
                "--timeout=60s",
            ]);
            if let Some(c) = self.child.as_ref() {
                unsafe {
                    libc::kill(c.id() as i32, libc::SIGTERM);
                }
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while let Some(c) = self.child.as_mut() {
                if matches!(c.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.agent {
            kill_leftovers(&self.run_dir());
        }
    }
}

/// Kills processes still tied to an agent's run dir after its server stopped (runc shims
/// of containers the test left running), so one test's leftovers never pile up on the
/// machine. Says so on stderr: a leftover is worth a look.
fn kill_leftovers(run_dir: &Path) {
    let marker = run_dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&marker) {
            eprintln!("test harness: killing leftover process {pid}: {cmdline}");
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Polls `f` until it returns true or `secs` pass.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}
