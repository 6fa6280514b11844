//! Multi-node test clusters on one machine: one `k3rs server` (node 1, with its embedded
//! agent) and N-1 `k3rs agent`s, every node in its own network namespace on a simulated
//! LAN, each with its own data dir, run dir (its own supervised containerd) and pod log
//! dir under the cluster's temporary dir, and the busybox test image in
//! `<data-dir>/agent/images`. The test process itself stays in the host namespace and
//! reaches the cluster through [`Cluster::kubectl`] (run inside node 1's namespace).
//!
//! Address plan (scripts/cluster.sh follows the same): LAN 172.30.0.0/24 in a namespace of
//! its own (bridge `br0` = 172.30.0.1, every node's default gateway); node i has
//! `eth0` = 172.30.0.(10+i), its name is `node-<i>`; the API server listens on
//! 172.30.0.11:6443 and every kubelet endpoint on its node's :10250. Namespaces are named
//! `k3rs-<pid>-<n>-lan` / `k3rs-<pid>-<n>-node-<i>` and the dir is
//! `<tmp>/k3rs-cluster-<pid>-<n>-*`, so parallel clusters never collide and the remains of
//! a dead test process are found and removed when the next harness starts.
//!
//! Agents join for real: the first start of node i is `k3rs agent --server
//! https://172.30.0.11:6443` with the server's token, which fetches node credentials
//! (`system:node:node-<i>`) and a kubelet serving certificate for the node's LAN address into
//! `<data-dir>/agent`; later starts need no token (see `nodes.rs`).
//!
//! Drop removes everything (also after a panic): pods, node processes, leftover
//! processes, mounts and cgroups, namespaces and the dir.
//!
//! Needs root, iproute2, containerd, runc, busybox-static and kubectl; [`Cluster::start`]
//! fails loudly, saying how to get what is missing.

#![allow(dead_code)]

mod cleanup;
#[path = "images.rs"]
mod images;
mod lan;
mod nodes;
mod pods;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{eventually, Run};
use nodes::Node;

/// The busybox test image every node has imported.
pub const IMAGE: &str = "k3rs.test/busybox:1";

/// The API server's port on node 1.
pub const API_PORT: u16 = 6443;

/// How a cluster is made: node count and extra flags per role or node.
pub struct ClusterBuilder {
    nodes: usize,
    server_args: Vec<String>,
    agent_args: Vec<String>,
    node_args: BTreeMap<usize, Vec<String>>,
    extra_images: Vec<String>,
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

impl ClusterBuilder {
    /// A cluster of `nodes` nodes (node 1 the server); at least 1.
    pub fn new(nodes: usize) -> ClusterBuilder {
        assert!(nodes >= 1, "a cluster needs at least the server node");
        ClusterBuilder {
            nodes,
            server_args: Vec::new(),
            agent_args: Vec::new(),
            node_args: BTreeMap::new(),
            extra_images: Vec::new(),
        }
    }

    /// One more tag of the busybox test image on every node (besides [`IMAGE`]), e.g. to
    /// roll a Deployment from one image to another.
    pub fn image(mut self, tag: &str) -> ClusterBuilder {
        self.extra_images.push(tag.to_string());
        self
    }

    /// Extra flags for `k3rs server` (node 1), e.g. `--flannel-backend host-gw`.
    pub fn server_args(mut self, args: &[&str]) -> ClusterBuilder {
        self.server_args.extend(owned(args));
        self
    }

    /// Extra flags for every `k3rs agent` (nodes 2..N).
    pub fn agent_args(mut self, args: &[&str]) -> ClusterBuilder {
        self.agent_args.extend(owned(args));
        self
    }

    /// Extra flags for node `i` only (after the role's flags).
    pub fn node_args(mut self, i: usize, args: &[&str]) -> ClusterBuilder {
        assert!((1..=self.nodes).contains(&i), "no node {i}");
        self.node_args.entry(i).or_default().extend(owned(args));
        self
    }

