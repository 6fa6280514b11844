//! Scheduler scale benchmark: a real `k3rs server --disable-agent` (bench profile) and an
//! in-bench fake-node simulator (like kwok): it registers N Ready nodes through the API
//! and renews their Leases every 10 s, then N pods are created and the simulator marks
//! bound pods Running without containers. Prints pods/s bound (first create → last
//! binding seen on a watch), pods/s Running, and the server's RSS. Then a Deployment of
//! R replicas goes from create to all pods Running (the fake kubelets mark each pod
//! Running and Ready as soon as it is bound) and to all replicas available. Fails on
//! nothing but errors; needs no root.
//!
//! Run: `cargo bench --bench scheduler` (`K3RS_BENCH_NODES`, default 500;
//! `K3RS_BENCH_PODS`, default 10000; `K3RS_BENCH_REPLICAS`, default 1000).

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, rss_mb, start_server};
use k3rs::agent::client::{load_kubeconfig, ApiClient, PatchType};
use serde_json::{json, Value};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_micro() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = t.as_secs() as i64;
    let ts = jiff::Timestamp::from_second(secs).expect("time");
    format!(
        "{}.{:06}Z",
        ts.strftime("%Y-%m-%dT%H:%M:%S"),
        t.subsec_micros()
    )
}

/// Runs `f` over `items` with `width` requests in flight.
async fn in_parallel<T, F, Fut>(items: Vec<T>, width: usize, f: F)
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let f = Arc::new(f);
    let sem = Arc::new(tokio::sync::Semaphore::new(width));
    let mut tasks = Vec::new();
    for item in items {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            f(item).await;
            drop(permit);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// The fake nodes: Node objects with a Ready status and Leases kept fresh.
async fn register_nodes(api: &ApiClient, n: usize) {
    let names: Vec<String> = (0..n).map(|i| format!("fake-{i:04}")).collect();
    let api2 = api.clone();
    in_parallel(names, 32, move |name| {
        let api = api2.clone();
        async move {
            let node = json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "type": "fake"}}});
            let _: Value = api.create("/api/v1/nodes", &node).await.expect("create node");
            let now = now_micro();
            let heartbeat = format!("{}Z", &now[..19]);
            let status = json!({"status": {
                "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "lastHeartbeatTime": heartbeat, "lastTransitionTime": heartbeat}]}});
            let _: Value = api
                .patch(&format!("/api/v1/nodes/{name}/status"), PatchType::Merge, &status)
                .await
                .expect("node status");
            renew_lease(&api, &name).await;
        }
    })
    .await;
}

