//! Services (`ValidateService`, `ValidateServiceUpdate`). Allocation (cluster IPs, node
//! ports, health check ports) belongs to the service registry, so its rules are not here.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::super::status::FieldError;
use super::field::{arr, dedup, get, has, int, obj, str_of, Path};
use super::meta::labels;
use super::names::{
    is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_qualified_name, is_valid_cidr,
    is_valid_ip, is_valid_port_num,
};
use super::probe::port_num_or_name;

fn cluster_ips(spec: &Value) -> Vec<&str> {
    let ips: Vec<&str> = arr(spec, "clusterIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if ips.is_empty() && !str_of(spec, "clusterIP").is_empty() {
        // The strategy keeps clusterIPs in step with clusterIP before validating.
        return vec![str_of(spec, "clusterIP")];
    }
    ips
}

fn headless(spec: &Value) -> bool {
    cluster_ips(spec) == ["None"]
}

fn externally_accessible(spec: &Value) -> bool {
    match str_of(spec, "type") {
        "LoadBalancer" | "NodePort" => true,
        "ClusterIP" => !arr(spec, "externalIPs").is_empty(),
        _ => false,
    }
}

/// The (protocol, port) key upstream reports for duplicate ports: an internal Go struct
/// without JSON tags, so its field names are capitalised.
fn port_key(protocol: &str, port: i64) -> Value {
    json!({"Name": "", "Protocol": protocol, "AppProtocol": null, "Port": port, "TargetPort": 0, "NodePort": 0})
}

fn service_port(
    p: &Value,
    require_name: bool,
    names: &mut HashSet<String>,
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = str_of(p, "name");
    if require_name && name.is_empty() {
        errs.push(FieldError::required(path.child("name")));
    } else if !name.is_empty() {
        for m in is_dns1123_label(name) {
            errs.push(FieldError::invalid(
                path.child("name"),
                &Value::from(name),
                &m,
            ));
        }
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(
                path.child("name"),
                &Value::from(name),
            ));
        }
    }
    let port = int(p, "port").unwrap_or(0);
    for m in is_valid_port_num(port) {
        errs.push(FieldError::invalid(
            path.child("port"),
            &Value::from(port),
            &m,
        ));
    }
    match str_of(p, "protocol") {
        "" => errs.push(FieldError::required(path.child("protocol"))),
        "TCP" | "UDP" | "SCTP" => {}
        other => errs.push(FieldError::not_supported(
            path.child("protocol"),
            &Value::from(other),
            &["SCTP", "TCP", "UDP"],
        )),
    }
    errs.extend(port_num_or_name(
        get(p, "targetPort"),
        &path.child("targetPort"),
    ));
    if let Some(ap) = get(p, "appProtocol").and_then(Value::as_str) {
        for m in is_qualified_name(ap) {
            errs.push(FieldError::invalid(
                path.child("appProtocol"),
                &Value::from(ap),
                &m,
            ));
        }
    }
    // Allocation checks the configured range; anything outside a port number is never valid.
    if let Some(np) = int(p, "nodePort").filter(|n| !(0..=65535).contains(n)) {
        errs.push(FieldError::invalid(
            path.child("nodePort"),
            &Value::from(np),
            "must be between 0 and 65535, inclusive",
        ));
    }
    errs
}

