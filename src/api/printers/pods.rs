//! The pod printer: READY (sidecars count), STATUS (phase, init progress, the first
//! container's waiting/terminated reason, Terminating, ...), RESTARTS with "(5m ago)",
//! and the wide IP / node / nominated node / readiness gates columns. Also the row
//! condition that marks finished pods.

use std::collections::HashSet;

use jiff::Timestamp;
use serde_json::{json, Value};

use super::duration::{age, parse_time, since};
use super::text::{arr, at, bool_at, deleting, int_at, name, str_at};
use super::{col, wide, Column, Printer, AGE, NAME};

const COLUMNS: &[Column] = &[
    NAME,
    col(
        "Ready",
        "string",
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    col(
        "Status",
        "string",
        "The aggregate status of the containers in this pod.",
    ),
    col(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    wide(
        "IP",
        "string",
        "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
    ),
    wide(
        "Node",
        "string",
        "NodeName indicates in which node this pod is scheduled.",
    ),
    wide(
        "Nominated Node",
        "string",
        "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.",
    ),
    wide(
        "Readiness Gates",
        "string",
        "If specified, all readiness gates will be evaluated for pod readiness.",
    ),
];

pub(crate) static PODS: Printer = Printer {
    columns: COLUMNS,
    cells: pod_cells,
};

/// `status.reason` the node lifecycle controller sets on pods of an unreachable node.
const NODE_LOST: &str = "NodeLost";

/// Whether a status condition of the given type has status True; only the first
/// condition of that type counts.
fn first_condition_true(pod: &Value, kind: &str) -> bool {
    arr(pod, "/status/conditions")
        .iter()
        .find(|c| str_at(c, "/type") == kind)
        .is_some_and(|c| str_at(c, "/status") == "True")
}

/// Whether any Ready condition is True.
fn ready_condition_true(pod: &Value) -> bool {
    arr(pod, "/status/conditions")
        .iter()
        .any(|c| str_at(c, "/type") == "Ready" && str_at(c, "/status") == "True")
}

/// When the container last terminated (`lastState.terminated.finishedAt`), if known.
fn last_termination(status: &Value) -> Option<Timestamp> {
    parse_time(status.pointer("/lastState/terminated/finishedAt"))
}

fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Reason for a terminated container without one: by signal, else by exit code.
fn terminated_reason(terminated: &Value, prefix: &str) -> String {
    let signal = int_at(terminated, "/signal");
    if signal != 0 {
        format!("{prefix}Signal:{signal}")
    } else {
        format!("{prefix}ExitCode:{}", int_at(terminated, "/exitCode"))
    }
}

fn pod_cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let phase = str_at(pod, "/status/phase");
    let status_reason = str_at(pod, "/status/reason");
    let mut reason = if status_reason.is_empty() {
        phase.to_string()
    } else {
        status_reason.to_string()
    };
    for c in arr(pod, "/status/conditions") {
        if str_at(c, "/type") == "PodScheduled" && str_at(c, "/reason") == "SchedulingGated" {
            reason = "SchedulingGated".to_string();
        }
    }

    let init_specs = arr(pod, "/spec/initContainers");
    // Restartable init containers (sidecars) run for the pod's lifetime and count as
    // containers of the pod.
    let sidecars: HashSet<&str> = init_specs
        .iter()
        .filter(|c| str_at(c, "/restartPolicy") == "Always")
        .map(|c| str_at(c, "/name"))
        .collect();
    let sidecar_specs = init_specs
        .iter()
        .filter(|c| str_at(c, "/restartPolicy") == "Always")
        .count();
    let total = arr(pod, "/spec/containers").len() + sidecar_specs;

    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_sidecar_restart: Option<Timestamp> = None;

    let mut initializing = false;
    for (i, cs) in arr(pod, "/status/initContainerStatuses").iter().enumerate() {
        let count = int_at(cs, "/restartCount");
        restarts += count;
        last_restart = later(last_restart, last_termination(cs));
        let sidecar = sidecars.contains(str_at(cs, "/name"));
        if sidecar {
            sidecar_restarts += count;
            last_sidecar_restart = later(last_sidecar_restart, last_termination(cs));
        }
        let terminated = at(cs, "/state/terminated");
        let waiting = at(cs, "/state/waiting");
        if terminated.is_some_and(|t| int_at(t, "/exitCode") == 0) {
            continue;
        }
        if sidecar && bool_at(cs, "/started") {
            if bool_at(cs, "/ready") {
                ready += 1;
            }
            continue;
        }
        let waiting_reason = waiting.map(|w| str_at(w, "/reason")).unwrap_or("");
        reason = if let Some(t) = terminated {
            let r = str_at(t, "/reason");
            if r.is_empty() {
                terminated_reason(t, "Init:")
            } else {
                format!("Init:{r}")
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || first_condition_true(pod, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        // Backwards, so the first container with a problem decides the status.
        for cs in arr(pod, "/status/containerStatuses").iter().rev() {
            restarts += int_at(cs, "/restartCount");
            last_restart = later(last_restart, last_termination(cs));
            let waiting_reason = str_at(cs, "/state/waiting/reason");
            let terminated = at(cs, "/state/terminated");
            if at(cs, "/state/waiting").is_some() && !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                let r = str_at(t, "/reason");
                reason = if r.is_empty() {
                    terminated_reason(t, "")
                } else {
                    r.to_string()
                };
            } else if bool_at(cs, "/ready") && at(cs, "/state/running").is_some() {
                has_running = true;
                ready += 1;
            }
        }
        // A container that finished while another still runs: the pod is not done.
        if reason == "Completed" && has_running {
            reason = if ready_condition_true(pod) {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    if deleting(pod) && status_reason == NODE_LOST {
        reason = "Unknown".to_string();
    } else if deleting(pod) && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(t), now)),
        _ => restarts.to_string(),
    };

    // Upstream's conversion fills podIPs from podIP when only the latter is set.
    let mut ip = arr(pod, "/status/podIPs")
        .first()
        .map(|p| str_at(p, "/ip"))
        .unwrap_or("");
    if ip.is_empty() && arr(pod, "/status/podIPs").is_empty() {
        ip = str_at(pod, "/status/podIP");
    }
    let none_if_empty = |s: &str| {
        if s.is_empty() {
            "<none>".to_string()
        } else {
            s.to_string()
        }
    };

    vec![
        json!(name(pod)),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(age(pod, now)),
        json!(none_if_empty(ip)),
        json!(none_if_empty(str_at(pod, "/spec/nodeName"))),
        json!(none_if_empty(str_at(pod, "/status/nominatedNodeName"))),
        json!(readiness_gates(pod)),
    ]
}

/// `true/total` over the readiness gates, `<none>` without any.
fn readiness_gates(pod: &Value) -> String {
    let gates = arr(pod, "/spec/readinessGates");
    if gates.is_empty() {
        return "<none>".to_string();
    }
    let passed = gates
        .iter()
        .filter(|g| first_condition_true(pod, str_at(g, "/conditionType")))
        .count();
    format!("{passed}/{}", gates.len())
}

/// A `Completed` row condition for pods that finished, which lets clients tell them
/// apart (upstream's podSuccessConditions / podFailedConditions).
pub(crate) fn row_conditions(pod: &Value) -> Option<Value> {
    let (reason, message) = match str_at(pod, "/status/phase") {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{
        "type": "Completed",
        "status": "True",
        "reason": reason,
        "message": message,
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2024-06-01T12:00:00Z".parse().unwrap()
    }

    /// A pod created an hour before `now()` with one container `app`.
    fn pod(status: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "default", "creationTimestamp": "2024-06-01T11:00:00Z"},
            "spec": {"containers": [{"name": "app", "image": "nginx"}], "nodeName": "node-1"},
            "status": status,
        })
    }

    fn cells(p: &Value) -> Vec<Value> {
        pod_cells(p, now())
    }

    fn short(p: &Value) -> Vec<Value> {
        cells(p)[..5].to_vec()
    }

    #[test]
    fn pending_unscheduled() {
        let mut p = pod(json!({"phase": "Pending"}));
        p["spec"].as_object_mut().unwrap().remove("nodeName");
        assert_eq!(
            cells(&p),
            vec![
                json!("web-0"),
                json!("0/1"),
                json!("Pending"),
                json!("0"),
                json!("60m"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        assert_eq!(row_conditions(&p), None);
    }

    #[test]
    fn container_creating() {
        let p = pod(json!({
            "phase": "Pending",
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}}]
        }));
        assert_eq!(
            short(&p),
            vec![
                json!("web-0"),
                json!("0/1"),
                json!("ContainerCreating"),
                json!("0"),
                json!("60m")
            ]
        );
    }

    #[test]
    fn running_ready_with_wide_columns() {
        let p = pod(json!({
            "phase": "Running",
            "podIP": "10.42.0.7",
            "podIPs": [{"ip": "10.42.0.7"}, {"ip": "fd00::7"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
                "state": {"running": {"startedAt": "2024-06-01T11:00:05Z"}}}]
        }));
        assert_eq!(
            cells(&p),
            vec![
                json!("web-0"),
                json!("1/1"),
                json!("Running"),
                json!("0"),
                json!("60m"),
                json!("10.42.0.7"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn pod_ip_without_pod_ips() {
        let p = pod(json!({"phase": "Running", "podIP": "10.42.0.9"}));
        assert_eq!(cells(&p)[5], json!("10.42.0.9"));
    }

    #[test]
    fn crash_loop_with_restarts_ago() {
        let p = pod(json!({
            "phase": "Running",
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                    "finishedAt": "2024-06-01T11:55:00Z"}}}]
        }));
        assert_eq!(
            short(&p),
            vec![
                json!("web-0"),
                json!("0/1"),
                json!("CrashLoopBackOff"),
                json!("3 (5m ago)"),
                json!("60m")
            ]
        );
    }

    #[test]
    fn restarts_without_finish_time_have_no_ago() {
        let p = pod(json!({
            "phase": "Running",
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 2,
                "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 1}}}]
        }));
        assert_eq!(cells(&p)[3], json!("2"));
    }

    #[test]
    fn completed_and_error() {
        let done = pod(json!({
            "phase": "Succeeded",
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]
        }));
        assert_eq!(cells(&done)[1..3], [json!("0/1"), json!("Completed")]);
        assert_eq!(
            row_conditions(&done),
            Some(
                json!([{"type": "Completed", "status": "True", "reason": "Succeeded",
                "message": "The pod has completed successfully."}])
            )
        );

        let failed = pod(json!({
            "phase": "Failed",
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}]
        }));
        assert_eq!(cells(&failed)[2], json!("Error"));
        assert_eq!(row_conditions(&failed).unwrap()[0]["reason"], "Failed");

        let no_reason = pod(json!({
            "phase": "Failed",
            "containerStatuses": [{"name": "app", "state": {"terminated": {"exitCode": 137}}}]
        }));
        assert_eq!(cells(&no_reason)[2], json!("ExitCode:137"));
        let signal = pod(json!({
            "phase": "Failed",
            "containerStatuses": [{"name": "app", "state": {"terminated": {"exitCode": 0, "signal": 9}}}]
        }));
        assert_eq!(cells(&signal)[2], json!("Signal:9"));
    }

    #[test]
    fn completed_container_next_to_running_one() {
        let mut p = pod(json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [
                {"name": "app", "ready": true, "state": {"running": {}}},
                {"name": "job", "ready": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
            ]
        }));
        p["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "job", "image": "busybox"}));
        assert_eq!(cells(&p)[1..3], [json!("1/2"), json!("NotReady")]);
        p["status"]["conditions"][0]["status"] = json!("True");
        assert_eq!(cells(&p)[2], json!("Running"));
    }

    #[test]
    fn init_containers() {
        let mut p = pod(json!({
            "phase": "Pending",
            "initContainerStatuses": [{"name": "setup", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "PodInitializing"}}}],
            "containerStatuses": [{"name": "app", "ready": false,
                "state": {"waiting": {"reason": "PodInitializing"}}}]
        }));
        p["spec"]["initContainers"] = json!([{"name": "setup", "image": "busybox"}]);
        assert_eq!(short(&p)[1..3], [json!("0/1"), json!("Init:0/1")]);

        p["status"]["initContainerStatuses"][0]["state"] =
            json!({"waiting": {"reason": "CrashLoopBackOff"}});
        p["status"]["initContainerStatuses"][0]["restartCount"] = json!(4);
        p["status"]["initContainerStatuses"][0]["lastState"] =
            json!({"terminated": {"exitCode": 1, "finishedAt": "2024-06-01T11:59:30Z"}});
        assert_eq!(
            short(&p)[1..4],
            [
                json!("0/1"),
                json!("Init:CrashLoopBackOff"),
                json!("4 (30s ago)")
            ]
        );

        p["status"]["initContainerStatuses"][0]["state"] =
            json!({"terminated": {"exitCode": 1, "reason": "Error"}});
        assert_eq!(cells(&p)[2], json!("Init:Error"));
        p["status"]["initContainerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 3}});
        assert_eq!(cells(&p)[2], json!("Init:ExitCode:3"));

        // Second of two init containers running.
        p["spec"]["initContainers"] = json!([
            {"name": "setup", "image": "busybox"},
            {"name": "migrate", "image": "busybox"}
        ]);
        p["status"]["initContainerStatuses"] = json!([
            {"name": "setup", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "migrate", "state": {"running": {}}}
        ]);
        assert_eq!(cells(&p)[2], json!("Init:1/2"));
    }

    #[test]
    fn sidecars_count_in_ready_and_restarts() {
        let mut p = pod(json!({
            "phase": "Running",
            "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
            "initContainerStatuses": [
                {"name": "setup", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "proxy", "ready": true, "started": true, "restartCount": 1,
                    "state": {"running": {}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-06-01T11:50:00Z"}}}
            ],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}}]
        }));
        p["spec"]["initContainers"] = json!([
            {"name": "setup", "image": "busybox"},
            {"name": "proxy", "image": "envoy", "restartPolicy": "Always"}
        ]);
        assert_eq!(
            short(&p),
            vec![
                json!("web-0"),
                json!("2/2"),
                json!("Running"),
                json!("1 (10m ago)"),
                json!("60m")
            ]
        );

        // Sidecar not started yet: still initializing.
        p["status"]["initContainerStatuses"][1]["started"] = json!(false);
        p["status"]["initContainerStatuses"][1]["ready"] = json!(false);
        p["status"]["conditions"] = json!([{"type": "Initialized", "status": "False"}]);
        assert_eq!(
            short(&p)[1..4],
            [json!("0/2"), json!("Init:1/2"), json!("1 (10m ago)")]
        );
    }

    #[test]
    fn terminating_and_unknown() {
        let mut p = pod(json!({
            "phase": "Running",
            "containerStatuses": [{"name": "app", "ready": true, "state": {"running": {}}}]
        }));
        p["metadata"]["deletionTimestamp"] = json!("2024-06-01T11:59:00Z");
        assert_eq!(cells(&p)[1..3], [json!("1/1"), json!("Terminating")]);

        p["status"]["reason"] = json!("NodeLost");
        assert_eq!(cells(&p)[2], json!("Unknown"));

        let mut done = pod(json!({"phase": "Succeeded"}));
        done["metadata"]["deletionTimestamp"] = json!("2024-06-01T11:59:00Z");
        assert_eq!(cells(&done)[2], json!("Succeeded"));
    }

    #[test]
    fn scheduling_gated_and_evicted() {
        let gated = pod(json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]
        }));
        assert_eq!(cells(&gated)[2], json!("SchedulingGated"));
        let evicted = pod(json!({"phase": "Failed", "reason": "Evicted"}));
        assert_eq!(cells(&evicted)[2], json!("Evicted"));
    }

    #[test]
    fn readiness_gates_and_nominated_node() {
        let mut p = pod(json!({
            "phase": "Running",
            "nominatedNodeName": "node-2",
            "conditions": [{"type": "example.com/lb", "status": "True"}]
        }));
        p["spec"]["readinessGates"] = json!([
            {"conditionType": "example.com/lb"},
            {"conditionType": "example.com/dns"}
        ]);
        let c = cells(&p);
        assert_eq!(c[7], json!("node-2"));
        assert_eq!(c[8], json!("1/2"));
    }
}
