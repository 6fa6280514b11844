//! The filters that decide whether a pod may run on a node, in upstream's plugin order
//! (NodeUnschedulable, TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit,
//! InterPodAffinity), each failure with upstream's reason text, and the
//! `FailedScheduling` message built from them (upstream's FitError: a sorted histogram
//! of reasons, then the post-filter (preemption) summary).

use super::cache::Cache;
use super::types::{tolerated, NodeInfo, PodInfo, Resources, Taint};
use std::collections::BTreeMap;

/// The taint a cordoned node is treated as having.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Why a node cannot take a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Upstream's reason text ("Insufficient cpu", ...).
    pub reason: &'static str,
    /// True when evicting lower-priority pods could help (upstream `Unschedulable`), false
    /// for `UnschedulableAndUnresolvable`.
    pub resolvable: bool,
}

const fn unresolvable(reason: &'static str) -> Failure {
    Failure {
        reason,
        resolvable: false,
    }
}

const fn resolvable(reason: &'static str) -> Failure {
    Failure {
        reason,
        resolvable: true,
    }
}

/// Runs the filters; an empty result means the pod fits. Like upstream, the first
/// failing filter decides (the resource filter may give several reasons).
pub fn filter(pod: &PodInfo, node: &NodeInfo, cache: &Cache) -> Vec<Failure> {
    if node.unschedulable {
        let t = Taint {
            key: TAINT_UNSCHEDULABLE.into(),
            value: String::new(),
            effect: "NoSchedule".into(),
        };
        if !tolerated(&pod.tolerations, &t) {
            return vec![unresolvable("node(s) were unschedulable")];
        }
    }
    if node
        .taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .any(|t| !tolerated(&pod.tolerations, t))
    {
        return vec![unresolvable("node(s) had untolerated taint(s)")];
    }
    if !node_affinity_fits(pod, node) {
        return vec![unresolvable(
            "node(s) didn't match Pod's node affinity/selector",
        )];
    }
    if !pod.host_ports.is_empty()
        && node
            .pods
            .values()
            .flat_map(|p| p.host_ports.iter())
            .any(|used| pod.host_ports.iter().any(|want| want.conflicts(used)))
    {
        return vec![resolvable(
            "node(s) didn't have free ports for the requested pod ports",
        )];
    }
    let fit = resources_fit(pod, node, &reserved(pod, node, cache));
    if !fit.is_empty() {
        return fit;
    }
    inter_pod_affinity(pod, node, cache)
}

/// nodeSelector and required node affinity.
pub fn node_affinity_fits(pod: &PodInfo, node: &NodeInfo) -> bool {
    pod.node_selector
        .iter()
        .all(|(k, v)| node.label(k) == Some(v.as_str()))
        && pod
            .required_terms
            .as_ref()
            .is_none_or(|terms| terms.iter().any(|t| t.matches(node)))
}

/// Room held on a node by pods nominated there (after preemption) with at least the
/// incoming pod's priority: what they need and how many they are (upstream's
/// RunFilterPluginsWithNominatedPods, for resources).
fn reserved(pod: &PodInfo, node: &NodeInfo, cache: &Cache) -> (Resources, i64) {
    let mut sum = (Resources::default(), 0);
    if !cache.has_nominations() {
        return sum;
    }
    let key = pod.key();
    for p in cache.nominated_on(&node.name, &key) {
        if p.priority >= pod.priority {
            sum.0.add(&p.requests);
            sum.1 += 1;
        }
    }
    sum
}

fn resources_fit(pod: &PodInfo, node: &NodeInfo, reserved: &(Resources, i64)) -> Vec<Failure> {
    let mut out = Vec::new();
    if node.pods.len() as i64 + reserved.1 + 1 > node.max_pods {
        out.push(resolvable("Too many pods"));
    }
    let r = &pod.requests;
    let mut u = node.requested;
    u.add(&reserved.0);
    let (a, u) = (&node.allocatable, &u);
    if r.milli_cpu > 0 && r.milli_cpu > a.milli_cpu - u.milli_cpu {
        out.push(resolvable("Insufficient cpu"));
    }
    if r.memory > 0 && r.memory > a.memory - u.memory {
        out.push(resolvable("Insufficient memory"));
    }
    if r.ephemeral > 0 && r.ephemeral > a.ephemeral - u.ephemeral {
        out.push(resolvable("Insufficient ephemeral-storage"));
    }
    out
}

/// The nodes in `node`'s topology domain for `key` (none when the node lacks the label).
pub fn domain<'a>(cache: &'a Cache, node: &'a NodeInfo, key: &'a str) -> Vec<&'a NodeInfo> {
    let Some(value) = node.label(key) else {
        return Vec::new();
    };
    if key == "kubernetes.io/hostname" {
        // Hostnames are unique per node: skip the scan.
        return vec![node];
    }
    cache
        .nodes()
        .filter(|n| n.label(key) == Some(value))
        .collect()
}

