//! Node lifecycle, as upstream's node-lifecycle controller: a node whose agent stopped
//! renewing its Lease (and posting status) for longer than `--node-monitor-grace-period`
//! gets its conditions set to Unknown ("Kubelet stopped posting node status."); nodes
//! get the `node.kubernetes.io/{unreachable,not-ready}` NoExecute and NoSchedule taints
//! while Ready is Unknown/False and `node.kubernetes.io/unschedulable:NoSchedule` while
//! cordoned, and lose them when that ends; and pods on a node with NoExecute taints are
//! deleted once their tolerations run out (taint-based eviction).

use crate::api::meta;
use crate::server::informer::{builtin, Informer, Informers};
use crate::server::registry::{DeleteOptions, Registry};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::watch;

/// Taint of a node whose Ready condition is Unknown.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint of a node whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint of a cordoned node.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// Upstream's default `--node-monitor-grace-period`.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(40);
/// How often nodes and pods are checked (upstream's node-monitor-period is 5 s).
const MONITOR_PERIOD: Duration = Duration::from_secs(1);
const CONDITIONS: &[&str] = &["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

fn time(v: &Value) -> Option<i64> {
    v.as_str()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second())
}

fn ready_status(node: &Value) -> String {
    node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("Unknown")
        .to_string()
}

/// The taints this controller manages that `node` should carry.
fn desired_taints(node: &Value) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    match ready_status(node).as_str() {
        "True" => {}
        "False" => {
            out.push((TAINT_NOT_READY, "NoExecute"));
            out.push((TAINT_NOT_READY, "NoSchedule"));
        }
        _ => {
            out.push((TAINT_UNREACHABLE, "NoExecute"));
            out.push((TAINT_UNREACHABLE, "NoSchedule"));
        }
    }
    if node["spec"]["unschedulable"].as_bool() == Some(true) {
        out.push((TAINT_UNSCHEDULABLE, "NoSchedule"));
    }
    out
}

fn managed(key: &str) -> bool {
    matches!(
        key,
        TAINT_UNREACHABLE | TAINT_NOT_READY | TAINT_UNSCHEDULABLE
    )
}

