//! Printers of the networking kinds: services (type, cluster IP, external IPs, ports),
//! endpoints, endpoint slices, ingresses and network policies.

use jiff::Timestamp;
use serde_json::{json, Value};

use super::duration::age;
use super::text::{
    arr, at, format_label_selector, format_labels, int_at, join_host_port, list_with_more,
    load_balancer_ingress, name, scalar, str_at,
};
use super::{col, wide, Column, Printer, AGE, NAME};

// ---------------------------------------------------------------------------------------
// Services

const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer.",
    ),
    col(
        "Cluster-IP",
        "string",
        "clusterIP is the IP address of the service and is usually assigned randomly.",
    ),
    col(
        "External-IP",
        "string",
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
    ),
    col(
        "Port(s)",
        "string",
        "The list of ports that are exposed by this service.",
    ),
    AGE,
    wide(
        "Selector",
        "string",
        "Route service traffic to pods with label keys and values matching this selector.",
    ),
];

pub(crate) static SERVICES: Printer = Printer {
    columns: SERVICE_COLUMNS,
    cells: service_cells,
};

/// The service type, `ClusterIP` when unset (upstream's default).
fn service_type(svc: &Value) -> &str {
    match str_at(svc, "/spec/type") {
        "" => "ClusterIP",
        t => t,
    }
}

/// External IPs as upstream shows them per service type; `<pending>` for a load
/// balancer that has no ingress point yet.
fn external_ip(svc: &Value) -> String {
    let external: Vec<String> = arr(svc, "/spec/externalIPs").iter().map(scalar).collect();
    match service_type(svc) {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".to_string()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_ingress(at(svc, "/status/loadBalancer"));
            if !external.is_empty() {
                let mut all: Vec<String> = Vec::new();
                if !lb.is_empty() {
                    all.extend(lb.split(',').map(str::to_string));
                }
                all.extend(external);
                return all.join(",");
            }
            if lb.is_empty() {
                "<pending>".to_string()
            } else {
                lb
            }
        }
        "ExternalName" => str_at(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// `80/TCP,443:30443/TCP`; the protocol defaults to TCP.
fn service_ports(svc: &Value) -> String {
    let pieces: Vec<String> = arr(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let port = int_at(p, "/port");
            let protocol = match str_at(p, "/protocol") {
                "" => "TCP",
                proto => proto,
            };
            let node_port = int_at(p, "/nodePort");
            if node_port > 0 {
                format!("{port}:{node_port}/{protocol}")
            } else {
                format!("{port}/{protocol}")
            }
        })
        .collect();
    if pieces.is_empty() {
        return "<none>".to_string();
    }
    pieces.join(",")
}

fn service_cells(svc: &Value, now: Timestamp) -> Vec<Value> {
    // Upstream's defaulting fills clusterIPs from clusterIP.
    let cluster_ip = match arr(svc, "/spec/clusterIPs").first() {
        Some(ip) => scalar(ip),
        None => match str_at(svc, "/spec/clusterIP") {
            "" => "<none>".to_string(),
            ip => ip.to_string(),
        },
    };
    vec![
        json!(name(svc)),
        json!(service_type(svc)),
        json!(cluster_ip),
        json!(external_ip(svc)),
        json!(service_ports(svc)),
        json!(age(svc, now)),
        json!(format_labels(at(svc, "/spec/selector"))),
    ]
}

// ---------------------------------------------------------------------------------------
// Endpoints and endpoint slices

const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Endpoints",
        "string",
        "The set of all endpoints is the union of all subsets.",
    ),
    AGE,
];

pub(crate) static ENDPOINTS: Printer = Printer {
    columns: ENDPOINTS_COLUMNS,
    cells: endpoints_cells,
};

/// Ready addresses with each port (`ip:port`), or bare IPs for port-less subsets; the
/// first three, then "+ N more...". `<none>` without subsets.
fn format_endpoints(ep: &Value) -> String {
    let subsets = arr(ep, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut count = 0usize;
    for subset in subsets {
        let addresses = arr(subset, "/addresses");
        let ports = arr(subset, "/ports");
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    break;
                }
                list.push(str_at(a, "/ip").to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            let port = int_at(port, "/port").to_string();
            for a in addresses {
                if list.len() == MAX {
                    break;
                }
                list.push(join_host_port(str_at(a, "/ip"), &port));
            }
        }
    }
    let shown = list.join(",");
    if count > list.len() {
        return format!("{shown} + {} more...", count - MAX);
    }
    shown
}

fn endpoints_cells(ep: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        json!(name(ep)),
        json!(format_endpoints(ep)),
        json!(age(ep, now)),
    ]
}

const ENDPOINTSLICE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "AddressType",
        "string",
        "addressType specifies the type of address carried by this EndpointSlice.",
    ),
    col(
        "Ports",
        "string",
        "ports specifies the list of network ports exposed by each endpoint in this slice.",
    ),
    col(
        "Endpoints",
        "string",
        "endpoints is a list of unique endpoints in this slice.",
    ),
    AGE,
];

