//! What the service proxy needs from Services and EndpointSlices, in plain types: one
//! [`ServicePort`] per port of every proxied Service, with its ready endpoints.
//!
//! Skipped: headless and ExternalName Services (nothing to translate), the node-local
//! `kube-dns` Service (the node's resolver answers on that address itself), and IPv6
//! (the built-in pod network is IPv4).

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The label of the Service the node's DNS resolver serves itself.
pub const NODE_LOCAL_DNS_LABEL: &str = "k3rs.io/node-local-dns";

/// One ready backend of a Service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Backend {
    /// Pod IP.
    pub ip: Ipv4Addr,
    /// Pod port.
    pub port: u16,
    /// The node the pod runs on (for the Local traffic policies).
    pub node: String,
}

/// One port of one Service, with everything the rules need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name/protocol/port-name`: the stable identity (and chain-name suffix).
    pub id: String,
    /// `tcp`, `udp` or `sctp` (nft's spelling).
    pub protocol: &'static str,
    /// The ClusterIP (None for a Service without one).
    pub cluster_ip: Option<Ipv4Addr>,
    /// The service port.
    pub port: u16,
    /// The node port, when the Service has one.
    pub node_port: Option<u16>,
    /// LoadBalancer ingress and externalIPs: answered on `port`.
    pub external_ips: Vec<Ipv4Addr>,
    /// sessionAffinity ClientIP: the timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// internalTrafficPolicy Local.
    pub internal_local: bool,
    /// externalTrafficPolicy Local.
    pub external_local: bool,
    /// Ready backends, sorted.
    pub backends: Vec<Backend>,
}

fn nft_protocol(p: &str) -> Option<&'static str> {
    match p {
        "" | "TCP" => Some("tcp"),
        "UDP" => Some("udp"),
        "SCTP" => Some("sctp"),
        _ => None,
    }
}

fn port_of(v: &Value) -> Option<u16> {
    v.as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
}

/// Whether the proxy handles this Service at all.
pub fn proxied(svc: &Value) -> bool {
    let spec = &svc["spec"];
    let ip = spec["clusterIP"].as_str().unwrap_or("");
    spec["type"] != "ExternalName"
        && ip != "None"
        && svc["metadata"]["labels"][NODE_LOCAL_DNS_LABEL].as_str() != Some("true")
}

/// The ports of `svc` with their ready backends from `slices` (the Service's slices).
pub fn service_ports(svc: &Value, slices: &[&Value]) -> Vec<ServicePort> {
    if !proxied(svc) {
        return Vec::new();
    }
    let spec = &svc["spec"];
    let ns = svc["metadata"]["namespace"].as_str().unwrap_or("");
    let name = svc["metadata"]["name"].as_str().unwrap_or("");
    let cluster_ip = spec["clusterIP"].as_str().and_then(|s| s.parse().ok());
    let mut external_ips: Vec<Ipv4Addr> = spec["externalIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            svc["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| &i["ip"]),
        )
        .filter_map(|v| v.as_str()?.parse().ok())
        .collect();
    external_ips.sort();
    external_ips.dedup();
    let affinity_timeout = (spec["sessionAffinity"] == "ClientIP").then(|| {
        spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"]
            .as_u64()
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(10800)
    });
    let mut out = Vec::new();
    for p in spec["ports"].as_array().into_iter().flatten() {
        let Some(protocol) = nft_protocol(p["protocol"].as_str().unwrap_or("")) else {
            continue;
        };
        let Some(port) = port_of(&p["port"]) else {
            continue;
        };
        let port_name = p["name"].as_str().unwrap_or("");
        let mut backends = Vec::new();
        for slice in slices {
            if slice["addressType"] != "IPv4" {
                continue;
            }
            let target = slice["ports"].as_array().into_iter().flatten().find(|sp| {
                sp["name"].as_str().unwrap_or("") == port_name
                    && nft_protocol(sp["protocol"].as_str().unwrap_or("")) == Some(protocol)
            });
            let Some(target) = target.and_then(|t| port_of(&t["port"])) else {
                continue;
            };
            for e in slice["endpoints"].as_array().into_iter().flatten() {
                // Upstream: a missing ready condition means ready.
                if e["conditions"]["ready"] == Value::Bool(false) {
                    continue;
                }
                let node = e["nodeName"].as_str().unwrap_or("").to_string();
                for a in e["addresses"].as_array().into_iter().flatten() {
                    if let Some(ip) = a.as_str().and_then(|s| s.parse().ok()) {
                        backends.push(Backend {
                            ip,
                            port: target,
                            node: node.clone(),
                        });
                    }
                }
            }
        }
        backends.sort();
        backends.dedup();
        out.push(ServicePort {
            id: format!(
                "{ns}/{name}/{protocol}/{}",
                if port_name.is_empty() { "-" } else { port_name }
            ),
            protocol,
            cluster_ip,
            port,
            node_port: port_of(&p["nodePort"]),
            external_ips: external_ips.clone(),
            affinity_timeout,
            internal_local: spec["internalTrafficPolicy"] == "Local",
            external_local: spec["externalTrafficPolicy"] == "Local",
            backends,
        });
    }
    out
}

/// Every proxied port of `services` (keyed `namespace/name`), with the slices of each
/// (grouped by their `kubernetes.io/service-name` label).
pub fn all_ports(
    services: &BTreeMap<String, Value>,
    slices: &BTreeMap<String, Value>,
) -> Vec<ServicePort> {
    let mut by_service: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for s in slices.values() {
        let ns = s["metadata"]["namespace"].as_str().unwrap_or("");
        if let Some(svc) = s["metadata"]["labels"]["kubernetes.io/service-name"].as_str() {
            by_service.entry(format!("{ns}/{svc}")).or_default().push(s);
        }
    }
    let mut out = Vec::new();
    for (key, svc) in services {
        let slices = by_service.get(key).map(Vec::as_slice).unwrap_or(&[]);
        out.extend(service_ports(svc, slices));
    }
    out
}
