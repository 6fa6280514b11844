//! Applications on a multi-node cluster (tests/common/cluster.rs), the way users run them:
//! a Deployment with a readiness probe behind a Service, found through the cluster DNS
//! from another node and following readiness; and a Deployment whose node is cut off
//! moving to the other nodes once the node's pods are evicted.
//!
//! Needs root, iproute2, nftables, containerd, runc, busybox-static and kubectl (CI has
//! them all; locally: `apt-get install containerd runc iproute2 nftables busybox-static`
//! and run as root).

mod common;

use std::collections::HashSet;
use std::time::Instant;

use common::cluster::{Cluster, ClusterBuilder, IMAGE};
use common::eventually;

/// A resolv.conf for the nodes naming a resolver inside the LAN namespace (nothing
/// answers there: every name these tests ask is a cluster name).
fn lan_resolv_conf(dir: &std::path::Path) -> String {
    let path = dir.join("resolv.conf");
    std::fs::write(&path, "nameserver 172.30.0.1\n").expect("resolv.conf");
    path.to_string_lossy().into_owned()
}

/// Deployment `web`: 3 httpd pods answering with their name, ready while /tmp/ready
/// exists; Service `web` on port 80.
fn web_app() -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {IMAGE}
        command: [\"sh\", \"-c\", \"mkdir -p /www && hostname > /www/index.html && touch /tmp/ready && exec httpd -f -p 8080 -h /www\"]
        ports:
        - {{name: http, containerPort: 8080}}
        readinessProbe:
          exec:
            command: [\"test\", \"-f\", \"/tmp/ready\"]
          periodSeconds: 1
          failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
  - {{name: http, port: 80, targetPort: http}}
"
    )
}

/// The pod names that answered `n` fetches of `url` from pod `client` ("FAIL" for a
/// failed one).
fn answers(c: &Cluster, client: &str, url: &str, n: usize) -> Vec<String> {
    let script =
        format!("for i in $(seq 1 {n}); do timeout 3 wget -q -O - {url} || echo FAIL; done");
    c.kubectl(&["exec", client, "--", "sh", "-c", &script])
        .stdout
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn web_pods(c: &Cluster) -> Vec<String> {
    c.jsonpath("pods", "{.items[*].metadata.name}")
        .split_whitespace()
        .filter(|n| n.starts_with("web-"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_deployment_behind_a_service_is_found_by_name_and_follows_readiness() {
    let dir = tempfile::tempdir().expect("temp dir");
    let resolv = lan_resolv_conf(dir.path());
    let c = ClusterBuilder::new(3)
        .server_args(&["--resolv-conf", &resolv])
        .agent_args(&["--resolv-conf", &resolv])
        .start();
    c.apply(&web_app());
    c.apply(
        &c.pod_yaml("client", 2, "exec sleep 3600")
            .replace("restartPolicy: Never", "restartPolicy: Always"),
    );
    c.kubectl(&["rollout", "status", "deployment/web", "--timeout=180s"])
        .ok();
    c.wait_pod_running("client");
    let pods = web_pods(&c);
    assert_eq!(pods.len(), 3, "web pods: {pods:?}");

    // By the service's full name and by its short name, from a pod on node 2: all three
    // pods answer, and no request fails once the rules are in place.
    let url = "http://web.default.svc.cluster.local/";
    assert!(
        eventually(60, || !answers(&c, "client", url, 10)
            .contains(&"FAIL".to_string())),
        "{}",
        c.logs_tail()
    );
    let got = answers(&c, "client", url, 100);
    let seen: HashSet<&str> = got.iter().map(String::as_str).collect();
    assert!(!seen.contains("FAIL"), "failed requests: {got:?}");
    for p in &pods {
        assert!(seen.contains(p.as_str()), "{p} never answered: {got:?}");
    }
    assert!(
        pods.contains(&answers(&c, "client", "http://web/", 1)[0]),
        "the short name does not reach the service"
    );

    // One pod stops being ready: it leaves the endpoints and gets no more requests.
    let unready = &pods[0];
    c.kubectl(&["exec", unready, "--", "rm", "/tmp/ready"]).ok();
    let started = Instant::now();
    let ready_ips = || {
        c.jsonpath("endpoints/web", "{.subsets[*].addresses[*].ip}")
            .split_whitespace()
            .count()
    };
    assert!(eventually(30, || ready_ips() == 2), "{}", c.logs_tail());
    eprintln!(
        "unready pod left the endpoints after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        eventually(10, || !answers(&c, "client", url, 30).contains(unready)),
        "{unready} still gets traffic"
    );
    let got = answers(&c, "client", url, 60);
    assert!(
        !got.contains(unready) && !got.contains(&"FAIL".to_string()),
        "after {unready} became unready: {got:?}"
    );

    // Ready again: it gets traffic again.
    c.kubectl(&["exec", unready, "--", "touch", "/tmp/ready"])
        .ok();
    assert!(
        eventually(30, || answers(&c, "client", url, 30).contains(unready)),
        "{unready} gets no traffic after it is ready again"
    );
}

#[test]
fn a_cut_off_nodes_deployment_pods_move_to_the_other_nodes() {
    let c = ClusterBuilder::new(3)
        .server_args(&[
            "--node-monitor-grace-period",
            "8s",
            "--default-unreachable-toleration-seconds",
            "5",
            "--default-not-ready-toleration-seconds",
            "5",
        ])
        .start();
    c.apply(&format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: 3
  selector:
    matchLabels: {{app: app}}
  template:
    metadata:
      labels: {{app: app}}
    spec:
      terminationGracePeriodSeconds: 1
      # Agent nodes only: the cut-off node is one of them, and its pods can only move to
      # the other.
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - {{key: kubernetes.io/hostname, operator: NotIn, values: [node-1]}}
      containers:
      - name: main
        image: {IMAGE}
        command: [\"sleep\", \"3600\"]
"
    ));
    c.kubectl(&["rollout", "status", "deployment/app", "--timeout=180s"])
        .ok();
    let placement = || {
        c.kubectl(&[
            "get",
            "pods",
            "-l",
            "app=app",
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName} {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ])
        .stdout
    };
    // An agent node with a pod on it is the one to lose (node 1 is the server).
    let before = placement();
    let victim = (2..=3)
        .find(|&i| before.contains(&c.node_name(i)))
        .unwrap_or_else(|| panic!("no pod on an agent node:\n{before}"));
    let victim_name = c.node_name(victim);

    c.cut_off(victim);
    let started = Instant::now();
    // Three Running pods not on the lost node and not being deleted.
    let moved = eventually(180, || {
        placement()
            .lines()
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() == 2 && f[0] != victim_name && f[1] == "Running"
            })
            .count()
            == 3
    });
    assert!(
        moved,
        "pods did not move off {victim_name}:\n{}\n{}",
        placement(),
        c.logs_tail()
    );
    eprintln!(
        "pods replaced on the other nodes {:.0}s after {victim_name} was cut off",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        c.jsonpath(
            &format!("node/{victim_name}"),
            "{.status.conditions[?(@.type==\"Ready\")].status}"
        ),
        "Unknown"
    );
    c.reconnect(victim);
}
