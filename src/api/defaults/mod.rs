//! Upstream's defaulting for built-in kinds (SetDefaults_* in k8s.io/kubernetes
//! pkg/apis/{core,apps,batch}/v1/defaults.go and the generated defaulters that apply them to
//! nested types), plus the few values upstream's registry strategies fill in on create that
//! clients see as defaults (noted where they occur).
//!
//! Every function is idempotent and never replaces a value the user set. "Unset" follows
//! the Go types: a missing or `null` pointer, an empty string, or a zero in a plain integer
//! field. Objects are created only where upstream's types are plain structs (so they always
//! exist after decoding), e.g. a workload's `spec.template.spec`, never for optional
//! pointers.

mod batch;
mod cluster;
mod pod;
mod scheduling;
mod service;
mod storage;
mod tolerations;
mod workloads;

use serde_json::{Map, Value};

pub use batch::{cron_job, job, job_selector};
pub use cluster::{namespace, node, secret};
pub use pod::{pod, pod_spec, pod_template};
pub use scheduling::priority_class;
pub use service::{service, service_keep_allocated};
pub use storage::{persistent_volume, persistent_volume_claim};
pub use tolerations::{default_toleration_seconds, set_default_toleration_seconds};
pub use workloads::{daemon_set, deployment, replica_set, replication_controller, stateful_set};

/// Fills in defaults on an object in place.
pub type DefaultFn = fn(obj: &mut Value);

/// No defaults.
pub fn none(_obj: &mut Value) {}

/// A missing or `null` member (an unset Go pointer, map or slice).
fn unset(m: &Map<String, Value>, key: &str) -> bool {
    matches!(m.get(key), None | Some(Value::Null))
}

/// Sets a pointer-typed member when it is unset.
fn set_ptr(m: &mut Map<String, Value>, key: &str, v: Value) {
    if unset(m, key) {
        m.insert(key.to_string(), v);
    }
}

/// Sets a string member when it is unset or empty.
fn set_str(m: &mut Map<String, Value>, key: &str, v: &str) {
    if unset(m, key) || m.get(key).and_then(Value::as_str) == Some("") {
        m.insert(key.to_string(), Value::from(v));
    }
}

/// Sets a plain integer member when it is unset or zero.
fn set_int(m: &mut Map<String, Value>, key: &str, v: i64) {
    if unset(m, key) || m.get(key).and_then(Value::as_i64) == Some(0) {
        m.insert(key.to_string(), Value::from(v));
    }
}

/// The object member `key`, created empty when unset (for members that are plain structs
/// upstream). A member of another JSON type is left alone.
fn child<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    if unset(m, key) {
        m.insert(key.to_string(), Value::Object(Map::new()));
    }
    m.get_mut(key).and_then(Value::as_object_mut)
}

/// The object member `key` if it is present (for optional pointers, which defaulting must
/// not create).
fn present<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    m.get_mut(key).and_then(Value::as_object_mut)
}

/// Each object in the array member `key`.
fn each<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    m.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// The `spec` of an object, created when missing (every defaulted kind has a struct spec).
fn spec(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    child(obj.as_object_mut()?, "spec")
}

#[cfg(test)]
mod tests;
