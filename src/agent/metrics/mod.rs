//! The node's resource metrics: a snapshot of CPU and memory of the node, each pod and
//! each running container, read from cgroups ([`cgroup`]), and of each pod's network
//! interfaces ([`network`]), at request time, and the kubelet documents built from it —
//! `/stats/summary` ([`summary`]) and `/metrics/resource` ([`summary::resource_text`])
//! and `/metrics/cadvisor` ([`cadvisor`]) — that the API server's metrics.k8s.io poller
//! and Prometheus read; plus `/metrics/node` ([`node`], node_exporter's names).

pub mod cadvisor;
pub mod cgroup;
pub mod endpoint;
pub mod exposition;
pub mod network;
pub mod node;
pub mod summary;

use std::collections::BTreeMap;

use crate::agent::layout::{
    LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID,
};
use crate::agent::runtime::{Runtime, TaskStatus};
use cgroup::Memory;

/// One container's readings.
#[derive(Debug, Clone)]
pub struct ContainerStats {
    /// The container's name in the pod spec.
    pub name: String,
    /// When containerd created it.
    pub start_time: Option<jiff::Timestamp>,
    /// Cumulative CPU time in nanoseconds.
    pub cpu_ns: Option<u64>,
    /// Memory figures.
    pub memory: Option<Memory>,
}

/// One pod's readings: its own cgroup and its running containers.
#[derive(Debug, Clone)]
pub struct PodStats {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The earliest container creation.
    pub start_time: Option<jiff::Timestamp>,
    pub containers: Vec<ContainerStats>,
    /// Cumulative CPU time of the pod cgroup in nanoseconds.
    pub cpu_ns: Option<u64>,
    pub memory: Option<Memory>,
    /// The pod's interfaces except loopback (cAdvisor leaves `lo` out too), read through
    /// one of its running processes.
    pub network: Vec<network::Interface>,
}

/// The node at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When the readings were taken.
    pub time: jiff::Timestamp,
    /// Cumulative busy CPU time of the node in nanoseconds.
    pub node_cpu_ns: Option<u64>,
    pub node_memory: Option<Memory>,
    /// The node's interfaces (the agent's network namespace).
    pub node_network: Vec<network::Interface>,
    pub pods: Vec<PodStats>,
}

/// Reads the node and every pod with a running container. Cgroup files are read on a
/// blocking thread: sysfs reads are quick but still file I/O.
pub async fn collect(runtime: &Runtime) -> Result<Snapshot, MetricsError> {
    let list = runtime.list().await?;
    let mut pods: BTreeMap<String, PodStats> = BTreeMap::new();
    let mut running: Vec<(String, String, Option<jiff::Timestamp>)> = Vec::new();
    // One process per pod is enough: all its containers share the pod's namespace.
    let mut pids: Vec<(String, u32)> = Vec::new();
    for c in &list {
        let l = |k: &str| c.labels.get(k).cloned().unwrap_or_default();
        let (uid, name) = (l(LABEL_POD_UID), l(LABEL_CONTAINER_NAME));
        if uid.is_empty() || name.is_empty() {
            continue;
        }
        let Some(task) = c.task.as_ref().filter(|t| t.status == TaskStatus::Running) else {
            continue;
        };
        let pod = pods.entry(uid.clone()).or_insert_with(|| PodStats {
            namespace: l(LABEL_POD_NAMESPACE),
            name: l(LABEL_POD_NAME),
            uid: uid.clone(),
            start_time: None,
            containers: Vec::new(),
            cpu_ns: None,
            memory: None,
            network: Vec::new(),
        });
        if task.pid > 0 && !pids.iter().any(|(u, _)| *u == uid) {
            pids.push((uid.clone(), task.pid));
        }
        pod.start_time = match (pod.start_time, c.created_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        running.push((uid, name, c.created_at));
    }
    let read = tokio::task::spawn_blocking(move || {
        for (uid, name, created) in running {
            let rel = format!("/k3rs/{uid}/{name}");
            if let Some(p) = pods.get_mut(&uid) {
                p.containers.push(ContainerStats {
                    name,
                    start_time: created,
                    cpu_ns: cgroup::cpu_usage_ns(&rel),
                    memory: cgroup::memory(&rel),
                });
            }
        }
        for (uid, pid) in pids {
            if let Some(p) = pods.get_mut(&uid) {
                p.network = network::of_process(pid);
                p.network.retain(|i| i.name != "lo");
            }
        }
        for p in pods.values_mut() {
            let rel = format!("/k3rs/{}", p.uid);
            p.cpu_ns = cgroup::cpu_usage_ns(&rel);
            p.memory = cgroup::memory(&rel);
            p.containers.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Snapshot {
            time: jiff::Timestamp::now(),
            node_cpu_ns: cgroup::node_cpu_usage_ns(),
            node_memory: cgroup::node_memory(),
            node_network: network::of_node(),
            pods: pods.into_values().collect(),
        }
    });
    read.await.map_err(|e| MetricsError::Read(e.to_string()))
}

/// What failed while taking a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// containerd could not list the containers.
    #[error("listing containers: {0}")]
    Runtime(#[from] crate::agent::runtime::Error),
    /// The blocking reader task died.
    #[error("reading cgroups failed ({0}); check that /sys/fs/cgroup is mounted")]
    Read(String),
}

static DISABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Switches the kubelet's metrics paths off (`--disable-metrics`, a hidden flag for
/// measuring what the metrics path costs); they then answer 404.
pub fn set_disabled(disabled: bool) {
    DISABLED.store(disabled, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`set_disabled`] switched the metrics paths off.
pub fn disabled() -> bool {
    DISABLED.load(std::sync::atomic::Ordering::Relaxed)
}

static NODE_NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Records this agent's node name for the Summary document (set once at start-up).
pub fn set_node_name(name: &str) {
    let _ = NODE_NAME.set(name.to_string());
}

/// This agent's node name; the host name when [`set_node_name`] was not called.
pub fn node_name() -> String {
    NODE_NAME.get().cloned().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}
