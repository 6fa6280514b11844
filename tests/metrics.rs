//! Resource metrics end to end on a single node (server + embedded agent, real containerd):
//! a pod burning CPU and a pod holding 50 MB show in `kubectl top nodes` and `kubectl top
//! pods -A --containers` within 30 s of having two readings, and the metrics.k8s.io values
//! agree within 20% with what the test itself reads from the pods' cgroup files (and
//! the node's figures with /proc); a real Prometheus scrapes it with the packaged config
//! ([`prometheus`]); pods' network counters on a node with a pod network ([`network`]).
//! Unauthenticated scrapes of the server and the kubelet are refused. Needs root,
//! containerd and Debian's prometheus package.

mod common;
#[path = "common/images.rs"]
mod images;
#[path = "metrics/network.rs"]
mod network;
#[path = "metrics/prometheus.rs"]
mod prometheus;

use common::{eventually, Server};
use serde_json::Value;
use std::path::Path;

const IMAGE: &str = "k3rs.test/busybox:1";

fn pod(name: &str, script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"{script}\"]\n"
    )
}

fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Cumulative CPU ns of a container cgroup, read the way a user would with `cat`.
fn cgroup_cpu_ns(uid: &str, c: &str) -> Option<u64> {
    if cgroup_v2() {
        let s = std::fs::read_to_string(format!("/sys/fs/cgroup/k3rs/{uid}/{c}/cpu.stat")).ok()?;
        let us: u64 = s
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))?
            .trim()
            .parse()
            .ok()?;
        return Some(us * 1000);
    }
    ["cpuacct", "cpu,cpuacct"].iter().find_map(|ctl| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{ctl}/k3rs/{uid}/{c}/cpuacct.usage"))
            .ok()?
            .trim()
            .parse()
            .ok()
    })
}

/// usage − inactive_file of a container cgroup.
fn cgroup_working_set(uid: &str, c: &str) -> Option<u64> {
    let (dir, usage_file, key) = if cgroup_v2() {
        (
            format!("/sys/fs/cgroup/k3rs/{uid}/{c}"),
            "memory.current",
            "inactive_file ",
        )
    } else {
        (
            format!("/sys/fs/cgroup/memory/k3rs/{uid}/{c}"),
            "memory.usage_in_bytes",
            "total_inactive_file ",
        )
    };
    let usage: u64 = std::fs::read_to_string(format!("{dir}/{usage_file}"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("{dir}/memory.stat")).ok()?;
    let inactive: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .parse()
        .ok()?;
    Some(usage.saturating_sub(inactive))
}

/// The node's busy CPU time (all but idle and iowait) from /proc/stat, in ns.
fn node_busy_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: u64 = f
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Some(busy * 10_000_000)
}

/// The node's working set from /proc/meminfo: total − free − inactive file pages.
fn node_working_set() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |k: &str| -> Option<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
            .map(|v| v * 1024)
    };
    Some((kib("MemTotal")? - kib("MemFree")?).saturating_sub(kib("Inactive(file)")?))
}

/// (time, value) samples of a reading the test takes itself.
type Samples = Vec<(jiff::Timestamp, u64)>;

/// The sample nearest to `t`.
fn nearest(samples: &Samples, t: jiff::Timestamp) -> (jiff::Timestamp, u64) {
    samples
        .iter()
        .min_by_key(|(st, _)| (st.as_millisecond() - t.as_millisecond()).abs())
        .copied()
        .expect("samples were taken")
}

/// (end, window in seconds) of a metrics.k8s.io document.
fn window_of(m: &Value) -> Option<(jiff::Timestamp, i64)> {
    let end = m["timestamp"].as_str()?.parse().ok()?;
    let win = m["window"].as_str()?.trim_end_matches('s').parse().ok()?;
    Some((end, win))
}

/// Whether `samples` cover the document's whole window.
fn covered(samples: &Samples, m: &Value) -> bool {
    window_of(m).is_some_and(|(t, win)| {
        samples
            .first()
            .is_some_and(|f| f.0 < t - jiff::SignedDuration::from_secs(win))
            && samples.last().is_some_and(|l| l.0 > t)
    })
}

