//! Validation of API objects with upstream's rules and messages (k8s.io/apimachinery and
//! k8s.io/kubernetes pkg/apis/*/validation, Kubernetes 1.35).
//!
//! Every per-kind function has the shape [`ValidateFn`]: it gets the new object and, for
//! updates, the old one, and returns field errors (empty = valid). Metadata common to all
//! kinds is checked by [`object_meta`], which the generic pipeline calls for every kind, so
//! the per-kind functions do not repeat it. Objects are validated after defaulting, as
//! upstream does, so "Required value" errors for defaulted fields only appear when a client
//! sends an explicit empty value.

mod batch;
mod cluster;
mod config;
mod container;
mod cron;
mod field;
mod meta;
mod names;
mod pod;
mod pod_update;
mod probe;
pub mod quantity;
pub mod scheduling;
mod service;
mod storage;
mod volume;
mod workloads;

use super::status::FieldError;
use serde_json::{Map, Value};

pub use batch::{
    cron_job, job, CONTROLLER_UID_LABEL, JOB_NAME_LABEL, LEGACY_CONTROLLER_UID_LABEL,
    LEGACY_JOB_NAME_LABEL,
};
pub use cluster::{namespace, node};
pub use config::{base64_error, config_map, decode_base64, secret, MAX_SIZE as MAX_CONFIG_SIZE};
pub use field::{not_found, Path};
pub use meta::{label_selector, object_meta, use_path_segment_names, TOTAL_ANNOTATION_SIZE_LIMIT};
pub use names::{
    is_config_map_key, is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_qualified_name,
    is_valid_cidr, is_valid_ip, is_valid_label_value, is_valid_port_name, is_valid_port_num,
};
pub use pod::{pod, pod_spec, template as pod_template};
pub use scheduling::priority_class;
pub use service::service;
pub use storage::{persistent_volume, persistent_volume_claim};
pub use workloads::{daemon_set, deployment, replica_set, replication_controller, stateful_set};

/// Validates a new object (and the old one on update).
pub type ValidateFn = fn(new: &Value, old: Option<&Value>) -> Vec<FieldError>;

/// Accepts anything (kinds without specific rules).
pub fn none(_new: &Value, _old: Option<&Value>) -> Vec<FieldError> {
    Vec::new()
}

/// Label keys and values at `path` (e.g. `metadata.labels`, `spec.selector`).
pub fn labels(map: Option<&Map<String, Value>>, path: &str) -> Vec<FieldError> {
    meta::labels(map, path)
}

/// Annotation keys and the 256 KiB total size at `path`.
pub fn annotations(map: Option<&Map<String, Value>>, path: &str) -> Vec<FieldError> {
    meta::annotations(map, path)
}

#[cfg(test)]
mod tests;
