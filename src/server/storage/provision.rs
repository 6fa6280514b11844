//! The local-path provisioner's server half: the PersistentVolume it makes for a claim
//! of a `rancher.io/local-path` class once the scheduler picked a node. Names and
//! layout follow local-path-provisioner so k3s users find their data where they expect:
//! volume `pvc-<claim uid>`, directory `<storage path>/pvc-<uid>_<namespace>_<claim>`,
//! a `hostPath` source of type `DirectoryOrCreate`, node affinity on
//! `kubernetes.io/hostname`.

use super::{ANN_PROVISIONED_BY, LOCAL_PATH_PROVISIONER};
use crate::api::meta;
use serde_json::{json, Value};
use std::path::Path;

/// Name of the volume provisioned for a claim.
pub fn volume_name(pvc: &Value) -> String {
    format!("pvc-{}", meta::uid(pvc))
}

/// The directory of a claim's volume under `storage_path`.
pub fn volume_dir(storage_path: &Path, pvc: &Value) -> String {
    storage_path
        .join(format!(
            "{}_{}_{}",
            volume_name(pvc),
            meta::namespace(pvc),
            meta::name(pvc)
        ))
        .display()
        .to_string()
}

/// The reference a bound volume keeps to its claim.
pub fn claim_ref(pvc: &Value) -> Value {
    json!({
        "kind": "PersistentVolumeClaim",
        "apiVersion": "v1",
        "namespace": meta::namespace(pvc),
        "name": meta::name(pvc),
        "uid": meta::uid(pvc),
        "resourceVersion": pvc["metadata"]["resourceVersion"],
    })
}

/// The volume for `pvc` of class `class` on `node` (whose `kubernetes.io/hostname`
/// label is `hostname`).
pub fn local_path_volume(
    pvc: &Value,
    class: &Value,
    node: &str,
    hostname: &str,
    storage_path: &Path,
) -> Value {
    let request = &pvc["spec"]["resources"]["requests"]["storage"];
    let reclaim = class["reclaimPolicy"].as_str().unwrap_or("Delete");
    let modes = match &pvc["spec"]["accessModes"] {
        Value::Array(a) if !a.is_empty() => Value::Array(a.clone()),
        _ => json!(["ReadWriteOnce"]),
    };
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": volume_name(pvc),
            "annotations": {
                ANN_PROVISIONED_BY: LOCAL_PATH_PROVISIONER,
                "local.path.provisioner/selected-node": node,
            },
        },
        "spec": {
            "capacity": {"storage": if request.is_string() { request.clone() } else { json!("0") }},
            "accessModes": modes,
            "persistentVolumeReclaimPolicy": reclaim,
            "storageClassName": meta::name(class),
            "volumeMode": "Filesystem",
            "hostPath": {"path": volume_dir(storage_path, pvc), "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{
                "key": "kubernetes.io/hostname", "operator": "In", "values": [hostname],
            }]}]}},
            "claimRef": claim_ref(pvc),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_like_local_path_provisioner() {
        let pvc = json!({"metadata": {"name": "data", "namespace": "ns", "uid": "1234",
                "resourceVersion": "7"},
            "spec": {"resources": {"requests": {"storage": "1Gi"}}}});
        let class = json!({"metadata": {"name": "local-path"}, "reclaimPolicy": "Retain"});
        let pv = local_path_volume(&pvc, &class, "n1", "n1", Path::new("/var/lib/k3rs/storage"));
        assert_eq!(pv["metadata"]["name"], "pvc-1234");
        assert_eq!(
            pv["spec"]["hostPath"]["path"],
            "/var/lib/k3rs/storage/pvc-1234_ns_data"
        );
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(pv["spec"]["accessModes"], json!(["ReadWriteOnce"]));
        assert_eq!(pv["spec"]["claimRef"]["uid"], "1234");
        let labels = serde_json::from_value(json!({"kubernetes.io/hostname": "n1"})).unwrap();
        assert!(super::super::matching::affinity_admits(&pv, "n1", &labels));
    }
}
