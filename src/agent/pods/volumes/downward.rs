//! The downward API: a pod's own fields (`fieldRef`) and a container's resources
//! (`resourceFieldRef`) as strings, for env vars and downwardAPI volume files, with
//! upstream's formats (label maps as sorted `key="value"` lines, resources divided
//! and rounded up, limits defaulting to what the node has).

use k8s_openapi::api::core::v1::{Container, Pod, ResourceFieldSelector};

use super::quantity::Quantity;
use super::NodeFacts;

/// Resolves a `fieldRef.fieldPath`. Errors carry upstream's wording.
pub fn pod_field(pod: &Pod, path: &str, node: &NodeFacts) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    if let Some((base, key)) = subscripted(path) {
        let map = match base {
            "metadata.annotations" => meta.annotations.as_ref(),
            "metadata.labels" => meta.labels.as_ref(),
            _ => return Err(format!("fieldPath {path:?} does not support subscript")),
        };
        return Ok(map.and_then(|m| m.get(key)).cloned().unwrap_or_default());
    }
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.iter().flatten()),
        "metadata.annotations" => format_map(meta.annotations.iter().flatten()),
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| node.node_name.clone()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => node.host_ip.clone().unwrap_or_default(),
        "status.podIP" => node.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => node.pod_ips.join(","),
        _ => return Err(format!("unsupported fieldPath: {path}")),
    })
}

/// `metadata.labels['app']` → (`metadata.labels`, `app`).
fn subscripted(path: &str) -> Option<(&str, &str)> {
    let (base, rest) = path.split_once("['")?;
    let key = rest.strip_suffix("']")?;
    Some((base, key))
}