/// The rate of a cumulative ns counter over the document's window, from the nearest
/// samples on each side.
fn rate_over_window(samples: &Samples, m: &Value) -> f64 {
    let (end, win) = window_of(m).expect("timestamp and window");
    let start = end - jiff::SignedDuration::from_secs(win);
    let (a, b) = (nearest(samples, start), nearest(samples, end));
    let dt = (b.0.as_millisecond() - a.0.as_millisecond()) as f64 / 1000.0;
    (b.1 - a.1) as f64 / dt
}

fn cpu_nanocores(q: &str) -> f64 {
    if let Some(n) = q.strip_suffix('n') {
        n.parse().unwrap_or(0.0)
    } else if let Some(m) = q.strip_suffix('m') {
        m.parse::<f64>().unwrap_or(0.0) * 1e6
    } else {
        q.parse::<f64>().unwrap_or(0.0) * 1e9
    }
}

fn memory_bytes(q: &str) -> f64 {
    for (suffix, mult) in [("Ki", 1024.0), ("Mi", 1048576.0), ("Gi", 1073741824.0)] {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().unwrap_or(0.0) * mult;
        }
    }
    q.parse().unwrap_or(0.0)
}

fn within(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= want * 0.2,
        "{what}: metrics API says {got}, cgroup says {want} (more than 20% apart)"
    );
}

