//! The nftables rules of the service proxy, as text for `nft -f`: [`build`] turns the
//! proxied ports into a [`Ruleset`] (per-service chains, verdict maps, sets), [`full`]
//! renders the whole table (delete and define again, one transaction), and [`diff`]
//! renders only what changed since the last applied ruleset, still as one transaction.
//! A change of a thousand-service table thus costs the few chains it touches.
//!
//! Layout of table `k3rs-services`:
//! - `services` (from the nat prerouting and output hooks): `ip daddr . l4proto . dport`
//!   through verdict map `svc-vmap` (ClusterIPs, LoadBalancer and external IPs), and for
//!   local destination addresses `l4proto . dport` through `nodeport-vmap`.
//! - `svc-<id>`: DNAT to a random ready backend (`numgen random mod N`); `loc-<id>` the
//!   same over this node's backends (the Local traffic policies); `ext-<id>` the entry of
//!   NodePort and LoadBalancer traffic (marks traffic from outside the cluster CIDR for
//!   masquerade so replies come back through this node). ClientIP affinity: one chain and
//!   one timeout set per backend (`ep-`, `aff-`), remembered source addresses go straight
//!   to their backend.
//! - Ports without ready backends are in the sets `no-ep` / `no-ep-np` instead, and the
//!   filter hooks reject new connections to them (TCP reset, ICMP port unreachable), so
//!   clients fail at once instead of timing out.
//! - Postrouting masquerades marked traffic, and DNATed traffic from a pod that leaves
//!   on the pod bridge (hairpin and same-node backends: the reply must come back through
//!   the host's connection tracking, not straight over the bridge).

use super::model::{Backend, ServicePort};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The table the proxy owns.
pub const TABLE: &str = "k3rs-services";
/// The mark of traffic to masquerade.
const MASQ_MARK: &str = "0x4000";

/// Declarations of the named maps and sets whose elements change.
const COLLECTIONS: [(&str, &str); 4] = [
    (
        "svc-vmap",
        "map svc-vmap { type ipv4_addr . inet_proto . inet_service : verdict; }",
    ),
    (
        "nodeport-vmap",
        "map nodeport-vmap { type inet_proto . inet_service : verdict; }",
    ),
    (
        "no-ep",
        "set no-ep { type ipv4_addr . inet_proto . inet_service; }",
    ),
    (
        "no-ep-np",
        "set no-ep-np { type inet_proto . inet_service; }",
    ),
];

/// Everything in the table that depends on Services.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Regular chains by name, with their rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Elements of the maps and sets of [`COLLECTIONS`], by name.
    pub elements: BTreeMap<&'static str, Vec<String>>,
    /// Affinity sets by name, with their timeout in seconds.
    pub affinity: BTreeMap<String, u32>,
}

fn dnat_rules(rs: &mut Ruleset, sp: &ServicePort, backends: &[&Backend]) -> Vec<String> {
    let proto = sp.protocol;
    if let Some(timeout) = sp.affinity_timeout {
        let mut rules = Vec::new();
        let mut targets = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            let tag = format!("{}/{}-{}", sp.id, b.ip, b.port);
            let (ep, set) = (format!("ep-{tag}"), format!("aff-{tag}"));
            rules.push(format!("ip saddr @{set} goto {ep}"));
            targets.push(format!("{i} : goto {ep}"));
            rs.affinity.insert(set.clone(), timeout);
            rs.chains.insert(
                ep,
                vec![
                    format!("update @{set} {{ ip saddr }}"),
                    format!("meta l4proto {proto} dnat to {}:{}", b.ip, b.port),
                ],
            );
        }
        rules.push(format!(
            "numgen random mod {} vmap {{ {} }}",
            backends.len(),
            targets.join(", ")
        ));
        return rules;
    }
    match backends {
        [one] => vec![format!(
            "meta l4proto {proto} dnat to {}:{}",
            one.ip, one.port
        )],
        many => {
            let map: Vec<String> = many
                .iter()
                .enumerate()
                .map(|(i, b)| format!("{i} : {} . {}", b.ip, b.port))
                .collect();
            vec![format!(
                "meta l4proto {proto} dnat to numgen random mod {} map {{ {} }}",
                many.len(),
                map.join(", ")
            )]
        }
    }
}

