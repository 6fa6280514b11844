//! The writes of a scheduling decision: the `pods/binding` subresource (also served to
//! clients by the HTTP layer), the `Scheduled` and `FailedScheduling` events, and the
//! `PodScheduled=False/Unschedulable` condition.

use crate::api::meta;
use crate::api::ApiError;
use crate::server::informer::builtin;
use crate::server::registry::{Registry, WriteOptions};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;

/// Binds a pod to `node` (what `POST pods/{name}/binding` does): sets `spec.nodeName`
/// and `PodScheduled=True`. Fails with 409 when the pod is bound already or deleting.
pub async fn bind_pod(
    registry: &Registry,
    namespace: &str,
    name: &str,
    node: &str,
) -> Result<Value, ApiError> {
    if node.is_empty() {
        return Err(ApiError::invalid(
            "",
            "Binding",
            name,
            vec![crate::api::FieldError::required("target.name")],
        ));
    }
    let now = meta::now_rfc3339();
    registry
        .update_with(builtin("", "v1", "pods"), namespace, name, |pod| {
            let current = pod["spec"]["nodeName"].as_str().unwrap_or("");
            if !current.is_empty() {
                return Err(ApiError::conflict_msg(
                    "",
                    "pods",
                    name,
                    &format!("pod {name} is already assigned to node {current:?}"),
                ));
            }
            if meta::is_deleting(pod) {
                return Err(ApiError::conflict_msg(
                    "",
                    "pods",
                    name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            pod["spec"]["nodeName"] = json!(node);
            set_condition(pod, json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}));
            Ok(())
        })
        .await
}

/// Replaces the pod's condition of the same type, keeping `lastTransitionTime` when the
/// status did not change.
fn set_condition(pod: &mut Value, mut cond: Value) {
    let conds = pod["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::with_capacity(conds.len() + 1);
    for c in conds {
        if c["type"] == cond["type"] {
            if c["status"] == cond["status"] {
                cond["lastTransitionTime"] = c["lastTransitionTime"].clone();
            }
        } else {
            out.push(c);
        }
    }
    out.push(cond);
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    pod["status"]["conditions"] = Value::Array(out);
}

/// Creates an event about `pod` from `component`.
pub async fn pod_event(
    registry: &Registry,
    pod: &Value,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) -> Option<String> {
    let event = json!({"type": type_, "reason": reason, "message": message,
                       "source": {"component": component}, "reportingComponent": component});
    write_pod_event(registry, pod, event).await
}

/// Writes an event about `pod`: `fields` (type, reason, message, source, ...) plus the
/// name, involved object, timestamps and count every event has.
async fn write_pod_event(registry: &Registry, pod: &Value, mut event: Value) -> Option<String> {
    let ns = meta::namespace(pod);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let name = format!("{}.{nanos:x}", meta::name(pod));
    let now = meta::now_rfc3339();
    let common = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {
            "apiVersion": "v1", "kind": "Pod", "namespace": ns,
            "name": meta::name(pod), "uid": meta::uid(pod),
            "resourceVersion": pod["metadata"]["resourceVersion"],
        },
        "reportingInstance": "",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    if let (Some(e), Some(c)) = (event.as_object_mut(), common.as_object()) {
        for (k, v) in c {
            e.insert(k.clone(), v.clone());
        }
    }
    let reason = event["reason"].as_str().unwrap_or("").to_string();
    match registry
        .create(
            builtin("", "v1", "events"),
            ns,
            event,
            &WriteOptions::default(),
        )
        .await
    {
        Ok(_) => Some(name),
        Err(e) => {
            tracing::debug!(error = %e, pod = meta::name(pod), reason, "cannot record event");
            None
        }
    }
}

/// The last `FailedScheduling` event per pod, so a repeated failure with the same
/// message bumps that event's count instead of adding one (upstream's aggregation).
#[derive(Default)]
pub struct FailureEvents {
    last: Mutex<HashMap<String, (String, String)>>,
}

impl FailureEvents {
    /// Forgets a pod (scheduled or deleted).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, String)>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a failed attempt: the `PodScheduled=False` condition, the nominated node
    /// (`Some("")` clears it) and the event.
    pub async fn record(
        &self,
        registry: &Registry,
        pod: &Value,
        message: &str,
        component: &str,
        nominated: Option<&str>,
    ) {
        let (ns, name) = (meta::namespace(pod), meta::name(pod));
        let now = meta::now_rfc3339();
        let r = registry
            .update_with(builtin("", "v1", "pods"), ns, name, |p| {
                if !p["spec"]["nodeName"].as_str().unwrap_or("").is_empty() {
                    return Ok(());
                }
                set_condition(
                    p,
                    json!({"type": "PodScheduled", "status": "False", "lastProbeTime": null,
                           "lastTransitionTime": now, "reason": "Unschedulable", "message": message}),
                );
                match nominated {
                    Some("") => {
                        if let Some(st) = p["status"].as_object_mut() {
                            st.remove("nominatedNodeName");
                        }
                    }
                    Some(node) => p["status"]["nominatedNodeName"] = json!(node),
                    None => {}
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, pod = name, "cannot set PodScheduled=False");
            return;
        }
        let key = format!("{ns}/{name}");
        let previous = self.lock().get(&key).cloned();
        if let Some((event, last_message)) = previous {
            if last_message == message {
                let bumped = registry
                    .update_with(builtin("", "v1", "events"), ns, &event, |e| {
                        e["count"] = json!(e["count"].as_i64().unwrap_or(1) + 1);
                        e["lastTimestamp"] = json!(now);
                        Ok(())
                    })
                    .await;
                if bumped.is_ok() {
                    return;
                }
            }
        }
        if let Some(event) = pod_event(
            registry,
            pod,
            "Warning",
            "FailedScheduling",
            message,
            component,
        )
        .await
        {
            self.lock().insert(key, (event, message.to_string()));
        }
    }
}

/// Evicts one preemption victim as upstream's scheduler does: the `DisruptionTarget`
/// condition (reason `PreemptionByScheduler`), a graceful delete, and a `Preempted`
/// event on the victim naming the preemptor's uid and the node.
pub async fn preempt_victim(
    registry: &Registry,
    victim_ns: &str,
    victim_name: &str,
    preemptor: &Value,
    node: &str,
) -> Result<(), ApiError> {
    let scheduler = preemptor["spec"]["schedulerName"]
        .as_str()
        .unwrap_or(super::DEFAULT_SCHEDULER);
    let now = meta::now_rfc3339();
    let pods = builtin("", "v1", "pods");
    let victim = registry
        .update_with(pods, victim_ns, victim_name, |p| {
            set_condition(
                p,
                json!({"type": "DisruptionTarget", "status": "True", "lastProbeTime": null,
                       "lastTransitionTime": now, "reason": "PreemptionByScheduler",
                       "message": format!("{scheduler}: preempting to accommodate a higher priority pod")}),
            );
            Ok(())
        })
        .await?;
    registry
        .delete(pods, victim_ns, victim_name, &Default::default())
        .await?;
    let message = format!("Preempted by pod {} on node {node}", meta::uid(preemptor));
    let related = json!({
        "apiVersion": "v1", "kind": "Pod", "namespace": meta::namespace(preemptor),
        "name": meta::name(preemptor), "uid": meta::uid(preemptor),
    });
    let component = super::DEFAULT_SCHEDULER;
    let event = json!({"type": "Normal", "reason": "Preempted", "message": message,
                       "action": "Preempting", "related": related,
                       "source": {"component": component}, "reportingComponent": component});
    write_pod_event(registry, &victim, event).await;
    Ok(())
}

/// Clears a pending pod's `status.nominatedNodeName` (its nomination was taken over by
/// a pod of higher priority).
pub async fn clear_nomination(registry: &Registry, namespace: &str, name: &str) {
    let r = registry
        .update_with(builtin("", "v1", "pods"), namespace, name, |p| {
            if let Some(st) = p["status"].as_object_mut() {
                st.remove("nominatedNodeName");
            }
            Ok(())
        })
        .await;
    if let Err(e) = r {
        tracing::debug!(error = %e, pod = name, "cannot clear nominatedNodeName");
    }
}
