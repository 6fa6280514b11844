//! The node authorizer: what a kubelet identity (`system:node:<name>` in `system:nodes`)
//! may do, like upstream's Node authorizer plus the cheap parts of the NodeRestriction
//! admission plugin.
//!
//! A node may read nodes, pods, services and endpoints, create events, change only its
//! own Node (and its status) and its own Lease in `kube-node-lease`, change the status of
//! and delete pods bound to it, and read only the secrets, configmaps, claims and service
//! accounts that pods bound to it refer to ([`NodeGraph`], kept current by watching
//! pods), and request tokens only for those service accounts.
//!
//! k3rs runs the service proxy and node-local DNS inside the agent under the node's
//! identity, so the read rules of `system:node-proxier` are included too.

use super::rules::PolicyRule;
use super::{Attributes, Decision};
use crate::server::http::auth::Identity;
use serde_json::Value;
use std::collections::HashMap;

/// The group of node identities.
pub const NODES_GROUP: &str = "system:nodes";
/// The namespace of node heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node name of a node identity, `None` for other users.
pub fn node_name(user: &Identity) -> Option<&str> {
    let name = user.user.strip_prefix("system:node:")?;
    (!name.is_empty() && user.in_group(NODES_GROUP)).then_some(name)
}

/// Kinds of objects a pod refers to that nodes may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefKind {
    /// A Secret (volumes, env, imagePullSecrets).
    Secret,
    /// A ConfigMap (volumes, env).
    ConfigMap,
    /// A PersistentVolumeClaim (volumes, generic ephemeral volumes).
    Claim,
    /// The pod's ServiceAccount.
    ServiceAccount,
}

impl RefKind {
    fn of_resource(resource: &str) -> Option<RefKind> {
        Some(match resource {
            "secrets" => RefKind::Secret,
            "configmaps" => RefKind::ConfigMap,
            "persistentvolumeclaims" => RefKind::Claim,
            "serviceaccounts" => RefKind::ServiceAccount,
            _ => return None,
        })
    }
}

/// One referenced object: kind, namespace, name.
pub type RefKey = (RefKind, String, String);

/// Which pods are bound to which node, and which objects each node's pods refer to.
#[derive(Debug, Default)]
pub struct NodeGraph {
    /// `namespace/name` of a bound pod → (node, its references).
    pods: HashMap<String, (String, Vec<RefKey>)>,
    /// Referenced object → node → number of its pods referring to it.
    refs: HashMap<RefKey, HashMap<String, u32>>,
}

impl NodeGraph {
    /// Records a pod's current state (a pod not bound to a node is dropped).
    pub fn put_pod(&mut self, pod: &Value) {
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
        let name = pod["metadata"]["name"].as_str().unwrap_or("");
        let key = format!("{ns}/{name}");
        self.remove_pod(&key);
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
        if node.is_empty() {
            return;
        }
        let refs = pod_refs(pod);
        for r in &refs {
            *self
                .refs
                .entry(r.clone())
                .or_default()
                .entry(node.to_string())
                .or_default() += 1;
        }
        self.pods.insert(key, (node.to_string(), refs));
    }

    /// Forgets a pod by `namespace/name`.
    pub fn remove_pod(&mut self, key: &str) {
        let Some((node, refs)) = self.pods.remove(key) else {
            return;
        };
        for r in refs {
            if let Some(nodes) = self.refs.get_mut(&r) {
                if let Some(n) = nodes.get_mut(&node) {
                    *n -= 1;
                    if *n == 0 {
                        nodes.remove(&node);
                    }
                }
                if nodes.is_empty() {
                    self.refs.remove(&r);
                }
            }
        }
    }

    /// Forgets everything (before a fresh list).
    pub fn clear(&mut self) {
        self.pods.clear();
        self.refs.clear();
    }

    /// The node a pod is bound to.
    pub fn pod_node(&self, namespace: &str, name: &str) -> Option<&str> {
        self.pods
            .get(&format!("{namespace}/{name}"))
            .map(|(n, _)| n.as_str())
    }

    /// Whether some pod bound to `node` refers to the object.
    pub fn node_uses(&self, node: &str, kind: RefKind, namespace: &str, name: &str) -> bool {
        self.refs
            .get(&(kind, namespace.to_string(), name.to_string()))
            .is_some_and(|nodes| nodes.contains_key(node))
    }
}

