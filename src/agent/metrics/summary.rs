//! The kubelet's resource documents from a [`Snapshot`]: `/stats/summary` (the
//! `stats/v1alpha1` Summary JSON metrics-server reads: cumulative `usageCoreNanoSeconds`,
//! `usageNanoCores` over the time since the previous request, memory usage, working set
//! and rss, `network` with per-interface rx/tx bytes and errors) and `/metrics/resource` (the kubelet's Prometheus names: `node_*`, `pod_*`,
//! `container_*` CPU seconds and working-set bytes).

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{json, Value};

use super::exposition::{Kind, Writer};
use super::network::Interface;
use super::{cgroup::Memory, ContainerStats, Snapshot};

/// The previous CPU reading per cgroup key: (time in ns since the epoch, cumulative ns).
/// Rates are per caller-independent interval, like the kubelet's cached cAdvisor rates.
static PREVIOUS: Mutex<Option<HashMap<String, (i128, u64)>>> = Mutex::new(None);

fn ts(t: jiff::Timestamp) -> String {
    t.to_string()
}

/// CPU stats; `usageNanoCores` from the previous reading of `key` when there is one.
fn cpu(
    key: &str,
    time: jiff::Timestamp,
    total: Option<u64>,
    rates: &mut HashMap<String, (i128, u64)>,
) -> Value {
    let Some(total) = total else {
        return json!({"time": ts(time)});
    };
    let now = time.as_nanosecond();
    let mut v = json!({"time": ts(time), "usageCoreNanoSeconds": total});
    if let Some((then, before)) = rates.get(key) {
        let dt = now - then;
        if dt > 0 && total >= *before {
            let cores = ((total - before) as i128 * 1_000_000_000 / dt) as u64;
            v["usageNanoCores"] = json!(cores);
        }
    }
    rates.insert(key.to_string(), (now, total));
    v
}

fn memory(time: jiff::Timestamp, m: Option<Memory>, node: bool) -> Value {
    let Some(m) = m else {
        return json!({"time": ts(time)});
    };
    let mut v = json!({
        "time": ts(time),
        "usageBytes": m.usage,
        "workingSetBytes": m.working_set,
        "rssBytes": m.rss,
    });
    if node {
        v["availableBytes"] = json!(m.available);
    }
    v
}

/// `NetworkStats`: the default interface's counters at the top level (`eth0` for pods,
/// the default-route interface for the node, else the first) and every interface.
fn network(time: jiff::Timestamp, interfaces: &[Interface], default: Option<&str>) -> Value {
    let one = |i: &Interface| {
        json!({
            "name": i.name,
            "rxBytes": i.rx_bytes,
            "rxErrors": i.rx_errors,
            "txBytes": i.tx_bytes,
            "txErrors": i.tx_errors,
        })
    };
    let main = interfaces
        .iter()
        .find(|i| Some(i.name.as_str()) == default)
        .or_else(|| interfaces.first());
    let mut v = main.map(one).unwrap_or_else(|| json!({}));
    v["time"] = json!(ts(time));
    v["interfaces"] = Value::Array(interfaces.iter().map(one).collect());
    v
}

/// The Summary document of `snap` for node `node_name`.
pub fn summary(snap: &Snapshot, node_name: &str) -> Value {
    let mut guard = PREVIOUS.lock().unwrap_or_else(|p| p.into_inner());
    let rates = guard.get_or_insert_with(HashMap::new);
    let t = snap.time;
    let pods: Vec<Value> = snap
        .pods
        .iter()
        .map(|p| {
            let containers: Vec<Value> = p
                .containers
                .iter()
                .map(|c| {
                    let key = format!("{}/{}", p.uid, c.name);
                    json!({
                        "name": c.name,
                        "startTime": c.start_time.map(ts),
                        "cpu": cpu(&key, t, c.cpu_ns, rates),
                        "memory": memory(t, c.memory, false),
                    })
                })
                .collect();
            json!({
                "podRef": {"name": p.name, "namespace": p.namespace, "uid": p.uid},
                "startTime": p.start_time.map(ts),
                "containers": containers,
                "cpu": cpu(&p.uid, t, p.cpu_ns, rates),
                "memory": memory(t, p.memory, false),
                "network": network(t, &p.network, Some("eth0")),
            })
        })
        .collect();
    // Forget pods that are gone so the map does not grow with churn.
    let live: std::collections::HashSet<&str> = snap.pods.iter().map(|p| p.uid.as_str()).collect();
    rates.retain(|k, _| k == "node" || live.contains(k.split('/').next().unwrap_or("")));
    let default_route = super::network::default_route_interface();
    json!({
        "node": {
            "nodeName": node_name,
            "cpu": cpu("node", t, snap.node_cpu_ns, rates),
            "memory": memory(t, snap.node_memory, true),
            "network": network(t, &snap.node_network, default_route.as_deref()),
        },
        "pods": pods,
    })
}

