//! The kubelet's `/metrics/cadvisor` document: per-container CPU and memory under
//! cAdvisor's metric names (`container_cpu_usage_seconds_total`,
//! `container_memory_working_set_bytes`, `container_memory_usage_bytes`,
//! `container_memory_rss`, `container_start_time_seconds`) with the `container`,
//! `namespace` and `pod` labels Grafana dashboards select on, plus `machine_cpu_cores`.

use super::exposition::{Kind, Writer};
use super::summary::per_container;
use super::Snapshot;

/// How a family's value is read from a container's stats.
type Reader = fn(&super::ContainerStats) -> Option<f64>;

/// The document for `snap`.
pub fn text(snap: &Snapshot) -> String {
    let mut w = Writer::new();
    let families: [(&str, &str, Kind, Reader); 5] = [
        (
            "container_cpu_usage_seconds_total",
            "Cumulative cpu time consumed in seconds.",
            Kind::Counter,
            |c| c.cpu_ns.map(|n| n as f64 / 1e9),
        ),
        (
            "container_memory_working_set_bytes",
            "Current working set in bytes.",
            Kind::Gauge,
            |c| c.memory.map(|m| m.working_set as f64),
        ),
        (
            "container_memory_usage_bytes",
            "Current memory usage in bytes, including all memory regardless of when it was accessed",
            Kind::Gauge,
            |c| c.memory.map(|m| m.usage as f64),
        ),
        (
            "container_memory_rss",
            "Size of RSS in bytes.",
            Kind::Gauge,
            |c| c.memory.map(|m| m.rss as f64),
        ),
        (
            "container_start_time_seconds",
            "Start time of the container since unix epoch in seconds.",
            Kind::Gauge,
            |c| c.start_time.map(|t| t.as_second() as f64),
        ),
    ];
    for (name, help, kind, value) in families {
        per_container(&mut w, snap, (name, help, kind), value);
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    w.family(
        "machine_cpu_cores",
        "Number of logical CPU cores.",
        Kind::Gauge,
    );
    w.sample("machine_cpu_cores", &[], cpus as f64, None);
    w.finish()
}
