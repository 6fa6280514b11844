//! Services end to end: ClusterIP and NodePort allocation through the API (and across a
//! server restart), the built-in `kubernetes` and `kube-dns` Services, endpoints from
//! pod readiness, and the service proxy on a multi-node cluster (tests/common/cluster.rs):
//! ClusterIP load-balancing over every ready pod from another node, an unready pod taken
//! out, NodePort and LoadBalancer answered on every node's address, and a Service without
//! endpoints refused at once.
//!
//! The cluster test needs root, iproute2, nftables, containerd, runc, busybox-static and
//! kubectl (CI has them all; locally: `apt-get install containerd runc iproute2 nftables
//! busybox-static` and run as root). The allocation tests need only kubectl.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, ClusterBuilder, IMAGE};
use common::{eventually, Server};

fn svc_yaml(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n    targetPort: http\n{extra_spec}"
    )
}

fn get(s: &Server, what: &str, path: &str) -> String {
    s.kubectl(&["get", what, "-o", &format!("jsonpath={path}")])
        .ok()
        .trim()
        .to_string()
}

#[test]
fn cluster_ips_and_node_ports_are_allocated_once_and_kept_across_a_restart() {
    let mut s = Server::start();
    // The built-in services.
    assert!(
        eventually(10, || get(&s, "svc/kubernetes", "{.spec.clusterIP}")
            == "10.43.0.1"),
        "kubernetes service: {}",
        s.log()
    );
    assert_eq!(
        get(
            &s,
            "svc/kubernetes",
            "{.spec.ports[0].port} {.spec.ports[0].targetPort}"
        ),
        format!("443 {}", s.port)
    );
    assert!(!get(&s, "endpoints/kubernetes", "{.subsets[0].addresses[0].ip}").is_empty());
    let dns = s.kubectl(&[
        "get",
        "svc",
        "-n",
        "kube-system",
        "kube-dns",
        "-o",
        "jsonpath={.spec.clusterIP} {.spec.ports[*].port} {.spec.ports[*].protocol}",
    ]);
    assert_eq!(dns.ok().trim(), "10.43.0.10 53 53 9153 UDP TCP TCP");

    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for i in 0..20 {
        let name = format!("s{i}");
        s.kubectl_stdin(
            &["apply", "-f", "-"],
            &svc_yaml(&name, "  type: NodePort\n"),
        )
        .ok();
        let ip = get(&s, &format!("svc/{name}"), "{.spec.clusterIP}");
        let np = get(&s, &format!("svc/{name}"), "{.spec.ports[0].nodePort}");
        assert!(ip.starts_with("10.43."), "clusterIP {ip:?}");
        let n: u16 = np.parse().expect("nodePort");
        assert!((30000..=32767).contains(&n), "nodePort {n}");
        assert!(ips.insert(ip.clone()), "clusterIP {ip} handed out twice");
        assert!(ports.insert(n), "nodePort {n} handed out twice");
    }
    // Chosen values: in range and free, or refused with upstream's words.
    let taken_ip = get(&s, "svc/s0", "{.spec.clusterIP}");
    let r = s.kubectl_stdin(
        &["apply", "-f", "-"],
        &svc_yaml("dup", &format!("  clusterIP: {taken_ip}\n")),
    );
    assert!(
        r.err().contains("provided IP is already allocated"),
        "{}",
        r.err()
    );
    let r = s.kubectl_stdin(
        &["apply", "-f", "-"],
        &svc_yaml("far", "  clusterIP: 10.99.0.5\n"),
    );
    assert!(
        r.err().contains("The range of valid IPs is 10.43.0.0/16"),
        "{}",
        r.err()
    );
    let taken_port = get(&s, "svc/s0", "{.spec.ports[0].nodePort}");
    let r = s.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: dupport\nspec:\n  type: NodePort\n  ports:\n  - port: 80\n    nodePort: {taken_port}\n"),
    );
    assert!(
        r.err().contains("provided port is already allocated"),
        "{}",
        r.err()
    );
    s.kubectl_stdin(
        &["apply", "-f", "-"],
        &svc_yaml("mine", "  clusterIP: 10.43.0.77\n"),
    )
    .ok();
    let headless = s.kubectl_stdin(
        &["apply", "-f", "-"],
        &svc_yaml("hl", "  clusterIP: None\n"),
    );
    headless.ok();
    assert_eq!(get(&s, "svc/hl", "{.spec.clusterIP}"), "None");

    s.restart();
    for i in 20..40 {
        let name = format!("s{i}");
        s.kubectl_stdin(
            &["apply", "-f", "-"],
            &svc_yaml(&name, "  type: NodePort\n"),
        )
        .ok();
        let ip = get(&s, &format!("svc/{name}"), "{.spec.clusterIP}");
        let np: u16 = get(&s, &format!("svc/{name}"), "{.spec.ports[0].nodePort}")
            .parse()
            .expect("nodePort");
        assert!(
            ip != "10.43.0.77" && ips.insert(ip.clone()),
            "clusterIP {ip} reused after restart"
        );
        assert!(ports.insert(np), "nodePort {np} reused after restart");
    }
    assert!(!get(&s, "svc/s3", "{.spec.clusterIP}").is_empty());
}

