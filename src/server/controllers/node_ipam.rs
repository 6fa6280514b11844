//! Node IPAM: gives every Node a pod subnet (`spec.podCIDR` / `spec.podCIDRs`) out of the
//! cluster CIDR, one per IP family, as upstream's range allocator does.
//!
//! The only state is the Node objects: every pass lists the nodes, counts the subnets they
//! hold as used and hands the lowest free subnet to each node that has none. So a restart
//! finds the same assignments, and deleting a node releases its subnet. A node's existing
//! podCIDR is never changed (the API refuses that anyway); one outside the cluster CIDR is
//! left alone. When the range is used up the node gets upstream's `CIDRNotAvailable` event.

use crate::api::{meta, resources, ApiError};
use crate::config::parse_cidr;
use crate::server::registry::{ListOptions, Registry, Target, WriteOptions};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use tokio::sync::watch;

/// Prefix length of the IPv6 subnet each node gets (upstream's default for
/// `--node-cidr-mask-size-ipv6`).
pub const IPV6_NODE_MASK: u8 = 64;

/// The field manager and event source of this controller (upstream's recorder name).
const COMPONENT: &str = "cidrAllocator";

/// A cluster CIDR and node mask that cannot work together.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// A cluster CIDR that does not parse.
    #[error("cluster CIDR {cidr:?} is invalid: {reason}; fix --cluster-cidr")]
    BadCidr {
        /// The CIDR as given.
        cidr: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A node subnet larger than the cluster CIDR (or more than 64 bits of subnets).
    #[error("node subnets /{mask} do not fit in cluster CIDR {cidr}; give a longer node mask or a larger --cluster-cidr")]
    MaskDoesNotFit {
        /// The cluster CIDR.
        cidr: String,
        /// The node mask.
        mask: u8,
    },
}

/// One cluster CIDR cut into node subnets of `mask` bits. Addresses are held as `u128`
/// (IPv4 in the low 32 bits) so both families share the arithmetic.
#[derive(Clone, Debug)]
struct Pool {
    base: u128,
    prefix: u8,
    mask: u8,
    v4: bool,
}

impl Pool {
    fn bits(&self) -> u8 {
        if self.v4 {
            32
        } else {
            128
        }
    }

    /// Number of node subnets (the mask check in `new` keeps this below 2^64).
    fn count(&self) -> u128 {
        1u128 << (self.mask - self.prefix)
    }

    /// The `i`-th subnet as `addr/mask`.
    fn subnet(&self, i: u128) -> String {
        let addr = self.base + (i << (self.bits() - self.mask));
        let ip: IpAddr = if self.v4 {
            Ipv4Addr::from(addr as u32).into()
        } else {
            Ipv6Addr::from(addr).into()
        };
        format!("{ip}/{}", self.mask)
    }

