//! Generic ephemeral volumes (`ephemeral.volumeClaimTemplate`): the claim
//! `<pod>-<volume>` made from the template and owned by the pod, so the garbage
//! collector deletes it with the pod (upstream's ephemeral volume controller).

use super::matching::pod_terminated;
use crate::api::meta;
use serde_json::{json, Value};

/// The claims a pod's ephemeral volumes need: (claim name, claim object).
pub fn claims_for(pod: &Value) -> Vec<(String, Value)> {
    if meta::is_deleting(pod) || pod_terminated(pod) {
        return Vec::new();
    }
    let pod_name = meta::name(pod);
    let mut out = Vec::new();
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let tmpl = &v["ephemeral"]["volumeClaimTemplate"];
        if !tmpl.is_object() {
            continue;
        }
        let name = format!("{pod_name}-{}", v["name"].as_str().unwrap_or(""));
        let mut metadata = json!({
            "name": name,
            "namespace": meta::namespace(pod),
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod_name,
                "uid": meta::uid(pod),
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        });
        for k in ["labels", "annotations"] {
            if tmpl["metadata"][k].is_object() {
                metadata[k] = tmpl["metadata"][k].clone();
            }
        }
        let claim = json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": metadata,
            "spec": tmpl["spec"].clone(),
        });
        out.push((name, claim));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_is_named_after_pod_and_volume_and_owned_by_the_pod() {
        let pod = json!({"metadata": {"name": "web", "namespace": "ns", "uid": "p1"},
            "spec": {"volumes": [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}}}}}]}});
        let claims = claims_for(&pod);
        assert_eq!(claims.len(), 1);
        let (name, c) = &claims[0];
        assert_eq!(name, "web-scratch");
        assert_eq!(c["metadata"]["ownerReferences"][0]["uid"], "p1");
        assert_eq!(c["metadata"]["labels"]["a"], "b");
        assert_eq!(c["spec"]["resources"]["requests"]["storage"], "1Gi");
    }
}
