//! What the replica controllers (and the Deployment controller) need to know about pods
//! and owner references: which pods count (active), ready and available (with
//! minReadySeconds), the scale-down order upstream uses, controller references, and the
//! pod a template stamps out.

use crate::api::meta;
use serde_json::{json, Value};
use std::cmp::Ordering;

/// The controller owner reference of `obj` (`controller: true`), if any.
pub fn controller_ref(obj: &Value) -> Option<&Value> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == json!(true))
}

/// The owner reference a controller puts on what it creates or adopts.
pub fn owner_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta::name(owner),
        "uid": meta::uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Whether a pod still counts toward replicas: not finished and not being deleted.
pub fn is_active(pod: &Value) -> bool {
    let phase = pod["status"]["phase"].as_str().unwrap_or("");
    phase != "Succeeded" && phase != "Failed" && !meta::is_deleting(pod)
}

fn ready_condition(pod: &Value) -> Option<&Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Value) -> bool {
    ready_condition(pod).is_some_and(|c| c["status"] == "True")
}

/// Unix seconds of an RFC 3339 timestamp.
pub fn parse_secs(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

fn ready_since(pod: &Value) -> Option<i64> {
    ready_condition(pod).and_then(|c| parse_secs(c["lastTransitionTime"].as_str()?))
}

/// Availability of a pod at `now` (unix seconds): Ok(()) when it has been Ready for at
/// least `min_ready` seconds, Err(Some(wait)) when it will be in `wait` seconds, and
/// Err(None) when it is not Ready.
pub fn availability(pod: &Value, min_ready: i64, now: i64) -> Result<(), Option<i64>> {
    if !is_ready(pod) {
        return Err(None);
    }
    if min_ready <= 0 {
        return Ok(());
    }
    // A Ready condition without a transition time counts from now, as upstream does.
    let since = ready_since(pod).unwrap_or(now);
    let wait = since + min_ready - now;
    if wait <= 0 {
        Ok(())
    } else {
        Err(Some(wait))
    }
}

fn phase_rank(pod: &Value) -> u8 {
    match pod["status"]["phase"].as_str().unwrap_or("Pending") {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    }
}

fn restarts(pod: &Value) -> i64 {
    pod["status"]["containerStatuses"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

fn created(pod: &Value) -> i64 {
    parse_secs(meta::meta_str(pod, "creationTimestamp")).unwrap_or(0)
}

/// Upstream's `ActivePods` order: the pods to delete first sort first. Unscheduled before
/// scheduled, Pending before Unknown before Running, not ready before ready, ready for
/// less time before longer, more restarts before fewer, newer before older.
pub fn deletion_order(a: &Value, b: &Value) -> Ordering {
    let scheduled = |p: &Value| !p["spec"]["nodeName"].as_str().unwrap_or("").is_empty();
    scheduled(a)
        .cmp(&scheduled(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| is_ready(a).cmp(&is_ready(b)))
        .then_with(|| {
            if is_ready(a) && is_ready(b) {
                // Later transition = ready for less time = delete first.
                ready_since(b).cmp(&ready_since(a))
            } else {
                Ordering::Equal
            }
        })
        .then_with(|| restarts(b).cmp(&restarts(a)))
        .then_with(|| created(b).cmp(&created(a)))
}

/// The pod `owner`'s `spec.template` stamps out: template labels and annotations,
/// `generateName` `<owner>-`, and a controller reference to the owner.
pub fn pod_from_template(owner: &Value) -> Value {
    let template = &owner["spec"]["template"];
    let mut metadata = json!({
        "generateName": format!("{}-", meta::name(owner)),
        "namespace": meta::namespace(owner),
        "ownerReferences": [owner_ref(owner)],
    });
    for field in ["labels", "annotations"] {
        if template["metadata"][field].is_object() {
            metadata[field] = template["metadata"][field].clone();
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template["spec"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, phase: &str, ready: bool, created: &str) -> Value {
        json!({"metadata": {"name": name, "creationTimestamp": created},
               "spec": {"nodeName": node},
               "status": {"phase": phase, "conditions": [
                   {"type": "Ready", "status": if ready {"True"} else {"False"},
                    "lastTransitionTime": "2024-01-01T00:00:00Z"}]}})
    }

    #[test]
    fn scale_down_prefers_unscheduled_pending_unready_newest() {
        let mut pods = [
            pod(
                "running-ready-old",
                "n",
                "Running",
                true,
                "2024-01-01T00:00:00Z",
            ),
            pod(
                "running-ready-new",
                "n",
                "Running",
                true,
                "2024-01-02T00:00:00Z",
            ),
            pod(
                "running-unready",
                "n",
                "Running",
                false,
                "2024-01-01T00:00:00Z",
            ),
            pod("pending", "n", "Pending", false, "2024-01-01T00:00:00Z"),
            pod("unscheduled", "", "Pending", false, "2024-01-01T00:00:00Z"),
        ];
        pods.sort_by(deletion_order);
        let names: Vec<_> = pods.iter().map(meta::name).collect();
        assert_eq!(
            names,
            [
                "unscheduled",
                "pending",
                "running-unready",
                "running-ready-new",
                "running-ready-old"
            ]
        );
    }

    #[test]
    fn available_only_after_min_ready_seconds() {
        let p = pod("a", "n", "Running", true, "2024-01-01T00:00:00Z");
        let t0 = parse_secs("2024-01-01T00:00:00Z").expect("time");
        assert_eq!(availability(&p, 10, t0 + 4), Err(Some(6)));
        assert_eq!(availability(&p, 10, t0 + 10), Ok(()));
        assert_eq!(availability(&p, 0, t0), Ok(()));
        let unready = pod("b", "n", "Running", false, "2024-01-01T00:00:00Z");
        assert_eq!(availability(&unready, 0, t0), Err(None));
    }
}
