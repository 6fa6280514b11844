//! The scheduler: assigns pods without a node whose `schedulerName` is
//! `default-scheduler` or `k3rs-scheduler` to a node.
//!
//! One task owns the node infos ([`cache::Cache`]) and applies pod and node informer
//! events to them incrementally; it takes pods from a [`WorkQueue`], filters
//! ([`filter`]) a sample of the nodes (all of them below 100, like upstream's
//! percentageOfNodesToScore), scores ([`score`]) the feasible ones, assumes the pod on
//! the winner and hands the binding to a bounded set of concurrent tasks, so that
//! decisions never wait for the store. Pods that fit nowhere may preempt pods of lower
//! priority ([`preempt`]): the victims are deleted and the pod is nominated to their
//! node. Pods that fit nowhere get `FailedScheduling` and `PodScheduled=False` and wait
//! until a node or a placed pod changes (or 30 s).

pub mod bind;
mod cache;
mod decide;
pub mod filter;
pub mod preempt;
pub mod priority;
mod score;
pub mod terms;
pub mod types;
pub mod volumes;

use crate::api::meta;
use crate::server::informer::{builtin, Informer, InformerEvent, Informers, ObjectKey, WorkQueue};
use crate::server::registry::Registry;
use cache::NodeChange;
use decide::Core;
use preempt::{Budget, Outcome};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use types::PodInfo;

/// The scheduler name pods get by default.
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";
/// k3rs's own name for the same scheduler.
pub const K3RS_SCHEDULER: &str = "k3rs-scheduler";
/// Bindings in flight at once: enough to keep the store's group commit busy.
const BIND_CONCURRENCY: usize = 128;
/// Unschedulable pods are retried at least this often.
const RETRY_UNSCHEDULABLE: Duration = Duration::from_secs(30);

fn ours(scheduler_name: &str) -> bool {
    scheduler_name == DEFAULT_SCHEDULER || scheduler_name == K3RS_SCHEDULER
}

struct BindOutcome {
    key: ObjectKey,
    result: Result<(), crate::api::ApiError>,
}

struct Scheduler {
    registry: Registry,
    pods: Informer,
    nodes: Informer,
    budgets: Informer,
    volumes: volumes::VolumeInformers,
    core: Core,
    queue: WorkQueue<ObjectKey>,
    unschedulable: HashSet<ObjectKey>,
    failures: Arc<bind::FailureEvents>,
    binds: Arc<Semaphore>,
    outcomes: mpsc::UnboundedSender<BindOutcome>,
}

/// Runs the scheduler until `shutdown` flips.
pub async fn run(informers: Informers, mut shutdown: watch::Receiver<bool>) {
    let pods = informers.get(builtin("", "v1", "pods"));
    let nodes = informers.get(builtin("", "v1", "nodes"));
    let mut pod_events = pods.subscribe();
    let mut node_events = nodes.subscribe();
    let budgets = informers.get(builtin("policy", "v1", "poddisruptionbudgets"));
    let vols = volumes::VolumeInformers::new(&informers);
    let [mut claim_events, mut volume_events] = vols.subscribe();
    pods.wait_synced().await;
    nodes.wait_synced().await;
    budgets.wait_synced().await;
    vols.wait_synced().await;
    let (outcomes, mut outcome_rx) = mpsc::unbounded_channel();
    let mut s = Scheduler {
        registry: informers.registry().clone(),
        pods,
        nodes,
        budgets,
        volumes: vols,
        core: Core::new(
            0x9e37_79b9_7f4a_7c15
                ^ meta::random_bytes::<8>()
                    .iter()
                    .fold(0u64, |a, b| a << 8 | *b as u64),
        ),
        queue: WorkQueue::new(),
        unschedulable: HashSet::new(),
        failures: Default::default(),
        binds: Arc::new(Semaphore::new(BIND_CONCURRENCY)),
        outcomes,
    };
    s.rebuild();
    tracing::info!("scheduler started");
    let queue = s.queue.clone();
    let mut retry = tokio::time::interval(RETRY_UNSCHEDULABLE);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            Some(o) = outcome_rx.recv() => s.bound(o),
            Some(ev) = node_events.recv() => s.node_event(ev),
            Some(ev) = pod_events.recv() => s.pod_event(ev),
            // A claim bound or a volume appeared: pods waiting for them may fit now.
            Some(_) = claim_events.recv() => s.retry_unschedulable(),
            Some(_) = volume_events.recv() => s.retry_unschedulable(),
            _ = retry.tick() => s.retry_unschedulable(),
            Some(key) = queue.get() => {
                s.schedule_one(&key).await;
                queue.done(&key);
            }
        }
    }
    queue.shut_down();
}

