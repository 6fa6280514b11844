//! Resource metrics for `metrics.k8s.io` without metrics-server: a poller that reads every
//! node's kubelet `/stats/summary` every 15 s through the API server's kubelet client,
//! keeps the last two summaries per node, and turns them into usage (CPU from the
//! difference of cumulative core-nanoseconds over the window, memory working set from the
//! latest reading), the way metrics-server does. [`api`] serves the results.

pub mod api;
pub mod apiserver;
pub mod objects;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;

use crate::api::resources;
use crate::server::http::proxy::{get_from_kubelet, KubeletClient};
use crate::server::registry::{ListOptions, Registry};

/// How often nodes are polled (metrics-server's default `--metric-resolution`).
pub const RESOLUTION: Duration = Duration::from_secs(15);
/// Largest summary accepted from a kubelet.
const MAX_SUMMARY: usize = 16 << 20;

/// One reading: a point in time (ns since the epoch) and cumulative CPU plus memory.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    time_ns: i128,
    cpu_ns: u64,
    memory: u64,
}

impl Point {
    fn from_stats(cpu: &Value, memory: &Value) -> Option<Point> {
        let time: jiff::Timestamp = cpu["time"].as_str()?.parse().ok()?;
        Some(Point {
            time_ns: time.as_nanosecond(),
            cpu_ns: cpu["usageCoreNanoSeconds"].as_u64()?,
            memory: memory["workingSetBytes"].as_u64()?,
        })
    }
}

/// Usage over a window, as served: CPU in nanocores, memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub nano_cores: u64,
    pub memory_bytes: u64,
    /// End of the window (the newer reading).
    pub timestamp: jiff::Timestamp,
    /// Length of the window.
    pub window: Duration,
}

fn usage(prev: Point, cur: Point) -> Option<Usage> {
    let dt = cur.time_ns - prev.time_ns;
    if dt <= 0 || cur.cpu_ns < prev.cpu_ns {
        return None;
    }
    Some(Usage {
        nano_cores: ((cur.cpu_ns - prev.cpu_ns) as i128 * 1_000_000_000 / dt) as u64,
        memory_bytes: cur.memory,
        timestamp: jiff::Timestamp::from_nanosecond(cur.time_ns).ok()?,
        window: Duration::from_nanos(dt as u64),
    })
}

/// A pod's usage: per container, in the order the kubelet listed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodUsage {
    pub namespace: String,
    pub name: String,
    pub containers: Vec<(String, Usage)>,
}

/// The latest two summaries of each node.
#[derive(Default)]
pub struct ResourceMetrics {
    nodes: RwLock<HashMap<String, (Option<Value>, Value)>>,
}

impl ResourceMetrics {
    /// An empty store.
    pub fn new() -> Arc<ResourceMetrics> {
        Arc::new(ResourceMetrics::default())
    }

    /// Records a new summary of `node`; the previous latest becomes the window's start.
    pub fn record(&self, node: &str, summary: Value) {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        let prev = nodes.remove(node).map(|(_, latest)| latest);
        nodes.insert(node.to_string(), (prev, summary));
    }

    /// Forgets nodes not in `keep` (deleted Node objects).
    pub fn retain(&self, keep: &[String]) {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        nodes.retain(|n, _| keep.contains(n));
    }

    /// Usage of `node`, once two readings exist.
    pub fn node(&self, node: &str) -> Option<Usage> {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        let (Some(prev), cur) = nodes.get(node)? else {
            return None;
        };
        let point = |s: &Value| Point::from_stats(&s["node"]["cpu"], &s["node"]["memory"]);
        usage(point(prev)?, point(cur)?)
    }

    /// Names of nodes with usage.
    pub fn node_names(&self) -> Vec<String> {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = nodes.keys().cloned().collect();
        v.sort();
        v
    }

    /// Usage of every pod that has every listed container in both readings of its node
    /// (metrics-server drops pods with an incomplete window the same way).
    pub fn pods(&self) -> Vec<PodUsage> {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (prev, cur) in nodes.values() {
            let Some(prev) = prev else { continue };
            for pod in cur["pods"].as_array().into_iter().flatten() {
                if let Some(u) = pod_usage(prev, pod) {
                    out.push(u);
                }
            }
        }
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }
}

fn pod_usage(prev_summary: &Value, pod: &Value) -> Option<PodUsage> {
    let uid = pod["podRef"]["uid"].as_str()?;
    let prev = prev_summary["pods"]
        .as_array()?
        .iter()
        .find(|p| p["podRef"]["uid"].as_str() == Some(uid))?;
    let mut containers = Vec::new();
    for c in pod["containers"].as_array()? {
        let name = c["name"].as_str()?;
        let before = prev["containers"]
            .as_array()?
            .iter()
            .find(|p| p["name"].as_str() == Some(name))?;
        let u = usage(
            Point::from_stats(&before["cpu"], &before["memory"])?,
            Point::from_stats(&c["cpu"], &c["memory"])?,
        )?;
        containers.push((name.to_string(), u));
    }
    if containers.is_empty() {
        return None;
    }
    Some(PodUsage {
        namespace: pod["podRef"]["namespace"].as_str()?.to_string(),
        name: pod["podRef"]["name"].as_str()?.to_string(),
        containers,
    })
}

/// Polls every node's kubelet each [`RESOLUTION`] until `shutdown` flips. Nodes are
/// polled concurrently; one unreachable kubelet only loses that node's window.
pub async fn run_poller(
    registry: Registry,
    client: Arc<KubeletClient>,
    metrics: Arc<ResourceMetrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let Some(nodes_res) = resources::find("", "v1", "nodes") else {
        tracing::warn!("metrics: the nodes resource is missing; resource metrics disabled");
        return;
    };
    loop {
        let nodes = match registry.list(nodes_res, "", &ListOptions::default()).await {
            Ok(l) => l.items.iter().filter_map(|o| o.value().ok()).collect(),
            Err(e) => {
                tracing::debug!(error = %e.message, "metrics: listing nodes failed");
                Vec::new()
            }
        };
        let names: Vec<String> = nodes
            .iter()
            .filter_map(|n: &Value| n["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        metrics.retain(&names);
        let polls = nodes.into_iter().zip(names).map(|(node, name)| {
            let (client, metrics) = (client.clone(), metrics.clone());
            async move {
                let got = get_from_kubelet(&client, &node, "/stats/summary", MAX_SUMMARY).await;
                match got.map(|b| serde_json::from_slice::<Value>(&b)) {
                    Ok(Ok(summary)) => metrics.record(&name, summary),
                    Ok(Err(e)) => tracing::debug!(node = %name, error = %e, "metrics: bad summary"),
                    Err(e) => tracing::debug!(node = %name, error = %e, "metrics: scrape failed"),
                }
            }
        });
        futures_util::future::join_all(polls).await;
        tokio::select! {
            _ = tokio::time::sleep(RESOLUTION) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests;
