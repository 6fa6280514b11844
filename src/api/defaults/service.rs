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