impl Scheduler {
    /// Rebuilds the node infos from the informers (start, and after missed events),
    /// keeping the pods whose binding is still in flight.
    fn rebuild(&mut self) {
        let assumed = self.core.cache.assumed_pods();
        self.core.cache.clear();
        for n in self.nodes.list_all() {
            self.core.cache.set_node(&n);
        }
        for p in self.pods.list_all() {
            self.pod_changed(&p, None);
        }
        for (pod, node) in assumed {
            if !self.core.cache.is_placed(&pod.key()) {
                self.core.cache.add_pod(pod, &node, true);
            }
        }
    }

    fn retry_unschedulable(&mut self) {
        for k in self.unschedulable.drain() {
            self.queue.add(k);
        }
    }

    fn node_event(&mut self, ev: InformerEvent) {
        match ev {
            InformerEvent::Added(n) | InformerEvent::Updated { new: n, .. } => {
                if self.core.cache.set_node(&n) == NodeChange::Relevant {
                    self.retry_unschedulable();
                }
            }
            InformerEvent::Deleted(n) => self.core.cache.remove_node(meta::name(&n)),
            InformerEvent::Resync => self.rebuild(),
        }
    }

    fn pod_event(&mut self, ev: InformerEvent) {
        match ev {
            InformerEvent::Added(p) => self.pod_changed(&p, None),
            InformerEvent::Updated { old, new } => self.pod_changed(&new, Some(&old)),
            InformerEvent::Deleted(p) => {
                let key = ObjectKey::of(&p);
                self.unschedulable.remove(&key);
                self.failures.forget(&key.to_string());
                self.core.cache.unnominate(&key.to_string());
                if self.core.cache.remove_pod(&key.to_string()) {
                    // Freed resources, ports or affinity: waiting pods may fit now.
                    self.retry_unschedulable();
                }
            }
            InformerEvent::Resync => self.rebuild(),
        }
    }

    fn pod_changed(&mut self, p: &Value, old: Option<&Value>) {
        let info = PodInfo::parse(p);
        let key = ObjectKey::of(p);
        if !info.node_name.is_empty() || info.deleting {
            self.core.cache.unnominate(&key.to_string());
        } else if !info.nominated_node.is_empty()
            && self.core.cache.nominated_node(&key.to_string()).is_none()
        {
            // Nominated before (by this scheduler or an earlier leader): keep the room.
            let node = info.nominated_node.clone();
            self.core.cache.nominate(Arc::new(info.clone()), &node);
        }
        if !info.node_name.is_empty() {
            self.unschedulable.remove(&key);
            if info.finished {
                if self.core.cache.remove_pod(&key.to_string()) {
                    self.retry_unschedulable();
                }
            } else {
                let node = info.node_name.clone();
                self.core.cache.add_pod(Arc::new(info), &node, false);
            }
            return;
        }
        if !ours(&info.scheduler_name) || info.deleting {
            return;
        }
        // A waiting pod retries only when something scheduling looks at changed (not
        // on its own status updates, such as the condition written after a failure).
        if self.unschedulable.contains(&key) {
            let relevant =
                old.is_none_or(|o| o["spec"] != p["spec"] || meta::labels(o) != meta::labels(p));
            if !relevant {
                return;
            }
            self.unschedulable.remove(&key);
        }
        self.queue.add(key);
    }

    fn bound(&mut self, o: BindOutcome) {
        let key = o.key.to_string();
        match o.result {
            Ok(()) => {
                self.queue.forget(&o.key);
                self.failures.forget(&key);
            }
            Err(e) => {
                if self.core.cache.is_assumed(&key) {
                    self.core.cache.remove_pod(&key);
                }
                // 409: bound by someone else or being deleted; the informer tells the rest.
                if e.code != 409 && e.code != 404 {
                    tracing::warn!(pod = %o.key, error = %e, "binding failed; retrying");
                    self.queue.add_rate_limited(o.key);
                }
            }
        }
    }

