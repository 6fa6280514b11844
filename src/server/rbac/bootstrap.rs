//! Creates the default RBAC policy at server start: upstream's ClusterRoles and
//! ClusterRoleBindings (labelled `kubernetes.io/bootstrapping: rbac-defaults`, annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "true"`) when they are missing. Objects
//! that exist are left alone, so an administrator's edits survive restarts.

use super::bootstrap_roles::{bindings, roles};
use crate::api::status::ApiError;
use crate::server::registry::{Registry, WriteOptions};
use serde_json::{json, Map, Value};

const GROUP_VERSION: &str = "rbac.authorization.k8s.io/v1";

fn metadata(name: &str, extra_labels: &[&str]) -> Value {
    let mut labels = Map::new();
    labels.insert("kubernetes.io/bootstrapping".into(), json!("rbac-defaults"));
    for l in extra_labels {
        labels.insert(l.to_string(), json!("true"));
    }
    json!({
        "name": name,
        "labels": labels,
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    })
}

/// The default ClusterRoles as API objects.
pub fn default_cluster_roles() -> Vec<Value> {
    roles()
        .into_iter()
        .map(|r| {
            let mut o = json!({
                "apiVersion": GROUP_VERSION,
                "kind": "ClusterRole",
                "metadata": metadata(r.name, r.labels),
                "rules": r.rules.iter().map(|x| x.to_json()).collect::<Vec<_>>(),
            });
            if let Some(label) = r.aggregate_label {
                o["aggregationRule"] =
                    json!({"clusterRoleSelectors": [{"matchLabels": {label: "true"}}]});
            }
            o
        })
        .collect()
}

/// The default ClusterRoleBindings as API objects.
pub fn default_cluster_role_bindings() -> Vec<Value> {
    bindings()
        .into_iter()
        .map(|b| {
            let subjects: Vec<Value> = b
                .subjects
                .iter()
                .map(|(kind, name, ns)| {
                    let mut s = json!({"kind": kind, "name": name});
                    if *kind == "ServiceAccount" {
                        s["namespace"] = json!(ns);
                    } else {
                        s["apiGroup"] = json!("rbac.authorization.k8s.io");
                    }
                    s
                })
                .collect();
            let mut o = json!({
                "apiVersion": GROUP_VERSION,
                "kind": "ClusterRoleBinding",
                "metadata": metadata(b.name, &[]),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": b.name},
            });
            if !subjects.is_empty() {
                o["subjects"] = json!(subjects);
            }
            o
        })
        .collect()
}

/// Creates every default role and binding that does not exist yet.
pub async fn ensure_default_policy(registry: &Registry) -> Result<(), ApiError> {
    let group = "rbac.authorization.k8s.io";
    let roles_res = crate::api::resources::find(group, "v1", "clusterroles")
        .ok_or_else(|| ApiError::internal("resource table lacks clusterroles"))?;
    let bindings_res = crate::api::resources::find(group, "v1", "clusterrolebindings")
        .ok_or_else(|| ApiError::internal("resource table lacks clusterrolebindings"))?;
    let mut created = 0;
    for (res, objs) in [
        (roles_res, default_cluster_roles()),
        (bindings_res, default_cluster_role_bindings()),
    ] {
        for obj in objs {
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            match registry.get(res, "", &name).await {
                Ok(_) => continue,
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
            match registry
                .create(res, "", obj, &WriteOptions::default())
                .await
            {
                Ok(_) => created += 1,
                // Another server of the cluster created it meanwhile.
                Err(e) if e.code == 409 => {}
                Err(e) => {
                    return Err(ApiError::internal(format!(
                        "creating the default {} {name}: {}",
                        res.kind, e.message
                    )))
                }
            }
        }
    }
    if created > 0 {
        tracing::info!(created, "created the default RBAC policy objects");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_have_upstream_names_labels_and_bindings() {
        let roles = default_cluster_roles();
        let names: Vec<&str> = roles
            .iter()
            .filter_map(|r| r["metadata"]["name"].as_str())
            .collect();
        for want in [
            "cluster-admin",
            "admin",
            "edit",
            "view",
            "system:basic-user",
            "system:discovery",
            "system:public-info-viewer",
            "system:node",
            "system:node-proxier",
            "system:kube-scheduler",
            "system:kube-controller-manager",
            "system:monitoring",
        ] {
            assert!(names.contains(&want), "missing {want}");
        }
        let view = roles
            .iter()
            .find(|r| r["metadata"]["name"] == "view")
            .unwrap();
        assert_eq!(
            view["metadata"]["labels"]["kubernetes.io/bootstrapping"],
            "rbac-defaults"
        );
        assert_eq!(
            view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"],
            "true"
        );
        assert_eq!(
            view["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"]
                ["rbac.authorization.k8s.io/aggregate-to-view"],
            "true"
        );
        let piv = default_cluster_role_bindings()
            .into_iter()
            .find(|b| b["metadata"]["name"] == "system:public-info-viewer")
            .unwrap();
        assert_eq!(piv["subjects"][1]["name"], "system:unauthenticated");
    }
}
