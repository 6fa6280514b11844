//! The StatefulSet controller, as upstream's: pods with stable names `<set>-<ordinal>`,
//! hostname and subdomain (`spec.serviceName`) set, one claim per volumeClaimTemplate and
//! ordinal (`<template>-<set>-<ordinal>`, created before the pod), ordinals from
//! `spec.ordinals.start`; OrderedReady (one pod
//! at a time, each Running and Ready before the next; scale down from the highest
//! ordinal) and Parallel pod management; RollingUpdate from the highest ordinal down to
//! the partition, one pod at a time, by the `controller-revision-hash` label (a
//! ControllerRevision per template), and OnDelete; the status `kubectl` shows.
//!
//! `persistentVolumeClaimRetentionPolicy` works as upstream's: the owner references of
//! every replica's claims are kept in line with the policy (the set owns them under
//! `whenDeleted: Delete`; the pod of a scaled-down ordinal owns them under
//! `whenScaled: Delete`, set before the pod is deleted), and the garbage collector
//! deletes a claim once its owner is gone.

use super::owned::{
    controller_ref, create_pod, delete_object, from_template, is_available, is_finished, is_ready,
    now_secs, owned_by, set_label, template_hash, ControllerError, EventRecorder,
};
use super::revisions::{ensure_revision, revision_template, REVISION_LABEL};
use crate::api::meta;
use crate::server::informer::{builtin, run_controller, Informer, Informers, ObjectKey, WorkQueue};
use crate::server::registry::{Registry, WriteOptions};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

const COMPONENT: &str = "statefulset-controller";
/// The label with a StatefulSet pod's own name (for per-pod Services).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label with a StatefulSet pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

struct StatefulSetController {
    registry: Registry,
    revisions: Informer,
    events: EventRecorder,
    sets: Informer,
    pods: Informer,
    claims: Informer,
}

/// Runs the StatefulSet controller until `shutdown` flips.
pub async fn run(informers: Informers, shutdown: watch::Receiver<bool>) {
    let sets = informers.get(builtin("apps", "v1", "statefulsets"));
    let pods = informers.get(builtin("", "v1", "pods"));
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    super::owned::enqueue_self(&sets, queue.clone(), &shutdown);
    super::owned::enqueue_owners(&pods, sets.clone(), "StatefulSet", queue.clone(), &shutdown);
    let revisions = informers.get(builtin("apps", "v1", "controllerrevisions"));
    let claims = informers.get(builtin("", "v1", "persistentvolumeclaims"));
    sets.wait_synced().await;
    pods.wait_synced().await;
    revisions.wait_synced().await;
    claims.wait_synced().await;
    for s in sets.list_all() {
        queue.add(ObjectKey::of(&s));
    }
    let ctl = Arc::new(StatefulSetController {
        registry: informers.registry().clone(),
        revisions,
        events: EventRecorder::new(informers.registry().clone(), COMPONENT),
        sets,
        pods,
        claims,
    });
    queue.shut_down_on(shutdown.clone());
    run_controller("statefulset", queue, 2, move |key: ObjectKey| {
        let ctl = ctl.clone();
        async move { ctl.sync(&key).await }
    })
    .await;
}

/// The ordinal of a pod of set `set` (`web-3` → 3).
pub fn ordinal(set: &str, pod: &str) -> Option<i64> {
    let n = pod.strip_prefix(set)?.strip_prefix('-')?;
    if n.len() > 1 && n.starts_with('0') {
        return None;
    }
    n.parse().ok().filter(|i: &i64| *i >= 0)
}

/// The claim name of template `claim` for ordinal `ord` of set `set`.
pub fn claim_name(claim: &str, set: &str, ord: i64) -> String {
    format!("{claim}-{set}-{ord}")
}

/// The pod of ordinal `ord` from `template`, labelled with revision `revision`.
pub fn new_pod(set: &Value, template: &Value, ord: i64, revision: &str) -> Value {
    let set_name = meta::name(set);
    let name = format!("{set_name}-{ord}");
    let mut pod = from_template(
        template,
        "v1",
        "Pod",
        meta::namespace(set),
        controller_ref(set, "apps/v1", "StatefulSet"),
    );
    meta::metadata_mut(&mut pod).insert("name".into(), json!(name));
    set_label(&mut pod, REVISION_LABEL, revision);
    set_label(&mut pod, POD_NAME_LABEL, &name);
    set_label(&mut pod, POD_INDEX_LABEL, &ord.to_string());
    pod["spec"]["hostname"] = json!(name);
    if let Some(svc) = set["spec"]["serviceName"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        pod["spec"]["subdomain"] = json!(svc);
    }
    let claims = set["spec"]["volumeClaimTemplates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !claims.is_empty() {
        let mut volumes: Vec<Value> = pod["spec"]["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for c in &claims {
            let cname = meta::name(c);
            volumes.retain(|v| v["name"] != cname);
            volumes.push(json!({"name": cname,
                "persistentVolumeClaim": {"claimName": claim_name(cname, set_name, ord)}}));
        }
        pod["spec"]["volumes"] = json!(volumes);
    }
    pod
}

