//! Pod start benchmark: a real `k3rs server --disable-agent` plus a standalone
//! `k3rs agent` (bench profile) with its own containerd, a busybox image imported from a
//! tarball. Creates pods bound to the agent's node and measures create → Running as the
//! API reports it (the creating client's clock, to the watch event): for N pods created
//! back to back (throughput-bound) and for N pods one at a time (each start's latency),
//! and the agent's RSS idle and with N pods running. Prints figures; fails
//! on nothing but errors.
//!
//! Needs root, containerd, runc, busybox-static. Run: `cargo bench --bench pods`
//! (`K3RS_BENCH_START_PODS` sets the pod count, default 100).

mod common;

#[path = "../tests/common/images.rs"]
mod images;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{free_port, pct, rss_mb, start_k3rs as start, start_server};
use k3rs::agent::client::{load_kubeconfig, ApiClient};
use serde_json::{json, Value};

const IMAGE: &str = "k3rs.bench/busybox:1";

async fn wait_until<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within {secs}s");
}

fn main() {
    images::require_agent_environment("pods");
    let n: usize = std::env::var("K3RS_BENCH_START_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let port = free_port().to_string();
    let kubeconfig = d.join("kubeconfig.yaml");
    let data = d.join("server-data");
    let _server = start_server(d, &port, &data, &kubeconfig);
    let agent_data = d.join("agent-data");
    std::fs::create_dir_all(agent_data.join("agent/images")).expect("images dir");
    images::write_oci_archive(&agent_data.join("agent/images/busybox.tar"), IMAGE, false);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        wait_until(60, "server ready", || {
            let k = kubeconfig.clone();
            async move { k.exists() }
        })
        .await;
        let api = ApiClient::new(load_kubeconfig(&kubeconfig).expect("kubeconfig"), "k3rs-bench")
            .expect("client");
        wait_until(60, "API ready", || {
            let api = api.clone();
            async move { api.get::<Value>("/api/v1/namespaces/default").await.is_ok() }
        })
        .await;

        let t_agent = Instant::now();
        let agent = start(
            d,
            &[
                "agent", "--kubeconfig", &kubeconfig.to_string_lossy(),
                "--data-dir", &agent_data.to_string_lossy(),
                "--node-name", "bench-node", "--node-ip", "127.0.0.1",
                "--run-dir", &d.join("run").to_string_lossy(),
                "--pod-log-dir", &d.join("logs").to_string_lossy(),
                "--kubelet-port", &free_port().to_string(),
                // In the host's namespace: no pod network (the cni bench measures it).
                "--flannel-backend", "none",
            ],
            "agent.log",
        );
        wait_until(120, "node Ready", || {
            let api = api.clone();
            async move {
                let node: Option<Value> = api.get("/api/v1/nodes/bench-node").await.ok().flatten();
                node.is_some_and(|n| {
                    n["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
            }
        })
        .await;
        println!("agent start to node Ready: {:.0} ms (includes containerd start and image import)", t_agent.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let pid = agent.0.id();
        println!("agent RSS idle: {:.1} MB (containerd not included)", rss_mb(pid));

        let list: Value = api.request_json(http::Method::GET, "/api/v1/namespaces/default/pods", None).await.expect("list");
        let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
        let mut watch = api
            .watch(&format!("/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}"))
            .await
            .expect("watch");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
        let watcher = tokio::spawn(async move {
            while let Ok(Some(ev)) = watch.next().await {
                if ev.object["status"]["phase"] == "Running" {
                    let name = ev.object["metadata"]["name"].as_str().unwrap_or_default().to_string();
                    if tx.send((name, Instant::now())).is_err() {
                        return;
                    }
                }
            }
        });
        let mut created: HashMap<String, Instant> = HashMap::new();
        let t_all = Instant::now();
        for i in 0..n {
            let name = format!("start-{i:03}");
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name},
                "spec": {"nodeName": "bench-node", "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "app", "image": IMAGE, "command": ["sleep", "3600"]}]},
            });
            api.create::<_, Value>("/api/v1/namespaces/default/pods", &pod).await.expect("create pod");
            created.insert(name, Instant::now());
        }
        let mut latencies = Vec::new();
        let mut running: HashMap<String, Instant> = HashMap::new();
        while running.len() < n {
            let (name, at) = tokio::time::timeout(Duration::from_secs(300), rx.recv())
                .await
                .expect("pods did not all reach Running within 300 s")
                .expect("watch ended");
            if let (Some(c), false) = (created.get(&name), running.contains_key(&name)) {
                latencies.push(at.saturating_duration_since(*c));
                running.insert(name, at);
            }
        }
        let all = t_all.elapsed();
        latencies.sort();
        println!(
            "pod start latency (create -> Running, {n} pods created back to back): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; all Running after {:.1} s",
            pct(&latencies, 0.5),
            pct(&latencies, 0.99),
            latencies.last().map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0),
            all.as_secs_f64()
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        println!("agent RSS with {n} pods running: {:.1} MB", rss_mb(pid));

        let t_del = Instant::now();
        for i in 0..n {
            api.delete(
                &format!("/api/v1/namespaces/default/pods/start-{i:03}"),
                &json!({"gracePeriodSeconds": 1}),
            )
            .await
            .expect("delete");
        }
        wait_until(300, "all pods removed", || {
            let api = api.clone();
            async move {
                let l: Value = api
                    .request_json(http::Method::GET, "/api/v1/namespaces/default/pods", None)
                    .await
                    .unwrap_or(Value::Null);
                l["items"].as_array().is_some_and(|i| i.is_empty())
            }
        })
        .await;
        println!("deleting {n} pods until all are gone: {:.1} s", t_del.elapsed().as_secs_f64());

        // One pod at a time: the latency of each start on an otherwise idle node (the
        // previous pod is deleted, with its 1 s grace period, while the next starts).
        let mut single = Vec::new();
        for i in 0..n {
            let name = format!("single-{i:03}");
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name},
                "spec": {"nodeName": "bench-node", "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "app", "image": IMAGE, "command": ["sleep", "3600"]}]},
            });
            let t = Instant::now();
            api.create::<_, Value>("/api/v1/namespaces/default/pods", &pod)
                .await
                .expect("create pod");
            loop {
                let (seen, at) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                    .await
                    .expect("pod did not reach Running within 60 s")
                    .expect("watch ended");
                if seen == name {
                    single.push(at.saturating_duration_since(t));
                    break;
                }
            }
            api.delete(
                &format!("/api/v1/namespaces/default/pods/{name}"),
                &json!({"gracePeriodSeconds": 1}),
            )
            .await
            .expect("delete");
        }
        single.sort();
        println!(
            "pod start latency (create -> Running, {n} pods one at a time): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            pct(&single, 0.5),
            pct(&single, 0.99),
            pct(&single, 1.0)
        );
        // Let the agent remove the last pods' containers before it stops.
        wait_until(300, "single pods removed", || {
            let api = api.clone();
            async move {
                let l: Value = api
                    .request_json(http::Method::GET, "/api/v1/namespaces/default/pods", None)
                    .await
                    .unwrap_or(Value::Null);
                l["items"].as_array().is_some_and(|i| i.is_empty())
            }
        })
        .await;
        watcher.abort();
        drop(agent);
    });
}
