//! The scheduling terms the scheduler parses from pods and nodes: taints and
//! tolerations, node selector terms (node affinity), pod (anti-)affinity terms and host
//! ports, each with the matching rule upstream applies.

use super::types::{NodeInfo, PodInfo};
use crate::api::selector::LabelSelector;
use serde_json::Value;

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

/// A taint or the effect/key/value a toleration names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taint {
    /// Key.
    pub key: String,
    /// Value (may be empty).
    pub value: String,
    /// NoSchedule, PreferNoSchedule or NoExecute.
    pub effect: String,
}

impl Taint {
    /// Parses `spec.taints[]`.
    pub fn parse_all(node: &Value) -> Vec<Taint> {
        node["spec"]["taints"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| Taint {
                        key: s(&t["key"]),
                        value: s(&t["value"]),
                        effect: s(&t["effect"]),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A pod's toleration.
#[derive(Clone, Debug, PartialEq)]
pub struct Toleration {
    /// Key; empty with `Exists` tolerates every taint.
    pub key: String,
    /// `Equal` (default) or `Exists`.
    pub exists: bool,
    /// Value for `Equal`.
    pub value: String,
    /// Effect; empty matches all effects.
    pub effect: String,
    /// For NoExecute: how long the pod stays after the taint appears (None: forever).
    pub seconds: Option<i64>,
}

impl Toleration {
    /// Parses `spec.tolerations[]`.
    pub fn parse_all(pod: &Value) -> Vec<Toleration> {
        pod["spec"]["tolerations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| Toleration {
                        key: s(&t["key"]),
                        exists: t["operator"].as_str() == Some("Exists"),
                        value: s(&t["value"]),
                        effect: s(&t["effect"]),
                        seconds: t["tolerationSeconds"].as_i64(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether this toleration tolerates `taint` (upstream's ToleratesTaint).
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if !self.effect.is_empty() && self.effect != taint.effect {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        if self.exists {
            return true;
        }
        // An empty key is only valid with Exists.
        !self.key.is_empty() && self.value == taint.value
    }
}

/// Whether some toleration tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| t.tolerates(taint))
}

/// One `nodeSelectorTerm`: all its requirements must hold.
#[derive(Clone, Debug, Default)]
pub struct NodeSelectorTerm {
    exprs: Vec<NodeRequirement>,
    fields: Vec<NodeRequirement>,
}

#[derive(Clone, Debug)]
struct NodeRequirement {
    key: String,
    op: String,
    values: Vec<String>,
}

impl NodeRequirement {
    fn parse_all(v: &Value) -> Vec<NodeRequirement> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|r| NodeRequirement {
                        key: s(&r["key"]),
                        op: s(&r["operator"]),
                        values: r["values"]
                            .as_array()
                            .map(|v| v.iter().map(s).collect())
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn matches(&self, value: Option<&str>) -> bool {
        let int = |x: &str| x.parse::<i64>().ok();
        match self.op.as_str() {
            "In" => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            "NotIn" => !value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            "Gt" | "Lt" => {
                let (Some(have), Some(limit)) = (
                    value.and_then(int),
                    self.values.first().and_then(|x| int(x)),
                ) else {
                    return false;
                };
                if self.op == "Gt" {
                    have > limit
                } else {
                    have < limit
                }
            }
            _ => false,
        }
    }
}

impl NodeSelectorTerm {
    pub(super) fn parse(v: &Value) -> NodeSelectorTerm {
        NodeSelectorTerm {
            exprs: NodeRequirement::parse_all(&v["matchExpressions"]),
            fields: NodeRequirement::parse_all(&v["matchFields"]),
        }
    }

    /// Whether a node matches; an empty term matches nothing, as upstream.
    pub fn matches(&self, node: &NodeInfo) -> bool {
        if self.exprs.is_empty() && self.fields.is_empty() {
            return false;
        }
        self.exprs
            .iter()
            .all(|r| r.matches(node.labels.get(&r.key).and_then(Value::as_str)))
            && self
                .fields
                .iter()
                .all(|r| r.key == "metadata.name" && r.matches(Some(node.name.as_str())))
    }
}

/// A pod (anti-)affinity term.
#[derive(Clone, Debug)]
pub struct PodAffinityTerm {
    /// Selects the pods the term is about.
    pub selector: LabelSelector,
    /// Namespaces of those pods (empty: the pod's own).
    pub namespaces: Vec<String>,
    /// The node label whose value defines a topology domain.
    pub topology_key: String,
    /// Weight for preferred terms (1-100), 0 for required ones.
    pub weight: i64,
}

impl PodAffinityTerm {
    fn parse(t: &Value, own_ns: &str, weight: i64) -> Option<PodAffinityTerm> {
        let selector = match &t["labelSelector"] {
            Value::Null => return None, // a null selector matches no pods
            sel => LabelSelector::from_json(sel).ok()?,
        };
        let mut namespaces: Vec<String> = t["namespaces"]
            .as_array()
            .map(|a| a.iter().map(s).collect())
            .unwrap_or_default();
        if namespaces.is_empty() {
            namespaces.push(own_ns.to_string());
        }
        Some(PodAffinityTerm {
            selector,
            namespaces,
            topology_key: s(&t["topologyKey"]),
            weight,
        })
    }

    pub(super) fn parse_list(v: &Value, own_ns: &str) -> Vec<PodAffinityTerm> {
        v.as_array()
            .map(|a| a.iter().filter_map(|t| Self::parse(t, own_ns, 0)).collect())
            .unwrap_or_default()
    }

    pub(super) fn parse_weighted(v: &Value, own_ns: &str) -> Vec<PodAffinityTerm> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|w| {
                        Self::parse(
                            &w["podAffinityTerm"],
                            own_ns,
                            w["weight"].as_i64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `pod` is one of the pods this term selects.
    pub fn selects(&self, pod: &PodInfo) -> bool {
        self.namespaces.contains(&pod.namespace) && self.selector.matches(Some(&pod.labels))
    }
}

/// A host port a container asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// TCP, UDP or SCTP.
    pub protocol: String,
    /// Host IP (empty or 0.0.0.0: every address).
    pub ip: String,
    /// Port.
    pub port: i64,
}

impl HostPort {
    /// Whether two host ports collide (upstream: same protocol and port, and the same IP
    /// or either is the wildcard).
    pub fn conflicts(&self, o: &HostPort) -> bool {
        let wild = |ip: &str| ip.is_empty() || ip == "0.0.0.0";
        self.port == o.port
            && self.protocol == o.protocol
            && (wild(&self.ip) || wild(&o.ip) || self.ip == o.ip)
    }
}
