//! What the workload controllers of this branch (DaemonSet, StatefulSet, Job, CronJob)
//! share about the objects they own: controller ownerReferences, turning a template into
//! an object, creating and deleting owned objects and waiting until the informer cache
//! shows the change (a simple form of upstream's "expectations", so a reconcile never
//! acts on a cache that misses its own last write), pod state predicates, feeding a work
//! queue from an informer, and recording events.

use crate::api::meta;
use crate::api::ApiError;
use crate::server::informer::{builtin, Informer, InformerEvent, ObjectKey, WorkQueue};
use crate::server::registry::{DeleteOptions, Registry, WriteOptions};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a controller waits for its own write to show in the informer cache.
const CACHE_WAIT: Duration = Duration::from_secs(3);

/// A failed step of a workload controller; the work queue retries the key with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A write through the registry failed.
    #[error("{what}: {source}")]
    Api {
        /// What the controller was doing.
        what: String,
        /// The API error.
        source: ApiError,
    },
}

impl ControllerError {
    /// Wraps an API error with what was being done.
    pub fn api(what: impl Into<String>, source: ApiError) -> ControllerError {
        ControllerError::Api {
            what: what.into(),
            source,
        }
    }
}

/// The ownerReference a controller puts on what it creates (controller and
/// blockOwnerDeletion true, as upstream's controllers do).
pub fn controller_ref(owner: &Value, api_version: &str, kind: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "name": meta::name(owner),
        "uid": meta::uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The ownerReference with `controller: true`, if any.
pub fn controller_of(obj: &Value) -> Option<&Value> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"].as_bool() == Some(true))
}

/// The objects of `informer` in `ns` whose controller is the object with `uid`.
pub fn owned_by(informer: &Informer, ns: &str, uid: &str) -> Vec<Arc<Value>> {
    let mut out: Vec<Arc<Value>> = informer
        .list(ns, &Default::default())
        .into_iter()
        .filter(|o| controller_of(o).is_some_and(|r| r["uid"] == uid))
        .collect();
    // Oldest first, then by name: a stable order for choosing what to keep.
    out.sort_by(|a, b| {
        let ka = (meta::meta_str(a, "creationTimestamp"), meta::name(a));
        let kb = (meta::meta_str(b, "creationTimestamp"), meta::name(b));
        ka.cmp(&kb)
    });
    out
}

/// Runs `task` until it ends or `stop` flips (a controller's feeders end with it, so a
/// lost and regained leadership does not leave the old ones behind).
pub fn spawn_until(
    stop: &watch::Receiver<bool>,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mut stop = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = task => {}
            _ = stop.changed() => {}
        }
    });
}

/// Feeds `queue` with the key of the owner (of `kind`) of every object `informer`
/// reports, until `stop` flips; a resync re-enqueues every owner of `owners`.
pub fn enqueue_owners(
    informer: &Informer,
    owners: Informer,
    kind: &'static str,
    queue: WorkQueue<ObjectKey>,
    stop: &watch::Receiver<bool>,
) {
    let mut events = informer.subscribe();
    spawn_until(stop, async move {
        while let Some(ev) = events.recv().await {
            let mut objs = Vec::new();
            match &ev {
                InformerEvent::Resync => {
                    for o in owners.list_all() {
                        queue.add(ObjectKey::of(&o));
                    }
                    continue;
                }
                InformerEvent::Updated { old, new } => {
                    objs.push(old.clone());
                    objs.push(new.clone());
                }
                InformerEvent::Added(o) | InformerEvent::Deleted(o) => objs.push(o.clone()),
            }
            for o in objs {
                if let Some(r) = controller_of(&o).filter(|r| r["kind"] == kind) {
                    let name = r["name"].as_str().unwrap_or("");
                    queue.add(ObjectKey::new(meta::namespace(&o), name));
                }
            }
        }
    });
}

/// Feeds `queue` with the key of every object of `informer` (the controller's own kind)
/// until `stop` flips.
pub fn enqueue_self(
    informer: &Informer,
    queue: WorkQueue<ObjectKey>,
    stop: &watch::Receiver<bool>,
) {
    let mut events = informer.subscribe();
    let cache = informer.clone();
    spawn_until(stop, async move {
        while let Some(ev) = events.recv().await {
            match ev.object() {
                Some(o) => queue.add(ObjectKey::of(o)),
                None => cache
                    .list_all()
                    .iter()
                    .for_each(|o| queue.add(ObjectKey::of(o))),
            }
        }
    });
}

/// An object built from a template (`{metadata, spec}`): the template's labels,
/// annotations and spec, the owner reference, in `ns`.
pub fn from_template(
    template: &Value,
    api_version: &str,
    kind: &str,
    ns: &str,
    owner_ref: Value,
) -> Value {
    let mut metadata = json!({"namespace": ns, "ownerReferences": [owner_ref]});
    for f in ["labels", "annotations", "finalizers"] {
        if let Some(v) = template["metadata"].get(f).filter(|v| !v.is_null()) {
            metadata[f] = v.clone();
        }
    }
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": metadata,
        "spec": template["spec"].clone(),
    })
}

/// Sets one label, creating the map if needed.
pub fn set_label(obj: &mut Value, key: &str, value: &str) {
    let m = meta::metadata_mut(obj);
    let labels = m.entry("labels").or_insert_with(|| json!({}));
    if !labels.is_object() {
        *labels = json!({});
    }
    labels[key] = json!(value);
}

