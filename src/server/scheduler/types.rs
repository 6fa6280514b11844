//! The scheduler's compact view of pods and nodes: what filters and scores need,
//! parsed once per object change from the JSON in the informer cache, so a scheduling
//! decision never decodes JSON or reads the store.

use crate::api::meta;
use crate::api::validation::quantity;
use serde_json::{Map, Value};

pub use super::terms::{tolerated, HostPort, NodeSelectorTerm, PodAffinityTerm, Taint, Toleration};

/// Upstream's request assumed for scoring when a container asks for no CPU (100m).
pub const DEFAULT_MILLI_CPU: i64 = 100;
/// ... and for memory (200 MiB).
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// Resource amounts the scheduler accounts: CPU in millicores, bytes otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Millicores.
    pub milli_cpu: i64,
    /// Bytes of memory.
    pub memory: i64,
    /// Bytes of ephemeral storage.
    pub ephemeral: i64,
}

impl Resources {
    fn from_list(list: &Value) -> Resources {
        let q = |k: &str| -> f64 {
            list.get(k)
                .and_then(quantity::text)
                .and_then(|s| quantity::parse(&s))
                .unwrap_or(0.0)
        };
        Resources {
            milli_cpu: (q("cpu") * 1000.0).ceil() as i64,
            memory: q("memory").ceil() as i64,
            ephemeral: q("ephemeral-storage").ceil() as i64,
        }
    }

    /// Adds another amount.
    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral += o.ephemeral;
    }

    fn max(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral = self.ephemeral.max(o.ephemeral);
    }
}

/// What the scheduler knows about one pod.
#[derive(Clone, Debug)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Labels.
    pub labels: Map<String, Value>,
    /// Effective requests (max of init containers and the sum of containers, plus overhead).
    pub requests: Resources,
    /// Requests with upstream's non-zero defaults, used for scoring.
    pub nonzero: Resources,
    /// `spec.nodeSelector`.
    pub node_selector: Vec<(String, String)>,
    /// Required node affinity terms (ORed); None when the pod has none.
    pub required_terms: Option<Vec<NodeSelectorTerm>>,
    /// Preferred node affinity terms with weights.
    pub preferred_terms: Vec<(i64, NodeSelectorTerm)>,
    /// Tolerations.
    pub tolerations: Vec<Toleration>,
    /// Host ports.
    pub host_ports: Vec<HostPort>,
    /// Required pod affinity terms.
    pub affinity: Vec<PodAffinityTerm>,
    /// Required pod anti-affinity terms.
    pub anti_affinity: Vec<PodAffinityTerm>,
    /// Preferred pod affinity terms (positive weight) and anti-affinity (negative).
    pub preferred_pod: Vec<PodAffinityTerm>,
    /// UID of the controller owner, for spreading.
    pub owner: Option<String>,
    /// `spec.nodeName`.
    pub node_name: String,
    /// `spec.schedulerName`.
    pub scheduler_name: String,
    /// Being deleted.
    pub deleting: bool,
    /// Succeeded or Failed: holds no resources.
    pub finished: bool,
    /// `spec.priority` (0 when unset, as upstream's PodPriority).
    pub priority: i64,
    /// `spec.preemptionPolicy: Never`: waits instead of preempting.
    pub preempt_never: bool,
    /// `status.nominatedNodeName`.
    pub nominated_node: String,
    /// When the pod started (`status.startTime`, else its creation), RFC 3339; orders
    /// victims of equal priority (the longer-running one is more important).
    pub start_time: String,
    /// Being deleted because the scheduler preempted it (DisruptionTarget condition).
    pub preempted: bool,
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

fn container_requests(list: &Value) -> Vec<Resources> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|c| Resources::from_list(&c["resources"]["requests"]))
                .collect()
        })
        .unwrap_or_default()
}

