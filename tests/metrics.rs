//! Resource metrics end to end on a single node (server + embedded agent, real containerd):
//! a pod burning CPU and a pod holding 50 MB show in `kubectl top nodes` and `kubectl top
//! pods -A --containers` within 30 s of having two readings, and the metrics.k8s.io values
//! agree within 20% with what the test itself reads from the pods' cgroup files. Needs
//! root and containerd.

mod common;
#[path = "common/images.rs"]
mod images;

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
fn kubectl_top_shows_cpu_and_memory_from_cgroups() {
    images::require_agent_environment("metrics");
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

    // Sample the burner's cgroup every second so the API's window can be matched exactly.
    let mut samples: Vec<(jiff::Timestamp, u64)> = Vec::new();
    let mut burn_metrics = Value::Null;
    let shown = eventually(60, || {
        if let Some(v) = cgroup_cpu_ns(&burn_uid, "main") {
            samples.push((jiff::Timestamp::now(), v));
        }
        let r = s.kubectl(&[
            "get",
            "--raw",
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/burn",
        ]);
        if r.code != 0 {
            return false;
        }
        burn_metrics = serde_json::from_str(&r.stdout).unwrap_or(Value::Null);
        let ts: Option<jiff::Timestamp> = burn_metrics["timestamp"]
            .as_str()
            .and_then(|t| t.parse().ok());
        // Wait until our samples cover the whole window (the first one may predate them).
        let win: i64 = burn_metrics["window"]
            .as_str()
            .and_then(|w| w.trim_end_matches('s').parse().ok())
            .unwrap_or(0);
        ts.is_some_and(|t| {
            samples
                .first()
                .is_some_and(|f| f.0 < t - jiff::SignedDuration::from_secs(win))
                && samples.last().is_some_and(|l| l.0 > t)
        })
    });
    assert!(
        shown,
        "PodMetrics of burn never covered by the test's samples: {burn_metrics}\nlog:\n{}",
        s.log()
    );

    // The cgroup's rate over the API's window, from the nearest samples on each side.
    let end: jiff::Timestamp = burn_metrics["timestamp"].as_str().unwrap().parse().unwrap();
    let win: i64 = burn_metrics["window"]
        .as_str()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    let start = end - jiff::SignedDuration::from_secs(win);
    let near = |t: jiff::Timestamp| {
        samples
            .iter()
            .min_by_key(|(st, _)| (st.as_millisecond() - t.as_millisecond()).abs())
            .copied()
            .unwrap()
    };
    let (a, b) = (near(start), near(end));
    let dt = (b.0.as_millisecond() - a.0.as_millisecond()) as f64 / 1000.0;
    let cgroup_rate = (b.1 - a.1) as f64 / dt;
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