impl StatefulSetController {
    async fn sync(&self, key: &ObjectKey) -> Result<(), ControllerError> {
        let Some(set) = self.sets.get(&key.namespace, &key.name) else {
            return Ok(());
        };
        if meta::is_deleting(&set) {
            return Ok(());
        }
        let (ns, name) = (meta::namespace(&set), meta::name(&set));
        let spec = &set["spec"];
        let replicas = spec["replicas"].as_i64().unwrap_or(1).max(0);
        // spec.ordinals.start: the first ordinal (0 unless set).
        let first = spec["ordinals"]["start"].as_i64().unwrap_or(0).max(0);
        let end = first + replicas;
        let ordered = spec["podManagementPolicy"] != "Parallel";
        let hash = template_hash(&spec["template"]);
        let update_rev = format!("{name}-{hash}");
        ensure_revision(
            &self.registry,
            &self.revisions,
            &set,
            "StatefulSet",
            &update_rev,
            &hash,
        )
        .await?;
        let current_rev = set["status"]["currentRevision"]
            .as_str()
            .unwrap_or(&update_rev)
            .to_string();
        let rolling = spec["updateStrategy"]["type"] != "OnDelete";
        let partition = spec["updateStrategy"]["rollingUpdate"]["partition"]
            .as_i64()
            .unwrap_or(0);
        let min_ready = spec["minReadySeconds"].as_i64().unwrap_or(0);

        let mut pods: BTreeMap<i64, Arc<Value>> = BTreeMap::new();
        for p in owned_by(&self.pods, ns, meta::uid(&set)) {
            if let Some(o) = ordinal(name, meta::name(&p)) {
                pods.insert(o, p);
            }
        }
        let revision_of = |p: &Value| {
            p["metadata"]["labels"][REVISION_LABEL]
                .as_str()
                .unwrap_or("")
                .to_string()
        };

        // Claims follow the retention policy before any pod is deleted below, so the
        // claims of a scaled-down ordinal go with its pod.
        for (ord, p) in &pods {
            self.update_claim_owners(&set, p, *ord < first || *ord >= end)
                .await?;
        }

        // Create and repair the ordinals first..first+replicas.
        let mut blocked = false;
        for ord in first..end {
            match pods.get(&ord) {
                None => {
                    // Below the partition a pod comes back at the current revision.
                    let rev = if rolling && ord - first < partition {
                        current_rev.clone()
                    } else {
                        update_rev.clone()
                    };
                    self.create(&set, ord, &rev).await?;
                    if ordered {
                        blocked = true;
                        break;
                    }
                }
                Some(p) if is_finished(p) && !meta::is_deleting(p) => {
                    self.delete(&set, p).await?;
                    if ordered {
                        blocked = true;
                        break;
                    }
                }
                Some(p) if ordered && (meta::is_deleting(p) || !is_ready(p)) => {
                    blocked = true;
                    break;
                }
                Some(_) => {}
            }
        }
        // Scale down, highest ordinal first.
        let excess: Vec<Arc<Value>> = pods
            .iter()
            .filter(|(o, _)| **o < first || **o >= end)
            .rev()
            .map(|(_, p)| p.clone())
            .collect();
        if !blocked {
            for p in &excess {
                if meta::is_deleting(p) {
                    if ordered {
                        blocked = true;
                        break;
                    }
                    continue;
                }
                self.delete(&set, p).await?;
                if ordered {
                    blocked = true;
                    break;
                }
            }
        }
        // Rolling update: one pod at a time from the highest ordinal to the partition.
        if rolling && !blocked && excess.is_empty() {
            for ord in ((first + partition.max(0))..end).rev() {
                let Some(p) = pods.get(&ord) else { break };
                if meta::is_deleting(p) || !is_ready(p) {
                    break;
                }
                if revision_of(p) != update_rev {
                    self.delete(&set, p).await?;
                    break;
                }
            }
        }

        let now = now_secs();
        let live: Vec<&Arc<Value>> = pods.values().filter(|p| !meta::is_deleting(p)).collect();
        let ready = live.iter().filter(|p| is_ready(p)).count() as i64;
        let available = live
            .iter()
            .filter(|p| is_available(p, min_ready, now))
            .count() as i64;
        let updated = live.iter().filter(|p| revision_of(p) == update_rev).count() as i64;
        let current = live
            .iter()
            .filter(|p| revision_of(p) == current_rev)
            .count() as i64;
        let done = updated == replicas && ready == replicas && live.len() as i64 == replicas;
        let current_rev = if done {
            update_rev.clone()
        } else {
            current_rev
        };
        let current = if done { updated } else { current };
        let status = json!({
            "observedGeneration": set["metadata"]["generation"].as_i64().unwrap_or(1),
            "replicas": live.len(),
            "readyReplicas": ready,
            "currentReplicas": current,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "currentRevision": current_rev,
            "updateRevision": update_rev,
            "collisionCount": 0,
        });
        if status != set["status"] {
            let uid = meta::uid(&set).to_string();
            let r = self
                .registry
                .update_with(self.sets.resource(), ns, name, |o| {
                    if meta::uid(o) == uid {
                        o["status"] = status.clone();
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = r {
                if e.code != 404 {
                    return Err(ControllerError::api("updating statefulset status", e));
                }
            }
        }
        Ok(())
    }

    /// The template of revision `rev` (from its ControllerRevision), or the set's own.
    fn template_of(&self, set: &Value, rev: &str) -> Value {
        self.revisions
            .get(meta::namespace(set), rev)
            .and_then(|r| revision_template(&r))
            .filter(Value::is_object)
            .unwrap_or_else(|| set["spec"]["template"].clone())
    }

    async fn create(&self, set: &Value, ord: i64, rev: &str) -> Result<(), ControllerError> {
        self.create_claims(set, ord).await?;
        let template = self.template_of(set, rev);
        let pod = new_pod(set, &template, ord, rev);
        let pod_name = meta::name(&pod).to_string();
        match create_pod(&self.registry, &self.pods, meta::namespace(set), pod).await {
            Ok(_) => {
                let msg = format!(
                    "create Pod {pod_name} in StatefulSet {} successful",
                    meta::name(set)
                );
                self.events.normal(set, "SuccessfulCreate", &msg).await;
                Ok(())
            }
            Err(e) if e.code == 409 => Ok(()),
            Err(e) => {
                let msg = format!(
                    "create Pod {pod_name} in StatefulSet {} failed error: {}",
                    meta::name(set),
                    e.message
                );
                self.events.warning(set, "FailedCreate", &msg).await;
                Err(ControllerError::api("creating a statefulset pod", e))
            }
        }
    }

    /// The claims of ordinal `ord` that do not exist yet.
    async fn create_claims(&self, set: &Value, ord: i64) -> Result<(), ControllerError> {
        let res = builtin("", "v1", "persistentvolumeclaims");
        let (ns, set_name) = (meta::namespace(set), meta::name(set));
        for t in set["spec"]["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = claim_name(meta::name(t), set_name, ord);
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
    async fn update_claim_owners(
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

    async fn delete(&self, set: &Value, pod: &Value) -> Result<(), ControllerError> {
        delete_object(&self.registry, &self.pods, pod)
            .await
            .map_err(|e| ControllerError::api("deleting a statefulset pod", e))?;
        let msg = format!(
            "delete Pod {} in StatefulSet {} successful",
            meta::name(pod),
            meta::name(set)
        );
        self.events.normal(set, "SuccessfulDelete", &msg).await;
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
    fn ordinals_parse_only_exact_names() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "web-01"), None);
        assert_eq!(ordinal("web", "web-x"), None);
        assert_eq!(ordinal("web", "webapp-1"), None);
        assert_eq!(ordinal("web", "web-db-1"), None);
    }

    #[test]
    fn pods_get_stable_identity_and_claims() {
        let set = json!({"metadata": {"name": "web", "namespace": "d", "uid": "u"},
            "spec": {"serviceName": "nginx",
                "volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {}}],
                "template": {"metadata": {"labels": {"app": "nginx"}},
                    "spec": {"containers": [{"name": "c"}]}}}});
        let pod = new_pod(&set, &set["spec"]["template"], 2, "web-abc");
        assert_eq!(pod["metadata"]["name"], "web-2");
        assert_eq!(pod["spec"]["hostname"], "web-2");
        assert_eq!(pod["spec"]["subdomain"], "nginx");
        assert_eq!(pod["metadata"]["labels"][REVISION_LABEL], "web-abc");
        assert_eq!(pod["metadata"]["labels"][POD_INDEX_LABEL], "2");
        assert_eq!(
            pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "www-web-2"
        );
    }

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