impl PodInfo {
    /// Parses a pod.
    pub fn parse(pod: &Value) -> PodInfo {
        let spec = &pod["spec"];
        let ns = meta::namespace(pod).to_string();
        let containers = container_requests(&spec["containers"]);
        let mut requests = Resources::default();
        let mut nonzero = Resources::default();
        for c in &containers {
            requests.add(c);
            nonzero.add(&Resources {
                milli_cpu: if c.milli_cpu == 0 {
                    DEFAULT_MILLI_CPU
                } else {
                    c.milli_cpu
                },
                memory: if c.memory == 0 {
                    DEFAULT_MEMORY
                } else {
                    c.memory
                },
                ephemeral: c.ephemeral,
            });
        }
        for c in container_requests(&spec["initContainers"]) {
            requests.max(&c);
            nonzero.max(&c);
        }
        let overhead = Resources::from_list(&spec["overhead"]);
        requests.add(&overhead);
        nonzero.add(&overhead);
        let node_selector = spec["nodeSelector"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), s(v))).collect())
            .unwrap_or_default();
        let na = &spec["affinity"]["nodeAffinity"];
        let required_terms = na["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"]
            .as_array()
            .map(|a| a.iter().map(NodeSelectorTerm::parse).collect());
        let preferred_terms = na["preferredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        (
                            p["weight"].as_i64().unwrap_or(0),
                            NodeSelectorTerm::parse(&p["preference"]),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut host_ports = Vec::new();
        for list in ["containers", "initContainers"] {
            for c in spec[list].as_array().into_iter().flatten() {
                for p in c["ports"].as_array().into_iter().flatten() {
                    let port = p["hostPort"].as_i64().unwrap_or(0);
                    if port > 0 {
                        host_ports.push(HostPort {
                            protocol: p["protocol"].as_str().unwrap_or("TCP").to_string(),
                            ip: s(&p["hostIP"]),
                            port,
                        });
                    }
                }
            }
        }
        let pa = &spec["affinity"]["podAffinity"];
        let paa = &spec["affinity"]["podAntiAffinity"];
        let mut preferred_pod = PodAffinityTerm::parse_weighted(
            &pa["preferredDuringSchedulingIgnoredDuringExecution"],
            &ns,
        );
        preferred_pod.extend(
            PodAffinityTerm::parse_weighted(
                &paa["preferredDuringSchedulingIgnoredDuringExecution"],
                &ns,
            )
            .into_iter()
            .map(|mut t| {
                t.weight = -t.weight;
                t
            }),
        );
        let owner = pod["metadata"]["ownerReferences"]
            .as_array()
            .and_then(|a| a.iter().find(|o| o["controller"] == Value::Bool(true)))
            .map(|o| s(&o["uid"]));
        PodInfo {
            name: meta::name(pod).to_string(),
            uid: meta::uid(pod).to_string(),
            labels: meta::labels(pod).cloned().unwrap_or_default(),
            requests,
            nonzero,
            node_selector,
            required_terms,
            preferred_terms,
            tolerations: Toleration::parse_all(pod),
            host_ports,
            affinity: PodAffinityTerm::parse_list(
                &pa["requiredDuringSchedulingIgnoredDuringExecution"],
                &ns,
            ),
            anti_affinity: PodAffinityTerm::parse_list(
                &paa["requiredDuringSchedulingIgnoredDuringExecution"],
                &ns,
            ),
            preferred_pod,
            owner,
            node_name: s(&spec["nodeName"]),
            scheduler_name: spec["schedulerName"]
                .as_str()
                .unwrap_or(super::DEFAULT_SCHEDULER)
                .to_string(),
            deleting: meta::is_deleting(pod),
            finished: matches!(
                pod["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            ),
            priority: spec["priority"].as_i64().unwrap_or(0),
            preempt_never: spec["preemptionPolicy"].as_str() == Some("Never"),
            nominated_node: s(&pod["status"]["nominatedNodeName"]),
            start_time: pod["status"]["startTime"]
                .as_str()
                .or_else(|| pod["metadata"]["creationTimestamp"].as_str())
                .unwrap_or("")
                .to_string(),
            preempted: meta::is_deleting(pod)
                && pod["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| {
                        c["type"] == "DisruptionTarget"
                            && c["status"] == "True"
                            && c["reason"] == "PreemptionByScheduler"
                    }),
            namespace: ns,
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What the scheduler knows about one node, with the pods assigned to it.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: Map<String, Value>,
    /// Taints, plus the not-ready one the scheduler assumes when Ready is not True and
    /// the node lifecycle controller has not tainted the node yet.
    pub taints: Vec<Taint>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// Allocatable resources.
    pub allocatable: Resources,
    /// Allocatable pod count.
    pub max_pods: i64,
    /// Sum of the requests of the pods on the node.
    pub requested: Resources,
    /// The same with non-zero defaults (for scoring).
    pub nonzero_requested: Resources,
    /// Pods on the node, by `namespace/name`.
    pub pods: std::collections::HashMap<String, std::sync::Arc<PodInfo>>,
    /// Pods per controller owner UID.
    pub owner_counts: std::collections::HashMap<String, u32>,
}

impl NodeInfo {
    /// Updates the node's own fields from a Node object, keeping its pods.
    pub fn set_node(&mut self, node: &Value) {
        self.name = meta::name(node).to_string();
        self.labels = meta::labels(node).cloned().unwrap_or_default();
        self.unschedulable = node["spec"]["unschedulable"].as_bool() == Some(true);
        let status = &node["status"];
        let alloc = if status["allocatable"].is_object() {
            &status["allocatable"]
        } else {
            &status["capacity"]
        };
        self.allocatable = Resources::from_list(alloc);
        self.max_pods = alloc
            .get("pods")
            .and_then(quantity::text)
            .and_then(|p| quantity::parse(&p))
            .map(|p| p as i64)
            .unwrap_or(0);
        self.taints = Taint::parse_all(node);
        let ready = status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .map(|c| s(&c["status"]));
        let implied = match ready.as_deref() {
            Some("True") => None,
            Some("Unknown") => Some(crate::server::controllers::node_lifecycle::TAINT_UNREACHABLE),
            _ => Some(crate::server::controllers::node_lifecycle::TAINT_NOT_READY),
        };
        if let Some(key) = implied {
            if !self
                .taints
                .iter()
                .any(|t| t.key == key && t.effect == "NoSchedule")
            {
                self.taints.push(Taint {
                    key: key.to_string(),
                    value: String::new(),
                    effect: "NoSchedule".to_string(),
                });
            }
        }
    }

    /// Accounts a pod on this node (replacing an earlier state of the same pod).
    pub fn add_pod(&mut self, pod: std::sync::Arc<PodInfo>) {
        self.remove_pod(&pod.key());
        self.requested.add(&pod.requests);
        self.nonzero_requested.add(&pod.nonzero);
        if let Some(o) = &pod.owner {
            *self.owner_counts.entry(o.clone()).or_insert(0) += 1;
        }
        self.pods.insert(pod.key(), pod);
    }

    /// Removes a pod from the node's accounting.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        let Some(pod) = self.pods.remove(key) else {
            return false;
        };
        let sub = |a: &mut Resources, b: &Resources| {
            a.milli_cpu -= b.milli_cpu;
            a.memory -= b.memory;
            a.ephemeral -= b.ephemeral;
        };
        sub(&mut self.requested, &pod.requests);
        sub(&mut self.nonzero_requested, &pod.nonzero);
        if let Some(o) = &pod.owner {
            if let Some(n) = self.owner_counts.get_mut(o) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.owner_counts.remove(o);
                }
            }
        }
        true
    }

    /// The node's value of a topology label.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).and_then(Value::as_str)
    }
}
