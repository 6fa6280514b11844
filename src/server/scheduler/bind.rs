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
    let ns = meta::namespace(pod);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let name = format!("{}.{nanos:x}", meta::name(pod));
    let now = meta::now_rfc3339();
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {
            "apiVersion": "v1", "kind": "Pod", "namespace": ns,
            "name": meta::name(pod), "uid": meta::uid(pod),
            "resourceVersion": pod["metadata"]["resourceVersion"],
        },
        "type": type_,
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": "",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
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

    /// Records a failed attempt: the `PodScheduled=False` condition and the event.
    pub async fn record(&self, registry: &Registry, pod: &Value, message: &str, component: &str) {
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
