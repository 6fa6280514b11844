//! What cluster DNS needs of Services, EndpointSlices and Pods, cut out of the API
//! objects as they arrive from list and watch: [`Sources`] keeps the current set per
//! kind, keyed by `namespace/name`, small enough that every node can hold all of them.

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::Value;

/// The kinds DNS follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Service,
    EndpointSlice,
    Pod,
}

impl Kind {
    /// The collection path to list and watch.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Service => "/api/v1/services",
            Kind::EndpointSlice => "/apis/discovery.k8s.io/v1/endpointslices",
            Kind::Pod => "/api/v1/pods",
        }
    }
}

/// A named port (`_<name>._<proto>` SRV records); unnamed ports get no SRV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    /// Lower case: `tcp`, `udp`, `sctp`.
    pub protocol: String,
    pub port: u16,
}

/// A Service as DNS sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// `spec.clusterIPs` (or `spec.clusterIP`); empty for headless and ExternalName
    /// services, and for services whose IP is not allocated yet.
    pub cluster_ips: Vec<IpAddr>,
    /// `clusterIP: None`.
    pub headless: bool,
    /// `spec.externalName` of an ExternalName service.
    pub external_name: Option<String>,
    pub ports: Vec<NamedPort>,
}

/// One endpoint of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addresses: Vec<IpAddr>,
    pub hostname: Option<String>,
    /// `conditions.ready` (absent counts as ready, as upstream says consumers should).
    pub ready: bool,
}

/// An EndpointSlice as DNS sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    pub namespace: String,
    /// The `kubernetes.io/service-name` label.
    pub service: String,
    pub ports: Vec<NamedPort>,
    pub endpoints: Vec<Endpoint>,
}

/// A Pod with an IP of its own (hostNetwork pods have the node's and get no records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub ips: Vec<IpAddr>,
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
}

/// The current objects of every kind.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub services: HashMap<String, Service>,
    pub slices: HashMap<String, Slice>,
    pub pods: HashMap<String, Pod>,
}

fn str_of(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

fn key_of(obj: &Value) -> Option<String> {
    let m = &obj["metadata"];
    let name = m["name"].as_str()?;
    let ns = m["namespace"].as_str().unwrap_or("default");
    Some(format!("{ns}/{name}"))
}

fn namespace_of(obj: &Value) -> String {
    obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string()
}

fn named_ports(ports: &Value) -> Vec<NamedPort> {
    ports
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(NamedPort {
                name: str_of(&p["name"])?.to_ascii_lowercase(),
                protocol: p["protocol"].as_str().unwrap_or("TCP").to_ascii_lowercase(),
                port: u16::try_from(p["port"].as_u64()?).ok()?,
            })
        })
        .collect()
}

fn ips(values: impl Iterator<Item = Option<String>>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = values.flatten().filter_map(|s| s.parse().ok()).collect();
    out.dedup();
    out
}

/// The DNS view of a Service object.
pub fn service(obj: &Value) -> Option<Service> {
    let spec = &obj["spec"];
    let ip_strings = spec["clusterIPs"]
        .as_array()
        .map(|a| a.iter().map(str_of).collect::<Vec<_>>())
        .unwrap_or_else(|| vec![str_of(&spec["clusterIP"])]);
    let headless = ip_strings.iter().flatten().any(|s| s == "None");
    let external = spec["type"] == "ExternalName";
    Some(Service {
        namespace: namespace_of(obj),
        name: obj["metadata"]["name"].as_str()?.to_string(),
        cluster_ips: if external {
            Vec::new()
        } else {
            ips(ip_strings.into_iter())
        },
        headless,
        external_name: if external {
            str_of(&spec["externalName"]).map(|n| n.trim_end_matches('.').to_ascii_lowercase())
        } else {
            None
        },
        ports: named_ports(&spec["ports"]),
    })
}

/// The DNS view of an EndpointSlice object (`None` without a service-name label).
pub fn slice(obj: &Value) -> Option<Slice> {
    let service = str_of(&obj["metadata"]["labels"]["kubernetes.io/service-name"])?;
    let endpoints = obj["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| Endpoint {
            addresses: ips(e["addresses"].as_array().into_iter().flatten().map(str_of)),
            hostname: str_of(&e["hostname"]),
            ready: e["conditions"]["ready"].as_bool().unwrap_or(true),
        })
        .collect();
    Some(Slice {
        namespace: namespace_of(obj),
        service,
        ports: named_ports(&obj["ports"]),
        endpoints,
    })
}

/// The DNS view of a Pod object (`None` for hostNetwork pods and pods without an IP).
pub fn pod(obj: &Value) -> Option<Pod> {
    let spec = &obj["spec"];
    if spec["hostNetwork"].as_bool().unwrap_or(false) {
        return None;
    }
    let status = &obj["status"];
    let mut list: Vec<Option<String>> = status["podIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| str_of(&p["ip"]))
        .collect();
    list.push(str_of(&status["podIP"]));
    let ips = ips(list.into_iter());
    if ips.is_empty() {
        return None;
    }
    Some(Pod {
        namespace: namespace_of(obj),
        ips,
        hostname: str_of(&spec["hostname"]),
        subdomain: str_of(&spec["subdomain"]),
    })
}

impl Sources {
    /// Applies one watch event (`ADDED`, `MODIFIED`, `DELETED`); returns whether what
    /// DNS sees changed (pod status updates that keep the IP change nothing).
    pub fn apply(&mut self, kind: Kind, event: &str, obj: &Value) -> bool {
        let Some(key) = key_of(obj) else {
            return false;
        };
        let deleted = event == "DELETED";
        match kind {
            Kind::Service => upsert(
                &mut self.services,
                key,
                (!deleted).then(|| service(obj)).flatten(),
            ),
            Kind::EndpointSlice => upsert(
                &mut self.slices,
                key,
                (!deleted).then(|| slice(obj)).flatten(),
            ),
            Kind::Pod => upsert(&mut self.pods, key, (!deleted).then(|| pod(obj)).flatten()),
        }
    }

    /// Replaces every object of `kind` with a fresh list's items.
    pub fn replace(&mut self, kind: Kind, items: &[Value]) {
        match kind {
            Kind::Service => self.services = collect(items, service),
            Kind::EndpointSlice => self.slices = collect(items, slice),
            Kind::Pod => self.pods = collect(items, pod),
        }
    }
}

fn upsert<T: PartialEq>(map: &mut HashMap<String, T>, key: String, value: Option<T>) -> bool {
    match value {
        Some(v) if map.get(&key) == Some(&v) => false,
        Some(v) => {
            map.insert(key, v);
            true
        }
        None => map.remove(&key).is_some(),
    }
}

fn collect<T>(items: &[Value], f: impl Fn(&Value) -> Option<T>) -> HashMap<String, T> {
    items
        .iter()
        .filter_map(|o| Some((key_of(o)?, f(o)?)))
        .collect()
}
