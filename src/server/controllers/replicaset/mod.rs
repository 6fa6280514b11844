//! The ReplicationController (core/v1) and ReplicaSet (apps/v1) controller: one
//! implementation, two instances that differ in the resource and how the selector is
//! written (a label map for RCs, a LabelSelector with matchExpressions for RSs).
//!
//! Per object it claims pods (keeps its own that still match, releases those whose labels
//! stopped matching, adopts matching orphans), creates or deletes pods until the active
//! ones equal `spec.replicas` (deleting the least useful first, with expectations so a
//! burst of events never creates twice), and writes `status` (replicas,
//! fullyLabeledReplicas, readyReplicas, availableReplicas with minReadySeconds,
//! observedGeneration, the ReplicaFailure condition).

pub mod expectations;
pub mod pods;

use crate::api::meta;
use crate::api::resources::Resource;
use crate::api::selector::LabelSelector;
use crate::api::ApiError;
use crate::server::controllers::events::EventRecorder;
use crate::server::informer::{
    builtin, run_controller, Informer, InformerEvent, Informers, ObjectKey, WorkQueue,
};
use crate::server::registry::{DeleteOptions, Registry, WriteOptions};
use expectations::Expectations;
use pods::{availability, controller_ref, is_active, is_ready, owner_ref, pod_from_template};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Most pods one sync creates or deletes (upstream's `burstReplicas`).
const BURST_REPLICAS: i64 = 500;

/// What differs between the two instances.
struct Kind {
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    /// `source.component` of its events and the queue's name.
    component: &'static str,
}

const RC: Kind = Kind {
    group: "",
    plural: "replicationcontrollers",
    kind: "ReplicationController",
    component: "replication-controller",
};

const RS: Kind = Kind {
    group: "apps",
    plural: "replicasets",
    kind: "ReplicaSet",
    component: "replicaset-controller",
};

/// Runs the ReplicationController and ReplicaSet controllers until `shutdown` flips.
pub async fn run(informers: Informers, shutdown: watch::Receiver<bool>) {
    tokio::join!(
        run_kind(informers.clone(), &RC, shutdown.clone()),
        run_kind(informers, &RS, shutdown),
    );
}

/// The selector of an RC (a label map) or RS (a LabelSelector). An empty or invalid one
/// selects nothing: validation forbids both, and matching everything would adopt every
/// pod of the namespace.
fn selector_of(kind: &Kind, owner: &Value) -> Option<LabelSelector> {
    let sel = &owner["spec"]["selector"];
    let parsed = if kind.group.is_empty() {
        sel.as_object().map(LabelSelector::from_map)
    } else {
        LabelSelector::from_json(sel).ok()
    };
    parsed.filter(|s| !s.is_empty())
}

struct Controller {
    kind: &'static Kind,
    res: &'static Resource,
    owners: Informer,
    pods: Informer,
    registry: Registry,
    events: EventRecorder,
    expectations: Expectations,
    queue: WorkQueue<ObjectKey>,
}

async fn run_kind(informers: Informers, kind: &'static Kind, shutdown: watch::Receiver<bool>) {
    let res = builtin(kind.group, "v1", kind.plural);
    let owners = informers.get(res);
    let pods = informers.get(builtin("", "v1", "pods"));
    let registry = informers.registry().clone();
    let c = Arc::new(Controller {
        kind,
        res,
        owners: owners.clone(),
        pods: pods.clone(),
        events: EventRecorder::new(registry.clone(), kind.component),
        registry,
        expectations: Expectations::default(),
        queue: WorkQueue::new(),
    });
    let mut owner_events = owners.subscribe();
    let mut pod_events = pods.subscribe();
    let feed = c.clone();
    tokio::spawn(async move {
        while let Some(ev) = owner_events.recv().await {
            match ev.object() {
                Some(o) => feed.queue.add(ObjectKey::of(o)),
                None => feed.enqueue_all(),
            }
        }
    });
    let feed = c.clone();
    tokio::spawn(async move {
        while let Some(ev) = pod_events.recv().await {
            feed.on_pod(ev);
        }
    });
    c.queue.shut_down_on(shutdown.clone());
    owners.wait_synced().await;
    pods.wait_synced().await;
    c.enqueue_all();
    let queue = c.queue.clone();
    run_controller(kind.component, queue, 2, move |key: ObjectKey| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
}

impl Controller {
    fn enqueue_all(&self) {
        for o in self.owners.list_all() {
            self.queue.add(ObjectKey::of(&o));
        }
    }

    /// The key of the owner of this kind that controls `pod`.
    fn owner_of(&self, pod: &Value) -> Option<ObjectKey> {
        let r = controller_ref(pod)?;
        (r["kind"] == self.kind.kind)
            .then(|| ObjectKey::new(meta::namespace(pod), r["name"].as_str().unwrap_or("")))
    }

    /// Owners that would adopt the orphan `pod`.
    fn enqueue_matching(&self, pod: &Value) {
        let ns = meta::namespace(pod);
        for o in self.owners.list(ns, &LabelSelector::default()) {
            if selector_of(self.kind, &o).is_some_and(|s| s.matches(meta::labels(pod))) {
                self.queue.add(ObjectKey::of(&o));
            }
        }
    }

    fn on_pod(&self, ev: InformerEvent) {
        match ev {
            InformerEvent::Resync => self.enqueue_all(),
            InformerEvent::Added(pod) => {
                if meta::is_deleting(&pod) {
                    return self.on_pod_gone(&pod);
                }
                match self.owner_of(&pod) {
                    Some(key) => {
                        self.expectations.creation_observed(&key);
                        self.queue.add(key);
                    }
                    None => self.enqueue_matching(&pod),
                }
            }
            InformerEvent::Updated { old, new } => {
                if meta::is_deleting(&new) && !meta::is_deleting(&old) {
                    return self.on_pod_gone(&new);
                }
                let (old_owner, new_owner) = (self.owner_of(&old), self.owner_of(&new));
                if old_owner != new_owner {
                    if let Some(k) = old_owner.clone() {
                        self.queue.add(k);
                    }
                }
                match new_owner {
                    Some(k) => self.queue.add(k),
                    // A released or relabelled orphan may match another owner now.
                    None if meta::labels(&old) != meta::labels(&new) || old_owner.is_some() => {
                        self.enqueue_matching(&new)
                    }
                    None => {}
                }
            }
            InformerEvent::Deleted(pod) => self.on_pod_gone(&pod),
        }
    }

    fn on_pod_gone(&self, pod: &Value) {
        if let Some(key) = self.owner_of(pod) {
            self.expectations.deletion_observed(&key, meta::name(pod));
            self.queue.add(key);
        }
    }

    async fn sync(&self, key: &ObjectKey) -> Result<(), ApiError> {
        let Some(owner) = self.owners.get(&key.namespace, &key.name) else {
            self.expectations.forget(key);
            return Ok(());
        };
        let Some(selector) = selector_of(self.kind, &owner) else {
            return Ok(());
        };
        let needs_sync = self.expectations.satisfied(key);
        let claimed = self.claim(&owner, &selector).await?;
        let manage = if needs_sync && !meta::is_deleting(&owner) {
            self.manage(key, &owner, &claimed).await
        } else {
            Ok(())
        };
        let requeue = self
            .write_status(&owner, &claimed, manage.as_ref().err())
            .await?;
        if let Some(after) = requeue {
            self.queue.add_after(key.clone(), after);
        }
        manage
    }

    /// The active pods `owner` controls after adopting matching orphans and releasing
    /// its pods that stopped matching.
    async fn claim(&self, owner: &Value, selector: &LabelSelector) -> Result<Vec<Value>, ApiError> {
        let uid = meta::uid(owner);
        let mut claimed = Vec::new();
        for pod in self
            .pods
            .list(meta::namespace(owner), &LabelSelector::default())
        {
            if !is_active(&pod) {
                continue;
            }
            let matches = selector.matches(meta::labels(&pod));
            match controller_ref(&pod) {
                Some(r) if r["uid"] == uid => {
                    if matches {
                        claimed.push((*pod).clone());
                    } else if !meta::is_deleting(owner) {
                        self.release(&pod, uid).await?;
                    }
                }
                Some(_) => {}
                None if matches && !meta::is_deleting(owner) => {
                    if let Some(adopted) = self.adopt(&pod, owner).await? {
                        claimed.push(adopted);
                    }
                }
                None => {}
            }
        }
        Ok(claimed)
    }

    async fn release(&self, pod: &Value, uid: &str) -> Result<(), ApiError> {
        let r = self
            .registry
            .update_with(
                builtin("", "v1", "pods"),
                meta::namespace(pod),
                meta::name(pod),
                |p| {
                    if let Some(refs) = p["metadata"]["ownerReferences"].as_array_mut() {
                        refs.retain(|r| r["uid"] != uid);
                    }
                    Ok(())
                },
            )
            .await;
        match r {
            Err(e) if e.code != 404 => Err(e),
            _ => Ok(()),
        }
    }

    /// Sets `owner` as the pod's controller unless something else took it meanwhile.
    async fn adopt(&self, pod: &Value, owner: &Value) -> Result<Option<Value>, ApiError> {
        let r = self
            .registry
            .update_with(
                builtin("", "v1", "pods"),
                meta::namespace(pod),
                meta::name(pod),
                |p| {
                    if controller_ref(p).is_some() || meta::is_deleting(p) {
                        return Err(ApiError::conflict("", "pods", meta::name(pod)));
                    }
                    let refs = &mut p["metadata"]["ownerReferences"];
                    if !refs.is_array() {
                        *refs = json!([]);
                    }
                    if let Some(a) = refs.as_array_mut() {
                        a.push(owner_ref(owner));
                    }
                    Ok(())
                },
            )
            .await;
        match r {
            Ok(p) => Ok(Some(p)),
            Err(e) if e.code == 404 || e.code == 409 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates or deletes pods so the active ones equal `spec.replicas`.
    async fn manage(
        &self,
        key: &ObjectKey,
        owner: &Value,
        claimed: &[Value],
    ) -> Result<(), ApiError> {
        let want = owner["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
        let diff = claimed.len() as i64 - want;
        if diff < 0 {
            self.create_pods(key, owner, (-diff).min(BURST_REPLICAS))
                .await
        } else if diff > 0 {
            let mut victims: Vec<&Value> = claimed.iter().collect();
            victims.sort_by(|a, b| pods::deletion_order(a, b));
            victims.truncate(diff.min(BURST_REPLICAS) as usize);
            self.delete_pods(key, owner, &victims).await
        } else {
            Ok(())
        }
    }

    /// Creates `n` pods in batches of 1, 2, 4, ... (upstream's slow start), stopping at
    /// the first batch with a failure so a broken template does not fail `n` times.
    async fn create_pods(&self, key: &ObjectKey, owner: &Value, n: i64) -> Result<(), ApiError> {
        self.expectations.expect(key, n, Vec::new());
        let mut done = 0;
        let mut batch = 1;
        while done < n {
            let size = batch.min(n - done);
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..size {
                let (registry, pod) = (self.registry.clone(), pod_from_template(owner));
                let ns = key.namespace.clone();
                tasks.spawn(async move {
                    registry
                        .create(
                            builtin("", "v1", "pods"),
                            &ns,
                            pod,
                            &WriteOptions::default(),
                        )
                        .await
                });
            }
            let mut failure = None;
            while let Some(r) = tasks.join_next().await {
                match r.map_err(|e| ApiError::internal(format!("pod creation task failed: {e}"))) {
                    Ok(Ok(pod)) => {
                        let msg = format!("Created pod: {}", meta::name(&pod));
                        self.events.normal(owner, "SuccessfulCreate", &msg).await;
                    }
                    Ok(Err(e)) | Err(e) => {
                        self.expectations.creation_observed(key);
                        let msg = format!("Error creating: {}", e.message);
                        self.events.warning(owner, "FailedCreate", &msg).await;
                        failure = Some(e);
                    }
                }
            }
            done += size;
            if let Some(e) = failure {
                // The pods never asked for will never be observed either.
                for _ in done..n {
                    self.expectations.creation_observed(key);
                }
                return Err(e);
            }
            batch *= 2;
        }
        Ok(())
    }

    async fn delete_pods(
        &self,
        key: &ObjectKey,
        owner: &Value,
        victims: &[&Value],
    ) -> Result<(), ApiError> {
        let names: Vec<String> = victims.iter().map(|p| meta::name(p).to_string()).collect();
        self.expectations.expect(key, 0, names.clone());
        let mut failure = None;
        for name in names {
            let r = self
                .registry
                .delete(
                    builtin("", "v1", "pods"),
                    &key.namespace,
                    &name,
                    &DeleteOptions::default(),
                )
                .await;
            match r {
                Ok(_) => {
                    let msg = format!("Deleted pod: {name}");
                    self.events.normal(owner, "SuccessfulDelete", &msg).await;
                }
                Err(e) => {
                    self.expectations.deletion_observed(key, &name);
                    if e.code != 404 {
                        let msg = format!("Error deleting: {}", e.message);
                        self.events.warning(owner, "FailedDelete", &msg).await;
                        failure = Some(e);
                    }
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Writes `status`; returns when to look again so pods waiting out minReadySeconds
    /// become available.
    async fn write_status(
        &self,
        owner: &Value,
        claimed: &[Value],
        failure: Option<&ApiError>,
    ) -> Result<Option<Duration>, ApiError> {
        let min_ready = owner["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
        let now = jiff::Timestamp::now().as_second();
        let template_labels = LabelSelector::from_map(
            owner["spec"]["template"]["metadata"]["labels"]
                .as_object()
                .unwrap_or(&Default::default()),
        );
        let mut status = json!({"replicas": claimed.len()});
        let (mut labelled, mut ready, mut available, mut wait) = (0, 0, 0, None::<i64>);
        for pod in claimed {
            labelled += template_labels.matches(meta::labels(pod)) as i64;
            ready += is_ready(pod) as i64;
            match availability(pod, min_ready, now) {
                Ok(()) => available += 1,
                Err(Some(w)) => wait = Some(wait.map_or(w, |x: i64| x.min(w))),
                Err(None) => {}
            }
        }
        // Upstream's status fields are omitempty: zero counts are left out.
        for (field, n) in [
            ("fullyLabeledReplicas", labelled),
            ("readyReplicas", ready),
            ("availableReplicas", available),
        ] {
            if n > 0 {
                status[field] = json!(n);
            }
        }
        if let Some(g) = owner["metadata"]["generation"].as_i64() {
            status["observedGeneration"] = json!(g);
        }
        let mut conditions: Vec<Value> = owner["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["type"] != "ReplicaFailure")
            .collect();
        if let Some(e) = failure {
            let old = owner["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "ReplicaFailure"));
            conditions.push(json!({
                "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                "message": e.message,
                "lastTransitionTime": old.map(|c| c["lastTransitionTime"].clone())
                    .unwrap_or_else(|| json!(meta::now_rfc3339())),
            }));
        }
        if !conditions.is_empty() {
            status["conditions"] = Value::Array(conditions);
        }
        let uid = meta::uid(owner).to_string();
        let r = self
            .registry
            .update_with(self.res, meta::namespace(owner), meta::name(owner), |o| {
                if meta::uid(o) != uid {
                    return Err(ApiError::not_found(self.kind.group, self.kind.plural, &uid));
                }
                o["status"] = status.clone();
                Ok(())
            })
            .await;
        match r {
            Err(e) if e.code != 404 => Err(e),
            _ => Ok(wait.map(|w| Duration::from_secs(w.max(1) as u64))),
        }
    }
}
