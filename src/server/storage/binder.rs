//! The binder: one work queue of claims and one of volumes, fed by the claim, volume,
//! class and pod informers.
//!
//! A claim gets the pvc-protection finalizer (released once no running pod uses it),
//! the default class when it has none, and then a volume: the one it names, a matching
//! static one (on the selected node for WaitForFirstConsumer classes), or one the
//! local-path provisioner makes. A volume gets the pv-protection finalizer (released
//! once no claim is bound to it), and its phase; when its claim is gone it is Released
//! and reclaimed: Retain keeps it, Delete removes the object of a provisioned volume
//! (the agent then removes the directory).

use super::matching::{
    annotation, best_volume, claim_class, default_class, pod_claims, pod_terminated,
    waits_for_first_consumer,
};
use super::provision::{claim_ref, local_path_volume, volume_name};
use super::*;
use crate::api::meta;
use crate::api::resources::Resource;
use crate::server::controllers::events::EventRecorder;
use crate::server::informer::{run_controller, Informer, InformerEvent, ObjectKey, WorkQueue};
use crate::server::registry::DeleteOptions;
use serde_json::Value;
use std::sync::Arc;

struct Binder {
    registry: Registry,
    settings: StorageSettings,
    pvc_res: &'static Resource,
    pv_res: &'static Resource,
    pvcs: Informer,
    pvs: Informer,
    classes: Informer,
    pods: Informer,
    nodes: Informer,
    events: EventRecorder,
    claims: WorkQueue<ObjectKey>,
    volumes: WorkQueue<ObjectKey>,
}

/// Runs the binder until `shutdown` flips.
pub async fn run(
    informers: Informers,
    settings: StorageSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let pvc_res = builtin("", "v1", "persistentvolumeclaims");
    let pv_res = builtin("", "v1", "persistentvolumes");
    let b = Arc::new(Binder {
        registry: informers.registry().clone(),
        settings,
        pvc_res,
        pv_res,
        pvcs: informers.get(pvc_res),
        pvs: informers.get(pv_res),
        classes: informers.get(builtin("storage.k8s.io", "v1", "storageclasses")),
        pods: informers.get(builtin("", "v1", "pods")),
        nodes: informers.get(builtin("", "v1", "nodes")),
        events: EventRecorder::new(informers.registry().clone(), "persistentvolume-controller"),
        claims: WorkQueue::new(),
        volumes: WorkQueue::new(),
    });
    for (inf, handler) in [
        (b.pvcs.clone(), Binder::on_claim as fn(&Binder, &Value)),
        (b.pvs.clone(), Binder::on_volume),
        (b.pods.clone(), Binder::on_pod),
        (b.classes.clone(), Binder::on_class),
    ] {
        let mut events = inf.subscribe();
        let feed = b.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev {
                    InformerEvent::Resync => feed.enqueue_all(),
                    InformerEvent::Updated { old, new } => {
                        handler(&feed, &old);
                        handler(&feed, &new);
                    }
                    ev => {
                        if let Some(o) = ev.object() {
                            handler(&feed, o)
                        }
                    }
                }
            }
        });
    }
    let (cq, vq) = (b.claims.clone(), b.volumes.clone());
    tokio::spawn(async move {
        let _ = shutdown.wait_for(|s| *s).await;
        cq.shut_down();
        vq.shut_down();
    });
    for inf in [&b.pvcs, &b.pvs, &b.classes, &b.pods, &b.nodes] {
        inf.wait_synced().await;
    }
    b.enqueue_all();
    tracing::info!("persistent volume binder started");
    let (b1, b2) = (b.clone(), b.clone());
    tokio::join!(
        run_controller("persistentvolumeclaims", b.claims.clone(), 2, move |k| {
            let b = b1.clone();
            async move { b.sync_claim(&k).await }
        }),
        run_controller("persistentvolumes", b.volumes.clone(), 2, move |k| {
            let b = b2.clone();
            async move { b.sync_volume(&k).await }
        }),
    );
}

fn has_finalizer(obj: &Value, f: &str) -> bool {
    meta::finalizers(obj).iter().any(|x| x == f)
}

fn set_finalizer(obj: &mut Value, f: &str, present: bool) {
    let mut list = meta::finalizers(obj);
    list.retain(|x| x != f);
    if present {
        list.push(f.to_string());
    }
    obj["metadata"]["finalizers"] = if list.is_empty() {
        Value::Null
    } else {
        serde_json::json!(list)
    };
    if list.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("finalizers");
        }
    }
}

fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    if !obj["metadata"]["annotations"].is_object() {
        obj["metadata"]["annotations"] = serde_json::json!({});
    }
    obj["metadata"]["annotations"][key] = serde_json::json!(value);
}

impl Binder {
    fn enqueue_all(&self) {
        for c in self.pvcs.list_all() {
            self.claims.add(ObjectKey::of(&c));
        }
        for v in self.pvs.list_all() {
            self.volumes.add(ObjectKey::of(&v));
        }
    }

    fn on_claim(&self, pvc: &Value) {
        self.claims.add(ObjectKey::of(pvc));
        if let Some(v) = pvc["spec"]["volumeName"].as_str().filter(|v| !v.is_empty()) {
            self.volumes.add(ObjectKey::new("", v));
        }
        // Volumes pointing at this claim (a deleted claim releases them).
        for pv in self.pvs.list_all() {
            let r = &pv["spec"]["claimRef"];
            if r["name"].as_str() == Some(meta::name(pvc))
                && r["namespace"].as_str() == Some(meta::namespace(pvc))
            {
                self.volumes.add(ObjectKey::of(&pv));
            }
        }
    }

    fn on_volume(&self, pv: &Value) {
        self.volumes.add(ObjectKey::of(pv));
        let r = &pv["spec"]["claimRef"];
        if let (Some(ns), Some(n)) = (r["namespace"].as_str(), r["name"].as_str()) {
            self.claims.add(ObjectKey::new(ns, n));
        }
    }

    fn on_pod(&self, pod: &Value) {
        let ns = meta::namespace(pod);
        for c in pod_claims(pod) {
            self.claims.add(ObjectKey::new(ns, &c));
        }
        for (name, claim) in super::ephemeral::claims_for(pod) {
            if self.pvcs.get(ns, &name).is_some() {
                continue;
            }
            let (registry, res, ns) = (self.registry.clone(), self.pvc_res, ns.to_string());
            tokio::spawn(async move {
                match registry
                    .create(res, &ns, claim, &WriteOptions::default())
                    .await
                {
                    // 409: made already (an event raced the informer), or a claim of that
                    // name the pod does not own; the pod then waits, as upstream.
                    Ok(_) | Err(ApiError { code: 409, .. }) => {}
                    Err(e) => {
                        tracing::warn!(claim = %name, namespace = %ns, error = %e.message, "cannot create the claim of an ephemeral volume")
                    }
                }
            });
        }
    }

    fn on_class(&self, _class: &Value) {
        // A new default class or binding mode concerns every unbound claim.
        for c in self.pvcs.list_all() {
            if c["spec"]["volumeName"].as_str().unwrap_or("").is_empty() {
                self.claims.add(ObjectKey::of(&c));
            }
        }
    }

    fn default_class_name(&self) -> Option<String> {
        let classes = self.classes.list_all();
        default_class(classes.iter().map(|c| c.as_ref())).map(|c| meta::name(c).to_string())
    }

    /// Whether a pod that has not terminated uses the claim.
    fn claim_in_use(&self, ns: &str, name: &str) -> bool {
        self.pods
            .list(ns, &Default::default())
            .iter()
            .any(|p| !pod_terminated(p) && pod_claims(p).iter().any(|c| c == name))
    }