    /// Indices of the subnets `cidr` overlaps, or None when it lies outside this pool
    /// (another family, a foreign range, or not a CIDR at all).
    fn overlap(&self, cidr: &str) -> Option<(u128, u128)> {
        let (ip, plen) = parse_cidr(cidr.trim()).ok()?;
        if ip.is_ipv4() != self.v4 {
            return None;
        }
        let start = to_u128(ip) & !host_mask(plen, self.bits());
        let end = start | host_mask(plen, self.bits());
        let pool_end = self.base | host_mask(self.prefix, self.bits());
        if end < self.base || start > pool_end {
            return None;
        }
        let shift = self.bits() - self.mask;
        let first = (start.max(self.base) - self.base) >> shift;
        let last = (end.min(pool_end) - self.base) >> shift;
        Some((first, last))
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The host part of a `/plen` network in a `bits`-bit address.
fn host_mask(plen: u8, bits: u8) -> u128 {
    let host = bits.saturating_sub(plen);
    if host == 0 {
        0
    } else {
        u128::MAX >> (128 - u32::from(host))
    }
}

/// The lowest index in `0..count` not covered by `used` (inclusive ranges).
fn lowest_free(used: &mut [(u128, u128)], count: u128) -> Option<u128> {
    used.sort_unstable();
    let mut candidate = 0u128;
    for &(first, last) in used.iter() {
        if first > candidate {
            break;
        }
        candidate = candidate.max(last.saturating_add(1));
    }
    (candidate < count).then_some(candidate)
}

/// What one pass decided for one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Set these subnets (cluster-CIDR order) on the node at this resourceVersion.
    Assign {
        /// Node name.
        name: String,
        /// The resourceVersion the decision was made on (the update's precondition).
        resource_version: String,
        /// `spec.podCIDRs`; the first one is also `spec.podCIDR`.
        cidrs: Vec<String>,
    },
    /// The node needs a subnet and some family has none left.
    Exhausted {
        /// Node name.
        name: String,
    },
}

/// The allocator: the cluster CIDRs (one per family, in `--cluster-cidr` order) and their
/// node masks.
#[derive(Clone, Debug)]
pub struct NodeIpam {
    pools: Vec<Pool>,
}

impl NodeIpam {
    /// An allocator over `cluster_cidr` (a comma-separated list, one CIDR per family) with
    /// IPv4 node subnets of `mask_v4` bits and IPv6 ones of `mask_v6` bits.
    pub fn new(cluster_cidr: &str, mask_v4: u8, mask_v6: u8) -> Result<NodeIpam, IpamError> {
        let mut pools = Vec::new();
        for c in cluster_cidr
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            let (ip, prefix) = parse_cidr(c).map_err(|reason| IpamError::BadCidr {
                cidr: c.to_string(),
                reason,
            })?;
            let v4 = ip.is_ipv4();
            let mask = if v4 { mask_v4 } else { mask_v6 };
            let bits = if v4 { 32 } else { 128 };
            if mask < prefix || mask > bits || mask - prefix > 64 {
                return Err(IpamError::MaskDoesNotFit {
                    cidr: c.to_string(),
                    mask,
                });
            }
            let base = to_u128(ip) & !host_mask(prefix, bits);
            pools.push(Pool {
                base,
                prefix,
                mask,
                v4,
            });
        }
        Ok(NodeIpam { pools })
    }

    /// Decides, from the nodes alone, which nodes get which subnets. Nodes that already
    /// have a podCIDR keep it and their subnets count as used; the others are served in
    /// creation order (then name), each the lowest free subnet of every family.
    pub fn plan(&self, nodes: &[Value]) -> Vec<Decision> {
        let mut used: Vec<Vec<(u128, u128)>> = vec![Vec::new(); self.pools.len()];
        let mut waiting = Vec::new();
        for node in nodes {
            let cidrs = pod_cidrs(node);
            if cidrs.is_empty() {
                if !meta::is_deleting(node) {
                    waiting.push(node);
                }
                continue;
            }
            for c in &cidrs {
                for (pool, used) in self.pools.iter().zip(used.iter_mut()) {
                    used.extend(pool.overlap(c));
                }
            }
        }
        waiting.sort_by_key(|n| (meta::meta_str(n, "creationTimestamp"), meta::name(n)));
        let mut out = Vec::new();
        for node in waiting {
            let name = meta::name(node).to_string();
            let picks: Option<Vec<u128>> = self
                .pools
                .iter()
                .zip(used.iter_mut())
                .map(|(pool, used)| lowest_free(used, pool.count()))
                .collect();
            match picks {
                Some(picks) if !self.pools.is_empty() => {
                    for (i, used) in picks.iter().zip(used.iter_mut()) {
                        used.push((*i, *i));
                    }
                    out.push(Decision::Assign {
                        name,
                        resource_version: meta::meta_str(node, "resourceVersion").to_string(),
                        cidrs: picks
                            .iter()
                            .zip(&self.pools)
                            .map(|(i, pool)| pool.subnet(*i))
                            .collect(),
                    });
                }
                _ => out.push(Decision::Exhausted { name }),
            }
        }
        out
    }
}

/// The subnets a node holds: `spec.podCIDRs`, or `spec.podCIDR` when only that is set.
fn pod_cidrs(node: &Value) -> Vec<String> {
    let spec = &node["spec"];
    let list: Vec<String> = spec["podCIDRs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if !list.is_empty() {
        return list;
    }
    match spec["podCIDR"].as_str() {
        Some(c) if !c.is_empty() => vec![c.to_string()],
        _ => Vec::new(),
    }
}