    /// Makes the LAN and the nodes, starts the server, then every agent at once, and waits
    /// until every node is Ready.
    pub fn start(self) -> Cluster {
        require_environment();
        cleanup_stale_once();
        let started = std::time::Instant::now();
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!(
            "k3rs-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("k3rs-cluster-{}-", &prefix["k3rs-".len()..]))
            .tempdir()
            .expect("cluster temp dir");
        let mut c = Cluster {
            lan: lan::lan_netns(&prefix),
            prefix,
            dir: dir.keep(),
            nodes: Vec::new(),
        };
        // Every name is recorded before it is made: a panic from here on is cleaned up.
        lan::create_lan(&c.lan);
        for i in 1..=self.nodes {
            let mut args = if i == 1 {
                self.server_args.clone()
            } else {
                self.agent_args.clone()
            };
            args.extend(self.node_args.get(&i).cloned().unwrap_or_default());
            let node = Node::new(&c.dir, &c.prefix, i, args);
            c.nodes.push(node);
            lan::create_node(&c.lan, &c.nodes[i - 1].netns, i);
            c.nodes[i - 1].prepare();
        }
        // One image archive, copied: building it is the slow part.
        let first = c.nodes[0].images_dir().join("busybox.tar");
        images::write_oci_archive(&first, IMAGE, false);
        for n in &c.nodes[1..] {
            std::fs::copy(&first, n.images_dir().join("busybox.tar")).expect("copy image");
        }
        for (k, tag) in self.extra_images.iter().enumerate() {
            let file = format!("extra-{k}.tar");
            let archive = c.nodes[0].images_dir().join(&file);
            images::write_oci_archive(&archive, tag, false);
            for n in &c.nodes[1..] {
                std::fs::copy(&archive, n.images_dir().join(&file)).expect("copy image");
            }
        }
        c.start_node(1);
        for i in 2..=c.nodes.len() {
            c.start_node(i);
        }
        for i in 1..=c.nodes.len() {
            c.wait_node_ready(i);
        }
        eprintln!(
            "cluster harness: {} node(s) Ready in {:.1}s ({})",
            c.nodes.len(),
            started.elapsed().as_secs_f64(),
            c.dir.display()
        );
        c
    }
}

/// A running test cluster; see the module doc.
pub struct Cluster {
    prefix: String,
    lan: String,
    dir: PathBuf,
    nodes: Vec<Node>,
}

impl Cluster {
    /// `ClusterBuilder::new(nodes).start()`.
    pub fn start(nodes: usize) -> Cluster {
        ClusterBuilder::new(nodes).start()
    }

    fn node(&self, i: usize) -> &Node {
        assert!(
            (1..=self.nodes.len()).contains(&i),
            "no node {i} in a {}-node cluster",
            self.nodes.len()
        );
        &self.nodes[i - 1]
    }

    fn node_mut(&mut self, i: usize) -> &mut Node {
        self.node(i);
        &mut self.nodes[i - 1]
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// `k3rs-<pid>-<n>`: the start of every namespace name of this cluster.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The cluster's temporary dir (every node's dirs, logs, kubeconfigs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every network namespace name of this cluster (the LAN's and each node's).
    pub fn netns_names(&self) -> Vec<String> {
        let mut v = vec![self.lan.clone()];
        v.extend(self.nodes.iter().map(|n| n.netns.clone()));
        v
    }

    /// Node `i`'s name (`node-<i>`).
    pub fn node_name(&self, i: usize) -> String {
        self.node(i).name.clone()
    }

    /// Node `i`'s LAN address (its InternalIP).
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        self.node(i);
        lan::node_ip(i)
    }

    /// The LAN bridge's address, every node's default gateway (172.30.0.1).
    pub fn gateway_ip(&self) -> Ipv4Addr {
        lan::gateway()
    }

    /// Node `i`'s network namespace file (for `setns`, `ip netns exec` or `nsenter --net=`).
    pub fn netns_path(&self, i: usize) -> PathBuf {
        lan::netns_path(&self.node(i).netns)
    }

    /// The LAN namespace's file.
    pub fn lan_netns_path(&self) -> PathBuf {
        lan::netns_path(&self.lan)
    }

    /// Node `i`'s data dir.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.node(i).data_dir()
    }

    /// Node `i`'s run dir (containerd socket, pod network namespaces).
    pub fn run_dir(&self, i: usize) -> PathBuf {
        self.node(i).run_dir()
    }

    /// Node `i`'s container log dir.
    pub fn pod_log_dir(&self, i: usize) -> PathBuf {
        self.node(i).pod_log_dir()
    }

    /// Node `i`'s log file (stdout and stderr of its k3rs process, across restarts).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.node(i).log_path()
    }

    /// Node `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// The last lines of every node's log, for failure messages.
    pub fn logs_tail(&self) -> String {
        let mut s = String::new();
        for i in 1..=self.nodes.len() {
            let log = self.log(i);
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(30);
            s.push_str(&format!(
                "--- {} log (last {} lines) ---\n{}\n",
                self.node_name(i),
                lines.len() - from,
                lines[from..].join("\n")
            ));
        }
        s
    }