/// Upstream's `fieldpath.FormatMap`: sorted `key="value"` lines, values quoted like
/// Go's `%q`, no trailing newline.
fn format_map<'a>(map: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    let mut entries: Vec<_> = map.collect();
    entries.sort();
    entries
        .iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Go's `strconv.Quote` for the characters labels and annotations hold.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What a container may use when it sets no limit: the node's capacity (upstream
/// defaults limits to node allocatable for the downward API).
#[derive(Debug, Clone, Copy)]
pub struct NodeCapacity {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
}

impl NodeCapacity {
    /// Reads this machine's online CPUs, RAM and root filesystem size.
    pub fn of_host() -> NodeCapacity {
        // SAFETY: sysconf only reads a system value.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as i64;
        // SAFETY: sysinfo writes into the zeroed struct we pass.
        let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
        let memory = if unsafe { libc::sysinfo(&mut info) } == 0 {
            (info.totalram as i64).saturating_mul(info.mem_unit as i64)
        } else {
            0
        };
        // SAFETY: statvfs writes into the zeroed struct we pass; the path is a literal.
        let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
        let storage = if unsafe { libc::statvfs(c"/".as_ptr(), &mut vfs) } == 0 {
            (vfs.f_blocks as i64).saturating_mul(vfs.f_frsize as i64)
        } else {
            0
        };
        NodeCapacity {
            milli_cpu: cpus * 1000,
            memory,
            ephemeral_storage: storage,
        }
    }
}

/// A container's quantity for `resource` (`cpu`, `memory`, ...) in `limits` or
/// `requests`; `None` when unset or unparsable.
pub fn container_quantity(
    container: &Container,
    section: &str,
    resource: &str,
) -> Option<Quantity> {
    let r = container.resources.as_ref()?;
    let map = match section {
        "limits" => r.limits.as_ref()?,
        _ => r.requests.as_ref()?,
    };
    Quantity::parse(&map.get(resource)?.0).ok()
}

/// Resolves a `resourceFieldRef` against a container like upstream's
/// `ExtractContainerResourceValue`: value divided by the divisor, rounded up.
pub fn container_resource(
    sel: &ResourceFieldSelector,
    container: &Container,
    capacity: &NodeCapacity,
) -> Result<String, String> {
    let divisor = match &sel.divisor {
        Some(d) => Quantity::parse(&d.0).map_err(|e| e.to_string())?,
        None => Quantity::from_units(1),
    };
    let divisor = if divisor.is_zero() {
        Quantity::from_units(1)
    } else {
        divisor
    };
    let (section, resource) = sel
        .resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported container resource : {}", sel.resource))?;
    if section != "limits" && section != "requests" {
        return Err(format!("unsupported container resource : {}", sel.resource));
    }
    let set = container_quantity(container, section, resource);
    // Limits default to the node's capacity; requests default to 0.
    let value = |default: Quantity| match (set, section) {
        (Some(q), _) => q,
        (None, "limits") => default,
        (None, _) => Quantity::from_units(0),
    };
    let ceil = |a: i64, b: i64| -> i64 {
        if b == 0 {
            return 0;
        }
        (a as f64 / b as f64).ceil() as i64
    };
    Ok(match resource {
        "cpu" => {
            let v = value(Quantity::from_milli(capacity.milli_cpu));
            ceil(v.milli_value(), divisor.milli_value())
        }
        "memory" => {
            let v = value(Quantity::from_units(capacity.memory));
            ceil(v.value(), divisor.value())
        }
        "ephemeral-storage" => {
            let v = value(Quantity::from_units(capacity.ephemeral_storage));
            ceil(v.value(), divisor.value())
        }
        r if r.starts_with("hugepages-") => {
            let v = set.unwrap_or(Quantity::from_units(0));
            ceil(v.value(), divisor.value())
        }
        _ => return Err(format!("unsupported container resource : {}", sel.resource)),
    }
    .to_string())
}

#[cfg(test)]
mod tests {
    use super::super::test_node as node;
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
    use std::collections::BTreeMap;

    fn pod() -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("web".into());
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = Some("u-1".into());
        p.metadata.labels = Some(BTreeMap::from([
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "say \"hi\"\n".to_string()),
        ]));
        p.spec = Some(PodSpec {
            service_account_name: Some("sa".into()),
            ..Default::default()
        });
        p
    }

    #[test]
    fn fields_resolve_like_upstream() {
        let (p, n) = (pod(), node());
        let f = |path: &str| pod_field(&p, path, &n);
        assert_eq!(f("metadata.name").unwrap(), "web");
        assert_eq!(f("metadata.uid").unwrap(), "u-1");
        assert_eq!(f("metadata.labels['b']").unwrap(), "2");
        assert_eq!(f("metadata.labels['zz']").unwrap(), "");
        assert_eq!(
            f("metadata.labels").unwrap(),
            "a=\"say \\\"hi\\\"\\n\"\nb=\"2\""
        );
        assert_eq!(f("spec.nodeName").unwrap(), "node1");
        assert_eq!(f("spec.serviceAccountName").unwrap(), "sa");
        assert_eq!(f("status.podIP").unwrap(), "10.42.0.7");
        assert_eq!(f("status.podIPs").unwrap(), "10.42.0.7,fd00::7");
        assert_eq!(f("status.hostIP").unwrap(), "192.168.1.10");
        assert_eq!(
            f("spec.bogus").unwrap_err(),
            "unsupported fieldPath: spec.bogus"
        );
    }

    #[test]
    fn resources_divide_round_up_and_default_to_node() {
        let c = Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                limits: Some(BTreeMap::from([
                    ("cpu".to_string(), Q("250m".into())),
                    ("memory".to_string(), Q("64Mi".into())),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let cap = NodeCapacity {
            milli_cpu: 4000,
            memory: 8 << 30,
            ephemeral_storage: 0,
        };
        let sel = |r: &str, d: Option<&str>| ResourceFieldSelector {
            resource: r.into(),
            divisor: d.map(|d| Q(d.into())),
            container_name: None,
        };
        let get = |r, d| container_resource(&sel(r, d), &c, &cap).unwrap();
        assert_eq!(get("limits.cpu", None), "1");
        assert_eq!(get("limits.cpu", Some("1m")), "250");
        assert_eq!(get("limits.memory", None), "67108864");
        assert_eq!(get("limits.memory", Some("1Mi")), "64");
        assert_eq!(get("requests.cpu", Some("1m")), "0");
        let bare = Container::default();
        assert_eq!(
            container_resource(&sel("limits.cpu", None), &bare, &cap).unwrap(),
            "4"
        );
        assert_eq!(
            container_resource(&sel("limits.memory", Some("1Gi")), &bare, &cap).unwrap(),
            "8"
        );
        assert!(container_resource(&sel("limits.gpu", None), &c, &cap).is_err());
    }
}
