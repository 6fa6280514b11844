//! Metrics path benchmark: what the agent's metrics cost at N pods (default 100). A real
//! `k3rs server --disable-agent` and, one after the other, two standalone `k3rs agent`s
//! with their own containerd, each running N busybox pods: one as shipped, one with the
//! hidden `--disable-metrics` (its stats and metrics paths answer 404). Both are read the
//! way a cluster reads them — the server's 15 s /stats/summary poll plus a Prometheus-like
//! scrape of /metrics/cadvisor, /metrics/resource and /metrics/node every 5 s — and the
//! agent's RSS and CPU over a quiet minute are printed for both, with the difference; then
//! the time of one /metrics/cadvisor scrape at N pods. Prints figures; fails on nothing but
//! errors.
//!
//! Needs root, containerd, runc, busybox-static, curl. Run: `cargo bench --bench metrics`
//! (or `cargo test --bench metrics` for a debug build); `K3RS_BENCH_METRICS_PODS` sets N.

mod common;

#[path = "../tests/common/images.rs"]
mod images;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, pct, rss_mb, start_k3rs, start_server, Proc};
use k3rs::agent::client::{load_kubeconfig, ApiClient};
use serde_json::{json, Value};

const IMAGE: &str = "k3rs.bench/busybox:1";
/// How long the agent is measured with its pods running.
const MEASURE: Duration = Duration::from_secs(60);
/// The Prometheus-like scrape interval during the measurement.
const SCRAPE_EVERY: Duration = Duration::from_secs(5);

/// Polls `f` every 200 ms for up to `secs`; panics saying `what` did not happen.
fn poll(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {secs}s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = s.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// A kubelet endpoint reachable with the API server's kubelet client certificate.
struct Kubelet {
    port: u16,
    tls: PathBuf,
}

impl Kubelet {
    /// GET `path`: (HTTP code, seconds the transfer took, bytes).
    fn get(&self, path: &str) -> (String, f64, usize) {
        let out = Command::new("curl")
            .args([
                "-sk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{time_total} %{size_download}",
            ])
            .arg("--cert")
            .arg(self.tls.join("client-kube-apiserver.crt"))
            .arg("--key")
            .arg(self.tls.join("client-kube-apiserver.key"))
            .arg(format!("https://127.0.0.1:{}{path}", self.port))
            .output()
            .expect("curl is needed: apt-get install curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut f = text.split_whitespace();
        let code = f.next().unwrap_or("000").to_string();
        let secs = f.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let bytes = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        (code, secs, bytes)
    }
}

/// What one agent cost over [`MEASURE`].
struct Cost {
    rss_mb: f64,
    cpu_percent: f64,
}

/// Everything one agent run needs.
struct Bench<'a> {
    rt: &'a tokio::runtime::Runtime,
    api: &'a ApiClient,
    dir: &'a Path,
    server_port: &'a str,
    n: usize,
}

impl Bench<'_> {
    fn pods_path(ns: &str) -> String {
        format!("/api/v1/namespaces/{ns}/pods")
    }

    /// The pods of namespace `ns` (none when the list fails).
    fn pods(&self, ns: &str) -> Vec<Value> {
        let path = Self::pods_path(ns);
        let list = self.api.request_json(http::Method::GET, &path, None);
        let l: Value = self.rt.block_on(list).unwrap_or(Value::Null);
        l["items"].as_array().cloned().unwrap_or_default()
    }

    fn running(&self, ns: &str) -> usize {
        let pods = self.pods(ns);
        pods.iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count()
    }

    /// Starts agent `name` (`extra` flags), runs N pods, measures, removes them.
    fn run(&self, name: &str, extra: &[&str]) -> (Cost, Kubelet, Proc) {
        let data = self.dir.join(format!("agent-{name}"));
        let agent_dir = data.join("agent");
        std::fs::create_dir_all(agent_dir.join("images")).expect("images dir");
        images::write_oci_archive(&agent_dir.join("images/busybox.tar"), IMAGE, false);
        let tls = self.dir.join("server-data/server/tls");
        let node = format!("bench-{name}");
        k3rs::server::pki::write_local_agent_files(
            &tls,
            &agent_dir,
            &node,
            &["127.0.0.1".parse().expect("ip")],
            &format!("https://127.0.0.1:{}", self.server_port),
        )
        .expect("agent credentials");
        let kport = free_port();
        let (kubeconfig, run, logs) = (
            agent_dir.join("kubelet.kubeconfig"),
            self.dir.join(format!("run-{name}")),
            self.dir.join(format!("logs-{name}")),
        );
        let mut args: Vec<String> = [
            "agent",
            "--kubeconfig",
            &kubeconfig.to_string_lossy(),
            "--data-dir",
            &data.to_string_lossy(),
            "--node-name",
            &node,
            "--node-ip",
            "127.0.0.1",
            "--run-dir",
            &run.to_string_lossy(),
            "--pod-log-dir",
            &logs.to_string_lossy(),
            "--kubelet-port",
            &kport.to_string(),
            // In the host's namespace: no pod network (the cni bench measures it).
            "--flannel-backend",
            "none",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let agent = start_k3rs(self.dir, &args, &format!("agent-{name}.log"));
        let kubelet = Kubelet { port: kport, tls };
        poll(120, "node Ready", || {
            let n: Option<Value> = self
                .rt
                .block_on(self.api.get(&format!("/api/v1/nodes/{node}")))
                .ok()
                .flatten();
            n.is_some_and(|n| {
                n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
        });
        let ns = name;
        let nso = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        self.rt
            .block_on(self.api.create::<_, Value>("/api/v1/namespaces", &nso))
            .expect("namespace");
        for i in 0..self.n {
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("p-{i:03}")},
                "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "app", "image": IMAGE, "command": ["sleep", "3600"]}]},
            });
            self.rt
                .block_on(self.api.create::<_, Value>(&Self::pods_path(ns), &pod))
                .expect("create pod");
        }
        poll(600, "all pods Running", || self.running(ns) == self.n);
        // Let pod start-up work settle before measuring.
        std::thread::sleep(Duration::from_secs(15));
        let pid = agent.0.id();
        let (cpu0, t0) = (cpu_seconds(pid), Instant::now());
        let mut peak: f64 = 0.0;
        while t0.elapsed() < MEASURE {
            for path in ["/metrics/cadvisor", "/metrics/resource", "/metrics/node"] {
                kubelet.get(path);
            }
            peak = peak.max(rss_mb(pid));
            std::thread::sleep(SCRAPE_EVERY);
        }
        let cpu = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
        let cost = Cost {
            rss_mb: peak,
            cpu_percent: cpu,
        };
        (cost, kubelet, agent)
    }

    /// Deletes namespace `ns`'s pods and waits until they are gone.
    fn clean(&self, ns: &str) {
        for i in 0..self.n {
            let _ = self.rt.block_on(self.api.delete(
                &format!("{}/p-{i:03}", Self::pods_path(ns)),
                &json!({"gracePeriodSeconds": 1}),
            ));
        }
        poll(300, "pods removed", || self.pods(ns).is_empty());
    }
}

