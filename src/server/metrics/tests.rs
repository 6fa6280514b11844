//! Unit tests of the usage arithmetic: CPU rate over the window between two summaries,
//! memory from the newer one, pods dropped until they have two readings.

use super::*;
use serde_json::json;

fn summary(t: &str, node_cpu: u64, pods: Value) -> Value {
    json!({
        "node": {"nodeName": "n1", "cpu": {"time": t, "usageCoreNanoSeconds": node_cpu}, "memory": {"time": t, "workingSetBytes": 1000}},
        "pods": pods,
    })
}

fn pod(uid: &str, t: &str, cpu: u64, mem: u64) -> Value {
    json!({"podRef": {"name": format!("p-{uid}"), "namespace": "default", "uid": uid}, "containers": [
        {"name": "c", "cpu": {"time": t, "usageCoreNanoSeconds": cpu}, "memory": {"time": t, "workingSetBytes": mem}}
    ]})
}

#[test]
fn cpu_is_the_rate_over_the_window() {
    let m = ResourceMetrics::default();
    let (t1, t2) = ("2025-01-01T00:00:00Z", "2025-01-01T00:00:15Z");
    m.record("n1", summary(t1, 0, json!([pod("a", t1, 0, 1)])));
    assert_eq!(m.node("n1"), None, "one reading has no window");
    assert!(m.pods().is_empty());
    m.record(
        "n1",
        summary(
            t2,
            30_000_000_000,
            json!([pod("a", t2, 15_000_000_000, 50 << 20), pod("b", t2, 5, 5)]),
        ),
    );
    let n = m.node("n1").unwrap();
    assert_eq!(n.nano_cores, 2_000_000_000);
    assert_eq!(n.window, Duration::from_secs(15));
    let pods = m.pods();
    assert_eq!(pods.len(), 1, "pod b has only one reading: {pods:?}");
    assert_eq!(pods[0].containers[0].1.nano_cores, 1_000_000_000);
    assert_eq!(pods[0].containers[0].1.memory_bytes, 50 << 20);
    m.retain(&[]);
    assert!(m.node_names().is_empty());
}
