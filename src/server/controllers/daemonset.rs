//! The DaemonSet controller, as upstream's: one pod per eligible node (nodeSelector,
//! required node affinity, taints against the pod's tolerations plus the ones upstream
//! adds to every daemon pod), created with required node affinity on the node's
//! `metadata.name` so the scheduler binds it there; new nodes get a pod, pods leave
//! nodes that stop qualifying and nodes that are gone, failed daemon pods are replaced;
//! RollingUpdate (maxUnavailable) and OnDelete by the `controller-revision-hash` label
//! (with a ControllerRevision per template); and the status numbers `kubectl get ds`
//! shows.

use super::owned::{
    controller_ref, create_pod, delete_object, from_template, int_or_percent, is_active,
    is_available, is_ready, now_secs, owned_by, phase, set_label, template_hash, ControllerError,
    EventRecorder,
};
use super::revisions::ensure_revision;
use crate::api::meta;
use crate::server::informer::{
    builtin, run_controller, Informer, InformerEvent, Informers, ObjectKey, WorkQueue,
};
use crate::server::registry::Registry;
use crate::server::scheduler::filter::node_affinity_fits;
use crate::server::scheduler::types::{tolerated, NodeInfo, PodInfo};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;

const COMPONENT: &str = "daemonset-controller";
pub use super::revisions::REVISION_LABEL;
/// The pod label with the DaemonSet generation a pod was made from.
const GENERATION_LABEL: &str = "pod-template-generation";

/// The tolerations upstream adds to every daemon pod (key, effect), so daemons run on
/// nodes that are not ready, unreachable, under pressure or cordoned.
pub const DAEMON_TOLERATIONS: &[(&str, &str)] = &[
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];
/// Added only for host-network daemons.
const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

struct DaemonSetController {
    registry: Registry,
    revisions: Informer,
    events: EventRecorder,
    dss: Informer,
    pods: Informer,
    nodes: Informer,
}

/// Runs the DaemonSet controller until `shutdown` flips.
pub async fn run(informers: Informers, shutdown: watch::Receiver<bool>) {
    let dss = informers.get(builtin("apps", "v1", "daemonsets"));
    let pods = informers.get(builtin("", "v1", "pods"));
    let nodes = informers.get(builtin("", "v1", "nodes"));
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    super::owned::enqueue_self(&dss, queue.clone(), &shutdown);
    super::owned::enqueue_owners(&pods, dss.clone(), "DaemonSet", queue.clone(), &shutdown);
    let mut node_events = nodes.subscribe();
    let (q, all) = (queue.clone(), dss.clone());
    super::owned::spawn_until(&shutdown, async move {
        while let Some(ev) = node_events.recv().await {
            let relevant = match &ev {
                InformerEvent::Updated { old, new } => node_changed(old, new),
                _ => true,
            };
            if relevant {
                all.list_all().iter().for_each(|d| q.add(ObjectKey::of(d)));
            }
        }
    });
    let revisions = informers.get(builtin("apps", "v1", "controllerrevisions"));
    for i in [&dss, &pods, &nodes, &revisions] {
        i.wait_synced().await;
    }
    for d in dss.list_all() {
        queue.add(ObjectKey::of(&d));
    }
    let ctl = Arc::new(DaemonSetController {
        registry: informers.registry().clone(),
        revisions,
        events: EventRecorder::new(informers.registry().clone(), COMPONENT),
        dss,
        pods,
        nodes,
    });
    queue.shut_down_on(shutdown.clone());
    run_controller("daemonset", queue, 2, move |key: ObjectKey| {
        let ctl = ctl.clone();
        async move { ctl.sync(&key).await }
    })
    .await;
}

