//! ReplicationController (core/v1) and apps/v1 workload defaults: replicas, update
//! strategies, history limits, and the pod template defaults.

use serde_json::{json, Map, Value};

use super::pod::pod_template;
use super::{child, each, present, set_ptr, set_str, spec, storage, unset};

fn template(spec: &mut Map<String, Value>) {
    if let Some(t) = child(spec, "template") {
        pod_template(t);
    }
}

/// SetDefaults_ReplicationController: replicas 1; an empty selector and empty object labels
/// are taken from the template's labels. The template is optional here, so it is only
/// defaulted when present.
pub fn replication_controller(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let template_labels = root
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .filter(|l| l.is_object())
        .cloned();
    if let Some(labels) = &template_labels {
        let meta_labels_empty = root
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty);
        if meta_labels_empty {
            if let Some(meta) = child(root, "metadata") {
                meta.insert("labels".into(), labels.clone());
            }
        }
    }
    let Some(s) = child(root, "spec") else { return };
    if let Some(labels) = template_labels {
        if s.get("selector")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty)
        {
            s.insert("selector".into(), labels);
        }
    }
    set_ptr(s, "replicas", Value::from(1));
    if let Some(t) = present(s, "template") {
        pod_template(t);
    }
}

/// SetDefaults_ReplicaSet: replicas 1.
pub fn replica_set(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    set_ptr(s, "replicas", Value::from(1));
    template(s);
}

/// SetDefaults_Deployment: replicas 1, RollingUpdate with 25%/25%, revisionHistoryLimit 10,
/// progressDeadlineSeconds 600.
pub fn deployment(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    set_ptr(s, "replicas", Value::from(1));
    if let Some(strategy) = child(s, "strategy") {
        set_str(strategy, "type", "RollingUpdate");
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            if let Some(ru) = child(strategy, "rollingUpdate") {
                set_ptr(ru, "maxUnavailable", Value::from("25%"));
                set_ptr(ru, "maxSurge", Value::from("25%"));
            }
        }
    }
    set_ptr(s, "revisionHistoryLimit", Value::from(10));
    set_ptr(s, "progressDeadlineSeconds", Value::from(600));
    template(s);
}

/// SetDefaults_StatefulSet: OrderedReady, RollingUpdate (partition 0), Retain/Retain PVC
/// retention, replicas 1, revisionHistoryLimit 10; claim templates get claim defaults.
pub fn stateful_set(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    set_str(s, "podManagementPolicy", "OrderedReady");
    if let Some(strategy) = child(s, "updateStrategy") {
        if strategy
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            strategy.insert("type".into(), Value::from("RollingUpdate"));
            set_ptr(strategy, "rollingUpdate", Value::Object(Map::new()));
        }
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            if let Some(ru) = present(strategy, "rollingUpdate") {
                set_ptr(ru, "partition", Value::from(0));
            }
        }
    }
    if let Some(policy) = child(s, "persistentVolumeClaimRetentionPolicy") {
        set_str(policy, "whenDeleted", "Retain");
        set_str(policy, "whenScaled", "Retain");
    }
    set_ptr(s, "replicas", Value::from(1));
    set_ptr(s, "revisionHistoryLimit", Value::from(10));
    template(s);
    for claim in each(s, "volumeClaimTemplates") {
        storage::claim(claim);
    }
}

/// SetDefaults_DaemonSet: RollingUpdate with maxUnavailable 1 and maxSurge 0,
/// revisionHistoryLimit 10.
pub fn daemon_set(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    if let Some(strategy) = child(s, "updateStrategy") {
        set_str(strategy, "type", "RollingUpdate");
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            if unset(strategy, "rollingUpdate") {
                strategy.insert("rollingUpdate".into(), json!({}));
            }
            if let Some(ru) = present(strategy, "rollingUpdate") {
                set_ptr(ru, "maxUnavailable", Value::from(1));
                set_ptr(ru, "maxSurge", Value::from(0));
            }
        }
    }
    set_ptr(s, "revisionHistoryLimit", Value::from(10));
    template(s);
}
