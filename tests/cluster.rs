//! Acceptance tests of the multi-node cluster harness (tests/common/cluster.rs): a server
//! and agents in their own network namespaces on a simulated LAN join, get distinct pod
//! subnets, run pods, survive a stop and restart, can be cut off the LAN, and leave
//! nothing behind.
//!
//! Needs root, iproute2, containerd, runc, busybox-static and kubectl (`apt-get install
//! iproute2 containerd runc busybox-static`); every test fails loudly, never skips, when
//! one is missing.

mod common;

use common::cluster::{leftovers, remove_stale_clusters, require_environment, Cluster};
use common::eventually;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn pod_cidr(c: &Cluster, i: usize) -> String {
    c.jsonpath(&format!("node/{}", c.node_name(i)), "{.spec.podCIDR}")
}

/// Waits until every node has a podCIDR (the IPAM controller works asynchronously).
fn pod_cidrs(c: &Cluster) -> Vec<String> {
    let ok = eventually(30, || {
        (1..=c.node_count()).all(|i| !pod_cidr(c, i).is_empty())
    });
    assert!(
        ok,
        "not every node got a podCIDR:\n{}",
        c.kubectl(&["get", "nodes", "-o", "yaml"]).stdout
    );
    (1..=c.node_count()).map(|i| pod_cidr(c, i)).collect()
}

fn lease(c: &Cluster, i: usize) -> String {
    let r = c.kubectl(&[
        "get",
        "-n",
        "kube-node-lease",
        "lease",
        &c.node_name(i),
        "-o",
        "jsonpath={.spec.renewTime}",
    ]);
    r.ok().trim().to_string()
}

#[test]
fn three_nodes_join_with_distinct_pod_cidrs() {
    let mut c = Cluster::start(3);
    let wide = c.kubectl(&["get", "nodes", "-o", "wide"]);
    let out = wide.ok();
    for i in 1..=3 {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(c.node_name(i).as_str()))
            .unwrap_or_else(|| panic!("{} missing from:\n{out}", c.node_name(i)));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.get(1), Some(&"Ready"), "{out}");
        assert_eq!(
            cols.get(5).copied(),
            Some(c.node_ip(i).to_string().as_str()),
            "INTERNAL-IP of {}: {out}",
            c.node_name(i)
        );
    }
    let roles = c.jsonpath("nodes", "{.items[*].metadata.name}");
    assert_eq!(roles, "node-1 node-2 node-3");
    let cidrs = pod_cidrs(&c);
    let distinct: BTreeSet<&String> = cidrs.iter().collect();
    assert_eq!(distinct.len(), 3, "podCIDRs not distinct: {cidrs:?}");
    for cidr in &cidrs {
        assert!(
            cidr.starts_with("10.42.") && cidr.ends_with("/24"),
            "podCIDR {cidr} outside the default cluster CIDR 10.42.0.0/16"
        );
    }

    // Removing a node stops it and takes it out of the cluster.
    c.remove_node(3);
    assert_eq!(c.pid(3), None);
    assert_eq!(
        c.jsonpath("nodes", "{.items[*].metadata.name}"),
        "node-1 node-2"
    );
}