/// Whether a node update can change where daemons run (not a heartbeat).
fn node_changed(old: &Value, new: &Value) -> bool {
    let ready = |n: &Value| {
        n["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .map(|c| c["status"].clone())
    };
    meta::labels(old) != meta::labels(new) || old["spec"] != new["spec"] || ready(old) != ready(new)
}

/// The pod template's spec with the daemon tolerations added (where missing).
pub fn add_daemon_tolerations(spec: &mut Value) {
    let mut list: Vec<Value> = spec["tolerations"].as_array().cloned().unwrap_or_default();
    let host_network = spec["hostNetwork"].as_bool() == Some(true);
    let extra = host_network.then_some((NETWORK_UNAVAILABLE, "NoSchedule"));
    for (key, effect) in DAEMON_TOLERATIONS.iter().copied().chain(extra) {
        if list
            .iter()
            .any(|t| t["key"] == key && t["effect"] == effect)
        {
            continue;
        }
        list.push(json!({"key": key, "operator": "Exists", "effect": effect}));
    }
    spec["tolerations"] = json!(list);
}

/// The node a daemon pod is for: its nodeName, or the `metadata.name` its required node
/// affinity names.
pub fn target_node(pod: &Value) -> Option<String> {
    if let Some(n) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        return Some(n.to_string());
    }
    let terms = pod["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        .as_array()?;
    terms.iter().find_map(|t| {
        t["matchFields"].as_array()?.iter().find_map(|f| {
            (f["key"] == "metadata.name" && f["operator"] == "In")
                .then(|| f["values"][0].as_str().map(String::from))
                .flatten()
        })
    })
}

/// Whether the daemon (its pod template with the daemon tolerations) may start on
/// `node`, and whether an existing pod may keep running there (NoExecute only).
pub fn eligibility(template_pod: &PodInfo, node: &Value) -> (bool, bool) {
    let mut info = NodeInfo::default();
    info.set_node(node);
    if !node_affinity_fits(template_pod, &info) {
        return (false, false);
    }
    let ok = |effect: &str| {
        info.taints
            .iter()
            .filter(|t| t.effect == effect)
            .all(|t| tolerated(&template_pod.tolerations, t))
    };
    let keep = ok("NoExecute");
    (keep && ok("NoSchedule"), keep)
}

/// The daemon pod for `node`.
pub fn new_pod(ds: &Value, node: &str, hash: &str) -> Value {
    let mut pod = from_template(
        &ds["spec"]["template"],
        "v1",
        "Pod",
        meta::namespace(ds),
        controller_ref(ds, "apps/v1", "DaemonSet"),
    );
    meta::metadata_mut(&mut pod)
        .insert("generateName".into(), json!(format!("{}-", meta::name(ds))));
    set_label(&mut pod, REVISION_LABEL, hash);
    let generation = ds["metadata"]["generation"]
        .as_i64()
        .unwrap_or(1)
        .to_string();
    set_label(&mut pod, GENERATION_LABEL, &generation);
    add_daemon_tolerations(&mut pod["spec"]);
    // Upstream replaces the required node affinity with the node's name: the controller
    // already checked the template's own terms against this node.
    if !pod["spec"]["affinity"].is_object() {
        pod["spec"]["affinity"] = json!({});
    }
    if !pod["spec"]["affinity"]["nodeAffinity"].is_object() {
        pod["spec"]["affinity"]["nodeAffinity"] = json!({});
    }
    pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({
        "nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": [node]}
        ]}]
    });
    pod
}