    /// The admin kubeconfig the server wrote (server URL https://127.0.0.1:6443, valid
    /// inside node 1's namespace).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig.yaml")
    }

    /// The API server URL on the LAN.
    pub fn server_url(&self) -> String {
        format!("https://{}:{API_PORT}", lan::node_ip(1))
    }

    /// Runs `cmd` inside node `i`'s network namespace (mounts are the host's) and returns
    /// its output, e.g. `exec_in_node(2, &["ip", "route"])`.
    pub fn exec_in_node(&self, i: usize, cmd: &[&str]) -> Output {
        let (bin, args) = cmd.split_first().expect("a command");
        let mut c = Command::new(bin);
        c.args(args).stdin(Stdio::null());
        lan::enter(&mut c, &self.netns_path(i))
            .unwrap_or_else(|e| panic!("cannot enter node {i}'s namespace: {e}"));
        c.output()
            .unwrap_or_else(|e| panic!("cannot run {bin} in node {i}'s namespace: {e}"))
    }

    /// Opens a TCP connection from inside node `i`'s namespace to `addr` (on a thread of
    /// its own that enters the namespace), giving up after `timeout`.
    pub fn tcp_connect_from(
        &self,
        i: usize,
        addr: std::net::SocketAddr,
        timeout: Duration,
    ) -> std::io::Result<()> {
        let ns = std::fs::File::open(self.netns_path(i))?;
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: setns(2) on a descriptor we own; it only changes this thread, which
            // exits right after.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            std::net::TcpStream::connect_timeout(&addr, timeout).map(drop)
        })
        .join()
        .expect("connect thread")
    }

    /// Whether one ping from node `i` to `ip` is answered within a second (busybox ping).
    pub fn ping_from(&self, i: usize, ip: Ipv4Addr) -> bool {
        let bb = images::busybox();
        let bb = bb.to_string_lossy();
        let ip = ip.to_string();
        self.exec_in_node(i, &[&bb, "ping", "-c", "1", "-W", "1", &ip])
            .status
            .success()
    }

    /// Runs kubectl inside node 1's namespace against the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Run {
        self.kubectl_input(args, None)
    }

    /// Runs kubectl with `input` on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Run {
        self.kubectl_input(args, Some(input))
    }

    fn kubectl_input(&self, args: &[&str], input: Option<&str>) -> Run {
        self.try_kubectl(args, input).unwrap_or_else(|e| {
            panic!("cannot run kubectl in node 1's namespace: {e}; kubectl must be on PATH")
        })
    }

    /// kubectl without panicking (for Drop, which may run while a panic unwinds).
    fn try_kubectl(&self, args: &[&str], input: Option<&str>) -> std::io::Result<Run> {
        let mut c = Command::new("kubectl");
        c.args(args)
            .envs([
                ("KUBECONFIG", self.kubeconfig()),
                ("KUBECACHEDIR", self.dir.join("kube-cache")),
                ("HOME", self.dir.clone()),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        lan::enter(&mut c, &self.netns_path(1))?;
        let mut child = c.spawn()?;
        // Without input, stdin closes at once (dropped here).
        if let (Some(mut stdin), Some(i)) = (child.stdin.take(), input) {
            stdin.write_all(i.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        Ok(Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// kubectl for cleanup: failures (also failing to start it) are a non-zero exit.
    pub(crate) fn kubectl_quiet(&self, args: &[&str]) -> Run {
        self.try_kubectl(args, None).unwrap_or_else(|e| Run {
            code: -1,
            stdout: String::new(),
            stderr: e.to_string(),
        })
    }

    /// `kubectl apply -f -` of `yaml`; fails the test when kubectl does.
    #[track_caller]
    pub fn apply(&self, yaml: &str) {
        self.kubectl_stdin(&["apply", "-f", "-"], yaml).ok();
    }

    /// Node `i`'s process id, when it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.node(i).child.as_ref().map(|c| c.id())
    }

    /// Starts node `i`'s k3rs process (after a stop or kill). For the server, waits until
    /// the API answers; it does not wait for the node to be Ready (see
    /// [`Cluster::wait_node_ready`]).
    pub fn start_node(&mut self, i: usize) {
        let kubeconfig = self.kubeconfig();
        self.node_mut(i).spawn(&kubeconfig);
        if i == 1 {
            self.wait_api();
        }
    }

    /// Stops node `i` with SIGTERM and waits for it (fails the test after 30 s).
    pub fn stop_node(&mut self, i: usize) {
        self.node_mut(i).stop();
    }

    /// Kills node `i`'s k3rs process with SIGKILL (its containerd and containers are left
    /// as a crash leaves them).
    pub fn kill9_node(&mut self, i: usize) {
        self.node_mut(i).kill9();
    }

    /// Stops and starts node `i` (for node 1, also waits until the API answers). The node's
    /// Ready condition may still be the old one: wait for what the test needs.
    pub fn restart_node(&mut self, i: usize) {
        self.stop_node(i);
        self.start_node(i);
    }

    /// Stops node `i` and deletes its Node object. Not the server.
    pub fn remove_node(&mut self, i: usize) {
        assert!(i > 1, "node 1 is the server: it cannot be removed");
        self.stop_node(i);
        let name = self.node_name(i);
        self.kubectl(&["delete", "node", &name]).ok();
    }

    /// Sets node `i`'s link on the LAN bridge down: nothing reaches it or leaves it.
    pub fn cut_off(&self, i: usize) {
        self.node(i);
        lan::set_connected(&self.lan, i, false);
    }

    /// Undoes [`Cluster::cut_off`].
    pub fn reconnect(&self, i: usize) {
        self.node(i);
        lan::set_connected(&self.lan, i, true);
    }

    /// Waits until node `i`'s Ready condition is True (120 s, then fails with the logs).
    pub fn wait_node_ready(&self, i: usize) {
        let name = self.node_name(i);
        let path = "{.status.conditions[?(@.type==\"Ready\")].status}";
        let ok = eventually(120, || {
            self.node(i).assert_running();
            self.jsonpath(&format!("node/{name}"), path) == "True"
        });
        assert!(
            ok,
            "{name} not Ready after 120s:\n{}\n{}",
            self.kubectl(&["get", "nodes", "-o", "wide"]).stdout,
            self.logs_tail()
        );
    }

    fn wait_api(&self) {
        let ok = eventually(90, || {
            self.node(1).assert_running();
            self.kubeconfig().exists() && {
                let r = self.kubectl(&["get", "--raw", "/readyz"]);
                r.code == 0 && r.stdout.trim() == "ok"
            }
        });
        assert!(ok, "API server not ready after 90s:\n{}", self.logs_tail());
    }

    /// The kubeconfig agent `i` reaches the server with (node credentials).
    pub fn agent_kubeconfig(&self, i: usize) -> PathBuf {
        self.data_dir(i)
            .join("agent")
            .join(k3rs::server::pki::AGENT_KUBECONFIG)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Reconnect first, so pods on a cut-off node can be deleted gracefully.
        for i in 1..=self.nodes.len() {
            let _ = lan::ip_quiet(&["-n", &self.lan, "link", "set", &format!("n{i}"), "up"]);
        }
        if self.nodes.first().is_some_and(|n| n.child.is_some()) {
            self.delete_pods_for_cleanup();
        }
        for n in self.nodes.iter_mut() {
            n.signal(libc::SIGTERM);
        }
        for n in self.nodes.iter_mut() {
            n.reap(Duration::from_secs(30));
        }
        let owned = cleanup::Owned {
            netns: self.netns_names(),
            dir: self.dir.clone(),
        };
        cleanup::purge(&owned, &self.prefix);
    }
}

/// What is left of a dropped cluster's namespaces, processes, mounts and dir (one line
/// each; empty when nothing is). Take `netns_names()` and `dir()` before the drop.
pub fn leftovers(netns: Vec<String>, dir: PathBuf) -> Vec<String> {
    cleanup::remaining(&cleanup::Owned { netns, dir })
}

/// Removes what is left of clusters whose test process is gone (namespaces
/// `k3rs-<pid>-<n>-*`, dirs `<tmp>/k3rs-cluster-<pid>-<n>-*`, their processes and mounts).
/// [`ClusterBuilder::start`] does this once per process.
pub fn remove_stale_clusters() {
    cleanup::remove_stale();
}

fn cleanup_stale_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(cleanup::remove_stale);
}

/// Fails loudly unless this is root with iproute2, containerd, runc, busybox and kubectl.
pub fn require_environment() {
    images::require_agent_environment("cluster");
    for (bin, pkg) in [("ip", "iproute2"), ("kubectl", "kubectl (see README)")] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "{bin} is not on PATH: cluster tests need it; install {pkg}"
        );
    }
}
