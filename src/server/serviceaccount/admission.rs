//! The ServiceAccount admission on pod create, as upstream's plugin does it: the pod runs
//! as `default` unless it names another account, and unless the pod or its account opts
//! out with `automountServiceAccountToken: false`, it gets a projected volume
//! `kube-api-access-<5 random>` (a bound token refreshed by the node, the cluster CA from
//! the `kube-root-ca.crt` ConfigMap and the namespace) mounted read-only at
//! `/var/run/secrets/kubernetes.io/serviceaccount` in every container that has nothing
//! mounted there yet. Mirror pods (static pods) are left alone.

use crate::api::meta;
use crate::api::status::ApiError;
use crate::server::informer::builtin;
use crate::server::registry::Registry;
use serde_json::{json, Value};

/// Where the token, ca.crt and namespace appear inside containers.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Upstream's lifetime of projected tokens (one hour plus seven seconds, so it can be
/// told apart from a user's request).
pub const PROJECTED_EXPIRATION: i64 = 3607;
/// The ConfigMap with the cluster CA in every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
const VOLUME_PREFIX: &str = "kube-api-access-";

/// Admits a new pod in `ns` (after defaulting): sets the account and mounts its token.
pub async fn admit_pod(registry: &Registry, ns: &str, pod: &mut Value) -> Result<(), ApiError> {
    if !pod["metadata"]["annotations"][MIRROR_ANNOTATION].is_null() {
        return Ok(());
    }
    let sa_name = pod["spec"]["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            pod["spec"]["serviceAccount"]
                .as_str()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("default")
        .to_string();
    let sa = match registry
        .get(builtin("", "v1", "serviceaccounts"), ns, &sa_name)
        .await
    {
        Ok(o) => Some(o.value()?),
        // A new namespace's `default` account may not be made yet; the token request
        // from the node waits for it. Any other account must exist (upstream refuses).
        Err(e) if e.code == 404 && sa_name == "default" => None,
        Err(e) if e.code == 404 => {
            let mut err = ApiError::forbidden("", "pods", meta::name(pod), "");
            err.message = format!(
                "pods {:?} is forbidden: error looking up service account {ns}/{sa_name}: serviceaccount {sa_name:?} not found",
                meta::name(pod)
            );
            return Err(err);
        }
        Err(e) => return Err(e),
    };
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    spec.insert("serviceAccountName".into(), json!(sa_name));
    spec.insert("serviceAccount".into(), json!(sa_name));
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| sa.as_ref()?["automountServiceAccountToken"].as_bool())
        .unwrap_or(true);
    if !automount {
        return Ok(());
    }
    let volumes = spec
        .entry("volumes")
        .or_insert_with(|| json!([]))
        .as_array_mut();
    let Some(volumes) = volumes else {
        return Ok(());
    };
    let existing = volumes.iter().find_map(|v| {
        let n = v["name"].as_str()?;
        n.starts_with(VOLUME_PREFIX).then(|| n.to_string())
    });
    let volume_name = match existing {
        Some(n) => n,
        None => {
            let n = format!("{VOLUME_PREFIX}{}", meta::random_name_suffix());
            volumes.push(token_volume(&n));
            n
        }
    };
    for field in ["initContainers", "containers"] {
        for c in spec
            .get_mut(field)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(c) = c.as_object_mut() else { continue };
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            if mounts.iter().any(|m| m["mountPath"] == MOUNT_PATH) {
                continue;
            }
            mounts.push(json!({"name": volume_name, "readOnly": true, "mountPath": MOUNT_PATH}));
        }
    }
    Ok(())
}

/// The projected volume upstream's admission adds (fully defaulted).
fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": PROJECTED_EXPIRATION, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
            "defaultMode": 420,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_volume_is_what_upstream_adds() {
        let v = token_volume("kube-api-access-abcde");
        let sources = v["projected"]["sources"].as_array().unwrap();
        assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(
            sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
    }
}
