//! The StatefulSet controller, as upstream's: pods with stable names `<set>-<ordinal>`,
//! hostname and subdomain (`spec.serviceName`) set, one claim per volumeClaimTemplate and
//! ordinal (`<template>-<set>-<ordinal>`, created before the pod), ordinals from
//! `spec.ordinals.start`; OrderedReady (one pod
//! at a time, each Running and Ready before the next; scale down from the highest
//! ordinal) and Parallel pod management; RollingUpdate from the highest ordinal down to
//! the partition, one pod at a time, by the `controller-revision-hash` label (a
//! ControllerRevision per template), and OnDelete; the status `kubectl` shows.
//! The claims and their `persistentVolumeClaimRetentionPolicy` are [`claims`]'s.

mod claims;

pub use claims::retention_owner_refs;

use super::owned::{
    controller_ref, create_pod, delete_object, from_template, is_available, is_finished, is_ready,
    now_secs, owned_by, set_label, template_hash, ControllerError, EventRecorder,
};
use super::revisions::{ensure_revision, revision_template, REVISION_LABEL};
use crate::api::meta;
use crate::server::informer::{builtin, run_controller, Informer, Informers, ObjectKey, WorkQueue};
use crate::server::registry::Registry;
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
}