impl DaemonSetController {
    async fn sync(&self, key: &ObjectKey) -> Result<(), ControllerError> {
        let Some(ds) = self.dss.get(&key.namespace, &key.name) else {
            return Ok(());
        };
        if meta::is_deleting(&ds) {
            return Ok(());
        }
        let ns = meta::namespace(&ds);
        let template = &ds["spec"]["template"];
        let hash = template_hash(template);
        let name = format!("{}-{hash}", meta::name(&ds));
        ensure_revision(
            &self.registry,
            &self.revisions,
            &ds,
            "DaemonSet",
            &name,
            &hash,
        )
        .await?;
        let mut probe =
            json!({"metadata": template["metadata"].clone(), "spec": template["spec"].clone()});
        add_daemon_tolerations(&mut probe["spec"]);
        let probe = PodInfo::parse(&probe);
        let min_ready = ds["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
        let now = now_secs();

        let mut by_node: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
        for p in owned_by(&self.pods, ns, meta::uid(&ds)) {
            by_node
                .entry(target_node(&p).unwrap_or_default())
                .or_default()
                .push(p);
        }
        let (mut desired, mut current, mut misscheduled, mut ready) = (0, 0, 0, 0);
        let (mut available, mut updated) = (0i64, 0);
        // (pod, available) of old-revision pods on nodes that should run them.
        let mut old: Vec<(Arc<Value>, bool)> = Vec::new();
        for node in self.nodes.list_all() {
            let name = meta::name(&node).to_string();
            let (should_run, may_stay) = eligibility(&probe, &node);
            let pods = by_node.remove(&name).unwrap_or_default();
            for p in pods
                .iter()
                .filter(|p| phase(p) == "Failed" && !meta::is_deleting(p))
            {
                let msg = format!(
                    "Found failed daemon pod {ns}/{} on node {name}, will try to kill it",
                    meta::name(p)
                );
                self.events.warning(&ds, "FailedDaemonPod", &msg).await;
                self.delete(&ds, p).await?;
            }
            let active: Vec<&Arc<Value>> = pods.iter().filter(|p| is_active(p)).collect();
            if should_run {
                desired += 1;
            }
            if !may_stay
                || (!should_run
                    && !active.is_empty()
                    && active.iter().all(|p| p["spec"]["nodeName"].is_null()))
            {
                for p in &active {
                    self.delete(&ds, p).await?;
                }
                if !active.is_empty() {
                    misscheduled += 1;
                }
                continue;
            }
            if !should_run {
                // Running already and may stay (a NoSchedule taint came later).
                if !active.is_empty() {
                    misscheduled += 1;
                }
                continue;
            }
            let Some(keep) = active.first() else {
                // Wait for a pod still shutting down before starting its successor.
                if !pods
                    .iter()
                    .any(|p| meta::is_deleting(p) && phase(p) != "Failed")
                {
                    self.create(&ds, &name, &hash).await?;
                }
                continue;
            };
            for extra in &active[1..] {
                self.delete(&ds, extra).await?;
            }
            current += 1;
            let is_avail = is_available(keep, min_ready, now);
            if is_ready(keep) {
                ready += 1;
            }
            if is_avail {
                available += 1;
            }
            if keep["metadata"]["labels"][REVISION_LABEL] == hash.as_str() {
                updated += 1;
            } else {
                old.push(((*keep).clone(), is_avail));
            }
        }
        // Pods for nodes that no longer exist: nothing will stop them, so they go at once.
        for p in by_node.into_values().flatten() {
            if p["spec"]["nodeName"].is_null() && !is_active(&p) {
                continue;
            }
            if meta::is_deleting(&p) && p["metadata"]["deletionGracePeriodSeconds"] == 0 {
                continue;
            }
            super::owned::delete_with_grace(&self.registry, &self.pods, &p, Some(0))
                .await
                .map_err(|e| ControllerError::api("deleting a daemon pod of a gone node", e))?;
            let msg = format!("Deleted pod: {}", meta::name(&p));
            self.events.normal(&ds, "SuccessfulDelete", &msg).await;
        }
        self.roll(&ds, desired, available, old).await?;

        let status = json!({
            "currentNumberScheduled": current,
            "numberMisscheduled": misscheduled,
            "desiredNumberScheduled": desired,
            "numberReady": ready,
            "observedGeneration": ds["metadata"]["generation"].as_i64().unwrap_or(1),
            "updatedNumberScheduled": updated,
            "numberAvailable": available,
            "numberUnavailable": (desired - available).max(0),
        });
        let mut status = status;
        for k in [
            "numberAvailable",
            "numberUnavailable",
            "updatedNumberScheduled",
        ] {
            if status[k] == 0 {
                if let Some(m) = status.as_object_mut() {
                    m.remove(k);
                }
            }
        }
        if status != ds["status"] {
            let uid = meta::uid(&ds).to_string();
            let r = self
                .registry
                .update_with(self.dss.resource(), ns, meta::name(&ds), |o| {
                    if meta::uid(o) == uid {
                        o["status"] = status.clone();
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = r.or_else(|e| if e.code == 404 { Ok(json!({})) } else { Err(e) }) {
                return Err(ControllerError::api("updating daemonset status", e));
            }
        }
        Ok(())
    }

    /// RollingUpdate: replaces old-revision pods, the unavailable ones at once and the
    /// available ones while fewer than maxUnavailable daemons are unavailable.
    async fn roll(
        &self,
        ds: &Value,
        desired: i64,
        available: i64,
        old: Vec<(Arc<Value>, bool)>,
    ) -> Result<(), ControllerError> {
        let strategy = &ds["spec"]["updateStrategy"];
        if strategy["type"] == "OnDelete" {
            return Ok(());
        }
        let max_unavailable = int_or_percent(
            &strategy["rollingUpdate"]["maxUnavailable"],
            desired,
            true,
            1,
        )
        .max(1);
        let mut unavailable = desired - available;
        for (p, avail) in old {
            if avail {
                if unavailable >= max_unavailable {
                    continue;
                }
                unavailable += 1;
            }
            self.delete(ds, &p).await?;
        }
        Ok(())
    }

    async fn create(&self, ds: &Value, node: &str, hash: &str) -> Result<(), ControllerError> {
        let pod = new_pod(ds, node, hash);
        match create_pod(&self.registry, &self.pods, meta::namespace(ds), pod).await {
            Ok(p) => {
                let msg = format!("Created pod: {}", meta::name(&p));
                self.events.normal(ds, "SuccessfulCreate", &msg).await;
                Ok(())
            }
            Err(e) => {
                let msg = format!("Error creating: {}", e.message);
                self.events.warning(ds, "FailedCreate", &msg).await;
                Err(ControllerError::api("creating a daemon pod", e))
            }
        }
    }

    async fn delete(&self, ds: &Value, pod: &Value) -> Result<(), ControllerError> {
        delete_object(&self.registry, &self.pods, pod)
            .await
            .map_err(|e| ControllerError::api("deleting a daemon pod", e))?;
        let msg = format!("Deleted pod: {}", meta::name(pod));
        self.events.normal(ds, "SuccessfulDelete", &msg).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(labels: Value, taints: Value) -> Value {
        json!({"metadata": {"name": "n1", "labels": labels}, "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    }

    fn probe(spec: Value) -> PodInfo {
        let mut pod = json!({"metadata": {}, "spec": spec});
        add_daemon_tolerations(&mut pod["spec"]);
        PodInfo::parse(&pod)
    }

    #[test]
    fn daemons_tolerate_node_problems_but_not_other_taints() {
        let p = probe(json!({"containers": []}));
        let unreachable = json!([{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]);
        assert_eq!(eligibility(&p, &node(json!({}), unreachable)), (true, true));
        let dedicated = json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]);
        assert_eq!(eligibility(&p, &node(json!({}), dedicated)), (false, true));
        let evict = json!([{"key": "dedicated", "value": "db", "effect": "NoExecute"}]);
        assert_eq!(eligibility(&p, &node(json!({}), evict)), (false, false));
    }

    #[test]
    fn node_selector_limits_the_nodes() {
        let p = probe(json!({"nodeSelector": {"disk": "ssd"}}));
        assert_eq!(
            eligibility(&p, &node(json!({"disk": "ssd"}), json!([]))).0,
            true
        );
        assert_eq!(
            eligibility(&p, &node(json!({"disk": "hdd"}), json!([]))).0,
            false
        );
    }

    #[test]
    fn pods_are_pinned_to_their_node_by_match_fields() {
        let ds = json!({"metadata": {"name": "agent", "namespace": "kube-system", "uid": "u", "generation": 2},
            "spec": {"template": {"metadata": {"labels": {"app": "a"}},
                "spec": {"containers": [{"name": "c"}],
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                        {"nodeSelectorTerms": [{"matchExpressions": [{"key": "x", "operator": "Exists"}]}]}}}}}}});
        let pod = new_pod(&ds, "node-2", "abc");
        assert_eq!(target_node(&pod).as_deref(), Some("node-2"));
        assert_eq!(pod["metadata"]["labels"][REVISION_LABEL], "abc");
        assert_eq!(pod["metadata"]["labels"][GENERATION_LABEL], "2");
        assert_eq!(
            pod["spec"]["tolerations"].as_array().unwrap().len(),
            DAEMON_TOLERATIONS.len()
        );
        let terms = &pod["spec"]["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
        assert_eq!(terms.as_array().unwrap().len(), 1);
    }
}
