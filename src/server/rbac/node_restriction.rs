//! NodeRestriction admission for node identities (`system:node:<name>`), with upstream's
//! semantics and messages, for what the node authorizer cannot see (the object's content):
//!
//! - pods: a node may create only mirror pods (annotation `kubernetes.io/config.mirror`)
//!   bound to itself, owned by nothing but its own Node, that use no secrets, configmaps,
//!   claims or service-account tokens (the node could otherwise read them through the pod);
//! - nodes: a node may create or change only its own Node, and may not set, change or remove
//!   labels under `node-restriction.kubernetes.io/` (that prefix is how admins mark nodes
//!   for workloads that must not be steered there by the node itself).
//!
//! Deleting and evicting pods bound elsewhere are refused by the node authorizer
//! ([`super::node`]) before any of this runs, and deleting nodes by RBAC (upstream's
//! `system:node` role has no delete on nodes).

use crate::api::resources::Resource;
use crate::api::status::ApiError;
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// The annotation that marks a mirror pod (a static pod's reflection in the API).
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// The label domain nodes may not touch.
pub const RESTRICTED_LABEL_DOMAIN: &str = "node-restriction.kubernetes.io";

fn forbidden(res: &Resource, name: &str, why: String) -> ApiError {
    ApiError::forbidden(res.group, res.plural, name, &why)
}

fn is_core(res: &Resource, plural: &str) -> bool {
    res.group.is_empty() && res.plural == plural
}

fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

/// Admits a create by node `node`.
pub fn admit_create(res: &Resource, node: &str, obj: &Value) -> Result<(), ApiError> {
    if is_core(res, "pods") {
        return admit_pod(res, node, obj);
    }
    if is_core(res, "nodes") {
        let name = name_of(obj);
        if name != node {
            return Err(forbidden(
                res,
                name,
                format!("node {node:?} is not allowed to modify node {name:?}"),
            ));
        }
        let set = restricted_labels(&obj["metadata"]["labels"]);
        if !set.is_empty() {
            return Err(forbidden(
                res,
                name,
                format!(
                    "node {node:?} is not allowed to set the following labels: {}",
                    join(&set)
                ),
            ));
        }
    }
    Ok(())
}

/// Admits an update (also a patch, after it was applied) by node `node`.
pub fn admit_update(
    res: &Resource,
    node: &str,
    name: &str,
    old: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    if !is_core(res, "nodes") {
        return Ok(());
    }
    if name != node {
        return Err(forbidden(
            res,
            name,
            format!("node {node:?} is not allowed to modify node {name:?}"),
        ));
    }
    let empty = Map::new();
    let labels = |v: &Value| {
        v["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_else(|| empty.clone())
    };
    let (before, after) = (labels(old), labels(new));
    let changed: BTreeSet<String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| is_restricted(k) && before.get(*k) != after.get(*k))
        .cloned()
        .collect();
    if !changed.is_empty() {
        return Err(forbidden(
            res,
            name,
            format!(
                "node {node:?} is not allowed to modify labels: {}",
                join(&changed)
            ),
        ));
    }
    Ok(())
}

fn admit_pod(res: &Resource, node: &str, pod: &Value) -> Result<(), ApiError> {
    let name = name_of(pod);
    let deny = |why: String| Err(forbidden(res, name, why));
    if pod["metadata"]["annotations"][MIRROR_POD_ANNOTATION].is_null() {
        return deny(format!(
            "pod does not have \"{MIRROR_POD_ANNOTATION}\" annotation, node {node:?} can only create mirror pods"
        ));
    }
    if pod["spec"]["nodeName"].as_str() != Some(node) {
        return deny(format!(
            "node {node:?} can only create pods with spec.nodeName set to itself"
        ));
    }
    if let Some(owners) = pod["metadata"]["ownerReferences"].as_array() {
        let own_node = |o: &Value| {
            o["apiVersion"] == "v1" && o["kind"] == "Node" && o["name"].as_str() == Some(node)
        };
        if owners.len() > 1 {
            return deny(format!(
                "node {node:?} can only create pods with a single owner reference set to itself"
            ));
        }
        if owners.first().is_some_and(|o| !own_node(o)) {
            return deny(format!(
                "node {node:?} can only create pods with an owner reference set to itself"
            ));
        }
    }
    let spec = &pod["spec"];
    let sa = spec["serviceAccountName"].as_str().unwrap_or("");
    if !sa.is_empty() {
        return deny(format!(
            "node {node:?} can not create pods that reference a service account"
        ));
    }
    for (what, found) in [
        ("secrets", references(spec, "secret")),
        ("configmaps", references(spec, "configMap")),
        (
            "persistentvolumeclaims",
            references(spec, "persistentVolumeClaim"),
        ),
    ] {
        if found {
            return deny(format!(
                "node {node:?} can not create pods that reference {what}"
            ));
        }
    }
    Ok(())
}

