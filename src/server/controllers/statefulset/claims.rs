//! A StatefulSet's claims: one per volumeClaimTemplate and ordinal, created before the
//! pod, and their owner references kept in line with
//! `persistentVolumeClaimRetentionPolicy` as upstream's (the set owns them under
//! `whenDeleted: Delete`; the pod of a scaled-down ordinal owns them under
//! `whenScaled: Delete`, set before that pod is deleted), so the garbage collector
//! deletes a claim once its owner is gone.

use super::super::owned::{controller_ref, ControllerError};
use super::{claim_name, ordinal, StatefulSetController};
use crate::api::meta;
use crate::api::ApiError;
use crate::server::informer::builtin;
use crate::server::registry::WriteOptions;
use serde_json::{json, Value};

impl StatefulSetController {
    /// The claims of ordinal `ord` that do not exist yet.
    pub(super) async fn create_claims(&self, set: &Value, ord: i64) -> Result<(), ControllerError> {
        let res = builtin("", "v1", "persistentvolumeclaims");
        let (ns, set_name) = (meta::namespace(set), meta::name(set));
        for t in set["spec"]["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = claim_name(meta::name(t), set_name, ord);
            // A claim still going (its scaled-down pod owned it) would leave the new pod
            // without a volume: wait until it is gone, then make a new one.
            if self
                .claims
                .get(ns, &name)
                .is_some_and(|c| meta::is_deleting(&c))
            {
                let why = format!(
                    "the claim of pod {set_name}-{ord} is being deleted; the pod waits until it is gone"
                );
                return Err(ControllerError::api(
                    "creating a statefulset pod",
                    ApiError::conflict_msg("", "persistentvolumeclaims", &name, &why),
                ));
            }
            if self.registry.get(res, ns, &name).await.is_ok() {
                continue;
            }
            let mut labels = t["metadata"]["labels"].clone();
            if !labels.is_object() {
                labels = json!({});
            }
            for (k, v) in set["spec"]["selector"]["matchLabels"]
                .as_object()
                .into_iter()
                .flatten()
            {
                labels[k] = v.clone();
            }
            let mut claim = json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": t["spec"].clone(),
            });
            if let Some(a) = t["metadata"]["annotations"].as_object() {
                claim["metadata"]["annotations"] = json!(a);
            }
            // The pod does not exist yet and its ordinal is in range: only the set can
            // be an owner.
            let refs = retention_owner_refs(&json!([]), set, None, false);
            if refs.as_array().is_some_and(|r| !r.is_empty()) {
                claim["metadata"]["ownerReferences"] = refs;
            }
            match self
                .registry
                .create(res, ns, claim, &WriteOptions::default())
                .await
            {
                Ok(_) => {
                    let msg = format!("create Claim {name} Pod {set_name}-{ord} in StatefulSet {set_name} success");
                    self.events.normal(set, "SuccessfulCreate", &msg).await;
                }
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(ControllerError::api("creating a volume claim", e)),
            }
        }
        Ok(())
    }

    /// Brings the owner references of `pod`'s claims in line with the set's retention
    /// policy (`scaled_down`: the pod's ordinal is outside the set's range).
    pub(super) async fn update_claim_owners(
        &self,
        set: &Value,
        pod: &Value,
        scaled_down: bool,
    ) -> Result<(), ControllerError> {
        let (ns, set_name) = (meta::namespace(set), meta::name(set));
        let Some(ord) = ordinal(set_name, meta::name(pod)) else {
            return Ok(());
        };
        for t in set["spec"]["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = claim_name(meta::name(t), set_name, ord);
            let Some(claim) = self.claims.get(ns, &name) else {
                continue;
            };
            let refs = &claim["metadata"]["ownerReferences"];
            let want = retention_owner_refs(refs, set, Some(pod), scaled_down);
            if same_refs(refs, &want) || meta::is_deleting(&claim) {
                continue;
            }
            let uid = meta::uid(&claim).to_string();
            let r = self
                .registry
                .update_with(self.claims.resource(), ns, &name, |o| {
                    if meta::uid(o) == uid {
                        let refs = o["metadata"]["ownerReferences"].clone();
                        let want = retention_owner_refs(&refs, set, Some(pod), scaled_down);
                        if want.as_array().is_some_and(|w| w.is_empty()) {
                            if let Some(m) = o["metadata"].as_object_mut() {
                                m.remove("ownerReferences");
                            }
                        } else {
                            o["metadata"]["ownerReferences"] = want;
                        }
                    }
                    Ok(())
                })
                .await;
            match r {
                Ok(_) => {
                    tracing::debug!(claim = %name, statefulset = %set_name, "claim owners follow the retention policy")
                }
                Err(e) if e.code == 404 => {}
                Err(e) => {
                    return Err(ControllerError::api(
                        "updating the owners of a statefulset claim",
                        e,
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Whether two ownerReferences lists (absent = empty) are equal.
fn same_refs(a: &Value, b: &Value) -> bool {
    let empty = Vec::new();
    a.as_array().unwrap_or(&empty) == b.as_array().unwrap_or(&empty)
}

fn refers_to(r: &Value, owner: &Value) -> bool {
    r["uid"] == owner["metadata"]["uid"] && r["name"] == owner["metadata"]["name"]
}

/// The ownerReferences a claim of `set` should have for `pod` (when it exists) under the
/// set's `persistentVolumeClaimRetentionPolicy`, as upstream's
/// `updateClaimOwnerRefForSetAndPod`: references to the set and the pod are dropped,
/// others kept; then the pod is added when `whenScaled` is Delete and it was scaled
/// down, else the set when `whenDeleted` is Delete. A claim another
/// controller owns gets neither.
pub fn retention_owner_refs(
    refs: &Value,
    set: &Value,
    pod: Option<&Value>,
    scaled_down: bool,
) -> Value {
    let ours = |r: &Value| refers_to(r, set) || pod.is_some_and(|p| refers_to(r, p));
    let mut kept: Vec<Value> = refs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| !ours(r))
        .cloned()
        .collect();
    if kept.iter().any(|r| r["controller"] == true) {
        return Value::Array(kept);
    }
    let policy = &set["spec"]["persistentVolumeClaimRetentionPolicy"];
    let when_deleted = policy["whenDeleted"] == "Delete";
    let when_scaled = policy["whenScaled"] == "Delete";
    // A claim can have one controller: a scaled-down ordinal's pod wins over the set.
    match pod {
        Some(p) if scaled_down && when_scaled => kept.push(controller_ref(p, "v1", "Pod")),
        _ if when_deleted && !(scaled_down && when_scaled) => {
            kept.push(controller_ref(set, "apps/v1", "StatefulSet"))
        }
        _ => {}
    }
    Value::Array(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_owners_follow_the_retention_policy() {
        let set = |deleted: &str, scaled: &str| {
            json!({"metadata": {"name": "web", "uid": "s"},
                "spec": {"persistentVolumeClaimRetentionPolicy":
                    {"whenDeleted": deleted, "whenScaled": scaled}}})
        };
        let pod = json!({"metadata": {"name": "web-2", "uid": "p"}});
        let kinds = |refs: Value| -> Vec<String> {
            refs.as_array()
                .unwrap()
                .iter()
                .map(|r| r["kind"].as_str().unwrap().to_string())
                .collect()
        };
        let none = json!([]);
        let s = set("Retain", "Retain");
        assert!(kinds(retention_owner_refs(&none, &s, Some(&pod), true)).is_empty());
        let s = set("Delete", "Retain");
        assert_eq!(
            kinds(retention_owner_refs(&none, &s, Some(&pod), false)),
            ["StatefulSet"]
        );
        // Scaled down but kept: the set still owns it (deleting the set takes it).
        assert_eq!(
            kinds(retention_owner_refs(&none, &s, Some(&pod), true)),
            ["StatefulSet"]
        );
        let s = set("Retain", "Delete");
        assert_eq!(
            kinds(retention_owner_refs(&none, &s, Some(&pod), true)),
            ["Pod"]
        );
        assert!(kinds(retention_owner_refs(&none, &s, Some(&pod), false)).is_empty());
        let s = set("Delete", "Delete");
        let owned = retention_owner_refs(&none, &s, Some(&pod), false);
        assert_eq!(kinds(owned.clone()), ["StatefulSet"]);
        // Scaled down: the set's reference is replaced by the pod's.
        assert_eq!(
            kinds(retention_owner_refs(&owned, &s, Some(&pod), true)),
            ["Pod"]
        );
        // Back to Retain: our references go, a foreign one stays.
        let foreign = json!([{"kind": "Thing", "name": "t", "uid": "t"}, owned[0]]);
        let s = set("Retain", "Retain");
        assert_eq!(
            kinds(retention_owner_refs(&foreign, &s, Some(&pod), false)),
            ["Thing"]
        );
        // Another controller owns it: nothing is added.
        let other = json!([{"kind": "Thing", "name": "t", "uid": "t", "controller": true}]);
        let s = set("Delete", "Delete");
        assert_eq!(
            kinds(retention_owner_refs(&other, &s, Some(&pod), false)),
            ["Thing"]
        );
    }
}