fn pod_log_dirs(c: &Cluster, i: usize) -> Vec<String> {
    std::fs::read_dir(c.pod_log_dir(i))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn pods_run_on_every_node() {
    let c = Cluster::start(3);
    for i in 1..=3 {
        c.run_pod(&format!("busy-{i}"), i, "echo started; sleep 3600");
    }
    for i in 1..=3 {
        let pod = format!("busy-{i}");
        c.wait_pod_running(&pod);
        assert_eq!(
            c.jsonpath(&format!("pod/{pod}"), "{.spec.nodeName} {.status.hostIP}"),
            format!("{} {}", c.node_name(i), c.node_ip(i))
        );
        // The log comes from the pod's own node, through its kubelet endpoint on the LAN.
        let ok = eventually(30, || c.kubectl(&["logs", &pod]).stdout == "started\n");
        let r = c.kubectl(&["logs", &pod]);
        assert!(ok, "kubectl logs {pod}: {} {}", r.stdout, r.stderr);
        // So does exec, which later cross-node tests use to reach other pods.
        let exec = c.kubectl(&["exec", &pod, "--", "sh", "-c", "echo exec on $(hostname)"]);
        assert_eq!(exec.ok(), format!("exec on {pod}\n"));
        // Its container ran on that node and no other (logs under the node's own dir).
        for j in 1..=3 {
            let has = pod_log_dirs(&c, j)
                .iter()
                .any(|d| d.starts_with(&format!("default_{pod}_")));
            assert_eq!(
                has,
                i == j,
                "{pod}'s logs on node {j}: {:?}",
                pod_log_dirs(&c, j)
            );
        }
    }
}

#[test]
fn a_node_can_be_stopped_restarted_and_cut_off() {
    let mut c = Cluster::start(3);
    let cidr3 = pod_cidrs(&c)[2].clone();

    c.stop_node(3);
    let stopped_at = lease(&c, 3);
    assert!(!stopped_at.is_empty(), "node-3 has no Lease");

    // Meanwhile: cut node 2 off the LAN and back.
    let kubelet2 = SocketAddr::from((c.node_ip(2), 10250));
    assert!(c.ping_from(1, c.node_ip(2)), "node 1 cannot ping node 2");
    c.tcp_connect_from(1, kubelet2, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("node 1 cannot reach node 2's kubelet at {kubelet2}: {e}"));
    c.cut_off(2);
    assert!(
        !c.ping_from(1, c.node_ip(2)),
        "node 2 still answers pings when cut off"
    );
    assert!(
        c.tcp_connect_from(1, kubelet2, Duration::from_secs(2))
            .is_err(),
        "node 1 still reaches node 2's kubelet when it is cut off"
    );
    c.reconnect(2);
    assert!(
        eventually(10, || c.ping_from(1, c.node_ip(2))),
        "node 2 unreachable after reconnect"
    );
    c.tcp_connect_from(1, kubelet2, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("node 2's kubelet unreachable after reconnect: {e}"));

    // Node 1 renews its Lease every 10 s: two renewals seen means node 3 missed at least one.
    let mut seen = vec![lease(&c, 1)];
    let ok = eventually(60, || {
        let now = lease(&c, 1);
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        seen.len() >= 3
    });
    assert!(ok, "node-1's Lease is not renewed: {seen:?}");
    assert_eq!(
        lease(&c, 3),
        stopped_at,
        "node-3's Lease renewed while it was stopped"
    );

    c.start_node(3);
    assert!(
        eventually(60, || lease(&c, 3) != stopped_at),
        "node-3's Lease not renewed after restart:\n{}",
        c.log(3)
    );
    c.wait_node_ready(3);
    assert_eq!(
        pod_cidr(&c, 3),
        cidr3,
        "node-3's podCIDR changed across a restart"
    );
}

#[test]
fn a_dropped_cluster_leaves_nothing_behind() {
    let mut c = Cluster::start(2);
    c.run_pod("on-1", 1, "sleep 3600");
    c.run_pod("on-2", 2, "sleep 3600");
    c.wait_pod_running("on-1");
    c.wait_pod_running("on-2");
    let uid2 = c.jsonpath("pod/on-2", "{.metadata.uid}");
    // A crashed agent leaves its containerd, shim and container behind: the harness must
    // remove them too.
    c.kill9_node(2);
    let (netns, dir) = (c.netns_names(), c.dir().to_path_buf());
    let before = leftovers(netns.clone(), dir.clone());
    for what in ["network namespace", "process", "mount", "dir"] {
        assert!(
            before.iter().any(|l| l.starts_with(what)),
            "a running cluster should have a {what}: {before:#?}"
        );
    }
    drop(c);
    let after = leftovers(netns, dir);
    assert!(after.is_empty(), "left behind: {after:#?}");
    let cgroups: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("k3rs").join(&uid2))
                .collect()
        })
        .unwrap_or_else(|_| Vec::new());
    let left: Vec<_> = cgroups.iter().filter(|p| p.exists()).collect();
    assert!(left.is_empty(), "pod cgroups left behind: {left:?}");
}

fn run(cmd: &[&str]) {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().expect(cmd[0]);
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A process the test started; killed when the test ends, pass or fail. Its output goes
/// nowhere, so it never holds the test runner's pipes open.
struct Spawned(Child);

impl Spawned {
    fn new(cmd: &mut Command) -> Spawned {
        Spawned(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{cmd:?}: {e}")),
        )
    }

    fn exited(&mut self) -> bool {
        eventually(10, || matches!(self.0.try_wait(), Ok(Some(_))))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn clusters_of_dead_test_processes_are_removed() {
    require_environment();
    // A stand-in for a test process: alive while its cluster is made (so no other
    // harness's stale sweep takes it half-made), then killed like an aborted test run.
    let owner = Spawned::new(Command::new("sleep").arg("600"));
    let key = format!("{}-0", owner.0.id());
    let netns = format!("k3rs-{key}-node-1");
    let dir = std::env::temp_dir().join(format!("k3rs-cluster-{key}-stale"));
    std::fs::create_dir_all(dir.join("mnt")).expect("stale dir");
    std::fs::write(dir.join("k3rs.log"), "").expect("stale file");
    run(&["ip", "netns", "add", &netns]);
    let mnt = dir.join("mnt").to_string_lossy().into_owned();
    run(&["mount", "-t", "tmpfs", "stale", &mnt]);
    // One process in the stale node namespace, one naming the stale dir.
    let mut in_ns = Spawned::new(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .args(["sleep", "600"]),
    );
    let mut names_dir = Spawned::new(Command::new("tail").arg("-f").arg(dir.join("k3rs.log")));
    drop(owner);

    remove_stale_clusters();

    assert!(in_ns.exited(), "process in the stale namespace still runs");
    assert!(
        names_dir.exited(),
        "process naming the stale dir still runs"
    );
    let left = leftovers(vec![netns], dir);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn a_cluster_is_removed_when_its_test_panics() {
    let names = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let c = Cluster::start(1);
        c.run_pod("doomed", 1, "sleep 3600");
        c.wait_pod_running("doomed");
        *names.lock().unwrap() = Some((c.netns_names(), c.dir().to_path_buf()));
        panic!("a test failing on purpose with a running pod");
    }));
    assert!(result.is_err());
    let (netns, dir) = names.into_inner().unwrap().expect("cluster started");
    let left = leftovers(netns, dir);
    assert!(left.is_empty(), "left behind: {left:#?}");
}