/// Whether any volume (also projected sources), env or envFrom entry of `spec` is of `kind`
/// (`secret`, `configMap`, `persistentVolumeClaim`), or imagePullSecrets for secrets.
fn references(spec: &Value, kind: &str) -> bool {
    let arr = |v: &Value| v.as_array().cloned().unwrap_or_default();
    if kind == "secret" && !arr(&spec["imagePullSecrets"]).is_empty() {
        return true;
    }
    for vol in arr(&spec["volumes"]) {
        if !vol[kind].is_null() || (kind == "persistentVolumeClaim" && !vol["ephemeral"].is_null())
        {
            return true;
        }
        if arr(&vol["projected"]["sources"])
            .iter()
            .any(|s| !s[kind].is_null())
        {
            return true;
        }
    }
    let (env_key, from_key) = match kind {
        "secret" => ("secretKeyRef", "secretRef"),
        "configMap" => ("configMapKeyRef", "configMapRef"),
        _ => return false,
    };
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|c| arr(&spec[*c]))
        .any(|c| {
            arr(&c["env"])
                .iter()
                .any(|e| !e["valueFrom"][env_key].is_null())
                || arr(&c["envFrom"]).iter().any(|e| !e[from_key].is_null())
        })
}

/// Label keys under the restricted domain (or a subdomain of it).
fn restricted_labels(labels: &Value) -> BTreeSet<String> {
    labels
        .as_object()
        .map(|m| m.keys().filter(|k| is_restricted(k)).cloned().collect())
        .unwrap_or_default()
}

fn is_restricted(key: &str) -> bool {
    let Some((domain, _)) = key.split_once('/') else {
        return false;
    };
    domain == RESTRICTED_LABEL_DOMAIN || domain.ends_with(&format!(".{RESTRICTED_LABEL_DOMAIN}"))
}

fn join(keys: &BTreeSet<String>) -> String {
    keys.iter().cloned().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn res(plural: &str) -> &'static Resource {
        crate::api::resources::find("", "v1", plural).unwrap()
    }

    #[test]
    fn pods_must_be_own_mirror_pods_without_references() {
        let mirror = json!({"metadata": {"name": "p", "annotations": {MIRROR_POD_ANNOTATION: "x"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]}});
        admit_create(res("pods"), "n1", &mirror).unwrap();
        let e = admit_create(res("pods"), "n2", &mirror).unwrap_err();
        assert!(
            e.message
                .contains("can only create pods with spec.nodeName set to itself"),
            "{}",
            e.message
        );
        let plain = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}});
        let e = admit_create(res("pods"), "n1", &plain).unwrap_err();
        assert_eq!(e.code, 403);
        assert!(
            e.message.contains("can only create mirror pods"),
            "{}",
            e.message
        );
        let mut with_secret = mirror.clone();
        with_secret["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "x"}}]);
        let e = admit_create(res("pods"), "n1", &with_secret).unwrap_err();
        assert!(e.message.contains("reference secrets"), "{}", e.message);
    }

    #[test]
    fn restricted_labels_cannot_be_set_or_changed() {
        let node = |labels: Value| json!({"metadata": {"name": "n1", "labels": labels}});
        let ok = node(json!({"a": "b"}));
        admit_create(res("nodes"), "n1", &ok).unwrap();
        let bad = node(json!({"node-restriction.kubernetes.io/pool": "x"}));
        let e = admit_create(res("nodes"), "n1", &bad).unwrap_err();
        assert!(
            e.message.contains(
                "not allowed to set the following labels: node-restriction.kubernetes.io/pool"
            ),
            "{}",
            e.message
        );
        let e = admit_update(res("nodes"), "n1", "n1", &bad, &ok).unwrap_err();
        assert!(
            e.message.contains("not allowed to modify labels"),
            "{}",
            e.message
        );
        admit_update(res("nodes"), "n1", "n1", &bad, &bad).unwrap();
        let e = admit_update(res("nodes"), "n1", "n2", &ok, &ok).unwrap_err();
        assert!(
            e.message.contains("is not allowed to modify node \"n2\""),
            "{}",
            e.message
        );
        assert!(is_restricted("a.node-restriction.kubernetes.io/x"));
        assert!(!is_restricted("node-role.kubernetes.io/master"));
    }
}