/// The objects a pod refers to.
pub fn pod_refs(pod: &Value) -> Vec<RefKey> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or("");
    let spec = &pod["spec"];
    let mut out: Vec<RefKey> = Vec::new();
    let mut add = |kind: RefKind, name: Option<&str>| {
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            let k = (kind, ns.to_string(), n.to_string());
            if !out.contains(&k) {
                out.push(k);
            }
        }
    };
    let sa = spec["serviceAccountName"]
        .as_str()
        .or(spec["serviceAccount"].as_str());
    add(RefKind::ServiceAccount, Some(sa.unwrap_or("default")));
    for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
        add(RefKind::Secret, s["name"].as_str());
    }
    for v in spec["volumes"].as_array().into_iter().flatten() {
        add(RefKind::Secret, v["secret"]["secretName"].as_str());
        add(RefKind::ConfigMap, v["configMap"]["name"].as_str());
        add(
            RefKind::Claim,
            v["persistentVolumeClaim"]["claimName"].as_str(),
        );
        if v["ephemeral"].is_object() {
            let claim = format!("{pod_name}-{}", v["name"].as_str().unwrap_or(""));
            add(RefKind::Claim, Some(&claim));
        }
        for driver in [
            "csi",
            "flexVolume",
            "cephfs",
            "rbd",
            "iscsi",
            "azureFile",
            "scaleIO",
            "storageos",
        ] {
            add(
                RefKind::Secret,
                v[driver]["nodePublishSecretRef"]["name"].as_str(),
            );
            add(RefKind::Secret, v[driver]["secretRef"]["name"].as_str());
        }
        add(RefKind::Secret, v["azureFile"]["secretName"].as_str());
        for src in v["projected"]["sources"].as_array().into_iter().flatten() {
            add(RefKind::Secret, src["secret"]["name"].as_str());
            add(RefKind::ConfigMap, src["configMap"]["name"].as_str());
        }
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            for e in c["envFrom"].as_array().into_iter().flatten() {
                add(RefKind::Secret, e["secretRef"]["name"].as_str());
                add(RefKind::ConfigMap, e["configMapRef"]["name"].as_str());
            }
            for e in c["env"].as_array().into_iter().flatten() {
                add(
                    RefKind::Secret,
                    e["valueFrom"]["secretKeyRef"]["name"].as_str(),
                );
                add(
                    RefKind::ConfigMap,
                    e["valueFrom"]["configMapKeyRef"]["name"].as_str(),
                );
            }
        }
    }
    out
}

/// What nodes may do regardless of the graph: upstream's `system:node` rules (the
/// resources handled above never reach them), the proxier's and DNS reads (see the
/// module docs), discovery and the self reviews. Built once.
pub fn static_rules() -> &'static [PolicyRule] {
    static RULES: std::sync::OnceLock<Vec<PolicyRule>> = std::sync::OnceLock::new();
    RULES.get_or_init(|| {
        [
            "system:node",
            "system:node-proxier",
            "system:kube-dns",
            "system:discovery",
            "system:basic-user",
        ]
        .iter()
        .flat_map(|name| super::bootstrap_roles::rules_of(name))
        .collect()
    })
}

fn deny(reason: impl Into<String>) -> Decision {
    Decision::Deny(reason.into())
}

/// Judges a request of node `node` (see the module docs). A denial here still lets RBAC
/// allow it (upstream's `Node,RBAC` order).
pub fn authorize(graph: &NodeGraph, node: &str, a: &Attributes<'_>) -> Decision {
    if !a.resource_request {
        return allow_if(static_rules().iter().any(|r| r.allows(a)));
    }
    let core = a.group.is_empty();
    match (a.group, a.resource, a.subresource) {
        // Nodes and pods are readable anyway; their status too (`kubectl patch
        // --subresource=status` reads it first).
        ("", "nodes" | "pods", "status") if a.verb == "get" => Decision::Allow,
        ("", "nodes", sub)
            if matches!(a.verb, "update" | "patch") && (sub.is_empty() || sub == "status") =>
        {
            if a.name == node {
                Decision::Allow
            } else {
                deny(format!("node '{node}' cannot modify node '{}'", a.name))
            }
        }
        ("coordination.k8s.io", "leases", "") if a.verb != "create" => {
            let own = a.namespace == LEASE_NAMESPACE && a.name == node;
            if own && matches!(a.verb, "get" | "update" | "patch" | "delete") {
                Decision::Allow
            } else {
                deny(format!(
                    "node '{node}' can only access its own lease in {LEASE_NAMESPACE}"
                ))
            }
        }
        ("", "pods", sub)
            if matches!(
                (a.verb, sub),
                ("update" | "patch", "status") | ("delete", "") | ("create", "eviction")
            ) =>
        {
            match graph.pod_node(a.namespace, a.name) {
                Some(n) if n == node => Decision::Allow,
                _ => deny(format!("node '{node}' can only modify pods bound to it")),
            }
        }
        ("", "serviceaccounts", "token") if a.verb == "create" => {
            allow_if_used(graph, node, RefKind::ServiceAccount, a)
        }
        ("", res, "") if core && RefKind::of_resource(res).is_some() => {
            let kind = RefKind::of_resource(res).unwrap_or(RefKind::Secret);
            if a.verb != "get" {
                return deny("can only get individual resources of this type");
            }
            allow_if_used(graph, node, kind, a)
        }
        _ => allow_if(static_rules().iter().any(|r| r.allows(a))),
    }
}

