//! The cluster zone: every name the node answers for, built in one pass from
//! [`Sources`] after a change, then read by every query without locks or copies
//! (queries hold an `Arc<Zone>`).
//!
//! Records follow upstream's DNS specification for Kubernetes (and CoreDNS's
//! `kubernetes` plugin where the spec leaves room): `<svc>.<ns>.svc.<domain>` A/AAAA
//! with the ClusterIPs, or one record per ready endpoint for headless services plus
//! `<hostname>.<svc>.<ns>.svc.<domain>` per endpoint; `_<port>._<proto>.<svc>...` SRV
//! for named ports; ExternalName as CNAME; `<a-b-c-d>.<ns>.pod.<domain>` for any
//! well-formed address (CoreDNS's `pods insecure`, k3s's default); PTR for service,
//! endpoint and pod IPs; NXDOMAIN with the zone's SOA for everything else under the
//! domain. TTL 5 s everywhere, like the kubernetes plugin.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::names;
use super::sources::Sources;

/// TTL of every cluster record (CoreDNS's kubernetes plugin default).
pub const TTL: u32 = 5;

/// What one name holds.
#[derive(Debug, Default, Clone)]
struct Entry {
    a: Vec<Ipv4Addr>,
    aaaa: Vec<Ipv6Addr>,
    /// (port, target) of SRV records.
    srv: Vec<(u16, String)>,
    cname: Option<Name>,
}

impl Entry {
    fn add_ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => self.a.push(v4),
            IpAddr::V6(v6) => self.aaaa.push(v6),
        }
    }

    fn tidy(&mut self) {
        self.a.sort_unstable();
        self.a.dedup();
        self.aaaa.sort_unstable();
        self.aaaa.dedup();
        self.srv.sort_unstable();
        self.srv.dedup();
    }
}

/// How a query was handled by the zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The response is complete (answer, NODATA or NXDOMAIN).
    Answered,
    /// Not a cluster name: ask the upstream resolvers.
    Forward,
    /// A CNAME to a name outside the cluster was answered; its records come from upstream.
    Chase(Name),
}

/// The records of the cluster domain at one moment.
#[derive(Debug)]
pub struct Zone {
    /// Lower case, no trailing dot (`cluster.local`).
    domain: String,
    apex: Name,
    soa: Record,
    names: HashMap<String, Entry>,
    ptr: HashMap<IpAddr, Name>,
    /// The address `ns.dns.<domain>` resolves to (the kube-dns ClusterIP).
    dns_ip: Option<IpAddr>,
}

fn fqdn(name: &str) -> Option<Name> {
    Name::from_ascii(format!("{name}.")).ok()
}

impl Zone {
    /// An empty zone for `domain` (answers NXDOMAIN under it, forwards the rest).
    pub fn empty(domain: &str, dns_ip: Option<IpAddr>) -> Zone {
        Zone::build(domain, dns_ip, &Sources::default(), 0)
    }

    /// The zone of `sources`; `serial` is the SOA serial (changes with every rebuild).
    pub fn build(domain: &str, dns_ip: Option<IpAddr>, sources: &Sources, serial: u32) -> Zone {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let apex = fqdn(&domain).unwrap_or_else(Name::root);
        let soa = soa_record(&apex, serial);
        let mut b = Builder {
            domain: &domain,
            names: HashMap::new(),
            ptr: HashMap::new(),
        };
        b.services(sources);
        b.pods(sources);
        let mut names = b.names;
        for e in names.values_mut() {
            e.tidy();
        }
        // Empty non-terminals (`default.svc.<domain>`) exist: NODATA, not NXDOMAIN.
        let keys: Vec<String> = names.keys().cloned().collect();
        for k in &keys {
            for p in names::parents(k, &domain) {
                if !names.contains_key(p) {
                    names.insert(p.to_string(), Entry::default());
                }
            }
        }
        for fixed in ["svc", "pod"] {
            names.entry(format!("{fixed}.{domain}")).or_default();
        }
        let ptr = b
            .ptr
            .into_iter()
            .filter_map(|(ip, n)| Some((ip, fqdn(&n)?)))
            .collect();
        Zone {
            domain,
            apex,
            soa,
            names,
            ptr,
            dns_ip,
        }
    }

    /// The cluster domain (lower case, no trailing dot).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Number of names with records (for logs and benchmarks).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the zone holds no names besides the fixed ones.
    pub fn is_empty(&self) -> bool {
        self.names.len() <= 2
    }