/// A labelled httpd pod on node `i` answering with its name on the named port `http`.
fn web_pod(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: web\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p 8080 -h /www\"]\n    ports:\n    - name: http\n      containerPort: 8080\n"
    )
}

/// Runs `script` in pod `pod` and returns its stdout.
fn exec(c: &Cluster, pod: &str, script: &str) -> String {
    c.kubectl(&["exec", pod, "--", "sh", "-c", script]).stdout
}

/// The pod names that answered `n` fetches of `url` from pod `client`.
fn answers(c: &Cluster, client: &str, url: &str, n: usize) -> Vec<String> {
    let out = exec(
        c,
        client,
        &format!("for i in $(seq 1 {n}); do timeout 3 wget -q -O - {url} || echo FAIL; done"),
    );
    out.lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn ready_ips(c: &Cluster) -> usize {
    c.jsonpath("endpoints/web", "{.subsets[*].addresses[*].ip}")
        .split_whitespace()
        .count()
}

#[test]
fn services_reach_ready_pods_on_cluster_ip_node_port_and_load_balancer() {
    let c = ClusterBuilder::new(3).start();
    for i in 1..=3 {
        c.apply(&web_pod(&format!("web-{i}"), &c.node_name(i)));
    }
    c.apply(&svc_yaml("web", "  type: LoadBalancer\n"));
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: nothing\nspec:\n  selector:\n    app: none\n  ports:\n  - port: 80\n",
    );
    c.run_pod("client", 2, "exec sleep 3600");
    for p in ["web-1", "web-2", "web-3", "client"] {
        c.wait_pod_running(p);
    }
    assert!(
        eventually(30, || ready_ips(&c) == 3),
        "endpoints: {}",
        c.kubectl(&["get", "endpoints,endpointslices", "-o", "yaml"])
            .stdout
    );
    let slice_eps = c
        .kubectl(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={.items[*].endpoints[*].addresses[0]}",
        ])
        .stdout;
    assert_eq!(
        slice_eps.split_whitespace().count(),
        3,
        "slices: {slice_eps}"
    );
    let cluster_ip = c.jsonpath("svc/web", "{.spec.clusterIP}");

    // ClusterIP from a pod on another node: every pod answers over 100 requests.
    let url = format!("http://{cluster_ip}/");
    // Once the rules are in place on the client's node, every request must succeed. (Under
    // heavy load the first rules can lag the endpoints by a moment; that settles first,
    // one quick request at a time: a failing round of ten would take 30 s by itself.)
    assert!(
        eventually(90, || {
            let got = answers(&c, "client", &url, 1);
            !got.is_empty() && got.iter().all(|a| a.starts_with("web-"))
        }),
        "the client never reached {url}\n{}",
        c.logs_tail()
    );
    assert!(
        eventually(60, || !answers(&c, "client", &url, 10)
            .contains(&"FAIL".to_string())),
        "{}",
        c.logs_tail()
    );
    let got = answers(&c, "client", &url, 100);
    let distinct: HashSet<&String> = got.iter().collect();
    for i in 1..=3 {
        assert!(
            distinct.contains(&format!("web-{i}")),
            "web-{i} never answered: {got:?}"
        );
    }
    assert!(
        !distinct.contains(&"FAIL".to_string()),
        "failed requests: {got:?}"
    );

    // An unready pod leaves the endpoints and gets no more traffic.
    let patch = r#"{"status":{"conditions":[{"type":"Ready","status":"False"}]}}"#;
    c.kubectl(&[
        "patch",
        "pod",
        "web-1",
        "--subresource=status",
        "--type=strategic",
        "-p",
        patch,
    ]);
    let start = Instant::now();
    assert!(
        eventually(10, || ready_ips(&c) == 2),
        "web-1 still ready in endpoints"
    );
    assert!(c
        .jsonpath(
            "endpoints/web",
            "{.subsets[*].notReadyAddresses[*].targetRef.name}"
        )
        .contains("web-1"));
    std::thread::sleep(Duration::from_secs(2).saturating_sub(start.elapsed()));
    let got = answers(&c, "client", &url, 30);
    assert!(
        !got.contains(&"web-1".to_string()),
        "unready web-1 answered: {got:?}"
    );

    // NodePort on every node's address, from a pod and from the nodes themselves.
    let np = c.jsonpath("svc/web", "{.spec.ports[0].nodePort}");
    for i in 1..=3 {
        let url = format!("http://{}:{np}/", c.node_ip(i));
        let got = answers(&c, "client", &url, 3);
        assert!(
            got.iter().all(|g| g.starts_with("web-")),
            "NodePort on node {i}: {got:?}"
        );
        let out = c.exec_in_node(i % 3 + 1, &["timeout", "3", "wget", "-q", "-O", "-", &url]);
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("web-"),
            "NodePort {url} from node {}: {}",
            i % 3 + 1,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // LoadBalancer: the node addresses show in kubectl get svc and answer on port 80.
    let want: Vec<String> = (1..=3).map(|i| c.node_ip(i).to_string()).collect();
    assert!(
        eventually(20, || c
            .jsonpath("svc/web", "{.status.loadBalancer.ingress[*].ip}")
            == want.join(" ")),
        "ingress: {}",
        c.jsonpath("svc/web", "{.status.loadBalancer}")
    );
    let table = c.kubectl(&["get", "svc", "web"]).stdout;
    assert!(table.contains(&want.join(",")), "kubectl get svc:\n{table}");
    for ip in &want {
        let got = answers(&c, "client", &format!("http://{ip}/"), 2);
        assert!(
            got.iter().all(|g| g.starts_with("web-")),
            "LoadBalancer on {ip}: {got:?}"
        );
    }

    // No endpoints: refused at once, not timed out.
    let nothing = c.jsonpath("svc/nothing", "{.spec.clusterIP}");
    let out = exec(
        &c,
        "client",
        &format!("timeout 5 wget -q -O - http://{nothing}/ 2>&1; echo rc=$?"),
    );
    assert!(out.contains("refused"), "no-endpoint service: {out}");
    let addr = std::net::SocketAddr::new(nothing.parse().expect("clusterIP"), 80);
    let err = c
        .tcp_connect_from(3, addr, Duration::from_secs(5))
        .expect_err("connect to a service without endpoints");
    // Refused (a TCP reset), not a timeout: clients fail at once.
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}
