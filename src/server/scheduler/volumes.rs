//! The volume filter (upstream's VolumeBinding plugin, reduced): before filtering, a
//! pod's claims are looked up ([`PodClaims::of`]); a missing or deleting claim, or an
//! unbound claim of an Immediate class, makes the pod unschedulable everywhere. Then a
//! node fits when every bound claim's volume admits it (node affinity) and every
//! unbound WaitForFirstConsumer claim can get a volume there: a matching free volume
//! reachable from it, or a provisioner that makes one. After the pick, those claims are
//! annotated `volume.kubernetes.io/selected-node` ([`PodClaims::select_node`]) for the
//! binder and provisioner.

use super::filter::Failure;
use super::types::NodeInfo;
use crate::api::meta;
use crate::server::informer::{builtin, EventStream, Informer, Informers};
use crate::server::registry::Registry;
use crate::server::storage::matching::{
    affinity_admits, best_volume, claim_class, default_class, pod_claims, waits_for_first_consumer,
};
use crate::server::storage::ANN_SELECTED_NODE;
use serde_json::Value;
use std::sync::Arc;

const AFFINITY_CONFLICT: Failure = Failure {
    reason: "node(s) had volume node affinity conflict",
    resolvable: false,
};
const NO_VOLUME: Failure = Failure {
    reason: "node(s) didn't find available persistent volumes to bind",
    resolvable: false,
};

/// The informers the filter reads.
#[derive(Clone)]
pub struct VolumeInformers {
    pvcs: Informer,
    pvs: Informer,
    classes: Informer,
}

impl VolumeInformers {
    /// Claims, volumes and classes from `informers`.
    pub fn new(informers: &Informers) -> Self {
        VolumeInformers {
            pvcs: informers.get(builtin("", "v1", "persistentvolumeclaims")),
            pvs: informers.get(builtin("", "v1", "persistentvolumes")),
            classes: informers.get(builtin("storage.k8s.io", "v1", "storageclasses")),
        }
    }

    /// Waits for the first lists.
    pub async fn wait_synced(&self) {
        self.pvcs.wait_synced().await;
        self.pvs.wait_synced().await;
        self.classes.wait_synced().await;
    }

    /// Event streams whose events may make a waiting pod schedulable.
    pub fn subscribe(&self) -> [EventStream; 2] {
        [self.pvcs.subscribe(), self.pvs.subscribe()]
    }
}

/// An unbound WaitForFirstConsumer claim.
struct Unbound {
    claim: Arc<Value>,
    /// Free volumes that match it.
    candidates: Vec<Arc<Value>>,
    /// Whether a provisioner can make a volume for it on any node.
    provisionable: bool,
}

/// What the filter knows about one pod's claims.
#[derive(Default)]
pub struct PodClaims {
    bound_volumes: Vec<Arc<Value>>,
    unbound: Vec<Unbound>,
}

impl PodClaims {
    /// Looks up the pod's claims; `Err` is the reason no node can take it now.
    pub fn of(pod: &Value, inf: &VolumeInformers) -> Result<PodClaims, String> {
        let names = pod_claims(pod);
        let mut out = PodClaims::default();
        if names.is_empty() {
            return Ok(out);
        }
        let ns = meta::namespace(pod);
        let classes = inf.classes.list_all();
        let default = default_class(classes.iter().map(|c| c.as_ref())).map(meta::name);
        let mut immediate_unbound = false;
        for name in names {
            let Some(claim) = inf.pvcs.get(ns, &name) else {
                return Err(format!("persistentvolumeclaim \"{name}\" not found"));
            };
            if meta::is_deleting(&claim) {
                return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
            }
            let volume = claim["spec"]["volumeName"].as_str().unwrap_or("");
            if !volume.is_empty() {
                if let Some(pv) = inf.pvs.get("", volume) {
                    out.bound_volumes.push(pv);
                    continue;
                }
                if claim["status"]["phase"].as_str() == Some("Bound") {
                    return Err(format!("persistentvolume \"{volume}\" not found"));
                }
            }
            let class_name = claim_class(&claim, default);
            let class = classes.iter().find(|c| meta::name(c) == class_name);
            if !class.is_some_and(|c| waits_for_first_consumer(c)) || !volume.is_empty() {
                immediate_unbound = true;
                continue;
            }
            let pvs = inf.pvs.list_all();
            let candidates = pvs
                .iter()
                .filter(|pv| {
                    best_volume(std::iter::once(pv.as_ref()), &claim, &class_name, None).is_some()
                })
                .cloned()
                .collect();
            let provisionable = class.is_some_and(|c| {
                c["provisioner"].as_str() == Some(crate::server::storage::LOCAL_PATH_PROVISIONER)
            });
            out.unbound.push(Unbound {
                claim,
                candidates,
                provisionable,
            });
        }
        if immediate_unbound {
            return Err("pod has unbound immediate PersistentVolumeClaims".to_string());
        }
        Ok(out)
    }

    /// Whether the pod has claims at all.
    pub fn is_empty(&self) -> bool {
        self.bound_volumes.is_empty() && self.unbound.is_empty()
    }

    /// Why `node` cannot take the pod's volumes, if it cannot.
    pub fn filter(&self, node: &NodeInfo) -> Option<Failure> {
        if self
            .bound_volumes
            .iter()
            .any(|pv| !affinity_admits(pv, &node.name, &node.labels))
        {
            return Some(AFFINITY_CONFLICT);
        }
        let ok = self.unbound.iter().all(|u| {
            u.provisionable
                || u.candidates
                    .iter()
                    .any(|pv| affinity_admits(pv, &node.name, &node.labels))
        });
        (!ok).then_some(NO_VOLUME)
    }

    /// Annotates the unbound claims with the chosen node (before the pod is bound).
    pub async fn select_node(
        &self,
        registry: &Registry,
        node: &str,
    ) -> Result<(), crate::api::ApiError> {
        let res = builtin("", "v1", "persistentvolumeclaims");
        for u in &self.unbound {
            let c = &u.claim;
            registry
                .update_with(res, meta::namespace(c), meta::name(c), |o| {
                    if !o["spec"]["volumeName"].as_str().unwrap_or("").is_empty() {
                        return Ok(());
                    }
                    if !o["metadata"]["annotations"].is_object() {
                        o["metadata"]["annotations"] = serde_json::json!({});
                    }
                    o["metadata"]["annotations"][ANN_SELECTED_NODE] = serde_json::json!(node);
                    Ok(())
                })
                .await?;
        }
        Ok(())
    }
}

/// The `FailedScheduling` message when no node was even considered, upstream's wording
/// for a PreFilter rejection.
pub fn prefilter_message(nodes: usize, reason: &str) -> String {
    format!(
        "0/{nodes} nodes are available: {reason}. preemption: 0/{nodes} nodes are available: {nodes} Preemption is not helpful for scheduling."
    )
}