async fn renew_lease(api: &ApiClient, name: &str) {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}");
    let patch = json!({"spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now_micro()}});
    if api
        .patch::<Value>(&path, PatchType::Merge, &patch)
        .await
        .is_err()
    {
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"}, "spec": patch["spec"]});
        let _ = api
            .create::<_, Value>(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                &lease,
            )
            .await;
    }
}

/// Creates a Deployment of `replicas` in its own namespace and plays the kubelets of
/// the fake nodes for it: every pod the watch shows bound is reported Running and Ready.
/// Returns the time from create to all pods Running and to all replicas available.
async fn deployment_to_running(api: &ApiClient, replicas: usize) -> (Duration, Duration) {
    let ns = "bench-deploy";
    let _: Value = api
        .create(
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await
        .expect("namespace");
    let list: Value = api
        .get(&format!("/api/v1/namespaces/{ns}/pods"))
        .await
        .expect("list")
        .expect("list");
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let mut watch = api
        .watch(&format!(
            "/api/v1/namespaces/{ns}/pods?watch=1&resourceVersion={rv}"
        ))
        .await
        .expect("watch");
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}});
    let t0 = Instant::now();
    let _: Value = api
        .create(
            &format!("/apis/apps/v1/namespaces/{ns}/deployments"),
            &deploy,
        )
        .await
        .expect("create deployment");
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut reported: HashSet<String> = HashSet::new();
    let mut running: HashSet<String> = HashSet::new();
    while running.len() < replicas {
        let ev = match tokio::time::timeout(Duration::from_secs(120), watch.next()).await {
            Ok(Ok(Some(ev))) => ev,
            _ => panic!("only {} of {replicas} replicas Running", running.len()),
        };
        let o = &ev.object;
        let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
        if o["status"]["phase"] == "Running" {
            running.insert(name);
        } else if !o["spec"]["nodeName"].as_str().unwrap_or("").is_empty()
            && reported.insert(name.clone())
        {
            let (api, permit) = (
                api.clone(),
                sem.clone().acquire_owned().await.expect("semaphore"),
            );
            tokio::spawn(async move {
                let status = json!({"status": {"phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True"}]}});
                let _ = api
                    .patch::<Value>(
                        &format!("/api/v1/namespaces/{ns}/pods/{name}/status"),
                        PatchType::Merge,
                        &status,
                    )
                    .await;
                drop(permit);
            });
        }
    }
    let all_running = t0.elapsed();
    loop {
        let d: Value = api
            .get(&format!("/apis/apps/v1/namespaces/{ns}/deployments/web"))
            .await
            .expect("get deployment")
            .expect("deployment");
        if d["status"]["availableReplicas"].as_u64() == Some(replicas as u64) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "deployment not available: {}",
            d["status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (all_running, t0.elapsed())
}

fn main() {
    let nodes = env_usize("K3RS_BENCH_NODES", 500);
    let pods = env_usize("K3RS_BENCH_PODS", 10_000);
    let replicas = env_usize("K3RS_BENCH_REPLICAS", 1000);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port().to_string();
    let kubeconfig = dir.path().join("kubeconfig.yaml");
    let data = dir.path().join("data");
    let server = start_server(dir.path(), &port, &data, &kubeconfig);
    let pid = server.0.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !kubeconfig.exists() {
            assert!(Instant::now() < deadline, "server did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let api = ApiClient::new(load_kubeconfig(&kubeconfig).expect("kubeconfig"), "k3rs-bench")
            .expect("client");
        while api.get::<Value>("/api/v1/namespaces/default").await.is_err() {
            assert!(Instant::now() < deadline, "API not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let rss_idle = rss_mb(pid);

        let t = Instant::now();
        register_nodes(&api, nodes).await;
        println!("registered {nodes} fake nodes in {:.1}s", t.elapsed().as_secs_f64());
        // The simulator's lease loop (like each agent's every 10 s).
        let leases = {
            let api = api.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    for i in 0..nodes {
                        renew_lease(&api, &format!("fake-{i:04}")).await;
                    }
                }
            })
        };

        // Count bindings as the API reports them.
        let list: Value = api.get("/api/v1/namespaces/default/pods").await.expect("list").expect("list");
        let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
        let mut watch = api
            .watch(&format!("/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}"))
            .await
            .expect("watch");
        let (bound_tx, mut bound_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
        tokio::spawn(async move {
            while let Ok(Some(ev)) = watch.next().await {
                let node = ev.object["spec"]["nodeName"].as_str().unwrap_or("");
                if !node.is_empty() {
                    let _ = bound_tx.send((ev.object["metadata"]["name"].as_str().unwrap_or("").to_string(), node.to_string()));
                }
            }
        });

        let t0 = Instant::now();
        let creator = {
            let api = api.clone();
            tokio::spawn(async move {
                in_parallel((0..pods).collect(), 64, move |i| {
                    let api = api.clone();
                    async move {
                        let pod = json!({"apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": format!("p-{i:05}"), "labels": {"app": "bench"}},
                            "spec": {"containers": [{"name": "c", "image": "busybox",
                                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}});
                        let _: Value = api
                            .create("/api/v1/namespaces/default/pods", &pod)
                            .await
                            .expect("create pod");
                    }
                })
                .await;
                t0.elapsed()
            })
        };
        let mut bound: HashSet<String> = HashSet::new();
        let mut per_node: std::collections::HashMap<String, usize> = Default::default();
        let mut peak_rss = 0f64;
        let mut last_rss = Instant::now();
        while bound.len() < pods {
            match tokio::time::timeout(Duration::from_secs(120), bound_rx.recv()).await {
                Ok(Some((name, node))) => {
                    if bound.insert(name) {
                        *per_node.entry(node).or_insert(0) += 1;
                    }
                }
                _ => panic!("only {} of {pods} pods bound", bound.len()),
            }
            if last_rss.elapsed() > Duration::from_millis(500) {
                peak_rss = peak_rss.max(rss_mb(pid));
                last_rss = Instant::now();
            }
        }
        let bound_in = t0.elapsed();
        let created_in = creator.await.expect("creator");
        peak_rss = peak_rss.max(rss_mb(pid));
        let (min, max) = (
            per_node.values().min().copied().unwrap_or(0),
            per_node.values().max().copied().unwrap_or(0),
        );
        println!(
            "{pods} pods on {nodes} nodes: created in {:.1}s ({:.0} pods/s), all bound in {:.1}s ({:.0} pods/s bound); pods per node {min}..{max}",
            created_in.as_secs_f64(),
            pods as f64 / created_in.as_secs_f64(),
            bound_in.as_secs_f64(),
            pods as f64 / bound_in.as_secs_f64()
        );

        // The fake kubelets: every bound pod reports Running (outside the timed window).
        let t = Instant::now();
        let names: Vec<String> = bound.into_iter().collect();
        let api2 = api.clone();
        in_parallel(names, 64, move |name| {
            let api = api2.clone();
            async move {
                let status = json!({"status": {"phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True"}]}});
                let _: Value = api
                    .patch(&format!("/api/v1/namespaces/default/pods/{name}/status"), PatchType::Merge, &status)
                    .await
                    .expect("pod status");
            }
        })
        .await;
        println!(
            "fake kubelets marked {pods} pods Running in {:.1}s ({:.0} pods/s)",
            t.elapsed().as_secs_f64(),
            pods as f64 / t.elapsed().as_secs_f64()
        );
        let rss_after = rss_mb(pid);

        let (running_in, available_in) = deployment_to_running(&api, replicas).await;
        println!(
            "Deployment of {replicas} replicas: all pods Running {:.1}s after create ({:.0} pods/s), all available after {:.1}s",
            running_in.as_secs_f64(),
            replicas as f64 / running_in.as_secs_f64(),
            available_in.as_secs_f64()
        );
        println!(
            "server RSS: idle {rss_idle:.0} MB, peak while scheduling {peak_rss:.0} MB, after {rss_after:.0} MB, after the Deployment {:.0} MB",
            rss_mb(pid)
        );
        leases.abort();
    });
    drop(server);
}