fn cluster_ip_fields(spec: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if str_of(spec, "type") == "ExternalName" {
        return errs;
    }
    let ips_path = path.child("clusterIPs");
    let ips: Vec<&str> = arr(spec, "clusterIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let ips_value = get(spec, "clusterIPs").cloned().unwrap_or(Value::Null);
    let ip = str_of(spec, "clusterIP");
    if !ip.is_empty() {
        if ips.is_empty() {
            errs.push(FieldError::required(&ips_path));
        } else if ips[0] != ip {
            errs.push(FieldError::invalid(
                &ips_path,
                &ips_value,
                "first value must match `clusterIP`",
            ));
        }
    } else if !ips.is_empty() {
        errs.push(FieldError::invalid(
            &ips_path,
            &ips_value,
            "must be empty when `clusterIP` is not specified",
        ));
    }
    let mut seen = HashSet::new();
    for (i, f) in arr(spec, "ipFamilies").iter().enumerate() {
        let f = f.as_str().unwrap_or("");
        if f != "IPv4" && f != "IPv6" {
            errs.push(FieldError::not_supported(
                path.child("ipFamilies").index(i),
                &Value::from(f),
                &["IPv4", "IPv6"],
            ));
        }
        if !seen.insert(f) {
            errs.push(FieldError::duplicate(
                path.child("ipFamilies").index(i),
                &Value::from(f),
            ));
        }
    }
    if let Some(policy) = get(spec, "ipFamilyPolicy").and_then(Value::as_str) {
        if !matches!(
            policy,
            "SingleStack" | "PreferDualStack" | "RequireDualStack"
        ) {
            errs.push(FieldError::not_supported(
                path.child("ipFamilyPolicy"),
                &Value::from(policy),
                &["PreferDualStack", "RequireDualStack", "SingleStack"],
            ));
        }
    }
    let mut invalid = false;
    for (i, v) in ips.iter().enumerate() {
        if i == 0 && *v == "None" {
            if ips.len() > 1 {
                invalid = true;
                errs.push(FieldError::invalid(
                    &ips_path,
                    &ips_value,
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        for m in is_valid_ip(v) {
            invalid = true;
            errs.push(FieldError::invalid(ips_path.index(i), &Value::from(*v), &m));
        }
    }
    if ips.len() > 2 {
        errs.push(FieldError::invalid(
            &ips_path,
            &ips_value,
            "may only hold up to 2 values",
        ));
    }
    if invalid {
        return errs;
    }
    if ips.len() > 1 {
        let v6: Vec<bool> = ips.iter().map(|s| s.contains(':')).collect();
        if v6.iter().all(|x| *x) || v6.iter().all(|x| !*x) {
            errs.push(FieldError::invalid(
                &ips_path,
                &ips_value,
                "may specify no more than one IP for each IP family",
            ));
        }
    }
    if !headless(spec) {
        for (i, (ip, family)) in ips.iter().zip(arr(spec, "ipFamilies")).enumerate() {
            let family = family.as_str().unwrap_or("");
            if family == "IPv4" && ip.contains(':') {
                errs.push(FieldError::invalid(
                    ips_path.index(i),
                    &Value::from(*ip),
                    &format!("expected an IPv4 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
            if family == "IPv6" && !ip.contains(':') {
                errs.push(FieldError::invalid(
                    ips_path.index(i),
                    &Value::from(*ip),
                    &format!("expected an IPv6 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
        }
    }
    errs
}

fn create_rules(svc: &Value) -> Vec<FieldError> {
    let meta = get(svc, "metadata").unwrap_or(&Value::Null);
    let spec = get(svc, "spec").unwrap_or(&Value::Null);
    let path = Path::new("spec");
    let mut errs = Vec::new();

    // Service names are DNS-1035 labels. The generic metadata check (DNS-1123 label) catches
    // everything else; only a leading digit is left for this one.
    let name = str_of(meta, "name");
    if !name.is_empty() && is_dns1123_label(name).is_empty() {
        for m in is_dns1035_label(name) {
            errs.push(FieldError::invalid("metadata.name", &Value::from(name), &m));
        }
    }

    let typ = str_of(spec, "type");
    let ports = arr(spec, "ports");
    if ports.is_empty() && !headless(spec) && typ != "ExternalName" {
        errs.push(FieldError::required(path.child("ports")));
    }
    match typ {
        "LoadBalancer" | "NodePort" if headless(spec) => errs.push(FieldError::invalid(
            path.child("clusterIPs").index(0),
            &Value::from("None"),
            &format!("may not be set to 'None' for {typ} services"),
        )),
        "ExternalName" => {
            if !arr(spec, "clusterIPs").is_empty() {
                errs.push(FieldError::forbidden(
                    path.child("clusterIPs"),
                    "may not be set for ExternalName services",
                ));
            }
            if !arr(spec, "ipFamilies").is_empty() {
                errs.push(FieldError::forbidden(
                    path.child("ipFamilies"),
                    "may not be set for ExternalName services",
                ));
            }
            if has(spec, "ipFamilyPolicy") {
                errs.push(FieldError::forbidden(
                    path.child("ipFamilyPolicy"),
                    "may not be set for ExternalName services",
                ));
            }
            let cname = str_of(spec, "externalName");
            let cname = cname.strip_suffix('.').unwrap_or(cname);
            if cname.is_empty() {
                errs.push(FieldError::required(path.child("externalName")));
            } else {
                for m in is_dns1123_subdomain(cname) {
                    errs.push(FieldError::invalid(
                        path.child("externalName"),
                        &Value::from(cname),
                        &m,
                    ));
                }
            }
        }
        _ => {}
    }
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        errs.extend(service_port(
            p,
            ports.len() > 1,
            &mut names,
            &path.child("ports").index(i),
        ));
    }
    errs.extend(labels(
        obj(spec, "selector"),
        path.child("selector").as_str(),
    ));

    match str_of(spec, "sessionAffinity") {
        "" => errs.push(FieldError::required(path.child("sessionAffinity"))),
        "ClientIP" => {
            let cfg_path = path.child("sessionAffinityConfig");
            let why = "when session affinity type is ClientIP";
            let cfg = get(spec, "sessionAffinityConfig").filter(|v| !v.is_null());
            let client = cfg
                .and_then(|c| get(c, "clientIP"))
                .filter(|v| !v.is_null());
            match (cfg, client, client.and_then(|c| int(c, "timeoutSeconds"))) {
                (None, _, _) => errs.push(FieldError::required_msg(&cfg_path, why)),
                (Some(_), None, _) => {
                    errs.push(FieldError::required_msg(cfg_path.child("clientIP"), why))
                }
                (Some(_), Some(_), None) => errs.push(FieldError::required_msg(
                    cfg_path.child("clientIP").child("timeoutSeconds"),
                    why,
                )),
                (Some(_), Some(_), Some(t)) => {
                    if t <= 0 || t > 86400 {
                        errs.push(FieldError::invalid(
                            cfg_path.child("clientIP").child("timeoutSeconds"),
                            &Value::from(t),
                            "must be greater than 0 and less than 86400",
                        ));
                    }
                }
            }
        }
        "None" => {
            if has(spec, "sessionAffinityConfig") {
                errs.push(FieldError::forbidden(
                    path.child("sessionAffinityConfig"),
                    "must not be set when session affinity is None",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            path.child("sessionAffinity"),
            &Value::from(other),
            &["ClientIP", "None"],
        )),
    }
    errs.extend(cluster_ip_fields(spec, &path));
    for (i, ip) in arr(spec, "externalIPs").iter().enumerate() {
        let ip = ip.as_str().unwrap_or("");
        for m in is_valid_ip(ip) {
            errs.push(FieldError::invalid(
                path.child("externalIPs").index(i),
                &Value::from(ip),
                &m,
            ));
        }
    }
    match typ {
        "" => errs.push(FieldError::required(path.child("type"))),
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName" => {}
        other => errs.push(FieldError::not_supported(
            path.child("type"),
            &Value::from(other),
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        )),
    }
    if typ == "ClusterIP" {
        for (i, p) in ports.iter().enumerate() {
            if int(p, "nodePort").unwrap_or(0) != 0 {
                errs.push(FieldError::forbidden(
                    path.child("ports").index(i).child("nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    let mut node_ports = HashSet::new();
    let mut port_keys = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let proto = str_of(p, "protocol");
        let np = int(p, "nodePort").unwrap_or(0);
        if np != 0 && !node_ports.insert((proto, np)) {
            errs.push(FieldError::duplicate(
                path.child("ports").index(i).child("nodePort"),
                &Value::from(np),
            ));
        }
    }
    for (i, p) in ports.iter().enumerate() {
        let proto = str_of(p, "protocol");
        let port = int(p, "port").unwrap_or(0);
        if !port_keys.insert((proto, port)) {
            errs.push(FieldError::duplicate(
                path.child("ports").index(i),
                &port_key(proto, port),
            ));
        }
    }
    let ranges = arr(spec, "loadBalancerSourceRanges");
    if !ranges.is_empty() {
        let rp = path.child("LoadBalancerSourceRanges");
        if typ != "LoadBalancer" {
            errs.push(FieldError::forbidden(
                &rp,
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        for (i, r) in ranges.iter().enumerate() {
            let r = r.as_str().unwrap_or("").trim();
            for m in is_valid_cidr(r) {
                errs.push(FieldError::invalid(rp.index(i), &Value::from(r), &m));
            }
        }
    }
    if has(spec, "allocateLoadBalancerNodePorts") && typ != "LoadBalancer" {
        errs.push(FieldError::forbidden(
            path.child("allocateLoadBalancerNodePorts"),
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if typ == "LoadBalancer" && !has(spec, "allocateLoadBalancerNodePorts") {
        // Upstream's path lacks the `spec.` prefix here.
        errs.push(FieldError::required("allocateLoadBalancerNodePorts"));
    }
    if let Some(class) = get(spec, "loadBalancerClass").filter(|v| !v.is_null()) {
        if typ == "LoadBalancer" {
            let c = class.as_str().unwrap_or("");
            for m in is_qualified_name(c) {
                errs.push(FieldError::invalid(
                    path.child("loadBalancerClass"),
                    &Value::from(c),
                    &m,
                ));
            }
        } else {
            errs.push(FieldError::forbidden(
                path.child("loadBalancerClass"),
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
    }
    let etp = str_of(spec, "externalTrafficPolicy");
    if !externally_accessible(spec) {
        if !etp.is_empty() {
            errs.push(FieldError::invalid(
                path.child("externalTrafficPolicy"),
                &Value::from(etp),
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        errs.push(FieldError::required(path.child("externalTrafficPolicy")));
    } else if etp != "Cluster" && etp != "Local" {
        errs.push(FieldError::not_supported(
            path.child("externalTrafficPolicy"),
            &Value::from(etp),
            &["Cluster", "Local"],
        ));
    }
    let needs_health_check = typ == "LoadBalancer" && etp == "Local";
    if !needs_health_check {
        if let Some(h) = int(spec, "healthCheckNodePort").filter(|h| *h != 0) {
            errs.push(FieldError::invalid(
                path.child("healthCheckNodePort"),
                &Value::from(h),
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        }
    }
    match get(spec, "internalTrafficPolicy").and_then(Value::as_str) {
        None => {
            if matches!(typ, "NodePort" | "LoadBalancer" | "ClusterIP") {
                errs.push(FieldError::required(path.child("internalTrafficPolicy")));
            }
        }
        Some("Cluster" | "Local") => {}
        Some(other) => errs.push(FieldError::not_supported(
            path.child("internalTrafficPolicy"),
            &Value::from(other),
            &["Cluster", "Local"],
        )),
    }
    errs
}

/// clusterIPs may only gain or lose a secondary address; ExternalName switches are free.
fn update_rules(spec: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let path = Path::new("spec");
    if str_of(spec, "type") == "ExternalName" || str_of(old, "type") == "ExternalName" {
        return errs;
    }
    let (new_ips, old_ips) = (cluster_ips(spec), cluster_ips(old));
    if headless(spec) && headless(old) {
        return errs;
    }
    let value = Value::from(new_ips.iter().map(|s| Value::from(*s)).collect::<Vec<_>>());
    let ips_path = path.child("clusterIPs");
    let changed =
        |i: usize| FieldError::invalid(ips_path.index(i), &value, "may not change once set");
    if old_ips.len() == new_ips.len() {
        for (i, ip) in old_ips.iter().enumerate() {
            if *ip != new_ips[i] {
                errs.push(changed(i));
            }
        }
    } else if old_ips.len() > new_ips.len() {
        if new_ips.is_empty() {
            errs.push(FieldError::invalid(
                ips_path.index(0),
                &value,
                "primary clusterIP can not be unset",
            ));
        }
        if !old_ips.is_empty() && !new_ips.is_empty() && new_ips[0] != old_ips[0] {
            errs.push(changed(0));
        }
        if new_ips.len() == 1 && str_of(spec, "ipFamilyPolicy") != "SingleStack" {
            errs.push(FieldError::invalid(
                path.child("ipFamilyPolicy"),
                get(spec, "ipFamilyPolicy").unwrap_or(&Value::Null),
                "must be set to 'SingleStack' when releasing the secondary clusterIP",
            ));
        }
    } else if !old_ips.is_empty() && new_ips[0] != old_ips[0] {
        errs.push(changed(0));
    }
    if str_of(spec, "type") == "LoadBalancer"
        && str_of(old, "type") == "LoadBalancer"
        && get(spec, "loadBalancerClass") != get(old, "loadBalancerClass")
    {
        errs.push(FieldError::invalid(
            path.child("loadBalancerClass"),
            get(spec, "loadBalancerClass").unwrap_or(&Value::Null),
            "may not change once set",
        ));
    }
    errs
}

/// Validates a Service (create, or update when `old` is given).
pub fn service(new: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(old) = old {
        let spec = get(new, "spec").unwrap_or(&Value::Null);
        errs.extend(update_rules(spec, get(old, "spec").unwrap_or(&Value::Null)));
    }
    errs.extend(create_rules(new));
    dedup(errs)
}