#[test]
fn kubectl_top_and_a_real_prometheus_see_the_pods() {
    images::require_agent_environment("metrics");
    prometheus::require();
    let s = Server::start_with_agent(&[], |data| {
        images::write_oci_archive(&data.join("agent/images/a.tar"), IMAGE, false);
    });
    let burn = pod("burn", "while :; do :; done");
    let hold = pod(
        "hold",
        "head -c 52428800 /dev/zero > /dev/shm/fill; trap 'exit 0' TERM; while true; do sleep 1; done",
    );
    s.kubectl_stdin(&["apply", "-f", "-"], &format!("{burn}---\n{hold}"))
        .ok();
    let running = eventually(120, || {
        s.kubectl(&["get", "pods", "-o", "jsonpath={.items[*].status.phase}"])
            .stdout
            .trim()
            == "Running Running"
    });
    assert!(
        running,
        "pods not Running:\n{}",
        s.kubectl(&["get", "pods", "-o", "wide"]).stdout
    );
    let uid = |p: &str| {
        s.kubectl(&["get", "pod", p, "-o", "jsonpath={.metadata.uid}"])
            .ok()
            .trim()
            .to_string()
    };
    let (burn_uid, hold_uid) = (uid("burn"), uid("hold"));

    // Sample the burner's cgroup and the node's /proc often, so the API's windows can
    // be matched to the test's own readings.
    let (mut samples, mut node_cpu, mut node_mem): (Samples, Samples, Samples) = Default::default();
    let (mut burn_metrics, mut node_metrics) = (Value::Null, Value::Null);
    let raw = |path: &str| -> Value {
        let r = s.kubectl(&["get", "--raw", path]);
        serde_json::from_str(&r.stdout).unwrap_or(Value::Null)
    };
    let shown = eventually(60, || {
        let now = jiff::Timestamp::now();
        if let Some(v) = cgroup_cpu_ns(&burn_uid, "main") {
            samples.push((now, v));
        }
        if let (Some(c), Some(m)) = (node_busy_ns(), node_working_set()) {
            node_cpu.push((now, c));
            node_mem.push((now, m));
        }
        burn_metrics = raw("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/burn");
        node_metrics = raw("/apis/metrics.k8s.io/v1beta1/nodes/test-node");
        // Wait until our samples cover the whole windows (the first may predate them).
        covered(&samples, &burn_metrics) && covered(&node_cpu, &node_metrics)
    });
    assert!(
        shown,
        "metrics of burn and test-node never covered by the test's samples: {burn_metrics}\n{node_metrics}\nlog:\n{}",
        s.log()
    );
    let cgroup_rate = rate_over_window(&samples, &burn_metrics);
    let api_cpu = cpu_nanocores(
        burn_metrics["containers"][0]["usage"]["cpu"]
            .as_str()
            .unwrap_or("0"),
    );
    assert!(
        api_cpu > 2e8,
        "a busy loop should use well over 200m: {burn_metrics}"
    );
    within(api_cpu, cgroup_rate, "burn CPU");

    let hold_metrics: Value = serde_json::from_str(
        s.kubectl(&[
            "get",
            "--raw",
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/hold",
        ])
        .ok(),
    )
    .unwrap();
    let api_mem = memory_bytes(
        hold_metrics["containers"][0]["usage"]["memory"]
            .as_str()
            .unwrap_or("0"),
    );
    let cg_mem = cgroup_working_set(&hold_uid, "main").expect("hold's memory cgroup") as f64;
    assert!(
        api_mem >= 50.0 * 1024.0 * 1024.0 * 0.9,
        "hold holds 50 MB: {hold_metrics}"
    );
    within(api_mem, cg_mem, "hold memory");

    // The node's figures against /proc at the same instants.
    let node_cpu_api = cpu_nanocores(node_metrics["usage"]["cpu"].as_str().unwrap_or("0"));
    within(
        node_cpu_api,
        rate_over_window(&node_cpu, &node_metrics),
        "node CPU",
    );
    let node_mem_api = memory_bytes(node_metrics["usage"]["memory"].as_str().unwrap_or("0"));
    let end = window_of(&node_metrics).expect("node metrics window").0;
    within(
        node_mem_api,
        nearest(&node_mem, end).1 as f64,
        "node memory",
    );

    // What a user types.
    let top_nodes = s.kubectl(&["top", "nodes"]);
    assert!(
        top_nodes.code == 0 && top_nodes.stdout.contains("test-node"),
        "kubectl top nodes: {}{}",
        top_nodes.stdout,
        top_nodes.stderr
    );
    let top = s.kubectl(&["top", "pods", "-A", "--containers"]);
    assert_eq!(top.code, 0, "kubectl top pods: {}", top.stderr);
    let line = |p: &str| {
        top.stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(p))
            .unwrap_or("")
            .to_string()
    };
    assert!(
        line("burn").contains("main"),
        "burn missing:\n{}",
        top.stdout
    );
    let hold_line = line("hold");
    let mem_col = hold_line.split_whitespace().nth(4).unwrap_or("");
    assert!(
        memory_bytes(mem_col) >= 45.0 * 1048576.0,
        "hold's memory in kubectl top: {hold_line:?}\n{}",
        top.stdout
    );
    let cg_now = cgroup_working_set(&hold_uid, "main").expect("hold's memory cgroup") as f64;
    within(memory_bytes(mem_col), cg_now, "hold memory in kubectl top");
    let sorted = s.kubectl(&["top", "pods", "--sort-by=cpu", "--no-headers"]);
    assert!(
        sorted
            .stdout
            .lines()
            .next()
            .unwrap_or("")
            .starts_with("burn"),
        "--sort-by=cpu puts burn first:\n{}",
        sorted.stdout
    );

    // The kubelet's Prometheus endpoints, as the API server's kubelet client sees them.
    let tls = s.data_dir().join("server/tls");
    let kubelet = |path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sfk", "--cert"])
            .arg(tls.join("client-kube-apiserver.crt"))
            .arg("--key")
            .arg(tls.join("client-kube-apiserver.key"))
            .arg(format!("https://127.0.0.1:{}{path}", s.kubelet_port()))
            .output()
            .expect("curl is needed: apt-get install curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let resource = kubelet("/metrics/resource");
    assert!(
        resource.contains("container_memory_working_set_bytes{container=\"main\",namespace=\"default\",pod=\"hold\"}"),
        "/metrics/resource:\n{resource}"
    );
    let cadvisor = kubelet("/metrics/cadvisor");
    assert!(
        cadvisor.contains("container_cpu_usage_seconds_total{container=\"main\",namespace=\"default\",pod=\"burn\"}"),
        "/metrics/cadvisor:\n{cadvisor}"
    );
    let node = kubelet("/metrics/node");
    for want in [
        "# TYPE node_cpu_seconds_total counter",
        "node_cpu_seconds_total{cpu=\"0\",mode=\"user\"} ",
        "node_memory_MemAvailable_bytes ",
        "node_filesystem_size_bytes{device=",
        "node_network_receive_bytes_total{device=\"lo\"} ",
        "node_load1 ",
        "node_boot_time_seconds ",
    ] {
        assert!(node.contains(want), "/metrics/node lacks {want:?}:\n{node}");
    }
    let summary: Value = serde_json::from_str(&kubelet("/stats/summary")).unwrap_or_default();
    assert!(
        summary["node"]["network"]["interfaces"]
            .as_array()
            .is_some_and(|i| i.iter().any(|i| i["rxBytes"].as_u64() > Some(0))),
        "/stats/summary node network: {}",
        summary["node"]["network"]
    );

    // Unauthenticated scrapes are refused: the server's /metrics with 401/403, the
    // kubelet's at the TLS handshake (no client certificate) or with 401/403.
    let (code, body) = scrape(&s, None);
    assert!(
        code == "401" || code == "403",
        "anonymous scrape of the server must be refused, got {code}: {body}"
    );
    for path in ["/metrics/cadvisor", "/metrics/node", "/stats/summary"] {
        let out = std::process::Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("https://127.0.0.1:{}{path}", s.kubelet_port()))
            .output()
            .expect("curl is needed: apt-get install curl");
        let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            code == "000" || code == "401" || code == "403",
            "anonymous scrape of the kubelet's {path} must be refused, got HTTP {code}"
        );
    }

    // A real Prometheus with the packaged scrape config.
    prometheus::check(&s);
}

