//! The pod-level files every container gets: `/etc/hosts` (upstream kubelet's
//! managed hosts file), `/etc/hostname` and `/etc/resolv.conf` (the kubelet's DNS
//! policy rules, written in containerd's format). Files are rewritten in place and
//! only when their content changes, so bind mounts in running containers keep
//! pointing at them.

use std::io;
use std::path::Path;

use k8s_openapi::api::core::v1::{HostAlias, Pod};

use super::NodeFacts;

const MANAGED_HOSTS_HEADER: &str = "# Kubernetes-managed hosts file.\n";
const MANAGED_HOSTS_HEADER_HOST_NETWORK: &str = "# Kubernetes-managed hosts file (host network).\n";
/// Upstream's limits (`validation.MaxDNSNameservers`, `MaxDNSSearchPaths`).
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// Writes `content` to `path` unless it holds exactly that already. In place (not
/// rename) so the inode a container has bind-mounted sees the new content.
pub fn write_if_changed(path: &Path, content: &[u8]) -> io::Result<bool> {
    if std::fs::read(path).map(|c| c == content).unwrap_or(false) {
        return Ok(false);
    }
    std::fs::write(path, content)?;
    Ok(true)
}

pub fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The pod's hostname: `spec.hostname` or the pod name, cut to 63 characters without
/// a trailing `-` or `.` (upstream's `truncatePodHostnameIfNeeded`).
pub fn pod_hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    if name.len() <= 63 {
        return name;
    }
    name[..63].trim_end_matches(['-', '.']).to_string()
}

/// `<subdomain>.<namespace>.svc.<cluster domain>` when the pod sets a subdomain.
fn pod_domain(pod: &Pod, node: &NodeFacts) -> Option<String> {
    let sub = pod
        .spec
        .as_ref()?
        .subdomain
        .clone()
        .filter(|s| !s.is_empty())?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    Some(format!("{sub}.{ns}.svc.{}", node.cluster_domain))
}

/// The machine's hostname (what a hostNetwork pod sees).
pub fn node_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn host_aliases(aliases: &[HostAlias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = "\n# Entries added by HostAliases.\n".to_string();
    for a in aliases {
        let names = a.hostnames.clone().unwrap_or_default().join("\t");
        out.push_str(&format!("{}\t{names}\n", a.ip));
    }
    out
}

/// The managed hosts file. For hostNetwork pods: the node's hosts file
/// (`node_hosts`) under the host-network header.
pub fn hosts_file(pod: &Pod, node: &NodeFacts, node_hosts: &str) -> String {
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.clone())
        .unwrap_or_default();
    if host_network(pod) {
        return format!(
            "{MANAGED_HOSTS_HEADER_HOST_NETWORK}{node_hosts}{}",
            host_aliases(&aliases)
        );
    }
    let mut out = String::from(MANAGED_HOSTS_HEADER);
    out.push_str("127.0.0.1\tlocalhost\n");
    out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str("fe00::0\tip6-localnet\n");
    out.push_str("fe00::0\tip6-mcastprefix\n");
    out.push_str("fe00::1\tip6-allnodes\n");
    out.push_str("fe00::2\tip6-allrouters\n");
    let hostname = pod_hostname(pod);
    for ip in &node.pod_ips {
        match pod_domain(pod, node) {
            Some(domain) => out.push_str(&format!("{ip}\t{hostname}.{domain}\t{hostname}\n")),
            None => out.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    out.push_str(&host_aliases(&aliases));
    out
}

/// nameserver, search and options of a resolv.conf (upstream's `parseResolvConf`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// Parses a resolv.conf: every `nameserver`, the last `search` line (trailing dots
/// dropped), `options` merged with later ones winning.
pub fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut cfg = DnsConfig::default();
    for line in text.lines() {
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["nameserver", ns, ..] => cfg.nameservers.push(ns.to_string()),
            ["search", rest @ ..] => {
                cfg.searches = rest
                    .iter()
                    .filter(|s| **s != ".")
                    .map(|s| s.trim_end_matches('.').to_string())
                    .collect();
            }
            ["options", rest @ ..] => {
                let opts: Vec<(String, Option<String>)> =
                    rest.iter().map(|o| split_opt(o)).collect();
                cfg.options = merge_options(&cfg.options, &opts);
            }
            _ => {}
        }
    }
    cfg
}

