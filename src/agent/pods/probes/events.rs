//! Probe events with upstream's aggregation: a probe failing the same way again does
//! not create a new Event each period but bumps the `count` and `lastTimestamp` of the
//! one it created (what `kubectl describe` shows as "(x12 over 11s)"), so a pod that
//! stays unready costs one small PATCH per period, not a growing pile of objects.
//! Events name the container (`involvedObject.fieldPath: spec.containers{web}`).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use super::Kind;
use crate::agent::client::PatchType;
use crate::agent::pods::PodContext;

/// The last event of one probe, to aggregate repeats into.
struct Last {
    name: String,
    reason: &'static str,
    message: String,
    count: u64,
}

/// Records the probe events of one pod.
pub struct Recorder {
    ctx: Arc<PodContext>,
    pod: Pod,
    last: HashMap<(String, Kind), Last>,
}

impl Recorder {
    pub fn new(ctx: Arc<PodContext>, pod: Pod) -> Recorder {
        Recorder {
            ctx,
            pod,
            last: HashMap::new(),
        }
    }

    /// Records a Warning `reason` about `container`'s `kind` probe.
    pub fn warn(&mut self, container: &str, kind: Kind, reason: &'static str, message: String) {
        let m = &self.pod.metadata;
        let ns = m.namespace.clone().unwrap_or_else(|| "default".into());
        let now = crate::api::meta::now_rfc3339();
        let client = self.ctx.client.clone();
        let key = (container.to_string(), kind);
        if let Some(last) = self.last.get_mut(&key) {
            if last.reason == reason && last.message == message {
                last.count += 1;
                let path = format!("/api/v1/namespaces/{ns}/events/{}", last.name);
                let patch = json!({"count": last.count, "lastTimestamp": now});
                tokio::spawn(async move {
                    if let Err(e) = client.patch::<Value>(&path, PatchType::Merge, &patch).await {
                        tracing::debug!(error = %e, "cannot update probe event");
                    }
                });
                return;
            }
        }
        let name = format!(
            "{}.{:x}",
            m.name.as_deref().unwrap_or("pod"),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {
                "apiVersion": "v1", "kind": "Pod",
                "name": m.name, "namespace": ns, "uid": m.uid,
                "fieldPath": format!("spec.containers{{{container}}}"),
            },
            "type": "Warning",
            "reason": reason,
            "message": message,
            "source": {"component": "kubelet", "host": self.ctx.node_name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.ctx.node_name,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        self.last.insert(
            key,
            Last {
                name,
                reason,
                message,
                count: 1,
            },
        );
        let path = format!("/api/v1/namespaces/{ns}/events");
        tokio::spawn(async move {
            if let Err(e) = client.create::<_, Value>(&path, &event).await {
                tracing::debug!(error = %e, "cannot record probe event");
            }
        });
    }
}
