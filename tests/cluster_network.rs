//! Pod networking across nodes, on multi-node test clusters (tests/common/cluster.rs):
//! every node in its own network namespace on a simulated LAN, the real binary, real
//! containerd and runc, the built-in bridge CNI with the vxlan and host-gw backends.
//!
//! Needs root, iproute2, containerd, runc, busybox-static and kubectl (CI has them all;
//! locally: `apt-get install containerd runc iproute2 busybox-static` and run as root).

mod common;

use std::collections::HashSet;
use std::net::Ipv4Addr;

use common::cluster::{Cluster, ClusterBuilder};
use common::eventually;

/// A cluster of `n` nodes, every node on `backend`.
fn cluster(n: usize, backend: &str) -> Cluster {
    ClusterBuilder::new(n)
        .server_args(&["--flannel-backend", backend])
        .agent_args(&["--flannel-backend", backend])
        .start()
}

fn pod_cidr(c: &Cluster, i: usize) -> String {
    c.jsonpath(&format!("node/{}", c.node_name(i)), "{.spec.podCIDR}")
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (net, bits) = cidr.split_once('/').expect("cidr");
    let (ip, net): (Ipv4Addr, Ipv4Addr) = (
        ip.parse().expect("pod IP"),
        net.parse().expect("cidr address"),
    );
    let bits: u32 = bits.parse().expect("prefix");
    let mask = u32::MAX << (32 - bits);
    u32::from(ip) & mask == u32::from(net)
}

/// An httpd pod on node `i` serving `body`; returns its pod IP.
fn httpd(c: &Cluster, name: &str, i: usize, body: &str) -> String {
    c.run_pod(
        name,
        i,
        &format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 8080 -h /www"),
    );
    c.wait_pod_running(name);
    let ip = c.jsonpath(&format!("pod/{name}"), "{.status.podIP}");
    assert!(!ip.is_empty(), "pod {name} has no podIP");
    assert_eq!(
        c.jsonpath(&format!("pod/{name}"), "{.status.podIPs[0].ip}"),
        ip
    );
    ip
}

/// A one-shot pod on node `i` that succeeds when `check` does within 20 tries.
fn probe(c: &Cluster, name: &str, i: usize, check: &str) {
    c.run_pod(
        name,
        i,
        &format!("for t in $(seq 1 20); do if {check}; then exit 0; fi; sleep 1; done; exit 1"),
    );
    c.wait_for(90, &format!("pod/{name}"), "{.status.phase}", "Succeeded");
}

/// A shell check that fetches the httpd's page. (Not `wget -T`: busybox 1.35's static
/// build crashes on it.)
fn fetch(ip: &str, body: &str) -> String {
    format!("timeout 3 wget -q -O - http://{ip}:8080/ | grep -q {body}")
}