/// `spec.taints` with the managed taints replaced by `want` (existing ones keep their
/// `timeAdded`), or None when nothing changes.
fn reconcile_taints(node: &Value, now: &str) -> Option<Vec<Value>> {
    let want = desired_taints(node);
    let current: Vec<Value> = node["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let have: Vec<(String, String)> = current
        .iter()
        .filter(|t| managed(t["key"].as_str().unwrap_or("")))
        .map(|t| (s(&t["key"]), s(&t["effect"])))
        .collect();
    let same = have.len() == want.len()
        && want
            .iter()
            .all(|(k, e)| have.iter().any(|(hk, he)| hk == k && he == e));
    if same {
        return None;
    }
    let mut out: Vec<Value> = current
        .iter()
        .filter(|t| {
            let k = t["key"].as_str().unwrap_or("");
            !managed(k) || want.iter().any(|(wk, we)| *wk == k && t["effect"] == *we)
        })
        .cloned()
        .collect();
    for (k, e) in want {
        if !out.iter().any(|t| t["key"] == k && t["effect"] == e) {
            let mut t = json!({"key": k, "effect": e});
            if e == "NoExecute" {
                t["timeAdded"] = json!(now);
            }
            out.push(t);
        }
    }
    Some(out)
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

/// Runs until `shutdown` flips.
pub async fn run(informers: Informers, grace: Duration, mut shutdown: watch::Receiver<bool>) {
    let nodes = informers.get(builtin("", "v1", "nodes"));
    let leases = informers.get(builtin("coordination.k8s.io", "v1", "leases"));
    let pods = informers.get(builtin("", "v1", "pods"));
    nodes.wait_synced().await;
    leases.wait_synced().await;
    pods.wait_synced().await;
    let registry = informers.registry().clone();
    // Nodes get a full grace period from this start, as upstream does after a restart:
    // their agents had no server to post to meanwhile.
    let started = jiff::Timestamp::now().as_second();
    let mut evicted: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(MONITOR_PERIOD);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = jiff::Timestamp::now().as_second();
        for node in nodes.list_all() {
            monitor(&registry, &leases, &node, grace, started, now).await;
        }
        evict(&registry, &nodes, &pods, &mut evicted, now).await;
    }
}

/// Marks a silent node Unknown and keeps its managed taints in line with its state.
async fn monitor(
    registry: &Registry,
    leases: &Informer,
    node: &Value,
    grace: Duration,
    started: i64,
    now: i64,
) {
    let name = meta::name(node);
    let heartbeat = node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| time(&c["lastHeartbeatTime"]));
    let renewed = leases
        .get("kube-node-lease", name)
        .and_then(|l| time(&l["spec"]["renewTime"]));
    let probe = [heartbeat, renewed, Some(started)]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(started);
    let silent = now - probe > grace.as_secs() as i64;
    let stamp = meta::now_rfc3339();
    if silent && ready_status(node) != "Unknown" {
        tracing::info!(
            node = name,
            "node stopped posting status; marking it Unknown"
        );
        let r = registry
            .update_with(builtin("", "v1", "nodes"), "", name, |n| {
                let mut conds = n["status"]["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                for t in CONDITIONS {
                    match conds.iter_mut().find(|c| c["type"] == *t) {
                        Some(c) => {
                            if c["status"] != "Unknown" {
                                c["lastTransitionTime"] = json!(stamp);
                            }
                            c["status"] = json!("Unknown");
                            c["reason"] = json!("NodeStatusUnknown");
                            c["message"] = json!("Kubelet stopped posting node status.");
                        }
                        None => conds.push(json!({
                            "type": t, "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                            "message": "Kubelet never posted node status.",
                            "lastHeartbeatTime": stamp, "lastTransitionTime": stamp,
                        })),
                    }
                }
                n["status"]["conditions"] = Value::Array(conds);
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::debug!(node = name, error = %e, "cannot mark node Unknown");
        }
        // The taints follow on the next pass, from the updated node.
        return;
    }
    if reconcile_taints(node, &stamp).is_some() {
        let r = registry
            .update_with(builtin("", "v1", "nodes"), "", name, |n| {
                if let Some(t) = reconcile_taints(n, &stamp) {
                    if t.is_empty() {
                        if let Some(spec) = n["spec"].as_object_mut() {
                            spec.remove("taints");
                        }
                    } else {
                        n["spec"]["taints"] = Value::Array(t);
                    }
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::debug!(node = name, error = %e, "cannot update node taints");
        }
    }
}

/// When a pod must leave a node with NoExecute taints: None = may stay, Some(t) = at
/// Unix second t (now or in the past: at once).
fn eviction_time(pod: &Value, taints: &[Value]) -> Option<i64> {
    use crate::server::scheduler::types::{Taint, Toleration};
    let tolerations = Toleration::parse_all(pod);
    let mut at: Option<i64> = None;
    for t in taints {
        let taint = Taint {
            key: s(&t["key"]),
            value: s(&t["value"]),
            effect: s(&t["effect"]),
        };
        let matching: Vec<&Toleration> = tolerations
            .iter()
            .filter(|tol| tol.tolerates(&taint))
            .collect();
        let added = time(&t["timeAdded"]).unwrap_or(0);
        let deadline = if matching.is_empty() {
            Some(i64::MIN) // not tolerated: at once
        } else {
            // Upstream: the shortest tolerationSeconds among the matching tolerations;
            // none set means the pod tolerates the taint for ever.
            matching
                .iter()
                .filter_map(|tol| tol.seconds)
                .min()
                .map(|secs| added + secs.max(0))
        };
        if let Some(d) = deadline {
            at = Some(at.map_or(d, |a| a.min(d)));
        }
    }
    at
}

async fn evict(
    registry: &Registry,
    nodes: &Informer,
    pods: &Informer,
    evicted: &mut HashSet<String>,
    now: i64,
) {
    let tainted: HashMap<String, Vec<Value>> = nodes
        .list_all()
        .iter()
        .filter_map(|n| {
            let t: Vec<Value> = n["spec"]["taints"]
                .as_array()?
                .iter()
                .filter(|t| t["effect"] == "NoExecute")
                .cloned()
                .collect();
            (!t.is_empty()).then(|| (meta::name(n).to_string(), t))
        })
        .collect();
    if tainted.is_empty() {
        evicted.clear();
        return;
    }
    for pod in pods.list_all() {
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
        let Some(taints) = tainted.get(node) else {
            continue;
        };
        let key = format!("{}/{}", meta::namespace(&pod), meta::name(&pod));
        if meta::is_deleting(&pod) || evicted.contains(&key) {
            continue;
        }
        let Some(at) = eviction_time(&pod, taints) else {
            continue;
        };
        if at > now {
            continue;
        }
        tracing::info!(pod = %key, node, "evicting pod from a tainted node");
        let r = registry
            .delete(
                builtin("", "v1", "pods"),
                meta::namespace(&pod),
                meta::name(&pod),
                &DeleteOptions::default(),
            )
            .await;
        match r {
            Ok(_) => {
                evicted.insert(key.clone());
                crate::server::scheduler::bind::pod_event(
                    registry,
                    &pod,
                    "Normal",
                    "TaintManagerEviction",
                    &format!("Marking for deletion Pod {key}"),
                    "taint-eviction-controller",
                )
                .await;
            }
            Err(e) => tracing::debug!(pod = %key, error = %e, "cannot evict pod"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_follow_readiness_and_cordon() {
        let node = json!({"spec": {"unschedulable": true, "taints": [{"key": "x", "effect": "NoSchedule"}]},
                          "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        let t = reconcile_taints(&node, "2025-01-01T00:00:00Z").expect("change");
        let keys: Vec<String> = t
            .iter()
            .map(|t| format!("{}:{}", s(&t["key"]), s(&t["effect"])))
            .collect();
        assert_eq!(
            keys,
            vec![
                "x:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute",
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unschedulable:NoSchedule"
            ]
        );
        let back = json!({"spec": {"taints": t}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let t = reconcile_taints(&back, "2025-01-01T00:00:00Z").expect("change");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn tolerations_delay_eviction() {
        let taints = vec![
            json!({"key": TAINT_UNREACHABLE, "effect": "NoExecute", "timeAdded": "2025-01-01T00:00:00Z"}),
        ];
        let t0 = "2025-01-01T00:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_second();
        let pod = |tol: Value| json!({"spec": {"tolerations": tol}});
        assert!(eviction_time(&pod(json!([])), &taints).is_some_and(|t| t <= t0));
        let tolerating = pod(
            json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]),
        );
        assert_eq!(eviction_time(&tolerating, &taints), Some(t0 + 300));
        let forever = pod(json!([{"operator": "Exists"}]));
        assert_eq!(eviction_time(&forever, &taints), None);
    }
}
