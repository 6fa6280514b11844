//! One node of a test cluster: its dirs, the command line of its k3rs process (server for
//! node 1, agent for the others), and starting, signalling and reaping that process
//! inside the node's network namespace.
//!
//! Agents join for real: the first start runs `k3rs agent --server https://<node 1>:6443`
//! with the server's token (read from node 1's `<data-dir>/server/token`, handed over in
//! `K3RS_TOKEN` so it never shows in the process list) and a node password file of its own;
//! later starts find the certificates the join wrote and pass no token, like a rebooted node.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::lan;

/// A node: index (1-based), name, namespace, dirs and process.
pub(super) struct Node {
    pub index: usize,
    pub name: String,
    pub netns: String,
    /// `<cluster dir>/node-<i>`.
    pub dir: PathBuf,
    /// Extra flags (role's, then the node's own).
    pub args: Vec<String>,
    pub child: Option<Child>,
}

impl Node {
    pub fn new(cluster_dir: &Path, prefix: &str, index: usize, args: Vec<String>) -> Node {
        Node {
            index,
            name: format!("node-{index}"),
            netns: lan::node_netns(prefix, index),
            dir: cluster_dir.join(format!("node-{index}")),
            args,
            child: None,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    pub fn pod_log_dir(&self) -> PathBuf {
        self.dir.join("pod-logs")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("k3rs.log")
    }

    pub fn images_dir(&self) -> PathBuf {
        self.data_dir().join("agent").join("images")
    }

    fn config_file(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    /// The node password file (k3s: /etc/rancher/node/password), one per node so nodes on
    /// one machine do not share it.
    pub fn password_file(&self) -> PathBuf {
        self.dir.join("node").join("password")
    }

    /// The kubeconfig a finished join leaves; its presence means "joined already".
    fn joined_kubeconfig(&self) -> PathBuf {
        self.data_dir()
            .join("agent")
            .join(k3rs::server::pki::AGENT_KUBECONFIG)
    }

    /// The server's join token (node 1's `<data-dir>/server/token`).
    fn server_token(&self) -> String {
        let node1 = self
            .dir
            .parent()
            .expect("node dir has a cluster dir")
            .join("node-1");
        let path = node1.join("data").join("server").join("token");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("server token {}: {e}", path.display()))
            .trim()
            .to_string()
    }

    /// Makes the dirs and an empty config file (so /etc/k3rs/config.yaml is never read).
    pub fn prepare(&self) {
        std::fs::create_dir_all(self.images_dir()).expect("node images dir");
        std::fs::write(
            self.config_file(),
            "# k3rs cluster-test node: settings come from flags\n",
        )
        .expect("node config file");
    }

    /// The command line: `k3rs server` on node 1, `k3rs agent --server` elsewhere (with the
    /// token until the node has joined).
    fn command(&self, admin_kubeconfig: &Path) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_k3rs"));
        let ip = lan::node_ip(self.index).to_string();
        if self.index == 1 {
            c.arg("server")
                .args(["--advertise-address", &ip, "--tls-san", &ip])
                .arg("--write-kubeconfig")
                .arg(admin_kubeconfig);
        } else {
            let server = format!("https://{}:{}", lan::node_ip(1), super::API_PORT);
            c.args(["agent", "--server", &server])
                .arg("--node-password-file")
                .arg(self.password_file());
        }
        c.arg("--data-dir")
            .arg(self.data_dir())
            .args(["--node-name", &self.name, "--node-ip", &ip])
            .arg("--run-dir")
            .arg(self.run_dir())
            .arg("--pod-log-dir")
            .arg(self.pod_log_dir())
            .args(&self.args);
        // Only what the harness says: no K3RS_* from the test's environment.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("K3RS_") {
                c.env_remove(k);
            }
        }
        c.env("RUST_LOG", "info")
            .env("K3RS_CONFIG_FILE", self.config_file());
        if self.index > 1 && !self.joined_kubeconfig().exists() {
            c.env("K3RS_TOKEN", self.server_token());
        }
        c
    }

    /// Starts the process inside the node's namespace, appending to its log.
    pub fn spawn(&mut self, admin_kubeconfig: &Path) {
        assert!(self.child.is_none(), "{} is running already", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("node log file");
        let mut c = self.command(admin_kubeconfig);
        c.stdin(Stdio::null())
            .stdout(log.try_clone().expect("node log"))
            .stderr(log);
        lan::enter(&mut c, &lan::netns_path(&self.netns))
            .unwrap_or_else(|e| panic!("{}: {e}", self.name));
        self.child = Some(
            c.spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", self.name)),
        );
    }

    /// Fails the test when the process exited although it should run.
    #[track_caller]
    pub fn assert_running(&self) {
        // `try_wait` needs &mut; /proc tells the same without reaping.
        if let Some(c) = &self.child {
            let stat =
                std::fs::read_to_string(format!("/proc/{}/stat", c.id())).unwrap_or_default();
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            if stat.is_empty() || state.starts_with('Z') {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                panic!("{} exited early; log:\n{log}", self.name);
            }
        }
    }

    /// Sends `sig` to the process, if it runs.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) has no memory preconditions; the child is not reaped yet, so
            // its pid cannot have been reused.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// Waits up to `grace` for the process to exit, then SIGKILLs it. True when it exited
    /// by itself.
    pub fn reap(&mut self, grace: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// SIGTERM, then waits; fails the test if it takes over 30 s.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        if !self.reap(Duration::from_secs(30)) {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            panic!(
                "{} did not stop within 30s of SIGTERM; log:\n{log}",
                self.name
            );
        }
    }

    /// SIGKILL, like a crash.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.reap(Duration::from_secs(10));
    }
}