/// Name, help and type of a metric family.
pub(super) type Family<'a> = (&'a str, &'a str, Kind);

/// A family with one sample per container (labels container, namespace, pod), written
/// straight into `w` (no per-sample allocation).
pub(super) fn per_container(
    w: &mut Writer,
    snap: &Snapshot,
    (name, help, kind): Family<'_>,
    value: impl Fn(&ContainerStats) -> Option<f64>,
) {
    let ms = Some(snap.time.as_millisecond());
    w.family(name, help, kind);
    for p in &snap.pods {
        for c in &p.containers {
            if let Some(v) = value(c) {
                let labels = [
                    ("container", c.name.as_str()),
                    ("namespace", p.namespace.as_str()),
                    ("pod", p.name.as_str()),
                ];
                w.sample(name, &labels, v, ms);
            }
        }
    }
}

/// The kubelet's `/metrics/resource` document.
pub fn resource_text(snap: &Snapshot) -> String {
    let ms = Some(snap.time.as_millisecond());
    let secs = |ns: u64| ns as f64 / 1e9;
    let mut w = Writer::new();
    per_container(
        &mut w,
        snap,
        (
            "container_cpu_usage_seconds_total",
            "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
            Kind::Counter,
        ),
        |c| c.cpu_ns.map(secs),
    );
    per_container(
        &mut w,
        snap,
        (
            "container_memory_working_set_bytes",
            "[STABLE] Current working set of the container in bytes",
            Kind::Gauge,
        ),
        |c| c.memory.map(|m| m.working_set as f64),
    );
    per_container(
        &mut w,
        snap,
        (
            "container_start_time_seconds",
            "[STABLE] Start time of the container since unix epoch in seconds",
            Kind::Gauge,
        ),
        |c| c.start_time.map(|t| t.as_second() as f64),
    );
    w.family(
        "node_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
        Kind::Counter,
    );
    if let Some(ns) = snap.node_cpu_ns {
        w.sample("node_cpu_usage_seconds_total", &[], secs(ns), ms);
    }
    w.family(
        "node_memory_working_set_bytes",
        "[STABLE] Current working set of the node in bytes",
        Kind::Gauge,
    );
    if let Some(m) = snap.node_memory {
        w.sample(
            "node_memory_working_set_bytes",
            &[],
            m.working_set as f64,
            ms,
        );
    }
    for (name, help, kind, pick) in [
        (
            "pod_cpu_usage_seconds_total",
            "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
            Kind::Counter,
            0,
        ),
        (
            "pod_memory_working_set_bytes",
            "[STABLE] Current working set of the pod in bytes",
            Kind::Gauge,
            1,
        ),
    ] {
        w.family(name, help, kind);
        for p in &snap.pods {
            let v = if pick == 0 {
                p.cpu_ns.map(secs)
            } else {
                p.memory.map(|m| m.working_set as f64)
            };
            if let Some(v) = v {
                let l = [
                    ("namespace", p.namespace.as_str()),
                    ("pod", p.name.as_str()),
                ];
                w.sample(name, &l, v, ms);
            }
        }
    }
    w.family(
        "scrape_error",
        "[ALPHA] 1 if there was an error while getting container metrics, 0 otherwise",
        Kind::Gauge,
    );
    w.sample("scrape_error", &[], 0.0, None);
    w.finish()
}