/// Runs until `shutdown` flips: a pass on start, on every node change and every 30 s.
pub async fn run(
    registry: Registry,
    cluster_cidr: String,
    mask_v4: u8,
    mut shutdown: watch::Receiver<bool>,
) {
    let ipam = match NodeIpam::new(&cluster_cidr, mask_v4, IPV6_NODE_MASK) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "node IPAM is off: nodes get no podCIDR");
            return;
        }
    };
    let Some(nodes) = resources::find("", "v1", "nodes") else {
        tracing::error!("node IPAM is off: nodes are not in the resource table");
        return;
    };
    // Nodes already told about exhaustion (by UID), so a resync does not repeat the event.
    let mut reported: HashSet<String> = HashSet::new();
    loop {
        let rev = registry.store().current_revision();
        if let Err(e) = sync(&registry, &ipam, &mut reported).await {
            tracing::warn!(error = %e, "node IPAM: sync failed; retrying");
        }
        if !super::wait_for_change(&registry, nodes.key_prefix(), rev, &mut shutdown).await {
            return;
        }
    }
}

/// One pass: list the nodes, write the assignments, report exhaustion.
async fn sync(
    registry: &Registry,
    ipam: &NodeIpam,
    reported: &mut HashSet<String>,
) -> Result<(), ApiError> {
    let Some(res) = resources::find("", "v1", "nodes") else {
        return Ok(());
    };
    let list = registry.list(res, "", &ListOptions::default()).await?;
    let mut nodes = Vec::with_capacity(list.items.len());
    for item in &list.items {
        nodes.push(item.value()?);
    }
    let uids: HashSet<&str> = nodes.iter().map(meta::uid).collect();
    reported.retain(|u| uids.contains(u.as_str()));
    for decision in ipam.plan(&nodes) {
        match decision {
            Decision::Assign {
                name,
                resource_version,
                cidrs,
            } => assign(registry, res, &nodes, &name, &resource_version, &cidrs).await?,
            Decision::Exhausted { name } => {
                let Some(node) = nodes.iter().find(|n| meta::name(n) == name) else {
                    continue;
                };
                if reported.insert(meta::uid(node).to_string()) {
                    tracing::warn!(node = %name, "node IPAM: no pod subnet left in the cluster CIDR");
                    record_not_available(registry, node).await;
                }
            }
        }
    }
    Ok(())
}

/// Writes `cidrs` into the node as read at `resource_version`; a node changed meanwhile
/// (409) or deleted (404) is left for the next pass, which the change itself triggers.
async fn assign(
    registry: &Registry,
    res: &resources::Resource,
    nodes: &[Value],
    name: &str,
    resource_version: &str,
    cidrs: &[String],
) -> Result<(), ApiError> {
    let Some(mut node) = nodes.iter().find(|n| meta::name(n) == name).cloned() else {
        return Ok(());
    };
    meta::metadata_mut(&mut node).insert("resourceVersion".into(), json!(resource_version));
    if !node["spec"].is_object() {
        node["spec"] = json!({});
    }
    node["spec"]["podCIDR"] = json!(cidrs[0]);
    node["spec"]["podCIDRs"] = json!(cidrs);
    let opts = WriteOptions {
        field_manager: COMPONENT.into(),
        ..Default::default()
    };
    match registry
        .update(res, "", name, node, Target::Main, &opts)
        .await
    {
        Ok(_) => {
            tracing::info!(node = name, pod_cidrs = ?cidrs, "node IPAM: assigned pod subnet");
            Ok(())
        }
        Err(e) if e.code == 409 || e.code == 404 => {
            tracing::debug!(
                node = name,
                "node IPAM: node changed meanwhile; next pass retries"
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Upstream's `RecordNodeStatusChange(..., "CIDRNotAvailable")`: a Normal event in the
/// `default` namespace from `cidrAllocator` (best effort: a failure is only logged).
async fn record_not_available(registry: &Registry, node: &Value) {
    let Some(events) = resources::find("", "v1", "events") else {
        return;
    };
    let name = meta::name(node);
    let now = meta::now_rfc3339();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{name}.{nanos:x}"), "namespace": "default"},
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": name, "uid": meta::uid(node)},
        "type": "Normal",
        "reason": "CIDRNotAvailable",
        "message": format!("Node {name} status is now: CIDRNotAvailable"),
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": "",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    if let Err(e) = registry
        .create(events, "default", event, &WriteOptions::default())
        .await
    {
        tracing::debug!(error = %e, node = name, "node IPAM: cannot record event");
    }
}

#[cfg(test)]
#[path = "node_ipam_tests.rs"]
mod tests;
