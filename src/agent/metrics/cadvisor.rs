//! The kubelet's `/metrics/cadvisor` document: per-container CPU and memory under
//! cAdvisor's metric names (`container_cpu_usage_seconds_total`,
//! `container_memory_working_set_bytes`, `container_memory_usage_bytes`,
//! `container_memory_rss`, `container_start_time_seconds`) with the `container`,
//! `namespace` and `pod` labels Grafana dashboards select on; per pod and interface the
//! `container_network_*` counters (on the pod-level series, `container=""`, as the
//! kubelet's cAdvisor reports the shared network namespace); plus `machine_cpu_cores`.

use super::exposition::{Kind, Writer};
use super::network::Interface;
use super::summary::per_container;
use super::Snapshot;

/// How a family's value is read from a container's stats.
type Reader = fn(&super::ContainerStats) -> Option<f64>;

/// Reads one counter of an interface.
type Counter = fn(&Interface) -> u64;

/// cAdvisor's network families: name, help, and the counter they expose.
const NETWORK: [(&str, &str, Counter); 8] = [
    (
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
        |i| i.rx_bytes,
    ),
    (
        "container_network_receive_packets_total",
        "Cumulative count of packets received",
        |i| i.rx_packets,
    ),
    (
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving",
        |i| i.rx_errors,
    ),
    (
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving",
        |i| i.rx_dropped,
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
        |i| i.tx_bytes,
    ),
    (
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted",
        |i| i.tx_packets,
    ),
    (
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting",
        |i| i.tx_errors,
    ),
    (
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting",
        |i| i.tx_dropped,
    ),
];

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
    let ms = Some(snap.time.as_millisecond());
    for (name, help, pick) in NETWORK {
        w.family(name, help, Kind::Counter);
        for p in &snap.pods {
            for i in &p.network {
                let labels = [
                    ("container", ""),
                    ("interface", i.name.as_str()),
                    ("namespace", p.namespace.as_str()),
                    ("pod", p.name.as_str()),
                ];
                w.sample(name, &labels, pick(i) as f64, ms);
            }
        }
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
