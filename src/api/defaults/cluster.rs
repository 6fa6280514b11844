//! Namespace, Node and Secret defaults.

use base64::Engine;
use serde_json::{json, Map, Value};

use super::{child, set_str};

/// True for an object that has not been stored yet (no uid, no resourceVersion).
fn is_new(root: &Map<String, Value>) -> bool {
    let meta = root.get("metadata");
    let missing = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
    };
    missing("uid") && missing("resourceVersion")
}

/// Defaults a Namespace: the `kubernetes.io/metadata.name` label (always equal to the
/// name, as upstream enforces), status phase Active, and on create the `kubernetes`
/// finalizer.
///
/// Upstream adds the finalizer in the namespace strategy's create step, not in defaulting,
/// because the namespace controller removes it while deleting; adding it on every update
/// would block deletion forever. So it is added here only to objects not yet stored.
pub fn namespace(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let name = root
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !name.is_empty() {
        if let Some(labels) = child(root, "metadata").and_then(|m| child(m, "labels")) {
            labels.insert("kubernetes.io/metadata.name".into(), Value::from(name));
        }
    }
    if is_new(root) {
        if let Some(spec) = child(root, "spec") {
            match spec.get_mut("finalizers").and_then(Value::as_array_mut) {
                Some(list) if !list.iter().any(|f| f == "kubernetes") => {
                    list.push(Value::from("kubernetes"))
                }
                Some(_) => {}
                None => {
                    spec.insert("finalizers".into(), json!(["kubernetes"]));
                }
            }
        }
    }
    if let Some(status) = child(root, "status") {
        set_str(status, "phase", "Active");
    }
}

/// Defaults a Node: allocatable equals capacity when not reported.
pub fn node(obj: &mut Value) {
    let Some(status) = obj
        .as_object_mut()
        .and_then(|o| o.get_mut("status"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let allocatable_unset = matches!(status.get("allocatable"), None | Some(Value::Null));
    if allocatable_unset {
        if let Some(cap) = status.get("capacity").filter(|c| c.is_object()).cloned() {
            status.insert("allocatable".into(), cap);
        }
    }
}

/// Defaults a Secret: type Opaque, and `stringData` merged into `data` (base64-encoded,
/// overriding `data` keys) and removed, as upstream's decoding does; `stringData` is
/// write-only.
pub fn secret(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    set_str(root, "type", "Opaque");
    let string_data = match root.remove("stringData") {
        Some(Value::Object(m)) => m,
        // Not a map: leave it for validation/decoding to reject, untouched.
        Some(other) if !other.is_null() => {
            root.insert("stringData".into(), other);
            return;
        }
        _ => return,
    };
    if let Some(data) = child(root, "data") {
        for (k, v) in string_data {
            let text = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            data.insert(
                k,
                Value::from(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}
