//! Service addresses: ClusterIPs from `--service-cidr` and NodePorts from
//! `--service-node-port-range`, allocated when a Service is created or updated
//! ([`ServiceAllocator::allocate`], called by the registry), the built-in `kubernetes` and
//! `kube-dns` Services ([`bootstrap`]), and ServiceLB ([`lb`]).
//!
//! The only state is the stored Services: every allocation lists them and counts what
//! they hold as used, under one lock that the caller keeps until its write is done. So a
//! restart finds the same allocations, deleting a Service frees its values, and two
//! concurrent creates never get the same address (one server process owns the store).

pub mod alloc;
pub mod bootstrap;
pub mod lb;

use crate::api::meta;
use crate::api::status::{ApiError, FieldError};
use crate::server::store::Store;
use alloc::{IpRange, PortRange};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// The configured ranges do not parse.
#[derive(Debug, thiserror::Error)]
pub enum AllocatorError {
    /// A bad `--service-cidr`.
    #[error("service CIDR {cidr:?} is invalid: {reason}; fix --service-cidr")]
    BadCidr {
        /// The CIDR as given.
        cidr: String,
        /// Why.
        reason: String,
    },
}

/// Allocates ClusterIPs and NodePorts for Services.
pub struct ServiceAllocator {
    ranges: Vec<IpRange>,
    ports: PortRange,
    lock: Arc<Mutex<()>>,
    rng: ring::rand::SystemRandom,
}

/// The allocated values of one stored Service (only the fields allocation reads).
#[derive(Deserialize, Default)]
struct Held {
    #[serde(default)]
    metadata: HeldMeta,
    #[serde(default)]
    spec: HeldSpec,
}