pub(crate) static ENDPOINTSLICES: Printer = Printer {
    columns: ENDPOINTSLICE_COLUMNS,
    cells: endpointslice_cells,
};

fn endpointslice_cells(slice: &Value, now: Timestamp) -> Vec<Value> {
    let ports: Vec<String> = arr(slice, "/ports")
        .iter()
        .map(|p| match (at(p, "/port"), at(p, "/name")) {
            (Some(port), _) => scalar(port),
            (None, Some(n)) => scalar(n),
            (None, None) => "*".to_string(),
        })
        .collect();
    let addresses: Vec<String> = arr(slice, "/endpoints")
        .iter()
        .flat_map(|e| arr(e, "/addresses").iter().map(scalar))
        .collect();
    vec![
        json!(name(slice)),
        json!(str_at(slice, "/addressType")),
        json!(list_with_more(&ports, 3)),
        json!(list_with_more(&addresses, 3)),
        json!(age(slice, now)),
    ]
}

// ---------------------------------------------------------------------------------------
// Ingresses and network policies

const INGRESS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Class",
        "string",
        "The name of the IngressClass resource that should be used for additional configuration",
    ),
    col(
        "Hosts",
        "string",
        "Hosts that incoming requests are matched against before the ingress rule",
    ),
    col(
        "Address",
        "string",
        "Address is a list containing ingress points for the load-balancer",
    ),
    col("Ports", "string", "Ports of TLS configurations that open"),
    AGE,
];

pub(crate) static INGRESSES: Printer = Printer {
    columns: INGRESS_COLUMNS,
    cells: ingress_cells,
};

/// Rule hosts, the first three then "+ N more..." (counting all rules); `*` when no
/// rule names a host.
fn ingress_hosts(ing: &Value) -> String {
    const MAX: usize = 3;
    let rules = arr(ing, "/spec/rules");
    let mut list: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if list.len() == MAX {
            more = true;
        }
        let host = str_at(rule, "/host");
        if !more && !host.is_empty() {
            list.push(host);
        }
    }
    if list.is_empty() {
        return "*".to_string();
    }
    let shown = list.join(",");
    if more {
        return format!("{shown} + {} more...", rules.len() - MAX);
    }
    shown
}

fn ingress_cells(ing: &Value, now: Timestamp) -> Vec<Value> {
    let class = match at(ing, "/spec/ingressClassName").and_then(Value::as_str) {
        Some(c) => c.to_string(),
        None => "<none>".to_string(),
    };
    let ports = if arr(ing, "/spec/tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        json!(name(ing)),
        json!(class),
        json!(ingress_hosts(ing)),
        json!(load_balancer_ingress(at(ing, "/status/loadBalancer"))),
        json!(ports),
        json!(age(ing, now)),
    ]
}

const NETWORKPOLICY_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Pod-Selector",
        "string",
        "Selects the pods to which this NetworkPolicy object applies.",
    ),
    AGE,
];

pub(crate) static NETWORKPOLICIES: Printer = Printer {
    columns: NETWORKPOLICY_COLUMNS,
    cells: networkpolicy_cells,
};

