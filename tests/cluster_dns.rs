//! Node-local cluster DNS on a multi-node test cluster (tests/common/cluster.rs): pods
//! on one node resolve Services, headless endpoints, pod records, PTR, SRV and
//! ExternalName names answered by their own node's agent at the kube-dns ClusterIP
//! (10.43.0.10), get NXDOMAIN for unknown cluster names, and reach names outside the
//! cluster through the node's upstream resolver — a tiny DNS server this test runs in
//! the LAN namespace (172.30.0.1), named to every node with `--resolv-conf`.
//!
//! Needs root, iproute2, containerd, runc, busybox-static and kubectl (CI has them all;
//! locally: `apt-get install containerd runc iproute2 busybox-static` and run as root).

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::{Cluster, ClusterBuilder, IMAGE};
use common::eventually;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

/// What the test's upstream answers for `*.k3rs.test` (A only; NXDOMAIN otherwise).
const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

/// A DNS server on 172.30.0.1:53 inside the LAN namespace, until dropped.
struct Upstream(Arc<AtomicBool>);

impl Drop for Upstream {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn upstream(lan_netns: std::path::PathBuf, addr: Ipv4Addr) -> Upstream {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&lan_netns).expect("LAN namespace");
        // SAFETY: setns(2) on a descriptor we own; it changes only this thread.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns"
        );
        let sock = UdpSocket::bind((addr, 53)).expect("upstream DNS socket");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        ready_tx.send(()).expect("ready");
        let mut buf = [0u8; 4096];
        while !stop2.load(Ordering::SeqCst) {
            let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.metadata.recursion_desired = q.metadata.recursion_desired;
            r.metadata.recursion_available = true;
            r.add_queries(q.queries.clone());
            if let Some(q0) = q.queries.first() {
                let name = q0.name().to_lowercase().to_ascii();
                if !name.ends_with(".k3rs.test.") {
                    r.metadata.response_code = ResponseCode::NXDomain;
                } else if q0.query_type() == RecordType::A {
                    r.add_answer(Record::from_rdata(
                        q0.name().clone(),
                        60,
                        RData::A(A(UPSTREAM_ANSWER)),
                    ));
                }
            }
            let _ = sock.send_to(&r.to_vec().expect("encode"), peer);
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("upstream DNS server started");
    Upstream(stop)
}

const OBJECTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.43.0.50
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: mysql, port: 3306, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: default}
spec:
  type: ExternalName
  externalName: upstream.k3rs.test
"#;

/// A busybox pod on node `i` that sleeps (for `kubectl exec`), with extra spec lines.
fn sleeper(name: &str, node: &str, labels: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  nodeName: {node}\n{extra_spec}  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {IMAGE}\n    command: [\"sleep\", \"3600\"]\n"
    )
}

/// Runs nslookup in the client pod (node 2, answered by node 2's agent) until its output
/// has every `want` (the zone follows the API within a moment); returns the output.
fn lookup(c: &Cluster, args: &[&str], want: &[&str]) -> String {
    let mut cmd = vec!["exec", "client", "--", "busybox", "nslookup"];
    cmd.extend_from_slice(args);
    let mut last = String::new();
    let ok = eventually(30, || {
        let r = c.kubectl(&cmd);
        last = format!("exit {}\n{}{}", r.code, r.stdout, r.stderr);
        want.iter().all(|w| last.contains(w))
    });
    assert!(
        ok,
        "nslookup {args:?}: want {want:?} in:\n{last}\n{}",
        c.logs_tail()
    );
    last
}

