//! The scheduler's node infos: every node with the pods assigned (or assumed) to it and
//! their summed requests, updated incrementally from informer events, so that a
//! decision reads nothing but memory.

use super::types::{NodeInfo, PodInfo};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Nodes and their pods.
#[derive(Default)]
pub struct Cache {
    nodes: HashMap<String, NodeInfo>,
    /// Node names in a stable order (for sampling and round-robin starts).
    order: Vec<String>,
    /// Pod key → the node it is accounted on, and the pod (kept for nodes that appear
    /// after their pods).
    pod_node: HashMap<String, (String, Arc<PodInfo>)>,
    /// Pods placed by the scheduler whose binding is not confirmed yet.
    assumed: HashSet<String>,
    /// Placed pods that carry required anti-affinity terms.
    anti_affinity: HashSet<String>,
    /// Pending pods nominated to a node by preemption: pod key → (node, pod). They
    /// reserve room there against pods of lower or equal priority.
    nominated: HashMap<String, (String, Arc<PodInfo>)>,
}

/// What changed about a node, for deciding whether waiting pods should retry.
#[derive(Debug, PartialEq, Eq)]
pub enum NodeChange {
    /// Nothing a filter looks at.
    None,
    /// Something a filter looks at (new node, labels, taints, allocatable, cordon).
    Relevant,
}

impl Cache {
    /// Adds or updates a node from its object.
    pub fn set_node(&mut self, node: &serde_json::Value) -> NodeChange {
        let name = crate::api::meta::name(node).to_string();
        match self.nodes.get_mut(&name) {
            Some(info) => {
                let before = (
                    info.labels.clone(),
                    info.taints.clone(),
                    info.unschedulable,
                    info.allocatable,
                    info.max_pods,
                );
                info.set_node(node);
                let after = (
                    info.labels.clone(),
                    info.taints.clone(),
                    info.unschedulable,
                    info.allocatable,
                    info.max_pods,
                );
                if before == after {
                    NodeChange::None
                } else {
                    NodeChange::Relevant
                }
            }
            None => {
                let mut info = NodeInfo::default();
                info.set_node(node);
                for (n, p) in self.pod_node.values() {
                    if *n == name {
                        info.add_pod(p.clone());
                    }
                }
                self.nodes.insert(name.clone(), info);
                self.order.push(name);
                NodeChange::Relevant
            }
        }
    }

    /// Removes a node (its pods stay known by key until they go).
    pub fn remove_node(&mut self, name: &str) {
        if self.nodes.remove(name).is_some() {
            self.order.retain(|n| n != name);
        }
    }

    /// Accounts a pod that is bound (`spec.nodeName` set) or assumed. A pod the API
    /// shows bound is no longer merely assumed.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>, node: &str, assumed: bool) {
        let key = pod.key();
        if let Some((prev, _)) = self.pod_node.get(&key).cloned() {
            if prev != node {
                if let Some(n) = self.nodes.get_mut(&prev) {
                    n.remove_pod(&key);
                }
            }
        }
        if !pod.anti_affinity.is_empty() {
            self.anti_affinity.insert(key.clone());
        }
        if assumed {
            self.assumed.insert(key.clone());
        } else {
            self.assumed.remove(&key);
        }
        self.pod_node.insert(key, (node.to_string(), pod.clone()));
        // A pod bound to a node the scheduler has not seen yet is accounted when the
        // node appears (`set_node`).
        if let Some(n) = self.nodes.get_mut(node) {
            n.add_pod(pod);
        }
    }

    /// Drops a pod from the accounting. Returns whether it was accounted.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        self.assumed.remove(key);
        self.anti_affinity.remove(key);
        match self.pod_node.remove(key) {
            Some((node, _)) => {
                if let Some(n) = self.nodes.get_mut(&node) {
                    n.remove_pod(key);
                }
                true
            }
            None => false,
        }
    }

    /// Whether the pod is placed (bound or assumed).
    pub fn is_placed(&self, key: &str) -> bool {
        self.pod_node.contains_key(key)
    }

    /// Whether the pod is assumed (binding in flight).
    pub fn is_assumed(&self, key: &str) -> bool {
        self.assumed.contains(key)
    }

    /// A placed pod and its node.
    pub fn assigned(&self, key: &str) -> Option<(&PodInfo, &NodeInfo)> {
        let node = self.nodes.get(&self.pod_node.get(key)?.0)?;
        Some((node.pods.get(key)?, node))
    }

    /// Keys of placed pods with required anti-affinity terms.
    pub fn pods_with_anti_affinity(&self) -> impl Iterator<Item = &String> {
        self.anti_affinity.iter()
    }

    /// Every node.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values()
    }

    /// The `i`-th node of the stable order.
    pub fn node_at(&self, i: usize) -> Option<&NodeInfo> {
        self.order.get(i).and_then(|n| self.nodes.get(n))
    }

    /// One node.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    /// How many nodes there are.
    pub fn node_count(&self) -> usize {
        self.order.len()
    }

    /// The pods whose binding is in flight, with their nodes.
    pub fn assumed_pods(&self) -> Vec<(Arc<PodInfo>, String)> {
        self.assumed
            .iter()
            .filter_map(|k| self.pod_node.get(k))
            .map(|(n, p)| (p.clone(), n.clone()))
            .collect()
    }

    /// Forgets everything but the nominations (before a rebuild from the informers).
    pub fn clear(&mut self) {
        let nominated = std::mem::take(&mut self.nominated);
        *self = Cache::default();
        self.nominated = nominated;
    }

    /// Nominates a pending pod to `node` (replacing an earlier nomination).
    pub fn nominate(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.nominated.insert(pod.key(), (node.to_string(), pod));
    }

    /// Drops a pod's nomination. Returns the node it was nominated to.
    pub fn unnominate(&mut self, key: &str) -> Option<String> {
        self.nominated.remove(key).map(|(n, _)| n)
    }

    /// The node a pod is nominated to.
    pub fn nominated_node(&self, key: &str) -> Option<&str> {
        self.nominated.get(key).map(|(n, _)| n.as_str())
    }

    /// Pods nominated to `node`, except `except`.
    pub fn nominated_on<'a>(
        &'a self,
        node: &'a str,
        except: &'a str,
    ) -> impl Iterator<Item = &'a Arc<PodInfo>> + 'a {
        self.nominated
            .iter()
            .filter(move |(k, (n, _))| n == node && k.as_str() != except)
            .map(|(_, (_, p))| p)
    }

    /// Whether any pod is nominated anywhere (the filters skip the reservation work
    /// otherwise).
    pub fn has_nominations(&self) -> bool {
        !self.nominated.is_empty()
    }
}