    async fn update(
        &self,
        res: &Resource,
        obj: &Value,
        change: impl Fn(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Value, ApiError> {
        self.registry
            .update_with(res, meta::namespace(obj), meta::name(obj), change)
            .await
    }

    async fn sync_claim(&self, key: &ObjectKey) -> Result<(), ApiError> {
        let Some(pvc) = self.pvcs.get(&key.namespace, &key.name) else {
            return Ok(());
        };
        let mut pvc = pvc.as_ref().clone();
        if meta::is_deleting(&pvc) {
            if has_finalizer(&pvc, PVC_PROTECTION) && !self.claim_in_use(&key.namespace, &key.name)
            {
                tracing::info!(claim = %key, "claim no longer in use; releasing it for deletion");
                self.update(self.pvc_res, &pvc, |o| {
                    set_finalizer(o, PVC_PROTECTION, false);
                    Ok(())
                })
                .await?;
            }
            return Ok(());
        }
        let default = self.default_class_name();
        let needs_class = pvc["spec"]["storageClassName"].is_null()
            && annotation(&pvc, "volume.beta.kubernetes.io/storage-class").is_none()
            && default.is_some();
        if !has_finalizer(&pvc, PVC_PROTECTION) || needs_class {
            pvc = self
                .update(self.pvc_res, &pvc, |o| {
                    set_finalizer(o, PVC_PROTECTION, true);
                    if let Some(d) = default.as_deref().filter(|_| needs_class) {
                        if o["spec"]["storageClassName"].is_null() {
                            o["spec"]["storageClassName"] = serde_json::json!(d);
                        }
                    }
                    Ok(())
                })
                .await?;
        }
        let class_name = claim_class(&pvc, default.as_deref());
        let class = self.classes.get("", &class_name);
        let bound_to = pvc["spec"]["volumeName"].as_str().unwrap_or("").to_string();
        if !bound_to.is_empty() {
            return self.sync_bound_claim(&pvc, &bound_to).await;
        }
        let selected = annotation(&pvc, ANN_SELECTED_NODE).map(str::to_string);
        let wffc = class.as_deref().is_some_and(waits_for_first_consumer);
        if wffc && selected.is_none() {
            self.pending(&pvc).await?;
            self.events
                .normal(
                    &pvc,
                    "WaitForFirstConsumer",
                    "waiting for first consumer to be created before binding",
                )
                .await;
            return Ok(());
        }
        let node = selected.as_deref().and_then(|n| self.nodes.get("", n));
        let node_ref = match (&selected, &node) {
            (Some(n), Some(obj)) => {
                let labels = obj["metadata"]["labels"].as_object();
                Some((n.as_str(), labels))
            }
            _ => None,
        };
        let empty = serde_json::Map::new();
        let pvs = self.pvs.list_all();
        let found = best_volume(
            pvs.iter().map(|v| v.as_ref()),
            &pvc,
            &class_name,
            node_ref.map(|(n, l)| (n, l.unwrap_or(&empty))),
        )
        .cloned();
        if let Some(pv) = found {
            return self.bind(&pv, &pvc).await;
        }
        let provisioner = class
            .as_deref()
            .and_then(|c| c["provisioner"].as_str())
            .unwrap_or("");
        if provisioner == LOCAL_PATH_PROVISIONER {
            let Some(class) = class else { return Ok(()) };
            let Some(node_name) = selected else {
                self.events
                    .warning(
                        &pvc,
                        "ProvisioningFailed",
                        &format!("failed to provision volume with StorageClass \"{class_name}\": configuration error, no node was specified"),
                    )
                    .await;
                return self.pending(&pvc).await;
            };
            return self
                .provision(&pvc, &class, &node_name, node.as_deref())
                .await;
        }
        self.pending(&pvc).await?;
        if provisioner.is_empty() {
            let msg = if class_name.is_empty() {
                "no persistent volumes available for this claim and no storage class is set"
                    .to_string()
            } else {
                format!("storageclass.storage.k8s.io \"{class_name}\" not found")
            };
            self.events.normal(&pvc, "FailedBinding", &msg).await;
        } else {
            self.events
                .normal(
                    &pvc,
                    "ExternalProvisioning",
                    &format!("Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."),
                )
                .await;
        }
        Ok(())
    }

    async fn pending(&self, pvc: &Value) -> Result<(), ApiError> {
        if pvc["status"]["phase"].as_str() != Some("Pending") {
            self.update(self.pvc_res, pvc, |o| {
                o["status"]["phase"] = serde_json::json!("Pending");
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    async fn provision(
        &self,
        pvc: &Value,
        class: &Value,
        node: &str,
        node_obj: Option<&Value>,
    ) -> Result<(), ApiError> {
        let hostname = node_obj
            .and_then(|n| n["metadata"]["labels"]["kubernetes.io/hostname"].as_str())
            .unwrap_or(node);
        let pv = local_path_volume(
            pvc,
            class,
            node,
            hostname,
            &self.settings.local_storage_path,
        );
        let name = volume_name(pvc);
        if annotation(pvc, ANN_STORAGE_PROVISIONER).is_none() {
            self.update(self.pvc_res, pvc, |o| {
                set_annotation(o, ANN_STORAGE_PROVISIONER, LOCAL_PATH_PROVISIONER);
                set_annotation(
                    o,
                    "volume.beta.kubernetes.io/storage-provisioner",
                    LOCAL_PATH_PROVISIONER,
                );
                Ok(())
            })
            .await?;
        }
        match self
            .registry
            .create(self.pv_res, "", pv, &WriteOptions::default())
            .await
        {
            Ok(_) => {
                tracing::info!(claim = %ObjectKey::of(pvc), volume = %name, node, "provisioned a local-path volume");
                self.events
                    .normal(
                        pvc,
                        "ProvisioningSucceeded",
                        &format!("Successfully provisioned volume {name}"),
                    )
                    .await;
                Ok(())
            }
            // Made by an earlier attempt: the volume's event binds it.
            Err(e) if e.code == 409 => Ok(()),
            Err(e) => {
                self.events
                    .warning(pvc, "ProvisioningFailed", &e.message)
                    .await;
                Err(e)
            }
        }
    }

    /// Points `pv` at `pvc`, then `pvc` at `pv` (upstream's order: a crash in between
    /// leaves a pre-bound volume the next sync completes).
    async fn bind(&self, pv: &Value, pvc: &Value) -> Result<(), ApiError> {
        let reference = claim_ref(pvc);
        let (ns, name, uid) = (
            meta::namespace(pvc).to_string(),
            meta::name(pvc).to_string(),
            meta::uid(pvc).to_string(),
        );
        self.update(self.pv_res, pv, |o| {
            if super::matching::claimed_by_other(o, pvc) {
                return Err(ApiError::conflict("", "persistentvolumes", meta::name(o)));
            }
            let r = &o["spec"]["claimRef"];
            let same = r["namespace"].as_str() == Some(&ns)
                && r["name"].as_str() == Some(&name)
                && r["uid"].as_str() == Some(&uid);
            if !same {
                if !r.is_object() {
                    set_annotation(o, ANN_BOUND_BY_CONTROLLER, "yes");
                }
                o["spec"]["claimRef"] = reference.clone();
            }
            o["status"]["phase"] = serde_json::json!("Bound");
            Ok(())
        })
        .await?;
        let bound = self.mark_claim_bound(pvc, pv).await?;
        tracing::info!(claim = %ObjectKey::of(&bound), volume = %meta::name(pv), "claim bound");
        Ok(())
    }

    async fn mark_claim_bound(&self, pvc: &Value, pv: &Value) -> Result<Value, ApiError> {
        let pv_name = meta::name(pv).to_string();
        let (modes, capacity) = (
            pv["spec"]["accessModes"].clone(),
            pv["spec"]["capacity"].clone(),
        );
        self.update(self.pvc_res, pvc, |o| {
            if o["spec"]["volumeName"].as_str().unwrap_or("").is_empty() {
                o["spec"]["volumeName"] = serde_json::json!(pv_name);
                set_annotation(o, ANN_BOUND_BY_CONTROLLER, "yes");
            }
            set_annotation(o, ANN_BIND_COMPLETED, "yes");
            o["status"]["phase"] = serde_json::json!("Bound");
            o["status"]["accessModes"] = modes.clone();
            o["status"]["capacity"] = capacity.clone();
            Ok(())
        })
        .await
    }

    async fn sync_bound_claim(&self, pvc: &Value, volume: &str) -> Result<(), ApiError> {
        let Some(pv) = self.pvs.get("", volume) else {
            if annotation(pvc, ANN_BIND_COMPLETED).is_some() {
                if pvc["status"]["phase"].as_str() != Some("Lost") {
                    self.update(self.pvc_res, pvc, |o| {
                        o["status"]["phase"] = serde_json::json!("Lost");
                        Ok(())
                    })
                    .await?;
                    self.events
                        .warning(pvc, "ClaimLost", "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!")
                        .await;
                }
                return Ok(());
            }
            // Pre-bound by the user to a volume that does not exist yet.
            return self.pending(pvc).await;
        };
        let r = &pv["spec"]["claimRef"];
        if !r.is_object() {
            return self.bind(&pv, pvc).await;
        }
        if super::matching::claimed_by_other(&pv, pvc) {
            self.events
                .warning(
                    pvc,
                    "FailedBinding",
                    &format!("volume \"{volume}\" already bound to a different claim."),
                )
                .await;
            return self.pending(pvc).await;
        }
        let complete = pvc["status"]["phase"].as_str() == Some("Bound")
            && r["uid"].as_str() == Some(meta::uid(pvc))
            && pv["status"]["phase"].as_str() == Some("Bound");
        if !complete {
            self.bind(&pv, pvc).await?;
        }
        Ok(())
    }

    async fn sync_volume(&self, key: &ObjectKey) -> Result<(), ApiError> {
        let Some(pv) = self.pvs.get("", &key.name) else {
            return Ok(());
        };
        let pv = pv.as_ref();
        let r = &pv["spec"]["claimRef"];
        let claim = match (r["namespace"].as_str(), r["name"].as_str()) {
            (Some(ns), Some(n)) => self.pvcs.get(ns, n),
            _ => None,
        };
        let claim_uid = r["uid"].as_str().unwrap_or("");
        let claim = claim.filter(|c| claim_uid.is_empty() || meta::uid(c) == claim_uid);
        if meta::is_deleting(pv) {
            let used = claim
                .as_ref()
                .is_some_and(|c| c["spec"]["volumeName"].as_str() == Some(meta::name(pv)));
            if has_finalizer(pv, PV_PROTECTION) && !used {
                self.update(self.pv_res, pv, |o| {
                    set_finalizer(o, PV_PROTECTION, false);
                    Ok(())
                })
                .await?;
            }
            return Ok(());
        }
        if !has_finalizer(pv, PV_PROTECTION) {
            self.update(self.pv_res, pv, |o| {
                set_finalizer(o, PV_PROTECTION, true);
                Ok(())
            })
            .await?;
        }
        let phase = pv["status"]["phase"].as_str().unwrap_or("");
        let want = if !r.is_object() {
            "Available"
        } else if let Some(c) = &claim {
            if c["spec"]["volumeName"].as_str() == Some(meta::name(pv)) {
                "Bound"
            } else {
                // Pre-bound: the claim's sync finishes the binding.
                self.claims.add(ObjectKey::of(c));
                if phase == "Bound" {
                    "Bound"
                } else {
                    "Available"
                }
            }
        } else if claim_uid.is_empty() {
            "Available"
        } else {
            // The informer may lag a just-created claim: ask the store before releasing.
            let (ns, n) = (
                r["namespace"].as_str().unwrap_or(""),
                r["name"].as_str().unwrap_or(""),
            );
            if let Ok(live) = self.registry.get(self.pvc_res, ns, n).await {
                if live.value().is_ok_and(|c| meta::uid(&c) == claim_uid) {
                    return Ok(());
                }
            }
            return self.reclaim(pv).await;
        };
        if phase != want {
            self.update(self.pv_res, pv, |o| {
                o["status"]["phase"] = serde_json::json!(want);
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// The claim of a volume is gone: Released, then its reclaim policy.
    async fn reclaim(&self, pv: &Value) -> Result<(), ApiError> {
        let name = meta::name(pv).to_string();
        let policy = pv["spec"]["persistentVolumeReclaimPolicy"]
            .as_str()
            .unwrap_or("Retain");
        let phase = pv["status"]["phase"].as_str().unwrap_or("");
        if phase != "Released" && phase != "Failed" {
            tracing::info!(volume = %name, policy, "claim deleted; volume released");
            self.update(self.pv_res, pv, |o| {
                o["status"]["phase"] = serde_json::json!("Released");
                Ok(())
            })
            .await?;
        }
        match policy {
            "Delete" if annotation(pv, ANN_PROVISIONED_BY) == Some(LOCAL_PATH_PROVISIONER) => {
                match self
                    .registry
                    .delete(self.pv_res, "", &name, &DeleteOptions::default())
                    .await
                {
                    Ok(_) => {
                        tracing::info!(volume = %name, "deleted released volume (reclaim policy Delete)");
                        Ok(())
                    }
                    Err(e) if e.code == 404 => Ok(()),
                    Err(e) => Err(e),
                }
            }
            "Delete" | "Recycle" if phase != "Failed" => {
                let msg = if policy == "Delete" {
                    format!("error getting deleter volume plugin for volume \"{name}\": no deletable volume plugin matched")
                } else {
                    "No recycler plugin found for the volume!".to_string()
                };
                self.update(self.pv_res, pv, |o| {
                    o["status"]["phase"] = serde_json::json!("Failed");
                    o["status"]["message"] = serde_json::json!(msg);
                    Ok(())
                })
                .await?;
                let reason = if policy == "Delete" {
                    "VolumeFailedDelete"
                } else {
                    "VolumeFailedRecycle"
                };
                self.events.warning(pv, reason, &msg).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
