//! The Deployment controller: owns ReplicaSets through `pod-template-hash` and moves a
//! Deployment from its old ReplicaSets to the one matching its template, with the
//! RollingUpdate or Recreate strategy ([`rollout`]), keeps the revision annotations
//! `kubectl rollout history/undo` read, trims history to `revisionHistoryLimit`,
//! scales proportionally when resized mid-rollout, and writes status and the
//! Progressing/Available conditions ([`status`]). `kubectl rollout undo/pause/resume/
//! restart` are client-side patches of the Deployment; this controller only reacts.

pub mod rollout;
pub mod status;
pub mod util;

use crate::api::meta;
use crate::api::selector::LabelSelector;
use crate::api::ApiError;
use crate::server::controllers::events::EventRecorder;
use crate::server::controllers::replicaset::pods::{controller_ref, owner_ref};
use crate::server::informer::{
    builtin, run_controller, Informer, InformerEvent, Informers, ObjectKey, WorkQueue,
};
use crate::server::registry::{DeleteOptions, Registry, WriteOptions};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::watch;
use util::{equal_ignore_hash, revision, HASH_LABEL};

/// The controller's shared state.
pub(crate) struct Controller {
    deployments: Informer,
    replicasets: Informer,
    pods: Informer,
    registry: Registry,
    events: EventRecorder,
    queue: WorkQueue<ObjectKey>,
}