/// The ruleset for `ports` on node `node`, whose pods live in `cluster_cidr`.
pub fn build(ports: &[ServicePort], node: &str, cluster_cidr: &str) -> Ruleset {
    let mut rs = Ruleset::default();
    for name in COLLECTIONS.map(|(n, _)| n) {
        rs.elements.insert(name, Vec::new());
    }
    let push = |rs: &mut Ruleset, k: &'static str, e: String| {
        if let Some(v) = rs.elements.get_mut(k) {
            v.push(e);
        }
    };
    for sp in ports {
        let (id, proto) = (&sp.id, sp.protocol);
        let all: Vec<&Backend> = sp.backends.iter().collect();
        let local: Vec<&Backend> = sp.backends.iter().filter(|b| b.node == node).collect();
        let (svc, loc, ext) = (
            format!("svc-{id}"),
            format!("loc-{id}"),
            format!("ext-{id}"),
        );
        if !all.is_empty() {
            let rules = dnat_rules(&mut rs, sp, &all);
            rs.chains.insert(svc.clone(), rules);
        }
        if (sp.internal_local || sp.external_local) && !local.is_empty() {
            let rules = dnat_rules(&mut rs, sp, &local);
            rs.chains.insert(loc.clone(), rules);
        }
        let internal = if sp.internal_local {
            (&local, &loc)
        } else {
            (&all, &svc)
        };
        if let Some(ip) = sp.cluster_ip {
            if internal.0.is_empty() {
                push(&mut rs, "no-ep", format!("{ip} . {proto} . {}", sp.port));
            } else {
                push(
                    &mut rs,
                    "svc-vmap",
                    format!("{ip} . {proto} . {} : goto {}", sp.port, internal.1),
                );
            }
        }
        if sp.node_port.is_none() && sp.external_ips.is_empty() {
            continue;
        }
        let mut ext_rules = Vec::new();
        if sp.external_local {
            if !internal.0.is_empty() {
                ext_rules.push(format!("ip saddr {cluster_cidr} goto {}", internal.1));
            }
            ext_rules.push(if local.is_empty() {
                "drop".to_string()
            } else {
                format!("goto {loc}")
            });
        } else if !all.is_empty() {
            ext_rules.push(format!(
                "ip saddr != {cluster_cidr} meta mark set meta mark | {MASQ_MARK}"
            ));
            ext_rules.push(format!("goto {svc}"));
        }
        let reachable = !all.is_empty();
        if reachable {
            rs.chains.insert(ext.clone(), ext_rules);
        }
        if let Some(np) = sp.node_port {
            if reachable {
                push(
                    &mut rs,
                    "nodeport-vmap",
                    format!("{proto} . {np} : goto {ext}"),
                );
            } else {
                push(&mut rs, "no-ep-np", format!("{proto} . {np}"));
            }
        }
        for ip in &sp.external_ips {
            if reachable {
                push(
                    &mut rs,
                    "svc-vmap",
                    format!("{ip} . {proto} . {} : goto {ext}", sp.port),
                );
            } else {
                push(&mut rs, "no-ep", format!("{ip} . {proto} . {}", sp.port));
            }
        }
    }
    for v in rs.elements.values_mut() {
        v.sort();
        v.dedup();
    }
    rs
}

fn affinity_decl(name: &str, timeout: u32) -> String {
    format!("set {name} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}")
}

