//! The event recorder in-server controllers share: writes core/v1 Events about an object
//! and aggregates them like client-go's recorder does, so a controller that reports the
//! same thing again (same object, type, reason and message) bumps that Event's `count`
//! and `lastTimestamp` instead of adding a new one. `kubectl describe` then shows
//! `x5 over 2m` as on a real cluster.
//!
//! ```ignore
//! let events = EventRecorder::new(registry.clone(), "replicaset-controller");
//! events.normal(&rs, "SuccessfulCreate", &format!("Created pod: {name}")).await;
//! ```

use crate::api::meta;
use crate::server::informer::builtin;
use crate::server::registry::{Registry, WriteOptions};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How many distinct (object, reason, message) keys the recorder remembers. When full
/// it forgets them all: the next repeat then starts a fresh Event, which is what
/// client-go's bounded LRU does too for keys it evicted.
const MAX_REMEMBERED: usize = 4096;

/// The `type` of an Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something expected happened (`Normal`).
    Normal,
    /// Something the user may have to act on (`Warning`).
    Warning,
}

impl EventType {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// What makes two events "the same" for aggregation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct AggregateKey {
    namespace: String,
    uid: String,
    type_: EventType,
    reason: String,
    message: String,
}

struct Inner {
    registry: Registry,
    component: String,
    /// The Event name last written for each key.
    seen: Mutex<HashMap<AggregateKey, String>>,
}

/// Records Events from one component (`source.component`, `reportingComponent`).
/// Cheap to clone; clones share the aggregation memory.
#[derive(Clone)]
pub struct EventRecorder {
    inner: Arc<Inner>,
}