fn split_opt(o: &str) -> (String, Option<String>) {
    match o.split_once(':') {
        Some((k, v)) => (k.to_string(), Some(v.to_string())),
        None => (o.to_string(), None),
    }
}

/// Options by name, later ones replacing earlier ones in place.
fn merge_options(existing: &[String], extra: &[(String, Option<String>)]) -> Vec<String> {
    let mut merged: Vec<(String, Option<String>)> = existing.iter().map(|o| split_opt(o)).collect();
    for (k, v) in extra {
        match merged.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = v.clone(),
            None => merged.push((k.clone(), v.clone())),
        }
    }
    merged
        .into_iter()
        .map(|(k, v)| match v.filter(|v| !v.is_empty()) {
            Some(v) => format!("{k}:{v}"),
            None => k,
        })
        .collect()
}

fn push_unique(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for i in items {
        if !list.contains(&i) {
            list.push(i);
        }
    }
}

/// The pod's DNS settings from its dnsPolicy and dnsConfig (upstream's `GetPodDNS`):
/// ClusterFirst (Default for hostNetwork pods) uses the cluster DNS and search path
/// with `ndots:5`, Default the host's resolv.conf, None only the pod's dnsConfig.
pub fn pod_dns(pod: &Pod, node: &NodeFacts, host: &DnsConfig) -> DnsConfig {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let cluster = match policy {
        "None" => None,
        "ClusterFirstWithHostNet" => Some(true),
        "Default" => Some(false),
        // ClusterFirst and anything unknown (the API server rejects those).
        _ => Some(!host_network(pod)),
    };
    let mut cfg = match cluster {
        None => DnsConfig::default(),
        // Without a cluster DNS address the kubelet falls back to the host's.
        Some(true) if !node.cluster_dns.is_empty() => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let domain = &node.cluster_domain;
            let mut searches = Vec::new();
            push_unique(
                &mut searches,
                [
                    format!("{ns}.svc.{domain}"),
                    format!("svc.{domain}"),
                    domain.clone(),
                ],
            );
            push_unique(&mut searches, host.searches.iter().cloned());
            DnsConfig {
                nameservers: node.cluster_dns.clone(),
                searches,
                options: vec!["ndots:5".to_string()],
            }
        }
        Some(_) => host.clone(),
    };
    if let Some(extra) = spec.and_then(|s| s.dns_config.as_ref()) {
        push_unique(
            &mut cfg.nameservers,
            extra.nameservers.iter().flatten().cloned(),
        );
        push_unique(&mut cfg.searches, extra.searches.iter().flatten().cloned());
        let opts: Vec<(String, Option<String>)> = extra
            .options
            .iter()
            .flatten()
            .filter_map(|o| Some((o.name.clone()?, o.value.clone())))
            .collect();
        cfg.options = merge_options(&cfg.options, &opts);
    }
    cfg.nameservers.truncate(MAX_NAMESERVERS);
    cfg.searches.truncate(MAX_SEARCHES);
    cfg
}