/// Routes in node `i`'s namespace to the other nodes' pod subnets.
fn routes(c: &Cluster, i: usize) -> String {
    let out = c.exec_in_node(i, &["ip", "-4", "route", "show"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cross_node_traffic(backend: &str) {
    let mut c = cluster(3, backend);
    let cidrs: Vec<String> = (1..=3).map(|i| pod_cidr(&c, i)).collect();
    assert_eq!(
        cidrs.iter().collect::<HashSet<_>>().len(),
        3,
        "podCIDRs not distinct: {cidrs:?}"
    );

    let ip = httpd(&c, "web", 1, "hello-from-node-1");
    assert!(in_cidr(&ip, &cidrs[0]), "{ip} not in node 1's {}", cidrs[0]);
    for i in 1..=3 {
        probe(
            &c,
            &format!("client-{i}"),
            i,
            &fetch(&ip, "hello-from-node-1"),
        );
    }
    // Pods reach their own node and the server by the nodes' LAN addresses.
    for i in 2..=3 {
        let own = c.node_ip(i);
        let server = c.node_ip(1);
        probe(
            &c,
            &format!("nodes-from-{i}"),
            i,
            &format!("ping -c 1 -W 1 {own} >/dev/null && ping -c 1 -W 1 {server} >/dev/null"),
        );
    }

    // Each node routes the others' pod subnets: through flannel.1, or via the node.
    for i in 1..=3 {
        let r = routes(&c, i);
        for j in (1..=3).filter(|&j| j != i) {
            let line = r
                .lines()
                .find(|l| l.starts_with(&cidrs[j - 1]))
                .unwrap_or_else(|| panic!("node {i} has no route to {}:\n{r}", cidrs[j - 1]));
            match backend {
                "vxlan" => assert!(line.contains("dev flannel.1"), "{line}"),
                _ => assert!(line.contains(&format!("via {}", c.node_ip(j))), "{line}"),
            }
        }
    }

    // Removing node 3 removes its routes on the others.
    c.remove_node(3);
    for i in 1..=2 {
        let gone = eventually(30, || !routes(&c, i).contains(&cidrs[2]));
        assert!(
            gone,
            "node {i} still routes {} after node 3 left:\n{}",
            cidrs[2],
            routes(&c, i)
        );
    }
}

#[test]
fn pods_reach_each_other_across_nodes_with_vxlan() {
    cross_node_traffic("vxlan");
}

#[test]
fn pods_reach_each_other_across_nodes_with_host_gw() {
    cross_node_traffic("host-gw");
}

/// The pod IPs of every pod, by name.
fn pod_ips(c: &Cluster) -> Vec<(String, String)> {
    let out = c
        .kubectl(&[
            "get",
            "pods",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.podIP}{\"\\n\"}{end}",
        ])
        .ok()
        .to_string();
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, ip)| (n.to_string(), ip.to_string()))
        .collect()
}

#[test]
fn pod_addresses_survive_an_agent_restart_and_leave_nothing_behind() {
    let mut c = cluster(2, "vxlan");
    let cidr = pod_cidr(&c, 2);
    let web = httpd(&c, "web", 2, "hello-from-node-2");
    for k in 0..4 {
        c.run_pod(&format!("sleeper-{k}"), 2, "exec sleep 3600");
    }
    for k in 0..4 {
        c.wait_pod_running(&format!("sleeper-{k}"));
    }
    let before = pod_ips(&c);
    let ips: HashSet<&str> = before.iter().map(|(_, ip)| ip.as_str()).collect();
    assert_eq!(ips.len(), 5, "pod IPs not distinct: {before:?}");
    for (name, ip) in &before {
        assert!(in_cidr(ip, &cidr), "{name}: {ip} not in {cidr}");
        assert_ne!(ip, &cidr.replace(".0/24", ".1"), "{name} has the gateway");
    }

    c.restart_node(2);
    assert_eq!(
        pod_ips(&c),
        before,
        "pod IPs changed across the agent restart"
    );
    probe(
        &c,
        "client-after-restart",
        1,
        &fetch(&web, "hello-from-node-2"),
    );
    // A new pod on node 2 runs only once the restarted agent has synced; then the old
    // pods' addresses must still be the same.
    probe(
        &c,
        "local-after-restart",
        2,
        &fetch(&web, "hello-from-node-2"),
    );
    let after: Vec<_> = pod_ips(&c)
        .into_iter()
        .filter(|(n, _)| !n.ends_with("-after-restart"))
        .collect();
    assert_eq!(after, before, "pod IPs changed after the agent re-synced");

    // Deleting the pods returns the addresses and removes their links and namespaces.
    c.kubectl(&[
        "delete",
        "pods",
        "--all",
        "--grace-period=1",
        "--timeout=90s",
    ])
    .ok();
    // Pod veths only: the node's own uplink (eth0) is a veth of the simulated LAN.
    let veths = || {
        let out = c.exec_in_node(2, &["ip", "-o", "link", "show", "type", "veth"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.contains(" eth0@"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        eventually(30, || veths().trim().is_empty()),
        "pod veths left on node 2:\n{}",
        veths()
    );
    let netns_dir = c.run_dir(2).join("netns");
    let left: Vec<_> = std::fs::read_dir(&netns_dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "pod namespaces left: {left:?}");
    let r = routes(&c, 2);
    assert!(
        !r.lines().any(|l| l.contains("veth")),
        "pod routes left on node 2:\n{r}"
    );
}

#[test]
fn two_hundred_pods_get_distinct_addresses_and_give_them_back() {
    let c = cluster(1, "vxlan");
    let cidr = pod_cidr(&c, 1);
    let batch = |tag: &str| {
        let mut list = String::from("apiVersion: v1\nkind: List\nitems:\n");
        for k in 0..200 {
            let pod = c.pod_yaml(&format!("{tag}-{k}"), 1, "exec sleep 3600");
            for (n, line) in pod.lines().enumerate() {
                list.push_str(if n == 0 { "- " } else { "  " });
                list.push_str(line);
                list.push('\n');
            }
        }
        c.apply(&list);
        let all_running = eventually(300, || {
            let phases = c
                .kubectl(&["get", "pods", "-o", "jsonpath={.items[*].status.phase}"])
                .stdout;
            phases
                .split_whitespace()
                .filter(|p| *p == "Running")
                .count()
                == 200
        });
        assert!(all_running, "200 pods not Running\n{}", c.logs_tail());
        let ips = pod_ips(&c);
        let distinct: HashSet<&str> = ips.iter().map(|(_, ip)| ip.as_str()).collect();
        assert_eq!(distinct.len(), 200, "pod IPs not distinct");
        assert!(ips.iter().all(|(_, ip)| in_cidr(ip, &cidr)));
        c.kubectl(&[
            "delete",
            "pods",
            "--all",
            "--grace-period=1",
            "--timeout=300s",
        ])
        .ok();
    };
    batch("first");
    // Every address came back: a second 200 fit on the /24 again.
    batch("second");
}
