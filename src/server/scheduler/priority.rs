//! Pod priority (upstream's Priority admission plugin and built-in PriorityClasses): on
//! pod create, `spec.priorityClassName` (or the global default class) resolves to
//! `spec.priority` and `spec.preemptionPolicy`; an unknown class or a given value that
//! disagrees is refused with upstream's words. PriorityClass writes are checked so that
//! only one class is the global default. The two `system-` classes exist from the first
//! start.

use crate::api::meta;
use crate::api::status::ApiError;
use crate::api::validation::scheduling::SYSTEM_PRIORITY_CLASSES;
use crate::server::informer::builtin;
use crate::server::registry::{ListOptions, Registry, WriteOptions};
use serde_json::{json, Value};

/// The priority of pods when no class is named and none is the global default.
pub const DEFAULT_PRIORITY: i64 = 0;

fn classes() -> &'static crate::api::resources::Resource {
    builtin("scheduling.k8s.io", "v1", "priorityclasses")
}

/// What upstream says of each built-in class.
fn system_description(name: &str) -> &'static str {
    if name == "system-node-critical" {
        "Used for system critical pods that must not be moved from their current node."
    } else {
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."
    }
}

/// Creates `system-node-critical` and `system-cluster-critical` unless they exist.
pub async fn ensure_system_classes(registry: &Registry) -> Result<(), ApiError> {
    for (name, value) in SYSTEM_PRIORITY_CLASSES {
        let class = json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value,
            "description": system_description(name),
        });
        match registry
            .create(classes(), "", class, &WriteOptions::default())
            .await
        {
            Ok(_) => tracing::info!(class = name, "created built-in PriorityClass"),
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Every PriorityClass (few: a list is cheap next to a pod write).
async fn list_classes(registry: &Registry) -> Result<Vec<Value>, ApiError> {
    let list = registry
        .list(classes(), "", &ListOptions::default())
        .await?;
    list.items.iter().map(|i| i.value()).collect()
}

/// The global default class; with several (a race), the one with the lowest value, as
/// upstream picks.
fn global_default(all: &[Value]) -> Option<&Value> {
    all.iter()
        .filter(|c| c["globalDefault"].as_bool() == Some(true))
        .min_by_key(|c| c["value"].as_i64().unwrap_or(0))
}

/// The name an admission error shows: the name, or the generateName prefix before one
/// is generated (upstream's extractResourceName).
fn shown_name(pod: &Value) -> &str {
    match meta::name(pod) {
        "" => pod["metadata"]["generateName"].as_str().unwrap_or(""),
        n => n,
    }
}

fn forbidden(pod: &Value, why: String) -> ApiError {
    ApiError::forbidden("", "pods", shown_name(pod), &why)
}

/// Admits a new pod: resolves its class to `spec.priority` and `spec.preemptionPolicy`.
pub async fn admit_pod(registry: &Registry, pod: &mut Value) -> Result<(), ApiError> {
    let class_name = pod["spec"]["priorityClassName"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let (name, priority, policy) = if class_name.is_empty() {
        let all = list_classes(registry).await?;
        match global_default(&all) {
            Some(c) => (
                meta::name(c).to_string(),
                c["value"].as_i64().unwrap_or(0),
                c["preemptionPolicy"].as_str().map(str::to_string),
            ),
            None => (
                String::new(),
                DEFAULT_PRIORITY,
                Some("PreemptLowerPriority".to_string()),
            ),
        }
    } else {
        match registry.get(classes(), "", &class_name).await {
            Ok(o) => {
                let c = o.value()?;
                (
                    class_name.clone(),
                    c["value"].as_i64().unwrap_or(0),
                    c["preemptionPolicy"].as_str().map(str::to_string),
                )
            }
            Err(e) if e.code == 404 => {
                return Err(forbidden(
                    pod,
                    format!("no PriorityClass with name {class_name} was found"),
                ))
            }
            Err(e) => return Err(e),
        }
    };
    if let Some(given) = pod["spec"]["priority"].as_i64() {
        if given != priority {
            return Err(forbidden(pod, format!("the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name")));
        }
    }
    if let Some(policy) = &policy {
        if let Some(given) = pod["spec"]["preemptionPolicy"].as_str() {
            if given != policy {
                return Err(forbidden(pod, format!("the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name")));
            }
        }
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    if !name.is_empty() {
        spec.insert("priorityClassName".into(), json!(name));
    }
    spec.insert("priority".into(), json!(priority));
    if let Some(policy) = policy {
        spec.insert("preemptionPolicy".into(), json!(policy));
    }
    Ok(())
}

/// On pod update: a client that leaves out the priority fields keeps the admitted ones
/// (they are immutable; upstream's plugin does the same).
pub fn keep_on_update(new: &mut Value, old: &Value) {
    for field in ["priority", "preemptionPolicy"] {
        if new["spec"][field].is_null() && !old["spec"][field].is_null() {
            if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert(field.into(), old["spec"][field].clone());
            }
        }
    }
}

/// Admits a PriorityClass write: at most one class may be the global default.
pub async fn admit_class(registry: &Registry, class: &Value) -> Result<(), ApiError> {
    if class["globalDefault"].as_bool() != Some(true) {
        return Ok(());
    }
    let all = list_classes(registry).await?;
    match global_default(&all) {
        Some(d) if meta::name(d) != meta::name(class) => Err(ApiError::forbidden(
            "scheduling.k8s.io",
            "priorityclasses",
            meta::name(class),
            &format!(
                "PriorityClass {} is already marked as default. Only one default can exist",
                meta::name(d)
            ),
        )),
        _ => Ok(()),
    }
}

/// A pod's priority as the scheduler sees it (upstream's PodPriority: 0 when unset).
pub fn pod_priority(pod: &Value) -> i64 {
    pod["spec"]["priority"].as_i64().unwrap_or(DEFAULT_PRIORITY)
}
