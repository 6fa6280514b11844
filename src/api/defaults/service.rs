//! Service defaults: SetDefaults_Service, plus the IP family fields and the clusterIP /
//! clusterIPs pairing that upstream's service registry settles before validation (clients
//! see them as defaults in `kubectl get svc -o yaml`).

use serde_json::{json, Map, Value};

use super::{each, set_ptr, set_str, spec, unset};

fn externally_accessible(s: &Map<String, Value>) -> bool {
    match s.get("type").and_then(Value::as_str).unwrap_or("") {
        "LoadBalancer" | "NodePort" => true,
        "ClusterIP" => s
            .get("externalIPs")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty()),
        _ => false,
    }
}

/// Defaults a Service: type ClusterIP, sessionAffinity None (ClientIP gets a 10800 s
/// timeout), port protocol TCP and targetPort = port, traffic policies, LoadBalancer node
/// port allocation, and for non-ExternalName services ipFamilyPolicy/ipFamilies and
/// clusterIPs in step with clusterIP.
pub fn service(obj: &mut Value) {
    let Some(s) = spec(obj) else { return };
    set_str(s, "sessionAffinity", "None");
    match s.get("sessionAffinity").and_then(Value::as_str) {
        Some("None") => {
            s.remove("sessionAffinityConfig");
        }
        Some("ClientIP") => {
            let has_timeout = s
                .get("sessionAffinityConfig")
                .and_then(|c| c.get("clientIP"))
                .and_then(|c| c.get("timeoutSeconds"))
                .is_some_and(|t| !t.is_null());
            if !has_timeout {
                s.insert(
                    "sessionAffinityConfig".into(),
                    json!({"clientIP": {"timeoutSeconds": 10800}}),
                );
            }
        }
        _ => {}
    }
    set_str(s, "type", "ClusterIP");
    for p in each(s, "ports") {
        set_str(p, "protocol", "TCP");
        let target_unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(t)) => t.is_empty(),
            Some(_) => false,
        };
        if target_unset {
            let port = p.get("port").cloned().unwrap_or(Value::from(0));
            p.insert("targetPort".into(), port);
        }
    }
    if externally_accessible(s) {
        set_str(s, "externalTrafficPolicy", "Cluster");
    }
    let typ = s
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if matches!(typ.as_str(), "NodePort" | "LoadBalancer" | "ClusterIP") {
        set_ptr(s, "internalTrafficPolicy", Value::from("Cluster"));
    }
    if typ == "LoadBalancer" {
        set_ptr(s, "allocateLoadBalancerNodePorts", Value::Bool(true));
    }
    if typ == "ExternalName" {
        return;
    }
    // clusterIP and clusterIPs[0] always agree once stored.
    let ip = s
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let first = s
        .get("clusterIPs")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .map(str::to_string);
    match (ip.is_empty(), first) {
        (false, None) => {
            s.insert("clusterIPs".into(), json!([ip]));
        }
        (true, Some(first)) => {
            s.insert("clusterIP".into(), Value::from(first));
        }
        _ => {}
    }
    // A headless service without a selector serves every family the cluster has.
    let headless = s.get("clusterIP").and_then(Value::as_str) == Some("None");
    let no_selector = s
        .get("selector")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty);
    let policy = if headless && no_selector {
        "RequireDualStack"
    } else {
        "SingleStack"
    };
    set_ptr(s, "ipFamilyPolicy", Value::from(policy));
    if unset(s, "ipFamilies")
        || s.get("ipFamilies")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
    {
        let family = match s
            .get("clusterIPs")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
        {
            Some(ip) if ip.contains(':') => "IPv6",
            _ => "IPv4",
        };
        s.insert("ipFamilies".into(), json!([family]));
    }
}

fn needs_node_ports(s: &Value) -> bool {
    matches!(
        s.get("type").and_then(Value::as_str),
        Some("NodePort" | "LoadBalancer")
    )
}

/// What upstream's service registry does before validating an update
/// (`patchAllocatedValues`): a client that omits allocated values (clusterIP, clusterIPs,
/// node ports, healthCheckNodePort), as `kubectl replace` with a hand-written manifest does,
/// keeps the ones already allocated instead of being told they may not change.
pub fn service_keep_allocated(new: &mut Value, old: &Value) {
    let Some(old_spec) = old.get("spec") else {
        return;
    };
    let Some(new_spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let external = |t: Option<&Value>| t.and_then(Value::as_str) == Some("ExternalName");
    if !external(old_spec.get("type")) && !external(new_spec.get("type")) {
        if new_spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            if let Some(ip) = old_spec.get("clusterIP").filter(|v| !v.is_null()) {
                new_spec.insert("clusterIP".into(), ip.clone());
            }
        }
        if new_spec
            .get("clusterIPs")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            if let Some(ips) = old_spec
                .get("clusterIPs")
                .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
            {
                new_spec.insert("clusterIPs".into(), ips.clone());
            }
        }
    }
    let new_wants_ports = needs_node_ports(&Value::Object(new_spec.clone()));
    if needs_node_ports(old_spec) && new_wants_ports {
        let node_port = |p: &Value| p.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
        let ports_of = |s: &Value| -> Vec<i64> {
            s.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(node_port)
                .filter(|n| *n != 0)
                .collect()
        };
        let old_used = ports_of(old_spec);
        let new_used = ports_of(&Value::Object(new_spec.clone()));
        let by_name: Vec<(String, i64)> = old_spec
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    node_port(p),
                )
            })
            .collect();
        for p in each(new_spec, "ports") {
            if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                continue;
            }
            let name = p.get("name").and_then(Value::as_str).unwrap_or("");
            // Upstream keeps the last old port of that name.
            let Some(old_value) = by_name
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| *v)
            else {
                continue;
            };
            let taken = old_used.contains(&old_value) && new_used.contains(&old_value);
            if old_value != 0 && !taken {
                p.insert("nodePort".into(), Value::from(old_value));
            }
        }
    }
    let needs_hc = |s: &Value| {
        s.get("type").and_then(Value::as_str) == Some("LoadBalancer")
            && s.get("externalTrafficPolicy").and_then(Value::as_str) == Some("Local")
    };
    if needs_hc(old_spec)
        && needs_hc(&Value::Object(new_spec.clone()))
        && new_spec
            .get("healthCheckNodePort")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0
    {
        if let Some(h) = old_spec.get("healthCheckNodePort").filter(|v| !v.is_null()) {
            new_spec.insert("healthCheckNodePort".into(), h.clone());
        }
    }
}
