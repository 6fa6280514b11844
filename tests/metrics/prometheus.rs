//! A real Prometheus (Debian's `prometheus` package) scraping a running k3rs with the
//! packaged packaging/prometheus.yml: the credentials are made the way the file's
//! comments tell a user to, the file is only given their paths and the addresses (and a
//! short scrape interval), and Prometheus's query API must return the server's request
//! and object metrics and the kubelet's container and node metrics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::common::{eventually, free_port, Server};

/// Where Debian installs Prometheus (and its `promtool`).
const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

/// Panics with how to get Prometheus when it is not installed.
pub fn require() {
    assert!(
        Path::new(PROMETHEUS).is_file(),
        "{PROMETHEUS} is missing: the Prometheus acceptance test needs Debian's prometheus \
         package (`apt-get install prometheus`; CI installs it in .ci/run)"
    );
}

/// The jobs packaging/prometheus.yml defines.
const JOBS: [&str; 4] = [
    "k3rs-apiserver",
    "k3rs-kubelet-cadvisor",
    "k3rs-kubelet-resource",
    "k3rs-node",
];

/// A Prometheus child process, killed on drop.
pub struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// `GET /api/v1/<path>` of the query API as JSON (Null when it does not answer).
    pub fn api(&self, path: &str) -> Value {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10", "-G"])
            .arg(format!("http://127.0.0.1:{}/api/v1/{path}", self.port))
            .output()
            .expect("curl is needed: apt-get install curl");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// The answer of an instant query (`status`, `data.result` or `error`).
    pub fn query_doc(&self, q: &str) -> Value {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10", "-G", "--data-urlencode"])
            .arg(format!("query={q}"))
            .arg(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .output()
            .expect("curl is needed: apt-get install curl");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// The result vector of an instant query.
    pub fn query(&self, q: &str) -> Vec<Value> {
        let v = self.query_doc(q);
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Prometheus's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The packaged config with its placeholders replaced: credential files under `dir`
/// instead of /etc/prometheus, the server and node addresses, and `interval` instead of
/// the packaged 15 s. Panics when a placeholder is gone from the packaged file, so the
/// test notices when it no longer describes what users get.
pub fn config(dir: &Path, server: &str, node: &str, interval: &str) -> String {
    let packaged = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/prometheus.yml"),
    )
    .expect("packaging/prometheus.yml");
    let mut cfg = packaged;
    for (from, to) in [
        ("/etc/prometheus/", format!("{}/", dir.display())),
        ("SERVER:6443", server.to_string()),
        ("NODE:10250", node.to_string()),
        (
            "scrape_interval: 15s",
            format!("scrape_interval: {interval}"),
        ),
    ] {
        assert!(
            cfg.contains(from),
            "packaging/prometheus.yml no longer has {from:?}"
        );
        cfg = cfg.replace(from, &to);
    }
    cfg
}

/// Every query of packaging/grafana-dashboard.json.
fn dashboard_exprs() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("packaging/grafana-dashboard.json");
    let d: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let exprs: Vec<String> = d["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(!exprs.is_empty(), "the dashboard has no queries");
    exprs
}

/// Makes the credentials as packaging/prometheus.yml's comments say (a ServiceAccount
/// bound to system:monitoring and its token, the server CA, the API server's kubelet
/// client certificate), writes the config into `dir` and starts Prometheus on a free
/// loopback port with its TSDB in `dir`.
pub fn start(s: &Server, dir: &Path) -> Prometheus {
    s.kubectl(&[
        "create",
        "serviceaccount",
        "prometheus",
        "-n",
        "kube-system",
    ])
    .ok();
    s.kubectl(&[
        "create",
        "clusterrolebinding",
        "prometheus",
        "--clusterrole=system:monitoring",
        "--serviceaccount=kube-system:prometheus",
    ])
    .ok();
    let token = s
        .kubectl(&[
            "create",
            "token",
            "prometheus",
            "-n",
            "kube-system",
            "--duration=1h",
        ])
        .ok()
        .trim()
        .to_string();
    std::fs::write(dir.join("k3rs.token"), token).expect("token file");
    let tls = s.data_dir().join("server/tls");
    for (from, to) in [
        ("server-ca.crt", "k3rs-server-ca.crt"),
        ("client-kube-apiserver.crt", "k3rs-kubelet-client.crt"),
        ("client-kube-apiserver.key", "k3rs-kubelet-client.key"),
    ] {
        std::fs::copy(tls.join(from), dir.join(to))
            .unwrap_or_else(|e| panic!("copy {from} for Prometheus: {e}"));
    }
    let cfg = config(
        dir,
        &format!("127.0.0.1:{}", s.port),
        &format!("127.0.0.1:{}", s.kubelet_port()),
        "2s",
    );
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, &cfg).expect("prometheus.yml");
    if Path::new(PROMTOOL).is_file() {
        let check = Command::new(PROMTOOL)
            .args(["check", "config"])
            .arg(&file)
            .output()
            .expect("run promtool");
        assert!(
            check.status.success(),
            "promtool rejects the packaged config:\n{}{}\n{cfg}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let port = free_port();
    let log = dir.join("prometheus.log");
    let out = std::fs::File::create(&log).expect("prometheus log");
    let child = Command::new(PROMETHEUS)
        .arg(format!("--config.file={}", file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("start prometheus");
    Prometheus { child, port, log }
}

/// Waits until every packaged job's target is up and the acceptance series are
/// queryable: `kube_pod_status_phase` of the running pods, `container_memory_working_set_bytes`
/// of the pod holding 50 MB (at least 45 MiB), `apiserver_request_total`, and the
/// node_exporter-named node metrics.
pub fn check(s: &Server) {
    require();
    let dir = tempfile::tempdir().expect("tempdir");
    let prom = start(s, dir.path());
    let mut missing = Vec::new();
    let ok = eventually(90, || {
        missing.clear();
        // Every packaged job has one target, and each is up.
        let up: Vec<String> = prom
            .query("up == 1")
            .iter()
            .filter_map(|r| r["metric"]["job"].as_str().map(str::to_string))
            .collect();
        for job in JOBS {
            if !up.iter().any(|j| j == job) {
                missing.push(format!("target of job {job} up"));
            }
        }
        for q in [
            "kube_pod_status_phase{namespace=\"default\",pod=\"burn\",phase=\"Running\"} == 1",
            "kube_pod_status_phase{namespace=\"default\",pod=\"hold\",phase=\"Running\"} == 1",
            "container_memory_working_set_bytes{job=\"k3rs-kubelet-cadvisor\",namespace=\"default\",pod=\"hold\",container=\"main\"} > 47185920",
            "rate(container_cpu_usage_seconds_total{job=\"k3rs-kubelet-cadvisor\",pod=\"burn\",container=\"main\"}[10s]) > 0.2",
            "apiserver_request_total{job=\"k3rs-apiserver\",resource=\"pods\",verb=\"LIST\"} > 0",
            "node_memory_MemTotal_bytes{job=\"k3rs-node\"} > 0",
            "node_cpu_seconds_total{job=\"k3rs-node\",mode=\"idle\"} > 0",
        ] {
            if prom.query(q).is_empty() {
                missing.push(q.to_string());
            }
        }
        // The packaged Grafana dashboard's queries are valid and have data (pods'
        // network panels only where pods have a network: not in this harness).
        for expr in dashboard_exprs() {
            let doc = prom.query_doc(&expr);
            let empty = doc["data"]["result"]
                .as_array()
                .is_none_or(|r| r.is_empty());
            if doc["status"] != "success" || (empty && !expr.contains("container_network_")) {
                missing.push(format!("dashboard query {expr}: {doc}"));
            }
        }
        if !missing.is_empty() {
            // Scrapes come every 2 s: do not hammer the query API in between.
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        missing.is_empty()
    });
    assert!(
        ok,
        "Prometheus never returned {missing:#?}\ntargets: {}\nprometheus log:\n{}",
        prom.api("targets"),
        prom.log()
    );
}