    /// Answers `qname`/`qtype` into `resp` when it is a cluster name (or the PTR of a
    /// cluster address); says what else to do otherwise.
    pub fn answer(&self, qname: &Name, qtype: RecordType, resp: &mut Message) -> Outcome {
        let lower = qname.to_lowercase().to_ascii();
        let key = lower.strip_suffix('.').unwrap_or(&lower);
        if let Some(ip) = names::reverse(key) {
            let Some(target) = self.ptr.get(&ip) else {
                return Outcome::Forward;
            };
            resp.metadata.authoritative = true;
            if matches!(qtype, RecordType::PTR | RecordType::ANY) {
                resp.add_answer(rec(qname, RData::PTR(PTR(target.clone()))));
            } else {
                resp.add_authority(self.soa.clone());
            }
            return Outcome::Answered;
        }
        let Some(rel) = names::relative(key, &self.domain) else {
            return Outcome::Forward;
        };
        resp.metadata.authoritative = true;
        if rel.is_empty() {
            self.apex_answer(qname, qtype, resp);
            return Outcome::Answered;
        }
        if let Some(entry) = self.names.get(key) {
            return self.entry_answer(qname, qtype, entry, resp);
        }
        if let Some(ip) = pod_record(rel) {
            let mut e = Entry::default();
            e.add_ip(ip);
            return self.entry_answer(qname, qtype, &e, resp);
        }
        // `<ns>.pod.<domain>` exists for any namespace in insecure pod mode.
        if rel.ends_with(".pod") && rel.matches('.').count() == 1 {
            resp.add_authority(self.soa.clone());
            return Outcome::Answered;
        }
        resp.metadata.response_code = ResponseCode::NXDomain;
        resp.add_authority(self.soa.clone());
        Outcome::Answered
    }

    fn apex_answer(&self, qname: &Name, qtype: RecordType, resp: &mut Message) {
        let ns_name = Name::from_ascii("ns.dns")
            .ok()
            .and_then(|n| n.append_domain(&self.apex).ok());
        match (qtype, ns_name) {
            (RecordType::SOA, _) => resp.add_answer(self.soa.clone()),
            (RecordType::NS, Some(ns)) => {
                resp.add_answer(rec(qname, RData::NS(NS(ns.clone()))));
                if let Some(IpAddr::V4(ip)) = self.dns_ip {
                    resp.add_additional(rec(&ns, RData::A(A(ip))));
                }
                resp
            }
            _ => resp.add_authority(self.soa.clone()),
        };
    }

    fn entry_answer(
        &self,
        qname: &Name,
        qtype: RecordType,
        e: &Entry,
        resp: &mut Message,
    ) -> Outcome {
        if let Some(target) = &e.cname {
            resp.add_answer(rec(qname, RData::CNAME(CNAME(target.clone()))));
            if qtype == RecordType::CNAME {
                return Outcome::Answered;
            }
            let lower = target.to_lowercase().to_ascii();
            let tkey = lower.strip_suffix('.').unwrap_or(&lower);
            return match (names::relative(tkey, &self.domain), self.names.get(tkey)) {
                (Some(_), Some(t)) if t.cname.is_none() => {
                    self.add_records(target, qtype, t, resp);
                    Outcome::Answered
                }
                (Some(_), _) => Outcome::Answered,
                (None, _) => Outcome::Chase(target.clone()),
            };
        }
        self.add_records(qname, qtype, e, resp);
        if resp.answers.is_empty() {
            resp.add_authority(self.soa.clone());
        }
        Outcome::Answered
    }

    fn add_records(&self, owner: &Name, qtype: RecordType, e: &Entry, resp: &mut Message) {
        let any = qtype == RecordType::ANY;
        if qtype == RecordType::A || any {
            for ip in &e.a {
                resp.add_answer(rec(owner, RData::A(A(*ip))));
            }
        }
        if qtype == RecordType::AAAA || any {
            for ip in &e.aaaa {
                resp.add_answer(rec(owner, RData::AAAA(AAAA(*ip))));
            }
        }
        if qtype == RecordType::SRV || any {
            // CoreDNS's weighting: equal shares of 100.
            let weight = (100 / e.srv.len().max(1)) as u16;
            for (port, target) in &e.srv {
                let Some(t) = fqdn(target) else { continue };
                resp.add_answer(rec(
                    owner,
                    RData::SRV(SRV::new(0, weight, *port, t.clone())),
                ));
                if let Some(te) = self.names.get(target.as_str()) {
                    for ip in &te.a {
                        resp.add_additional(rec(&t, RData::A(A(*ip))));
                    }
                    for ip in &te.aaaa {
                        resp.add_additional(rec(&t, RData::AAAA(AAAA(*ip))));
                    }
                }
            }
        }
    }
}

fn rec(owner: &Name, data: RData) -> Record {
    Record::from_rdata(owner.clone(), TTL, data)
}