/// resolv.conf text in containerd's order: search, nameservers, options.
pub fn render_resolv_conf(cfg: &DnsConfig) -> String {
    let mut out = String::new();
    if !cfg.searches.is_empty() {
        out.push_str(&format!("search {}\n", cfg.searches.join(" ")));
    }
    for ns in &cfg.nameservers {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    if !cfg.options.is_empty() {
        out.push_str(&format!("options {}\n", cfg.options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_node as node;
    use super::*;
    use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption, PodSpec};

    fn pod(policy: Option<&str>, host_net: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("web-0".into());
        p.metadata.namespace = Some("shop".into());
        p.spec = Some(PodSpec {
            dns_policy: policy.map(String::from),
            host_network: Some(host_net),
            ..Default::default()
        });
        p
    }

    const HOST: &str = "# generated\nnameserver 192.168.1.1\nnameserver 192.168.1.2\nsearch lan. example.com\noptions edns0 timeout:2\n";

    fn resolv(p: &Pod) -> String {
        render_resolv_conf(&pod_dns(p, &node(), &parse_resolv_conf(HOST)))
    }

    #[test]
    fn cluster_first_uses_cluster_dns_and_search_path() {
        assert_eq!(
            resolv(&pod(None, false)),
            "search shop.svc.cluster.local svc.cluster.local cluster.local lan example.com\n\
             nameserver 10.43.0.10\noptions ndots:5\n"
        );
        // hostNetwork pods fall back to the host's unless ClusterFirstWithHostNet.
        let host = "search lan example.com\nnameserver 192.168.1.1\nnameserver 192.168.1.2\noptions edns0 timeout:2\n";
        assert_eq!(resolv(&pod(Some("ClusterFirst"), true)), host);
        assert_eq!(resolv(&pod(Some("Default"), false)), host);
        assert!(
            resolv(&pod(Some("ClusterFirstWithHostNet"), true)).contains("nameserver 10.43.0.10\n")
        );
        // No cluster DNS configured: the host's.
        let mut n = node();
        n.cluster_dns.clear();
        let cfg = pod_dns(&pod(None, false), &n, &parse_resolv_conf(HOST));
        assert_eq!(render_resolv_conf(&cfg), host);
    }

    #[test]
    fn none_and_dns_config_merge() {
        let mut p = pod(Some("None"), false);
        assert_eq!(resolv(&p), "");
        p.spec.as_mut().unwrap().dns_config = Some(PodDNSConfig {
            nameservers: Some(vec!["1.1.1.1".into()]),
            searches: Some(vec!["my.dns.search".into()]),
            options: Some(vec![PodDNSConfigOption {
                name: Some("ndots".into()),
                value: Some("2".into()),
            }]),
        });
        assert_eq!(
            resolv(&p),
            "search my.dns.search\nnameserver 1.1.1.1\noptions ndots:2\n"
        );
        let mut p = pod(None, false);
        p.spec.as_mut().unwrap().dns_config = Some(PodDNSConfig {
            nameservers: Some(vec!["10.43.0.10".into(), "8.8.8.8".into()]),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("1".into()),
                },
                PodDNSConfigOption {
                    name: Some("edns0".into()),
                    value: None,
                },
            ]),
            searches: None,
        });
        let out = resolv(&p);
        assert!(
            out.contains("nameserver 10.43.0.10\nnameserver 8.8.8.8\n"),
            "{out}"
        );
        assert!(out.ends_with("options ndots:1 edns0\n"), "{out}");
    }

    #[test]
    fn hosts_file_matches_kubelet() {
        let mut p = pod(None, false);
        p.spec.as_mut().unwrap().host_aliases = Some(vec![HostAlias {
            ip: "10.1.2.3".into(),
            hostnames: Some(vec!["foo.local".into(), "bar.local".into()]),
        }]);
        assert_eq!(
            hosts_file(&p, &node(), ""),
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
             fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n\
             10.42.0.7\tweb-0\nfd00::7\tweb-0\n\n# Entries added by HostAliases.\n\
             10.1.2.3\tfoo.local\tbar.local\n"
        );
        let spec = p.spec.as_mut().unwrap();
        spec.hostname = Some("db".into());
        spec.subdomain = Some("cluster".into());
        spec.host_aliases = None;
        assert!(hosts_file(&p, &node(), "").ends_with("10.42.0.7\tdb.cluster.shop.svc.cluster.local\tdb\nfd00::7\tdb.cluster.shop.svc.cluster.local\tdb\n"));
        let hn = pod(None, true);
        assert_eq!(
            hosts_file(&hn, &node(), "127.0.0.1 localhost\n"),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n"
        );
    }

    #[test]
    fn hostnames_truncate_to_63() {
        let mut p = pod(None, false);
        p.metadata.name = Some(format!("{}-{}", "a".repeat(62), "b".repeat(10)));
        assert_eq!(pod_hostname(&p), "a".repeat(62));
    }
}