#[derive(Deserialize, Default)]
struct HeldMeta {
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct HeldSpec {
    #[serde(default, rename = "clusterIPs")]
    cluster_ips: Vec<String>,
    #[serde(default, rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(default)]
    ports: Vec<HeldPort>,
    #[serde(default)]
    health_check_node_port: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct HeldPort {
    #[serde(default)]
    node_port: Option<i64>,
}

/// What the other Services hold.
#[derive(Default)]
struct Used {
    ips: Vec<HashSet<u128>>,
    ports: HashSet<u128>,
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn wants_node_ports(spec: &Value) -> bool {
    matches!(str_of(spec, "type"), "NodePort" | "LoadBalancer")
}

fn wants_health_check_port(spec: &Value) -> bool {
    str_of(spec, "type") == "LoadBalancer" && str_of(spec, "externalTrafficPolicy") == "Local"
}

impl ServiceAllocator {
    /// An allocator over `service_cidr` (comma-separated, one CIDR per family) and `ports`.
    pub fn new(service_cidr: &str, ports: PortRange) -> Result<ServiceAllocator, AllocatorError> {
        let ranges = service_cidr
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| {
                IpRange::parse(c).map_err(|reason| AllocatorError::BadCidr {
                    cidr: c.to_string(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ServiceAllocator {
            ranges,
            ports,
            lock: Arc::new(Mutex::new(())),
            rng: ring::rand::SystemRandom::new(),
        })
    }

    /// The NodePort range.
    pub fn port_range(&self) -> PortRange {
        self.ports
    }

    fn random(&self) -> u64 {
        let mut b = [0u8; 8];
        // SystemRandom only fails when the OS has no randomness; a fixed start is still
        // correct (the pick scans for a free value), only less spread.
        let _ = ring::rand::SecureRandom::fill(&self.rng, &mut b);
        u64::from_le_bytes(b)
    }

    /// What every stored Service but `ns/name` holds.
    async fn used(&self, store: &Arc<dyn Store>, ns: &str, name: &str) -> Result<Used, ApiError> {
        let res = crate::api::resources::find("", "v1", "services")
            .ok_or_else(|| ApiError::internal("services are missing from the resource table"))?;
        let prefix = res.key_prefix_in("");
        let mut used = Used {
            ips: vec![HashSet::new(); self.ranges.len()],
            ports: HashSet::new(),
        };
        let mut after = None;
        loop {
            let page = store
                .list(prefix.clone(), after.clone(), 1000)
                .await
                .map_err(|e| ApiError::internal(format!("listing services to allocate: {e}")))?;
            for kv in &page.items {
                let Ok(held) = serde_json::from_slice::<Held>(&kv.value) else {
                    continue;
                };
                if held.metadata.namespace == ns && held.metadata.name == name {
                    continue;
                }
                let ips = held
                    .spec
                    .cluster_ips
                    .iter()
                    .chain(held.spec.cluster_ip.iter());
                for ip in ips.filter_map(|s| s.parse::<IpAddr>().ok()) {
                    for (i, r) in self.ranges.iter().enumerate() {
                        if let Some(off) = r.offset(ip) {
                            used.ips[i].insert(off);
                        }
                    }
                }
                let ports = held.spec.ports.iter().filter_map(|p| p.node_port);
                for p in ports.chain(held.spec.health_check_node_port) {
                    if p > 0 {
                        used.ports.insert(p as u128);
                    }
                }
            }
            match page.continue_after {
                Some(k) => after = Some(k),
                None => return Ok(used),
            }
        }
    }

    /// Fills in the ClusterIP and NodePorts `svc` (in `ns`) needs and checks the ones its
    /// user chose: in range and not held by another Service. `old` is the stored state on
    /// update (values it already holds are not checked again). The returned guard must be
    /// kept until the Service is written.
    pub async fn allocate(
        &self,
        store: &Arc<dyn Store>,
        ns: &str,
        svc: &mut Value,
        old: Option<&Value>,
    ) -> Result<OwnedMutexGuard<()>, ApiError> {
        let guard = self.lock.clone().lock_owned().await;
        let name = meta::name(svc).to_string();
        let spec = svc.get("spec").cloned().unwrap_or(Value::Null);
        if str_of(&spec, "type") == "ExternalName" {
            return Ok(guard);
        }
        let old_spec = old
            .and_then(|o| o.get("spec"))
            .cloned()
            .unwrap_or(Value::Null);
        let used = self.used(store, ns, &name).await?;
        let mut errs = Vec::new();
        let mut spec = spec;
        self.cluster_ip(&mut spec, &old_spec, &used, &mut errs);
        self.node_ports(&mut spec, &old_spec, &used, &mut errs);
        if !errs.is_empty() {
            return Err(ApiError::invalid("", "Service", &name, errs));
        }
        if let Some(m) = svc.as_object_mut() {
            m.insert("spec".into(), spec);
        }
        Ok(guard)
    }

    fn cluster_ip(&self, spec: &mut Value, old: &Value, used: &Used, errs: &mut Vec<FieldError>) {
        let ip = str_of(spec, "clusterIP").to_string();
        if ip == "None" {
            return;
        }
        if ip.is_empty() {
            let family_v6 = spec["ipFamilies"]
                .as_array()
                .and_then(|a| a.first())
                .and_then(Value::as_str)
                == Some("IPv6");
            let idx = self
                .ranges
                .iter()
                .position(|r| r.is_v4() != family_v6)
                .unwrap_or(0);
            let Some(range) = self.ranges.get(idx) else {
                return;
            };
            match range.pick(&used.ips[idx], self.random()) {
                Some(ip) => {
                    let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
                    spec["clusterIP"] = json!(ip.to_string());
                    spec["clusterIPs"] = json!([ip.to_string()]);
                    spec["ipFamilies"] = json!([family]);
                }
                None => errs.push(FieldError::invalid(
                    "spec.clusterIPs",
                    &json!([]),
                    &format!(
                        "failed to allocate a serviceIP: range is full (the service CIDR {} has no free address)",
                        range.cidr
                    ),
                )),
            }
            return;
        }
        let held_before = old.get("clusterIP").and_then(Value::as_str) == Some(ip.as_str());
        if held_before {
            return;
        }
        // A malformed address is reported by validation.
        let Ok(addr) = ip.parse::<IpAddr>() else {
            return;
        };
        let ips_value = spec.get("clusterIPs").cloned().unwrap_or(json!([ip]));
        let found = self
            .ranges
            .iter()
            .enumerate()
            .find_map(|(i, r)| r.offset(addr).map(|o| (i, o)));
        match found {
            None => {
                let valid = self
                    .ranges
                    .iter()
                    .find(|r| r.is_v4() == addr.is_ipv4())
                    .or(self.ranges.first())
                    .map(|r| r.cidr.clone())
                    .unwrap_or_default();
                errs.push(FieldError::invalid(
                    "spec.clusterIPs",
                    &ips_value,
                    &format!("failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {valid}"),
                ));
            }
            Some((i, off)) if used.ips[i].contains(&off) => errs.push(FieldError::invalid(
                "spec.clusterIPs",
                &ips_value,
                &format!("failed to allocate IP {ip}: provided IP is already allocated"),
            )),
            Some(_) => {}
        }
    }

    fn node_ports(&self, spec: &mut Value, old: &Value, used: &Used, errs: &mut Vec<FieldError>) {
        let wants = wants_node_ports(spec);
        let mut old_held: HashSet<i64> = HashSet::new();
        for p in old["ports"].as_array().into_iter().flatten() {
            if let Some(n) = p["nodePort"].as_i64() {
                old_held.insert(n);
            }
        }
        if let Some(h) = old["healthCheckNodePort"].as_i64() {
            old_held.insert(h);
        }
        let mut taken = used.ports.clone();
        let n_ports = spec["ports"].as_array().map_or(0, Vec::len);
        // First the chosen ones (so dynamic picks avoid them), then the missing ones.
        let mut chosen: Vec<(usize, i64)> = Vec::new();
        for i in 0..n_ports {
            let np = spec["ports"][i]["nodePort"].as_i64().unwrap_or(0);
            if np != 0 {
                chosen.push((i, np));
            }
        }
        let mut mine: HashSet<i64> = HashSet::new();
        for (i, np) in chosen {
            if !wants || old_held.contains(&np) || mine.contains(&np) {
                mine.insert(np);
                continue;
            }
            let path = format!("spec.ports[{i}].nodePort");
            if !self.ports.contains(np) {
                errs.push(FieldError::invalid(
                    path,
                    &json!(np),
                    &format!(
                        "provided port is not in the valid range. The range of valid ports is {}",
                        self.ports
                    ),
                ));
            } else if taken.contains(&(np as u128)) {
                errs.push(FieldError::invalid(
                    path,
                    &json!(np),
                    "provided port is already allocated",
                ));
            }
            mine.insert(np);
        }
        for np in &mine {
            taken.insert(*np as u128);
        }
        if !wants {
            return;
        }
        for i in 0..n_ports {
            if spec["ports"][i]["nodePort"].as_i64().unwrap_or(0) != 0 {
                continue;
            }
            match self.ports.pick(&taken, self.random()) {
                Some(p) => {
                    taken.insert(u128::from(p));
                    spec["ports"][i]["nodePort"] = json!(p);
                }
                None => errs.push(FieldError::invalid(
                    format!("spec.ports[{i}].nodePort"),
                    &json!(0),
                    &format!(
                        "failed to allocate a nodePort: range is full ({})",
                        self.ports
                    ),
                )),
            }
        }
        if wants_health_check_port(spec) && spec["healthCheckNodePort"].as_i64().unwrap_or(0) == 0 {
            if let Some(p) = self.ports.pick(&taken, self.random()) {
                spec["healthCheckNodePort"] = json!(p);
            }
        }
    }
}