/// Runs the Deployment controller until `shutdown` flips.
pub async fn run(informers: Informers, shutdown: watch::Receiver<bool>) {
    let registry = informers.registry().clone();
    let c = Arc::new(Controller {
        deployments: informers.get(builtin("apps", "v1", "deployments")),
        replicasets: informers.get(builtin("apps", "v1", "replicasets")),
        pods: informers.get(builtin("", "v1", "pods")),
        events: EventRecorder::new(registry.clone(), "deployment-controller"),
        registry,
        queue: WorkQueue::new(),
    });
    let (mut d_events, mut rs_events, mut pod_events) = (
        c.deployments.subscribe(),
        c.replicasets.subscribe(),
        c.pods.subscribe(),
    );
    let feed = c.clone();
    tokio::spawn(async move {
        while let Some(ev) = d_events.recv().await {
            match ev.object() {
                Some(d) => feed.queue.add(ObjectKey::of(d)),
                None => feed.enqueue_all(),
            }
        }
    });
    let feed = c.clone();
    tokio::spawn(async move {
        while let Some(ev) = rs_events.recv().await {
            match ev.object() {
                Some(rs) => feed.enqueue_for_rs(rs),
                None => feed.enqueue_all(),
            }
        }
    });
    // Recreate waits for the old pods to be gone: their deletion moves it on.
    let feed = c.clone();
    tokio::spawn(async move {
        while let Some(ev) = pod_events.recv().await {
            if let InformerEvent::Deleted(pod) = ev {
                feed.enqueue_for_pod(&pod);
            }
        }
    });
    c.queue.shut_down_on(shutdown.clone());
    c.deployments.wait_synced().await;
    c.replicasets.wait_synced().await;
    c.pods.wait_synced().await;
    c.enqueue_all();
    let queue = c.queue.clone();
    run_controller("deployment-controller", queue, 2, move |key: ObjectKey| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
}

fn selector_of(d: &Value) -> Option<LabelSelector> {
    LabelSelector::from_json(&d["spec"]["selector"])
        .ok()
        .filter(|s| !s.is_empty())
}

impl Controller {
    fn enqueue_all(&self) {
        for d in self.deployments.list_all() {
            self.queue.add(ObjectKey::of(&d));
        }
    }

    fn enqueue_for_rs(&self, rs: &Value) {
        let ns = meta::namespace(rs);
        match controller_ref(rs) {
            Some(r) if r["kind"] == "Deployment" => self
                .queue
                .add(ObjectKey::new(ns, r["name"].as_str().unwrap_or(""))),
            Some(_) => {}
            None => {
                for d in self.deployments.list(ns, &LabelSelector::default()) {
                    if selector_of(&d).is_some_and(|s| s.matches(meta::labels(rs))) {
                        self.queue.add(ObjectKey::of(&d));
                    }
                }
            }
        }
    }

    fn enqueue_for_pod(&self, pod: &Value) {
        let Some(r) = controller_ref(pod).filter(|r| r["kind"] == "ReplicaSet") else {
            return;
        };
        let ns = meta::namespace(pod);
        if let Some(rs) = self.replicasets.get(ns, r["name"].as_str().unwrap_or("")) {
            self.enqueue_for_rs(&rs);
        }
    }

    async fn sync(&self, key: &ObjectKey) -> Result<(), ApiError> {
        let Some(d) = self.deployments.get(&key.namespace, &key.name) else {
            return Ok(());
        };
        let d = (*d).clone();
        if meta::is_deleting(&d) {
            return Ok(());
        }
        let Some(selector) = selector_of(&d) else {
            let msg = "This deployment will select all pods; a non-empty selector is required.";
            self.events.warning(&d, "SelectingAll", msg).await;
            return Ok(());
        };
        let rss = self.claim(&d, &selector).await?;
        let paused = d["spec"]["paused"] == json!(true);
        let r = if paused || rollout::is_scaling_event(&d, &rss) {
            self.sync_scale(&d, rss).await
        } else if util::is_rolling(&d) {
            self.rolling(&d, rss).await
        } else {
            self.recreate(&d, rss).await
        };
        if let Some(after) = r? {
            self.queue.add_after(key.clone(), after);
        }
        Ok(())
    }

    /// The ReplicaSets `d` controls, adopting matching orphans.
    async fn claim(&self, d: &Value, selector: &LabelSelector) -> Result<Vec<Value>, ApiError> {
        let uid = meta::uid(d);
        let mut out = Vec::new();
        for rs in self
            .replicasets
            .list(meta::namespace(d), &LabelSelector::default())
        {
            match controller_ref(&rs) {
                Some(r) if r["uid"] == uid => out.push((*rs).clone()),
                None if selector.matches(meta::labels(&rs)) && !meta::is_deleting(&rs) => {
                    let adopted = self
                        .update_rs(&rs, |x| {
                            if controller_ref(x).is_some() {
                                return Err(ApiError::conflict("apps", "replicasets", ""));
                            }
                            let refs = &mut x["metadata"]["ownerReferences"];
                            if !refs.is_array() {
                                *refs = json!([]);
                            }
                            if let Some(a) = refs.as_array_mut() {
                                a.push(owner_ref(d));
                            }
                            Ok(())
                        })
                        .await;
                    match adopted {
                        Ok(rs) => out.push(rs),
                        Err(e) if e.code == 404 || e.code == 409 => {}
                        Err(e) => return Err(e),
                    }
                }
                _ => {}
            }
        }
        out.sort_by(|a, b| {
            meta::meta_str(a, "creationTimestamp")
                .cmp(meta::meta_str(b, "creationTimestamp"))
                .then_with(|| meta::name(a).cmp(meta::name(b)))
        });
        Ok(out)
    }

    /// Writes a ReplicaSet through `change`.
    async fn update_rs(
        &self,
        rs: &Value,
        change: impl Fn(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Value, ApiError> {
        self.registry
            .update_with(
                builtin("apps", "v1", "replicasets"),
                meta::namespace(rs),
                meta::name(rs),
                change,
            )
            .await
    }

    /// Splits `rss` into the ReplicaSet matching the template (the oldest such) and the
    /// others, bringing the new one's revision annotations up to date, or creating it
    /// when `create`. Also returns the revision the Deployment is at.
    async fn new_and_old(
        &self,
        d: &Value,
        rss: Vec<Value>,
        create: bool,
    ) -> Result<(Option<Value>, Vec<Value>), ApiError> {
        let template = &d["spec"]["template"];
        let pos = rss
            .iter()
            .position(|rs| equal_ignore_hash(&rs["spec"]["template"], template));
        let mut olds = rss;
        let new = pos.map(|i| olds.remove(i));
        let next = olds.iter().map(revision).max().unwrap_or(0) + 1;
        let min_ready = d["spec"]["minReadySeconds"].clone();
        let new = match new {
            Some(rs) => {
                let mut want = rs.clone();
                util::sync_new_rs_annotations(&mut want, d, next);
                if want["metadata"]["annotations"] != rs["metadata"]["annotations"]
                    || rs["spec"]["minReadySeconds"] != min_ready
                {
                    let annotations = want["metadata"]["annotations"].clone();
                    Some(
                        self.update_rs(&rs, |x| {
                            x["metadata"]["annotations"] = annotations.clone();
                            x["spec"]["minReadySeconds"] = min_ready.clone();
                            Ok(())
                        })
                        .await?,
                    )
                } else {
                    Some(rs)
                }
            }
            None if create => Some(self.create_new_rs(d, &olds, next).await?),
            None => None,
        };
        Ok((new, olds))
    }

    async fn create_new_rs(&self, d: &Value, olds: &[Value], rev: i64) -> Result<Value, ApiError> {
        let collisions = d["status"]["collisionCount"].as_i64();
        let hash = util::template_hash(&d["spec"]["template"], collisions);
        let mut template = d["spec"]["template"].clone();
        template["metadata"]["labels"][HASH_LABEL] = json!(hash);
        let mut selector = d["spec"]["selector"].clone();
        selector["matchLabels"][HASH_LABEL] = json!(hash);
        let name = format!("{}-{hash}", meta::name(d));
        let ns = meta::namespace(d);
        let size = if util::is_rolling(d) {
            rollout::new_rs_replicas(d, olds, None)
        } else {
            0
        };
        let mut rs = json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name, "namespace": ns,
                "labels": template["metadata"]["labels"],
                "ownerReferences": [owner_ref(d)],
            },
            "spec": {
                "replicas": size,
                "minReadySeconds": d["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
                "selector": selector,
                "template": template,
            },
        });
        util::sync_new_rs_annotations(&mut rs, d, rev);
        util::set_replicas_annotations(&mut rs, d);
        let rs_res = builtin("apps", "v1", "replicasets");
        match self
            .registry
            .create(rs_res, ns, rs, &WriteOptions::default())
            .await
        {
            Ok(created) => {
                if size > 0 {
                    let msg = format!("Scaled up replica set {name} from 0 to {size}");
                    self.events.normal(d, "ScalingReplicaSet", &msg).await;
                }
                Ok(created)
            }
            Err(e) if e.code == 409 => {
                // Ours with the same template (an informer behind us): use it. Anything
                // else is a hash collision: bump collisionCount and try another name.
                if let Ok(existing) = self.registry.get(rs_res, ns, &name).await {
                    let existing = existing.value()?;
                    let ours = controller_ref(&existing).is_some_and(|r| r["uid"] == meta::uid(d));
                    if ours
                        && equal_ignore_hash(&existing["spec"]["template"], &d["spec"]["template"])
                    {
                        return Ok(existing);
                    }
                }
                let uid = meta::uid(d).to_string();
                self.registry
                    .update_with(
                        builtin("apps", "v1", "deployments"),
                        ns,
                        meta::name(d),
                        |x| {
                            if meta::uid(x) == uid {
                                let n = x["status"]["collisionCount"].as_i64().unwrap_or(0) + 1;
                                x["status"]["collisionCount"] = json!(n);
                            }
                            Ok(())
                        },
                    )
                    .await?;
                Err(ApiError::conflict("apps", "replicasets", &name))
            }
            Err(e) => Err(e),
        }
    }

    /// Sets a ReplicaSet's replicas (and the desired/max-replicas annotations) and
    /// reports a change as upstream's `ScalingReplicaSet` event.
    async fn scale_rs(&self, d: &Value, rs: &Value, size: i64) -> Result<Value, ApiError> {
        let from = util::replicas(rs);
        let stale = util::int_annotation(rs, util::DESIRED_REPLICAS) != Some(util::replicas(d))
            || util::int_annotation(rs, util::MAX_REPLICAS)
                != Some(util::replicas(d) + util::fenceposts(d).0);
        if from == size && !stale {
            return Ok(rs.clone());
        }
        let updated = self
            .update_rs(rs, |x| {
                x["spec"]["replicas"] = json!(size);
                util::set_replicas_annotations(x, d);
                Ok(())
            })
            .await?;
        if from != size {
            let dir = if size > from { "up" } else { "down" };
            let msg = format!(
                "Scaled {dir} replica set {} from {from} to {size}",
                meta::name(rs)
            );
            self.events.normal(d, "ScalingReplicaSet", &msg).await;
        }
        Ok(updated)
    }

    /// Deletes the oldest scaled-down ReplicaSets beyond `revisionHistoryLimit`.
    async fn cleanup(&self, d: &Value, olds: &[Value]) -> Result<(), ApiError> {
        let limit = d["spec"]["revisionHistoryLimit"]
            .as_i64()
            .unwrap_or(10)
            .max(0) as usize;
        let mut idle: Vec<&Value> = olds
            .iter()
            .filter(|rs| {
                util::replicas(rs) == 0
                    && rs["status"]["replicas"].as_i64().unwrap_or(0) == 0
                    && !meta::is_deleting(rs)
            })
            .collect();
        if idle.len() <= limit {
            return Ok(());
        }
        idle.sort_by_key(|rs| revision(rs));
        let excess = idle.len() - limit;
        for rs in idle.into_iter().take(excess) {
            let r = self
                .registry
                .delete(
                    builtin("apps", "v1", "replicasets"),
                    meta::namespace(rs),
                    meta::name(rs),
                    &DeleteOptions::default(),
                )
                .await;
            if let Err(e) = r {
                if e.code != 404 {
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}