fn allow_if(ok: bool) -> Decision {
    if ok {
        Decision::Allow
    } else {
        deny("")
    }
}

fn allow_if_used(graph: &NodeGraph, node: &str, kind: RefKind, a: &Attributes<'_>) -> Decision {
    if graph.node_uses(node, kind, a.namespace, a.name) {
        Decision::Allow
    } else {
        deny(format!(
            "no relationship found between node '{node}' and this object"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs<'a>(
        who: &'a Identity,
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        sub: &'a str,
        ns: &'a str,
        name: &'a str,
    ) -> Attributes<'a> {
        Attributes::resource(who, verb, (group, resource, sub), ns, name)
    }

    fn pod(name: &str, node: &str, secret: &str) -> Value {
        json!({
            "metadata": {"namespace": "a", "name": name},
            "spec": {
                "nodeName": node,
                "volumes": [{"name": "v", "secret": {"secretName": secret}}],
                "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]}]
            }
        })
    }

    #[test]
    fn graph_follows_pods() {
        let mut g = NodeGraph::default();
        g.put_pod(&pod("p1", "n1", "s1"));
        g.put_pod(&pod("p2", "n2", "s1"));
        assert!(g.node_uses("n1", RefKind::Secret, "a", "s1"));
        assert!(g.node_uses("n2", RefKind::Secret, "a", "s1"));
        assert!(g.node_uses("n1", RefKind::ConfigMap, "a", "cm"));
        assert!(g.node_uses("n1", RefKind::ServiceAccount, "a", "default"));
        // The pod changes its secret: the old edge goes away.
        g.put_pod(&pod("p1", "n1", "s2"));
        assert!(!g.node_uses("n1", RefKind::Secret, "a", "s1"));
        assert!(g.node_uses("n1", RefKind::Secret, "a", "s2"));
        g.remove_pod("a/p2");
        assert!(!g.node_uses("n2", RefKind::Secret, "a", "s1"));
        assert!(g
            .refs
            .get(&(RefKind::Secret, "a".into(), "s1".into()))
            .is_none());
        // Unbound pods grant nothing.
        g.put_pod(&pod("p3", "", "s3"));
        assert!(!g.node_uses("", RefKind::Secret, "a", "s3"));
    }

    #[test]
    fn node_rules() {
        let mut g = NodeGraph::default();
        g.put_pod(&pod("p1", "n1", "s1"));
        let n1 = Identity::new("system:node:n1", &[NODES_GROUP]);
        assert_eq!(node_name(&n1), Some("n1"));
        assert_eq!(node_name(&Identity::new("system:node:n1", &[])), None);
        let ok = |a: Attributes| authorize(&g, "n1", &a) == Decision::Allow;
        assert!(ok(attrs(&n1, "patch", "", "nodes", "status", "", "n1")));
        assert!(!ok(attrs(&n1, "patch", "", "nodes", "status", "", "n2")));
        assert!(!ok(attrs(&n1, "update", "", "nodes", "", "", "n2")));
        assert!(ok(attrs(&n1, "list", "", "nodes", "", "", "")));
        let lease = |verb, name| {
            attrs(
                &n1,
                verb,
                "coordination.k8s.io",
                "leases",
                "",
                LEASE_NAMESPACE,
                name,
            )
        };
        assert!(ok(lease("update", "n1")));
        assert!(!ok(lease("update", "n2")));
        assert!(ok(lease("create", "")));
        assert!(ok(attrs(&n1, "patch", "", "pods", "status", "a", "p1")));
        assert!(!ok(attrs(&n1, "patch", "", "pods", "status", "a", "p9")));
        assert!(ok(attrs(&n1, "delete", "", "pods", "", "a", "p1")));
        assert!(ok(attrs(&n1, "get", "", "secrets", "", "a", "s1")));
        assert!(!ok(attrs(&n1, "get", "", "secrets", "", "a", "s2")));
        assert!(!ok(attrs(&n1, "list", "", "secrets", "", "", "")));
        assert!(ok(attrs(&n1, "get", "", "configmaps", "", "a", "cm")));
        assert!(ok(attrs(
            &n1,
            "create",
            "",
            "serviceaccounts",
            "token",
            "a",
            "default"
        )));
        assert!(!ok(attrs(
            &n1,
            "create",
            "",
            "serviceaccounts",
            "token",
            "b",
            "default"
        )));
        assert!(ok(attrs(&n1, "create", "", "events", "", "a", "")));
        assert!(!ok(attrs(&n1, "delete", "", "namespaces", "", "", "a")));
        let Decision::Deny(why) =
            authorize(&g, "n1", &attrs(&n1, "get", "", "secrets", "", "a", "s2"))
        else {
            panic!("allowed")
        };
        assert_eq!(
            why,
            "no relationship found between node 'n1' and this object"
        );
    }
}