fn inter_pod_affinity(pod: &PodInfo, node: &NodeInfo, cache: &Cache) -> Vec<Failure> {
    // Existing pods' required anti-affinity against the incoming pod.
    for other_key in cache.pods_with_anti_affinity() {
        let Some((other, other_node)) = cache.assigned(other_key) else {
            continue;
        };
        // A victim taken off a copy of this node during preemption no longer counts.
        if other_node.name == node.name && !node.pods.contains_key(other_key) {
            continue;
        }
        for term in &other.anti_affinity {
            if term.selects(pod)
                && other_node.label(&term.topology_key).is_some()
                && other_node.label(&term.topology_key) == node.label(&term.topology_key)
            {
                return vec![resolvable(
                    "node(s) didn't satisfy existing pods anti-affinity rules",
                )];
            }
        }
    }
    for term in &pod.anti_affinity {
        let clash = domain(cache, node, &term.topology_key)
            .iter()
            .any(|n| n.pods.values().any(|p| term.selects(p)));
        if clash {
            return vec![resolvable("node(s) didn't match pod anti-affinity rules")];
        }
    }
    for term in &pod.affinity {
        let found = domain(cache, node, &term.topology_key)
            .iter()
            .any(|n| n.pods.values().any(|p| term.selects(p)));
        if !found {
            // The first pod of a group that selects itself may go anywhere with the label,
            // when no pod anywhere matches yet.
            let first = term.selects(pod)
                && node.label(&term.topology_key).is_some()
                && !cache
                    .nodes()
                    .any(|n| n.pods.values().any(|p| term.selects(p)));
            if !first {
                return vec![unresolvable("node(s) didn't match pod affinity rules")];
            }
        }
    }
    Vec::new()
}

/// Per-node failures of one attempt, summarized as upstream's FitError.
#[derive(Debug, Default)]
pub struct Diagnosis {
    /// How many nodes were considered.
    pub nodes: usize,
    /// Reason → number of nodes.
    pub reasons: BTreeMap<&'static str, usize>,
    /// Nodes where preemption could help (only resolvable failures), in visit order.
    pub potential: Vec<String>,
}

/// What the DynamicResources post-filter (which runs before preemption) says when it
/// has nothing to do.
const NO_CLAIMS: &str = "no new claims to deallocate";

impl Diagnosis {
    /// Records one node's failures.
    pub fn add(&mut self, node: &str, failures: &[Failure]) {
        for f in failures {
            *self.reasons.entry(f.reason).or_insert(0) += 1;
        }
        if failures.iter().all(|f| f.resolvable) {
            self.potential.push(node.to_string());
        }
    }

    /// `0/3 nodes are available: 1 Insufficient cpu, 2 ...` (or upstream's text when
    /// there are no nodes).
    pub fn filter_message(&self) -> String {
        if self.nodes == 0 {
            return "no nodes available to schedule pods".to_string();
        }
        format!(
            "0/{} nodes are available: {}.",
            self.nodes,
            histogram(self.reasons.iter().map(|(r, c)| (*r, *c)))
        )
    }

    /// The `FailedScheduling` message, as upstream's scheduler (v1.35, with its
    /// dynamic-resources and default-preemption post-filters) words it: `preemption`
    /// is the preemption plugin's text, None when it nominated a node (it then says
    /// nothing).
    pub fn message_with(&self, preemption: Option<&str>) -> String {
        let mut msg = self.filter_message();
        if self.nodes > 0 {
            if let Some(p) = preemption {
                msg.push_str(&format!(" {NO_CLAIMS}, preemption: {p}"));
            }
        }
        msg
    }

    /// The message when no node holds a pod of lower priority: resolvable nodes have
    /// no victims, the others are not helped by preemption.
    pub fn message(&self) -> String {
        let n = self.nodes;
        let resolvable = self.potential.len();
        let mut post = Vec::new();
        if n > resolvable {
            post.push(("Preemption is not helpful for scheduling", n - resolvable));
        }
        if resolvable > 0 {
            post.push(("No preemption victims found for incoming pod", resolvable));
        }
        let p = format!(
            "0/{n} nodes are available: {}.",
            histogram(post.into_iter())
        );
        self.message_with(Some(&p))
    }
}

/// "1 Insufficient cpu, 2 node(s) had ..." sorted as strings, as upstream does.
pub fn histogram<'a>(items: impl Iterator<Item = (&'a str, usize)>) -> String {
    let mut parts: Vec<String> = items.map(|(r, c)| format!("{c} {r}")).collect();
    parts.sort();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_matches_upstream() {
        let mut d = Diagnosis {
            nodes: 3,
            ..Default::default()
        };
        d.add("a", &[resolvable("Insufficient cpu")]);
        d.add("b", &[unresolvable("node(s) had untolerated taint(s)")]);
        d.add("c", &[unresolvable("node(s) had untolerated taint(s)")]);
        assert_eq!(
            d.message(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint(s). \
             no new claims to deallocate, preemption: 0/3 nodes are available: \
             1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling."
        );
    }
}