#[test]
fn cluster_dns_answers_pods_on_every_node() {
    let dir = tempfile::tempdir().expect("temp dir");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "search k3rs.test\nnameserver 172.30.0.1\n").expect("resolv.conf");
    let resolv = resolv.to_string_lossy().into_owned();
    let mut c = ClusterBuilder::new(2)
        .server_args(&["--resolv-conf", &resolv])
        .agent_args(&["--resolv-conf", &resolv])
        .start();
    let _upstream = upstream(c.lan_netns_path(), c.gateway_ip());

    c.apply(OBJECTS);
    c.apply(&sleeper(
        "db-0",
        &c.node_name(1),
        "app: db",
        "  hostname: db-0\n  subdomain: db\n",
    ));
    c.apply(&sleeper("client", &c.node_name(2), "app: client", ""));
    c.wait_pod_running("db-0");
    c.wait_pod_running("client");
    let db_ip = c.jsonpath("pod/db-0", "{.status.podIP}");
    let client_ip = c.jsonpath("pod/client", "{.status.podIP}");
    assert!(!db_ip.is_empty() && !client_ip.is_empty());
    // The EndpointSlice the endpoints controller would write (made here so this test
    // does not depend on it).
    c.apply(&format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: db-test\n  namespace: default\n  labels:\n    kubernetes.io/service-name: db\n    endpointslice.kubernetes.io/managed-by: cluster-dns-test\naddressType: IPv4\nports:\n- {{name: mysql, port: 3306, protocol: TCP}}\nendpoints:\n- addresses: [\"{db_ip}\"]\n  hostname: db-0\n  conditions: {{ready: true}}\n"
    ));

    // resolv.conf of a ClusterFirst pod.
    let conf = c.kubectl(&["exec", "client", "--", "cat", "/etc/resolv.conf"]);
    assert!(
        conf.ok().contains("nameserver 10.43.0.10")
            && conf.stdout.contains(
                "search default.svc.cluster.local svc.cluster.local cluster.local k3rs.test"
            )
            && conf.stdout.contains("options ndots:5"),
        "{}",
        conf.stdout
    );

    // A ClusterIP service, full name and short name through the search path.
    lookup(
        &c,
        &["web.default.svc.cluster.local"],
        &["Address: 10.43.0.50"],
    );
    lookup(
        &c,
        &["web"],
        &["web.default.svc.cluster.local", "Address: 10.43.0.50"],
    );
    // Headless: the pod IPs, and the endpoint's hostname.
    lookup(
        &c,
        &["db.default.svc.cluster.local"],
        &[&format!("Address: {db_ip}")],
    );
    lookup(
        &c,
        &["db-0.db.default.svc.cluster.local"],
        &[&format!("Address: {db_ip}")],
    );
    // SRV for a named port.
    lookup(
        &c,
        &["-type=SRV", "_http._tcp.web.default.svc.cluster.local"],
        &["80 web.default.svc.cluster.local"],
    );
    lookup(
        &c,
        &["-type=SRV", "_mysql._tcp.db.default.svc.cluster.local"],
        &["3306 db-0.db.default.svc.cluster.local"],
    );
    // Pod A record, PTR of a service and of pods.
    let dashed = client_ip.replace('.', "-");
    lookup(
        &c,
        &[&format!("{dashed}.default.pod.cluster.local")],
        &[&format!("Address: {client_ip}")],
    );
    lookup(
        &c,
        &["10.43.0.50"],
        &["name = web.default.svc.cluster.local"],
    );
    lookup(&c, &[&db_ip], &["name = db-0.db.default.svc.cluster.local"]);
    lookup(
        &c,
        &[&client_ip],
        &[&format!("name = {dashed}.default.pod.cluster.local")],
    );
    // ExternalName: a CNAME, its target resolved upstream.
    lookup(
        &c,
        &["ext.default.svc.cluster.local"],
        &[
            "canonical name = upstream.k3rs.test",
            &format!("Address: {UPSTREAM_ANSWER}"),
        ],
    );
    // Unknown cluster names: NXDOMAIN.
    lookup(
        &c,
        &["nope.default.svc.cluster.local"],
        &["NXDOMAIN", "exit 1"],
    );
    // Outside the cluster: forwarded to the test's upstream.
    lookup(
        &c,
        &["upstream.k3rs.test"],
        &[&format!("Address: {UPSTREAM_ANSWER}")],
    );

    // Node 1's agent answers too, on its bridge address as well.
    let bridge = c.jsonpath(&format!("node/{}", c.node_name(1)), "{.spec.podCIDR}");
    let bridge = bridge.trim_end_matches("0/24").to_string() + "1";
    let r = c.kubectl(&[
        "exec",
        "client",
        "--",
        "busybox",
        "nslookup",
        "web.default.svc.cluster.local",
        &bridge,
    ]);
    assert!(
        r.stdout.contains("Address: 10.43.0.50"),
        "{}{}",
        r.stdout,
        r.stderr
    );

    // A deleted service goes away.
    c.kubectl(&["delete", "service", "web"]).ok();
    lookup(&c, &["web.default.svc.cluster.local"], &["NXDOMAIN"]);

    // After an agent restart (the address on lo is still there) the node answers again.
    c.restart_node(2);
    c.wait_node_ready(2);
    assert!(
        eventually(30, || c.log(2).matches("cluster DNS is serving").count()
            == 2),
        "node 2's DNS server did not come back:\n{}",
        c.logs_tail()
    );
    lookup(
        &c,
        &["db.default.svc.cluster.local"],
        &[&format!("Address: {db_ip}")],
    );
}