impl EventRecorder {
    /// A recorder writing through `registry` as `component` (upstream names such as
    /// `replicaset-controller`, `deployment-controller`, `job-controller`).
    pub fn new(registry: Registry, component: &str) -> Self {
        EventRecorder {
            inner: Arc::new(Inner {
                registry,
                component: component.to_string(),
                seen: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The component this recorder reports as.
    pub fn component(&self) -> &str {
        &self.inner.component
    }

    /// Records a `Normal` event about `object`.
    pub async fn normal(&self, object: &Value, reason: &str, message: &str) {
        self.record(object, EventType::Normal, reason, message)
            .await
    }

    /// Records a `Warning` event about `object`.
    pub async fn warning(&self, object: &Value, reason: &str, message: &str) {
        self.record(object, EventType::Warning, reason, message)
            .await
    }

    /// Records an event about `object` (any kind: its `apiVersion`, `kind`, namespace,
    /// name and uid become `involvedObject`). Failures are logged at debug and
    /// otherwise ignored: an event is never worth failing a reconcile for.
    pub async fn record(&self, object: &Value, type_: EventType, reason: &str, message: &str) {
        let ns = match meta::namespace(object) {
            "" => "default",
            ns => ns,
        };
        let key = AggregateKey {
            namespace: ns.to_string(),
            uid: meta::uid(object).to_string(),
            type_,
            reason: reason.to_string(),
            message: message.to_string(),
        };
        let now = meta::now_rfc3339();
        let previous = self.seen().get(&key).cloned();
        if let Some(name) = previous {
            let bumped = self
                .inner
                .registry
                .update_with(builtin("", "v1", "events"), ns, &name, |e| {
                    e["count"] = json!(e["count"].as_i64().unwrap_or(1) + 1);
                    e["lastTimestamp"] = json!(now);
                    Ok(())
                })
                .await;
            match bumped {
                Ok(_) => return,
                // Expired or deleted: fall through and start a new Event.
                Err(e) => tracing::debug!(error = %e, event = %name, "cannot bump event"),
            }
        }
        let event = self.new_event(object, ns, type_, reason, message, &now);
        let name = meta::name(&event).to_string();
        match self
            .inner
            .registry
            .create(
                builtin("", "v1", "events"),
                ns,
                event,
                &WriteOptions::default(),
            )
            .await
        {
            Ok(_) => {
                let mut seen = self.seen();
                if seen.len() >= MAX_REMEMBERED {
                    seen.clear();
                }
                seen.insert(key, name);
            }
            Err(e) => tracing::debug!(
                error = %e,
                object = meta::name(object),
                reason,
                "cannot record event"
            ),
        }
    }

    fn new_event(
        &self,
        object: &Value,
        ns: &str,
        type_: EventType,
        reason: &str,
        message: &str,
        now: &str,
    ) -> Value {
        // Upstream names events `<object>.<unix nanos in hex>`, unique per object.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = format!("{}.{nanos:x}", meta::name(object));
        let mut involved = json!({
            "apiVersion": object["apiVersion"],
            "kind": object["kind"],
            "name": meta::name(object),
            "uid": meta::uid(object),
            "resourceVersion": object["metadata"]["resourceVersion"],
        });
        if !meta::namespace(object).is_empty() {
            involved["namespace"] = json!(meta::namespace(object));
        }
        json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": involved,
            "type": type_.as_str(),
            "reason": reason,
            "message": message,
            "source": {"component": self.inner.component},
            "reportingComponent": self.inner.component,
            "reportingInstance": "",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        })
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<AggregateKey, String>> {
        // Every critical section is one map operation, so a poisoned lock is consistent.
        self.inner.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A registry on a fresh SQLite store with the system namespaces, for the tests of the
/// event code.
#[cfg(test)]
pub(crate) async fn test_registry() -> (Registry, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crate::server::store::sqlite::SqliteStore::open(
        &dir.path().join("state.db"),
        crate::server::store::sqlite::StoreOptions::default(),
    )
    .await
    .expect("open store");
    let registry = Registry::new(store);
    registry
        .ensure_system_namespaces()
        .await
        .expect("namespaces");
    (registry, dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::registry::ListOptions;

    async fn registry() -> (Registry, tempfile::TempDir) {
        test_registry().await
    }

    fn rs() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
               "metadata": {"name": "web", "namespace": "default", "uid": "u-1", "resourceVersion": "7"}})
    }

    async fn events(registry: &Registry) -> Vec<Value> {
        let list = registry
            .list(
                builtin("", "v1", "events"),
                "default",
                &ListOptions::default(),
            )
            .await
            .expect("list events");
        list.items.iter().filter_map(|i| i.value().ok()).collect()
    }

    #[tokio::test]
    async fn same_reason_and_message_bumps_count() {
        let (registry, _dir) = registry().await;
        let rec = EventRecorder::new(registry.clone(), "replicaset-controller");
        rec.normal(&rs(), "SuccessfulCreate", "Created pod: web-a")
            .await;
        rec.normal(&rs(), "SuccessfulCreate", "Created pod: web-a")
            .await;
        rec.normal(&rs(), "SuccessfulCreate", "Created pod: web-b")
            .await;
        let evs = events(&registry).await;
        assert_eq!(evs.len(), 2, "{evs:#?}");
        let a = evs
            .iter()
            .find(|e| e["message"] == "Created pod: web-a")
            .expect("event a");
        assert_eq!(a["count"], 2);
        assert_eq!(a["involvedObject"]["kind"], "ReplicaSet");
        assert_eq!(a["involvedObject"]["apiVersion"], "apps/v1");
        assert_eq!(a["source"]["component"], "replicaset-controller");
        assert_eq!(a["type"], "Normal");
    }

    #[tokio::test]
    async fn deleted_event_is_recreated() {
        let (registry, _dir) = registry().await;
        let rec = EventRecorder::new(registry.clone(), "deployment-controller");
        rec.warning(&rs(), "Bad", "x").await;
        let name = meta::name(&events(&registry).await[0]).to_string();
        registry
            .delete(
                builtin("", "v1", "events"),
                "default",
                &name,
                &Default::default(),
            )
            .await
            .expect("delete");
        rec.warning(&rs(), "Bad", "x").await;
        let evs = events(&registry).await;
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0]["count"], 1);
        assert_eq!(evs[0]["type"], "Warning");
    }
}