fn networkpolicy_cells(np: &Value, now: Timestamp) -> Vec<Value> {
    // podSelector is a struct, never nil: a missing one is the empty selector.
    let selector = at(np, "/spec/podSelector").cloned().unwrap_or(json!({}));
    vec![
        json!(name(np)),
        json!(format_label_selector(Some(&selector))),
        json!(age(np, now)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2024-06-01T12:00:00Z".parse().unwrap()
    }

    fn svc(spec: Value, status: Value) -> Value {
        json!({"metadata": {"name": "web", "creationTimestamp": "2024-06-01T11:00:00Z"},
            "spec": spec, "status": status})
    }

    #[test]
    fn cluster_ip_service() {
        let s = svc(
            json!({"type": "ClusterIP", "clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
                "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
                "selector": {"k8s-app": "kube-dns"}}),
            json!({}),
        );
        assert_eq!(
            service_cells(&s, now()),
            vec![
                json!("web"),
                json!("ClusterIP"),
                json!("10.43.0.10"),
                json!("<none>"),
                json!("53/UDP,53/TCP"),
                json!("60m"),
                json!("k8s-app=kube-dns")
            ]
        );
    }

    #[test]
    fn node_port_and_external_ips() {
        let s = svc(
            json!({"type": "NodePort", "clusterIPs": ["10.43.1.2"], "externalIPs": ["192.168.1.50", "192.168.1.51"],
                "ports": [{"port": 80, "nodePort": 30080}, {"port": 443, "protocol": "TCP", "nodePort": 30443}]}),
            json!({}),
        );
        let c = service_cells(&s, now());
        assert_eq!(
            c[1..5],
            [
                json!("NodePort"),
                json!("10.43.1.2"),
                json!("192.168.1.50,192.168.1.51"),
                json!("80:30080/TCP,443:30443/TCP")
            ]
        );
        assert_eq!(c[6], json!("<none>"));
    }

    #[test]
    fn load_balancer_pending_and_assigned() {
        let spec = json!({"type": "LoadBalancer", "clusterIP": "10.43.5.5",
            "ports": [{"port": 443, "protocol": "TCP", "nodePort": 31443}]});
        let pending = svc(spec.clone(), json!({"loadBalancer": {}}));
        assert_eq!(
            service_cells(&pending, now())[2..5],
            [
                json!("10.43.5.5"),
                json!("<pending>"),
                json!("443:31443/TCP")
            ]
        );
        let assigned = svc(
            spec.clone(),
            json!({"loadBalancer": {"ingress": [{"ip": "192.168.1.240"}, {"hostname": "lb.local"}]}}),
        );
        assert_eq!(
            service_cells(&assigned, now())[3],
            json!("192.168.1.240,lb.local")
        );
        let mut both = spec;
        both["externalIPs"] = json!(["203.0.113.7"]);
        let both = svc(
            both,
            json!({"loadBalancer": {"ingress": [{"ip": "192.168.1.240"}]}}),
        );
        assert_eq!(
            service_cells(&both, now())[3],
            json!("192.168.1.240,203.0.113.7")
        );
    }

    #[test]
    fn external_name_headless_and_bare() {
        let ext = svc(
            json!({"type": "ExternalName", "externalName": "db.example.com"}),
            json!({}),
        );
        let c = service_cells(&ext, now());
        assert_eq!(
            c[1..5],
            [
                json!("ExternalName"),
                json!("<none>"),
                json!("db.example.com"),
                json!("<none>")
            ]
        );
        let headless = svc(
            json!({"clusterIP": "None", "selector": {"app": "db"}}),
            json!({}),
        );
        assert_eq!(
            service_cells(&headless, now())[1..4],
            [json!("ClusterIP"), json!("None"), json!("<none>")]
        );
    }

    #[test]
    fn endpoints() {
        let ep = json!({"metadata": {"name": "web", "creationTimestamp": "2024-06-01T11:00:00Z"},
            "subsets": [{"addresses": [{"ip": "10.42.0.5"}, {"ip": "10.42.1.6"}],
                "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}]}]});
        assert_eq!(
            endpoints_cells(&ep, now()),
            vec![
                json!("web"),
                json!("10.42.0.5:8080,10.42.1.6:8080,10.42.0.5:9090 + 1 more..."),
                json!("60m")
            ]
        );
        let headless =
            json!({"metadata": {"name": "db"}, "subsets": [{"addresses": [{"ip": "fd00::5"}]}]});
        assert_eq!(endpoints_cells(&headless, now())[1], json!("fd00::5"));
        let v6 = json!({"metadata": {"name": "db"}, "subsets": [{"addresses": [{"ip": "fd00::5"}], "ports": [{"port": 5432}]}]});
        assert_eq!(endpoints_cells(&v6, now())[1], json!("[fd00::5]:5432"));
        let none = json!({"metadata": {"name": "x"}});
        assert_eq!(endpoints_cells(&none, now())[1], json!("<none>"));
    }

    #[test]
    fn endpoint_slices() {
        let s = json!({"metadata": {"name": "web-abc12", "creationTimestamp": "2024-06-01T11:00:00Z"},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "named"}, {}],
            "endpoints": [{"addresses": ["10.42.0.5"]}, {"addresses": ["10.42.1.6"]},
                {"addresses": ["10.42.2.7"]}, {"addresses": ["10.42.3.8"]}]});
        assert_eq!(
            endpointslice_cells(&s, now()),
            vec![
                json!("web-abc12"),
                json!("IPv4"),
                json!("8080,named,*"),
                json!("10.42.0.5,10.42.1.6,10.42.2.7 + 1 more..."),
                json!("60m")
            ]
        );
        let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv6"});
        assert_eq!(
            endpointslice_cells(&empty, now())[2..4],
            [json!("<unset>"), json!("<unset>")]
        );
    }

    #[test]
    fn ingresses() {
        let ing = json!({"metadata": {"name": "web", "creationTimestamp": "2024-06-01T11:00:00Z"},
            "spec": {"ingressClassName": "traefik",
                "rules": [{"host": "a.example"}, {"host": "b.example"}, {}, {"host": "c.example"}, {"host": "d.example"}],
                "tls": [{"hosts": ["a.example"]}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.10"}]}}});
        assert_eq!(
            ingress_cells(&ing, now()),
            vec![
                json!("web"),
                json!("traefik"),
                json!("a.example,b.example,c.example + 2 more..."),
                json!("192.168.1.10"),
                json!("80, 443"),
                json!("60m")
            ]
        );
        let bare = json!({"metadata": {"name": "x"}, "spec": {"defaultBackend": {}}});
        assert_eq!(
            ingress_cells(&bare, now())[1..5],
            [json!("<none>"), json!("*"), json!(""), json!("80")]
        );
    }

    #[test]
    fn network_policies() {
        let np = json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}}});
        assert_eq!(networkpolicy_cells(&np, now())[1], json!("<none>"));
        let sel = json!({"metadata": {"name": "web"}, "spec": {"podSelector": {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]}}});
        assert_eq!(
            networkpolicy_cells(&sel, now())[1],
            json!("app=web,tier in (a,b)")
        );
    }
}