/// The whole table as one transaction that replaces any previous one.
pub fn full(rs: &Ruleset, cluster_cidr: &str) -> String {
    let mut t = String::with_capacity(256 * rs.chains.len() + 4096);
    let _ = write!(
        t,
        "add table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n"
    );
    for (name, decl) in COLLECTIONS {
        let elems = rs.elements.get(name).map(Vec::as_slice).unwrap_or(&[]);
        if elems.is_empty() {
            let _ = writeln!(t, "\t{decl}");
        } else {
            let decl = decl.trim_end_matches(" }");
            let _ = writeln!(t, "\t{decl} elements = {{ {} }} }}", elems.join(", "));
        }
    }
    for (name, timeout) in &rs.affinity {
        let _ = writeln!(t, "\t{}", affinity_decl(name, *timeout));
    }
    let _ = write!(
        t,
        "\tchain nat-prerouting {{ type nat hook prerouting priority dstnat; policy accept; jump services; }}\n\
         \tchain nat-output {{ type nat hook output priority -100; policy accept; jump services; }}\n\
         \tchain nat-postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
         \t\tmeta mark & {MASQ_MARK} == {MASQ_MARK} meta mark set meta mark & 0xffffbfff masquerade fully-random\n\
         \t\tct status dnat oifname \"{bridge}\" ip saddr {cluster_cidr} masquerade fully-random\n\
         \t}}\n\
         \tchain filter-input {{ type filter hook input priority filter - 1; policy accept;\n\
         \t\tct state new meta l4proto . th dport @no-ep-np goto reject-it\n\
         \t\tjump reject-check\n\
         \t}}\n\
         \tchain filter-forward {{ type filter hook forward priority filter - 1; policy accept; jump reject-check; }}\n\
         \tchain filter-output {{ type filter hook output priority filter - 1; policy accept; jump reject-check; }}\n\
         \tchain reject-check {{ ct state new ip daddr . meta l4proto . th dport @no-ep goto reject-it; }}\n\
         \tchain reject-it {{ meta l4proto tcp reject with tcp reset; reject; }}\n\
         \tchain services {{\n\
         \t\tip daddr . meta l4proto . th dport vmap @svc-vmap\n\
         \t\tfib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @nodeport-vmap\n\
         \t}}\n",
        bridge = crate::cni::BRIDGE,
    );
    for (name, rules) in &rs.chains {
        let _ = writeln!(t, "\tchain {name} {{");
        for r in rules {
            let _ = writeln!(t, "\t\t{r}");
        }
        t.push_str("\t}\n");
    }
    t.push_str("}\n");
    t
}

/// What [`diff`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// The rulesets are the same.
    Nothing,
    /// This transaction turns the old ruleset into the new one.
    Partial(String),
    /// The change needs the whole table rebuilt ([`full`]).
    Full,
}

/// Only what changed from `old` to `new`, as one transaction.
pub fn diff(old: &Ruleset, new: &Ruleset) -> Change {
    let mut t = String::new();
    for name in new.chains.keys().filter(|n| !old.chains.contains_key(*n)) {
        let _ = writeln!(t, "add chain ip {TABLE} {name}");
    }
    for (name, timeout) in &new.affinity {
        match old.affinity.get(name) {
            Some(o) if o == timeout => {}
            // A set's timeout cannot change in place: rebuild the table.
            Some(_) => return Change::Full,
            None => {
                let _ = writeln!(
                    t,
                    "add {}",
                    affinity_decl(name, *timeout).replacen("set ", &format!("set ip {TABLE} "), 1)
                );
            }
        }
    }
    for (name, rules) in &new.chains {
        if old.chains.get(name) == Some(rules) {
            continue;
        }
        let _ = writeln!(t, "flush chain ip {TABLE} {name}");
        for r in rules {
            let _ = writeln!(t, "add rule ip {TABLE} {name} {r}");
        }
    }
    for (name, elems) in &new.elements {
        if old.elements.get(name) == Some(elems) {
            continue;
        }
        let kind = if name.ends_with("vmap") { "map" } else { "set" };
        let _ = writeln!(t, "flush {kind} ip {TABLE} {name}");
        if !elems.is_empty() {
            let _ = writeln!(
                t,
                "add element ip {TABLE} {name} {{ {} }}",
                elems.join(", ")
            );
        }
    }
    let gone: Vec<&String> = old
        .chains
        .keys()
        .filter(|n| !new.chains.contains_key(*n))
        .collect();
    for name in &gone {
        let _ = writeln!(t, "flush chain ip {TABLE} {name}");
    }
    for name in &gone {
        let _ = writeln!(t, "delete chain ip {TABLE} {name}");
    }
    for name in old
        .affinity
        .keys()
        .filter(|n| !new.affinity.contains_key(*n))
    {
        let _ = writeln!(t, "delete set ip {TABLE} {name}");
    }
    if t.is_empty() {
        Change::Nothing
    } else {
        Change::Partial(t)
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