/// The zone's SOA, as CoreDNS writes it (`ns.dns.<domain> hostmaster.<domain>`,
/// negative answers cached for the TTL).
fn soa_record(apex: &Name, serial: u32) -> Record {
    let name = |prefix: &str| {
        Name::from_ascii(prefix)
            .ok()
            .and_then(|n| n.append_domain(apex).ok())
            .unwrap_or_else(|| apex.clone())
    };
    let soa = SOA::new(
        name("ns.dns"),
        name("hostmaster"),
        serial,
        7200,
        1800,
        86400,
        TTL,
    );
    Record::from_rdata(apex.clone(), TTL, RData::SOA(soa))
}

/// The address of `<a-b-c-d>.<ns>.pod` (relative to the domain).
fn pod_record(rel: &str) -> Option<IpAddr> {
    let mut labels = rel.split('.');
    let (ip, _ns, pod, end) = (
        labels.next()?,
        labels.next()?,
        labels.next()?,
        labels.next(),
    );
    if pod != "pod" || end.is_some() {
        return None;
    }
    names::undashed(ip)
}

/// Collects records while building.
struct Builder<'a> {
    domain: &'a str,
    names: HashMap<String, Entry>,
    /// IP → owner name (no trailing dot); the first writer wins, services first.
    ptr: HashMap<IpAddr, String>,
}

impl Builder<'_> {
    fn entry(&mut self, name: String) -> &mut Entry {
        self.names.entry(name).or_default()
    }

    fn services(&mut self, sources: &Sources) {
        let mut slices_by_service: HashMap<(&str, &str), Vec<&super::sources::Slice>> =
            HashMap::new();
        for s in sources.slices.values() {
            slices_by_service
                .entry((s.namespace.as_str(), s.service.as_str()))
                .or_default()
                .push(s);
        }
        let domain = self.domain;
        for svc in sources.services.values() {
            let base = format!("{}.{}.svc.{domain}", svc.name, svc.namespace);
            if let Some(ext) = &svc.external_name {
                if let Some(target) = fqdn(ext) {
                    self.entry(base).cname = Some(target);
                }
                continue;
            }
            if !svc.headless {
                if svc.cluster_ips.is_empty() {
                    // No IP allocated yet: the name exists, without records.
                    self.entry(base);
                    continue;
                }
                for ip in &svc.cluster_ips {
                    self.entry(base.clone()).add_ip(*ip);
                    self.ptr.insert(*ip, base.clone());
                }
                for p in &svc.ports {
                    let srv = format!("_{}._{}.{base}", p.name, p.protocol);
                    self.entry(srv).srv.push((p.port, base.clone()));
                    self.entry(base.clone()).srv.push((p.port, base.clone()));
                }
                continue;
            }
            self.entry(base.clone());
            let key = (svc.namespace.as_str(), svc.name.as_str());
            for slice in slices_by_service.get(&key).into_iter().flatten() {
                for ep in slice.endpoints.iter().filter(|e| e.ready) {
                    for ip in &ep.addresses {
                        let host = ep.hostname.clone().unwrap_or_else(|| names::dashed(*ip));
                        let ep_name = format!("{host}.{base}");
                        self.entry(base.clone()).add_ip(*ip);
                        self.entry(ep_name.clone()).add_ip(*ip);
                        self.ptr.entry(*ip).or_insert_with(|| ep_name.clone());
                        for p in &slice.ports {
                            let srv = format!("_{}._{}.{base}", p.name, p.protocol);
                            self.entry(srv).srv.push((p.port, ep_name.clone()));
                            self.entry(base.clone()).srv.push((p.port, ep_name.clone()));
                        }
                    }
                }
            }
        }
    }

    fn pods(&mut self, sources: &Sources) {
        let domain = self.domain;
        for pod in sources.pods.values() {
            // `<hostname>.<subdomain>.<ns>.svc` when a headless service of that name
            // exists (upstream's rule for pod hostname + subdomain).
            if let (Some(host), Some(sub)) = (&pod.hostname, &pod.subdomain) {
                let svc_key = format!("{}/{sub}", pod.namespace);
                if sources.services.get(&svc_key).is_some_and(|s| s.headless) {
                    let name = format!("{host}.{sub}.{}.svc.{domain}", pod.namespace);
                    for ip in &pod.ips {
                        self.entry(name.clone()).add_ip(*ip);
                        self.ptr.entry(*ip).or_insert_with(|| name.clone());
                    }
                }
            }
            for ip in &pod.ips {
                self.ptr.entry(*ip).or_insert_with(|| {
                    format!("{}.{}.pod.{domain}", names::dashed(*ip), pod.namespace)
                });
            }
        }
    }
}

#[cfg(test)]
#[path = "zone_tests.rs"]
mod tests;