/// `curl -sk` of the server's /metrics with an optional bearer token: (HTTP code, body).
fn scrape(s: &Server, token: Option<&str>) -> (String, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sk", "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    cmd.arg(format!("https://127.0.0.1:{}/metrics", s.port));
    let out = cmd.output().expect("curl is needed: apt-get install curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_string(), body.to_string())
}

#[test]
fn server_metrics_need_monitoring_rights_and_show_requests_and_objects() {
    let s = Server::start();
    s.kubectl(&["create", "deployment", "web", "--image=k3rs.test/none:1"])
        .ok();
    s.kubectl(&["run", "lonely", "--image=k3rs.test/none:1"])
        .ok();
    s.kubectl(&["get", "pods"]).ok();

    let (code, body) = scrape(&s, None);
    assert!(
        code == "401" || code == "403",
        "anonymous scrape must be refused, got {code}: {body}"
    );

    s.kubectl(&["create", "serviceaccount", "prom"]).ok();
    s.kubectl(&[
        "create",
        "clusterrolebinding",
        "prom",
        "--clusterrole=system:monitoring",
        "--serviceaccount=default:prom",
    ])
    .ok();
    let token = s
        .kubectl(&["create", "token", "prom"])
        .ok()
        .trim()
        .to_string();
    let (code, body) = scrape(&s, Some(&token));
    assert_eq!(code, "200", "scrape with a system:monitoring token: {body}");
    for want in [
        "# TYPE apiserver_request_total counter",
        "apiserver_request_total{code=\"200\",component=\"apiserver\",group=\"\",resource=\"pods\",scope=\"namespace\",subresource=\"\",verb=\"LIST\",version=\"v1\"}",
        "apiserver_request_duration_seconds_bucket{component=\"apiserver\",group=\"apps\",resource=\"deployments\",scope=\"namespace\",subresource=\"\",verb=\"POST\",version=\"v1\",le=\"+Inf\"} 1",
        "kube_pod_status_phase{namespace=\"default\",phase=\"Pending\",pod=\"lonely\"",
        "kube_deployment_status_replicas_available{deployment=\"web\",namespace=\"default\"} 0",
        "process_resident_memory_bytes ",
    ] {
        assert!(body.contains(want), "/metrics lacks {want:?}:\n{body}");
    }
    // A token without the permission is refused too.
    s.kubectl(&["create", "serviceaccount", "nobody"]).ok();
    let other = s
        .kubectl(&["create", "token", "nobody"])
        .ok()
        .trim()
        .to_string();
    assert_eq!(scrape(&s, Some(&other)).0, "403");
}