fn main() {
    images::require_agent_environment("metrics");
    let n = match std::env::var("K3RS_BENCH_METRICS_PODS").map(|v| v.parse::<usize>()) {
        Ok(Ok(n)) => n,
        _ => 100,
    };
    let (dir, port) = (
        tempfile::tempdir().expect("tempdir"),
        free_port().to_string(),
    );
    let d = dir.path();
    let kubeconfig = d.join("kubeconfig.yaml");
    let _server = start_server(d, &port, &d.join("server-data"), &kubeconfig);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    poll(60, "kubeconfig written", || kubeconfig.exists());
    let api = ApiClient::new(
        load_kubeconfig(&kubeconfig).expect("kubeconfig"),
        "k3rs-bench",
    )
    .expect("client");
    poll(60, "API ready", || {
        rt.block_on(api.get::<Value>("/api/v1/namespaces/default"))
            .is_ok()
    });
    let b = Bench {
        rt: &rt,
        api: &api,
        dir: d,
        server_port: &port,
        n,
    };
    let profile = if cfg!(debug_assertions) {
        "debug build"
    } else {
        "optimized build"
    };
    println!(
        "metrics bench ({profile}), {n} pods, {}s measured, scrapes every {}s",
        MEASURE.as_secs(),
        SCRAPE_EVERY.as_secs()
    );

    let (on, kubelet, agent_on) = b.run("on", &[]);
    // Scrape time of /metrics/cadvisor with N pods.
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..20 {
        let (code, secs, bytes) = kubelet.get("/metrics/cadvisor");
        assert_eq!(code, "200", "/metrics/cadvisor answered {code}");
        times.push(Duration::from_secs_f64(secs));
        size = bytes;
    }
    times.sort();
    println!(
        "/metrics/cadvisor scrape at {n} pods: p50 {:.1} ms, max {:.1} ms, {} KiB (curl, TLS handshake included)",
        pct(&times, 0.5),
        pct(&times, 1.0),
        size / 1024
    );
    let (code, secs, bytes) = kubelet.get("/stats/summary");
    println!(
        "/stats/summary at {n} pods: {:.1} ms, {} KiB (HTTP {code})",
        secs * 1000.0,
        bytes / 1024
    );
    b.clean("on");
    drop(agent_on);

    let (off, kubelet_off, agent_off) = b.run("off", &["--disable-metrics"]);
    let (code, _, _) = kubelet_off.get("/metrics/cadvisor");
    assert_eq!(code, "404", "--disable-metrics leaves /metrics/cadvisor on");
    b.clean("off");
    drop(agent_off);

    for (what, c) in [("metrics on", &on), ("metrics off", &off)] {
        println!(
            "agent with {n} pods, {what}: peak RSS {:.1} MB, CPU {:.2}% of one core",
            c.rss_mb, c.cpu_percent
        );
    }
    println!(
        "metrics path cost at {n} pods: {:+.1} MB RSS, {:+.2}% CPU (target: under 2 MB and 1%)",
        on.rss_mb - off.rss_mb,
        on.cpu_percent - off.cpu_percent
    );
}