    async fn schedule_one(&mut self, key: &ObjectKey) {
        let Some(obj) = self.pods.get(&key.namespace, &key.name) else {
            return;
        };
        let info = PodInfo::parse(&obj);
        let skey = key.to_string();
        if !info.node_name.is_empty()
            || info.deleting
            || !ours(&info.scheduler_name)
            || self.core.cache.is_placed(&skey)
        {
            return;
        }
        let claims = match volumes::PodClaims::of(&obj, &self.volumes) {
            Ok(c) => c,
            Err(reason) => {
                let msg = volumes::prefilter_message(self.core.cache.node_count(), &reason);
                return self.unschedulable_now(key, obj, msg, None);
            }
        };
        match self.core.place(info.clone(), Some(&claims)) {
            Ok(node) => {
                let Ok(permit) = self.binds.clone().acquire_owned().await else {
                    return;
                };
                let (registry, tx, key) =
                    (self.registry.clone(), self.outcomes.clone(), key.clone());
                tokio::spawn(async move {
                    // Claims learn the node first: the provisioner makes their volumes there.
                    let r = match claims.select_node(&registry, &node).await {
                        Ok(()) => bind::bind_pod(&registry, &key.namespace, &key.name, &node)
                            .await
                            .map(drop),
                        Err(e) => Err(e),
                    };
                    drop(permit);
                    let ok = r.is_ok();
                    let _ = tx.send(BindOutcome {
                        key: key.clone(),
                        result: r,
                    });
                    if ok {
                        let msg = format!("Successfully assigned {key} to {node}");
                        bind::pod_event(
                            &registry,
                            &obj,
                            "Normal",
                            "Scheduled",
                            &msg,
                            DEFAULT_SCHEDULER,
                        )
                        .await;
                    }
                });
            }
            Err(diag) => self.post_filter(key, obj, &info, diag),
        }
    }

    /// Preemption for a pod that fits nowhere, then the `FailedScheduling` report.
    fn post_filter(
        &mut self,
        key: &ObjectKey,
        obj: Arc<Value>,
        info: &PodInfo,
        diag: filter::Diagnosis,
    ) {
        let budgets: Vec<Budget> = if diag.potential.is_empty() {
            Vec::new()
        } else {
            self.budgets
                .list_all()
                .iter()
                .map(|b| Budget::parse(b))
                .collect()
        };
        let (outcome, displaced) = self.core.preempt(info, &diag, &budgets);
        for k in displaced {
            if let Some((ns, name)) = k.split_once('/') {
                let (registry, ns, name) =
                    (self.registry.clone(), ns.to_string(), name.to_string());
                tokio::spawn(async move { bind::clear_nomination(&registry, &ns, &name).await });
            }
        }
        match outcome {
            Outcome::Nominate(c) => {
                tracing::info!(pod = %key, node = %c.node, victims = c.victims.len(), "preempting pods of lower priority");
                let msg = diag.message_with(None);
                let node = c.node.clone();
                let (registry, preemptor) = (self.registry.clone(), obj.clone());
                tokio::spawn(async move {
                    for v in c.victims.iter().filter(|v| !v.deleting) {
                        if let Err(e) = bind::preempt_victim(
                            &registry,
                            &v.namespace,
                            &v.name,
                            &preemptor,
                            &c.node,
                        )
                        .await
                        {
                            tracing::debug!(victim = %v.key(), error = %e, "cannot preempt");
                        }
                    }
                });
                self.unschedulable_now(key, obj, msg, Some(node));
            }
            Outcome::Fail { message, clear } => {
                let msg = diag.message_with(Some(&message));
                self.unschedulable_now(key, obj, msg, clear.then(String::new));
            }
        }
    }

    /// Parks a pod that fits nowhere and reports why (`FailedScheduling`), with the
    /// node it is nominated to (`Some("")`: clear a nomination).
    fn unschedulable_now(
        &mut self,
        key: &ObjectKey,
        obj: Arc<Value>,
        msg: String,
        nominated: Option<String>,
    ) {
        tracing::debug!(pod = %key, message = %msg, "pod is unschedulable");
        self.unschedulable.insert(key.clone());
        let (registry, failures) = (self.registry.clone(), self.failures.clone());
        tokio::spawn(async move {
            failures
                .record(
                    &registry,
                    &obj,
                    &msg,
                    DEFAULT_SCHEDULER,
                    nominated.as_deref(),
                )
                .await;
        });
    }
}

#[cfg(test)]
mod tests;