/// Sets one annotation, creating the map if needed.
pub fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    let m = meta::metadata_mut(obj);
    let ann = m.entry("annotations").or_insert_with(|| json!({}));
    if !ann.is_object() {
        *ann = json!({});
    }
    ann[key] = json!(value);
}

/// Creates a pod and waits until the pod informer has it.
pub async fn create_pod(
    registry: &Registry,
    pods: &Informer,
    ns: &str,
    pod: Value,
) -> Result<Value, ApiError> {
    let created = registry
        .create(builtin("", "v1", "pods"), ns, pod, &WriteOptions::default())
        .await?;
    wait_cached(pods, ns, meta::name(&created), |o| o.is_some()).await;
    Ok(created)
}

/// Deletes an object (`Background` propagation) and waits until `informer` shows it gone
/// or deleting. A 404 counts as done.
pub async fn delete_object(
    registry: &Registry,
    informer: &Informer,
    obj: &Value,
) -> Result<(), ApiError> {
    delete_with_grace(registry, informer, obj, None).await
}

/// [`delete_object`] with a grace period (`Some(0)`: at once, for pods whose node is
/// gone and can never stop them, as upstream's pod garbage collector does).
pub async fn delete_with_grace(
    registry: &Registry,
    informer: &Informer,
    obj: &Value,
    grace_period: Option<i64>,
) -> Result<(), ApiError> {
    let (ns, name) = (meta::namespace(obj), meta::name(obj));
    let opts = DeleteOptions {
        uid: Some(meta::uid(obj).to_string()),
        propagation: Some("Background".into()),
        grace_period,
        ..Default::default()
    };
    match registry.delete(informer.resource(), ns, name, &opts).await {
        Ok(_) => {}
        Err(e) if e.code == 404 || e.code == 409 => return Ok(()),
        Err(e) => return Err(e),
    }
    wait_cached(informer, ns, name, |o| o.is_none_or(meta::is_deleting)).await;
    Ok(())
}

/// Waits (briefly) until the cached object satisfies `done`.
pub async fn wait_cached(
    informer: &Informer,
    ns: &str,
    name: &str,
    done: impl Fn(Option<&Value>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + CACHE_WAIT;
    while !done(informer.get(ns, name).as_deref()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `status.phase` of a pod.
pub fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

/// Succeeded or Failed.
pub fn is_finished(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Neither finished nor being deleted.
pub fn is_active(pod: &Value) -> bool {
    !is_finished(pod) && !meta::is_deleting(pod)
}

/// Whether a condition of `type_` has status True.
pub fn condition_true(obj: &Value, type_: &str) -> bool {
    obj["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == type_ && c["status"] == "True")
    })
}

/// Pod condition Ready is True.
pub fn is_ready(pod: &Value) -> bool {
    phase(pod) == "Running" && condition_true(pod, "Ready")
}

/// Ready for at least `min_ready_seconds` (by the Ready condition's transition time).
pub fn is_available(pod: &Value, min_ready_seconds: i64, now: i64) -> bool {
    if !is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    let since = pod["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["lastTransitionTime"].as_str())
        .and_then(parse_time);
    since.is_some_and(|t| t + min_ready_seconds <= now)
}

/// Seconds since the epoch of an RFC 3339 time.
pub fn parse_time(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

/// Now, in seconds since the epoch.
pub fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// An RFC 3339 time (seconds precision, `Z`) from seconds since the epoch.
pub fn format_time(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// An int-or-percent (`maxUnavailable: 25%`) resolved against `total`; percentages
/// round up when `round_up`, down otherwise (as upstream's GetScaledValueFromIntOrPercent).
pub fn int_or_percent(v: &Value, total: i64, round_up: bool, default: i64) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(default),
        Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) if round_up => (p * total + 99) / 100,
            Some(p) => p * total / 100,
            None => s.parse().unwrap_or(default),
        },
        _ => default,
    }
}

/// A stable short hash of a JSON value (FNV-1a over its serialisation), rendered as
/// upstream renders revision hashes (safe-encoded, lower-case letters and digits).
pub fn template_hash(v: &Value) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Upstream's SafeEncodeString alphabet: no vowels, no confusable characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    let mut x = h as u32;
    for _ in 0..10 {
        out.push(ALPHABET[(x % ALPHABET.len() as u32) as usize] as char);
        x /= ALPHABET.len() as u32;
        if x == 0 {
            x = (h >> 32) as u32 ^ out.len() as u32;
        }
    }
    out
}

pub use super::events::EventRecorder;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_or_percent_scales_like_upstream() {
        assert_eq!(int_or_percent(&json!(2), 10, true, 1), 2);
        assert_eq!(int_or_percent(&json!("25%"), 10, true, 1), 3);
        assert_eq!(int_or_percent(&json!("25%"), 10, false, 1), 2);
        assert_eq!(int_or_percent(&Value::Null, 10, true, 1), 1);
    }

    #[test]
    fn template_hash_is_stable_and_differs_by_content() {
        let a = template_hash(&json!({"spec": {"image": "a"}}));
        assert_eq!(a, template_hash(&json!({"spec": {"image": "a"}})));
        assert_ne!(a, template_hash(&json!({"spec": {"image": "b"}})));
        assert_eq!(a.len(), 10);
    }

    #[test]
    fn controller_of_finds_the_controller_reference() {
        let owner = json!({"metadata": {"name": "j", "uid": "u1"}});
        let pod = json!({"metadata": {"ownerReferences": [
            {"kind": "X", "uid": "u0"},
            controller_ref(&owner, "batch/v1", "Job"),
        ]}});
        assert_eq!(controller_of(&pod).unwrap()["uid"], "u1");
    }
}
