//! Printers of cluster and namespace plumbing: nodes, namespaces, leases, config maps,
//! secrets, service accounts, resource quotas and RBAC bindings.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::{json, Value};

use super::duration::age;
use super::text::{arr, at, len_at, name, scalar, str_at};
use super::{col, wide, Column, Printer, AGE, NAME};

// ---------------------------------------------------------------------------------------
// Nodes and namespaces

const NODE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", "Kubelet Version reported by the node."),
    wide(
        "Internal-IP",
        "string",
        "List of addresses reachable to the node.",
    ),
    wide(
        "External-IP",
        "string",
        "List of addresses reachable to the node.",
    ),
    wide(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    ),
    wide(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    ),
    wide(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    ),
];

pub(crate) static NODES: Printer = Printer {
    columns: NODE_COLUMNS,
    cells: node_cells,
};

const NODE_ROLE_PREFIX: &str = "node-role.kubernetes.io/";
const NODE_ROLE_LABEL: &str = "kubernetes.io/role";

/// Roles from `node-role.kubernetes.io/<role>` label keys and the `kubernetes.io/role`
/// label value, sorted.
fn node_roles(node: &Value) -> Vec<String> {
    let mut roles = BTreeSet::new();
    if let Some(labels) = at(node, "/metadata/labels").and_then(Value::as_object) {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix(NODE_ROLE_PREFIX) {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if key == NODE_ROLE_LABEL {
                let value = scalar(value);
                if !value.is_empty() {
                    roles.insert(value);
                }
            }
        }
    }
    roles.into_iter().collect()
}

/// The first address of a type, `<none>` without one.
fn node_address(node: &Value, kind: &str) -> String {
    arr(node, "/status/addresses")
        .iter()
        .find(|a| str_at(a, "/type") == kind)
        .map(|a| str_at(a, "/address").to_string())
        .unwrap_or_else(|| "<none>".to_string())
}

fn node_cells(node: &Value, now: Timestamp) -> Vec<Value> {
    // The last Ready condition wins, as in upstream's map of conditions.
    let ready = arr(node, "/status/conditions")
        .iter()
        .rev()
        .find(|c| str_at(c, "/type") == "Ready");
    let mut status = vec![match ready {
        Some(c) if str_at(c, "/status") == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if at(node, "/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }
    let roles = node_roles(node);
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    };
    let info = |field: &str| {
        let v = str_at(node, &format!("/status/nodeInfo/{field}"));
        if v.is_empty() {
            "<unknown>".to_string()
        } else {
            v.to_string()
        }
    };
    vec![
        json!(name(node)),
        json!(status.join(",")),
        json!(roles),
        json!(age(node, now)),
        json!(str_at(node, "/status/nodeInfo/kubeletVersion")),
        json!(node_address(node, "InternalIP")),
        json!(node_address(node, "ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the namespace"),
    AGE,
];

pub(crate) static NAMESPACES: Printer = Printer {
    columns: NAMESPACE_COLUMNS,
    cells: namespace_cells,
};

fn namespace_cells(ns: &Value, now: Timestamp) -> Vec<Value> {
    // Upstream's create strategy always sets the phase; a namespace without one is Active.
    let phase = match str_at(ns, "/status/phase") {
        "" => "Active",
        p => p,
    };
    vec![json!(name(ns)), json!(phase), json!(age(ns, now))]
}

// ---------------------------------------------------------------------------------------
// Leases, config maps, secrets, service accounts, resource quotas

const LEASE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Holder",
        "string",
        "holderIdentity contains the identity of the holder of a current lease.",
    ),
    AGE,
];

pub(crate) static LEASES: Printer = Printer {
    columns: LEASE_COLUMNS,
    cells: lease_cells,
};

fn lease_cells(lease: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        json!(name(lease)),
        json!(str_at(lease, "/spec/holderIdentity")),
        json!(age(lease, now)),
    ]
}

const CONFIGMAP_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Data",
        "string",
        "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
    ),
    AGE,
];

pub(crate) static CONFIGMAPS: Printer = Printer {
    columns: CONFIGMAP_COLUMNS,
    cells: configmap_cells,
};

fn configmap_cells(cm: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        json!(name(cm)),
        json!(len_at(cm, "/data") + len_at(cm, "/binaryData")),
        json!(age(cm, now)),
    ]
}

const SECRET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        "Used to facilitate programmatic handling of secret data.",
    ),
    col(
        "Data",
        "string",
        "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
    ),
    AGE,
];

pub(crate) static SECRETS: Printer = Printer {
    columns: SECRET_COLUMNS,
    cells: secret_cells,
};

fn secret_cells(secret: &Value, now: Timestamp) -> Vec<Value> {
    // Upstream defaults the type to Opaque.
    let kind = match str_at(secret, "/type") {
        "" => "Opaque",
        t => t,
    };
    // stringData is merged into data on write upstream.
    let mut keys: BTreeSet<&str> = BTreeSet::new();
    for field in ["/data", "/stringData"] {
        if let Some(m) = at(secret, field).and_then(Value::as_object) {
            keys.extend(m.keys().map(String::as_str));
        }
    }
    vec![
        json!(name(secret)),
        json!(kind),
        json!(keys.len() as i64),
        json!(age(secret, now)),
    ]
}

const SERVICEACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Secrets",
        "string",
        "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
    ),
    AGE,
];

pub(crate) static SERVICEACCOUNTS: Printer = Printer {
    columns: SERVICEACCOUNT_COLUMNS,
    cells: serviceaccount_cells,
};

fn serviceaccount_cells(sa: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        json!(name(sa)),
        json!(len_at(sa, "/secrets")),
        json!(age(sa, now)),
    ]
}

const RESOURCEQUOTA_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Request",
        "string",
        "Request represents a minimum amount of cpu/memory that a container may consume.",
    ),
    col(
        "Limit",
        "string",
        "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
    ),
    AGE,
];

pub(crate) static RESOURCEQUOTAS: Printer = Printer {
    columns: RESOURCEQUOTA_COLUMNS,
    cells: resourcequota_cells,
};

/// `resource: used/hard` for every hard limit, sorted by resource name; `limits.*` go to
/// the Limit column, the rest to Request.
fn resourcequota_cells(quota: &Value, now: Timestamp) -> Vec<Value> {
    let mut request = Vec::new();
    let mut limit = Vec::new();
    if let Some(hard) = at(quota, "/status/hard").and_then(Value::as_object) {
        let mut resources: Vec<&String> = hard.keys().collect();
        resources.sort();
        for resource in resources {
            let used = quota
                .pointer("/status/used")
                .and_then(|u| u.get(resource.as_str()))
                .map(scalar)
                .unwrap_or_else(|| "0".to_string());
            let entry = format!("{resource}: {used}/{}", scalar(&hard[resource.as_str()]));
            if resource.starts_with("limits.") {
                limit.push(entry);
            } else {
                request.push(entry);
            }
        }
    }
    vec![
        json!(name(quota)),
        json!(request.join(", ")),
        json!(limit.join(", ")),
        json!(age(quota, now)),
    ]
}

// ---------------------------------------------------------------------------------------
// RBAC bindings

const ROLEBINDING_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Role",
        "string",
        "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace.",
    ),
    AGE,
    wide("Users", "string", "Users in the roleBinding"),
    wide("Groups", "string", "Groups in the roleBinding"),
    wide(
        "ServiceAccounts",
        "string",
        "ServiceAccounts in the roleBinding",
    ),
];

const CLUSTERROLEBINDING_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Role",
        "string",
        "RoleRef can only reference a ClusterRole in the global namespace.",
    ),
    AGE,
    wide("Users", "string", "Users in the clusterRoleBinding"),
    wide("Groups", "string", "Groups in the clusterRoleBinding"),
    wide(
        "ServiceAccounts",
        "string",
        "ServiceAccounts in the clusterRoleBinding",
    ),
];

pub(crate) static ROLEBINDINGS: Printer = Printer {
    columns: ROLEBINDING_COLUMNS,
    cells: binding_cells,
};

pub(crate) static CLUSTERROLEBINDINGS: Printer = Printer {
    columns: CLUSTERROLEBINDING_COLUMNS,
    cells: binding_cells,
};

fn binding_cells(binding: &Value, now: Timestamp) -> Vec<Value> {
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut service_accounts = Vec::new();
    for subject in arr(binding, "/subjects") {
        let subject_name = str_at(subject, "/name");
        match str_at(subject, "/kind") {
            "ServiceAccount" => {
                service_accounts.push(format!("{}/{subject_name}", str_at(subject, "/namespace")))
            }
            "User" => users.push(subject_name.to_string()),
            "Group" => groups.push(subject_name.to_string()),
            _ => {}
        }
    }
    vec![
        json!(name(binding)),
        json!(format!(
            "{}/{}",
            str_at(binding, "/roleRef/kind"),
            str_at(binding, "/roleRef/name")
        )),
        json!(age(binding, now)),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(service_accounts.join(", ")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2024-06-01T12:00:00Z".parse().unwrap()
    }

    fn node(labels: Value, ready: &str, unschedulable: bool) -> Value {
        json!({
            "metadata": {"name": "pi-1", "creationTimestamp": "2024-05-20T12:00:00Z", "labels": labels},
            "spec": {"unschedulable": unschedulable},
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {"type": "Ready", "status": ready}
                ],
                "addresses": [
                    {"type": "Hostname", "address": "pi-1"},
                    {"type": "InternalIP", "address": "192.168.1.10"}
                ],
                "nodeInfo": {"kubeletVersion": "v1.35.0+k3rs1", "osImage": "Debian GNU/Linux 13 (trixie)",
                    "kernelVersion": "6.12.0-1-arm64", "containerRuntimeVersion": "containerd://1.7.24"}
            }
        })
    }

    #[test]
    fn node_roles_and_status() {
        let n = node(
            json!({
                "node-role.kubernetes.io/control-plane": "true",
                "node-role.kubernetes.io/master": "",
                "kubernetes.io/role": "edge",
                "node-role.kubernetes.io/": "ignored",
                "kubernetes.io/hostname": "pi-1"
            }),
            "True",
            false,
        );
        assert_eq!(
            node_cells(&n, now()),
            vec![
                json!("pi-1"),
                json!("Ready"),
                json!("control-plane,edge,master"),
                json!("12d"),
                json!("v1.35.0+k3rs1"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Debian GNU/Linux 13 (trixie)"),
                json!("6.12.0-1-arm64"),
                json!("containerd://1.7.24")
            ]
        );

        let cordoned = node(json!({}), "Unknown", true);
        assert_eq!(
            node_cells(&cordoned, now())[1..3],
            [json!("NotReady,SchedulingDisabled"), json!("<none>")]
        );

        let fresh = json!({"metadata": {"name": "new"}, "spec": {"unschedulable": true}});
        let c = node_cells(&fresh, now());
        assert_eq!(c[1], json!("Unknown,SchedulingDisabled"));
        assert_eq!(c[4], json!(""));
        assert_eq!(
            c[7..],
            [json!("<unknown>"), json!("<unknown>"), json!("<unknown>")]
        );
    }

    #[test]
    fn namespace() {
        let ns = json!({"metadata": {"name": "kube-system", "creationTimestamp": "2024-06-01T11:59:30Z"},
            "status": {"phase": "Terminating"}});
        assert_eq!(
            namespace_cells(&ns, now()),
            vec![json!("kube-system"), json!("Terminating"), json!("30s")]
        );
    }

    #[test]
    fn config_and_accounts() {
        let cm = json!({"metadata": {"name": "kube-root-ca.crt", "creationTimestamp": "2024-06-01T11:00:00Z"},
            "data": {"ca.crt": "..."}, "binaryData": {"logo": "AA=="}});
        assert_eq!(
            configmap_cells(&cm, now()),
            vec![json!("kube-root-ca.crt"), json!(2), json!("60m")]
        );
        let secret = json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls",
            "data": {"tls.crt": "", "tls.key": ""}});
        assert_eq!(
            secret_cells(&secret, now())[1..3],
            [json!("kubernetes.io/tls"), json!(2)]
        );
        let opaque = json!({"metadata": {"name": "s"}, "stringData": {"a": "1"}, "data": {"a": "MQ==", "b": ""}});
        assert_eq!(
            secret_cells(&opaque, now())[1..3],
            [json!("Opaque"), json!(2)]
        );
        let sa = json!({"metadata": {"name": "default"}});
        assert_eq!(serviceaccount_cells(&sa, now())[1], json!(0));
        let lease = json!({"metadata": {"name": "pi-1", "creationTimestamp": "2024-06-01T11:00:00Z"},
            "spec": {"holderIdentity": "pi-1"}});
        assert_eq!(
            lease_cells(&lease, now()),
            vec![json!("pi-1"), json!("pi-1"), json!("60m")]
        );
    }

    #[test]
    fn resource_quota() {
        let q = json!({
            "metadata": {"name": "compute", "creationTimestamp": "2024-06-01T11:00:00Z"},
            "status": {
                "hard": {"requests.cpu": "1", "pods": "10", "limits.memory": "2Gi", "limits.cpu": "2"},
                "used": {"requests.cpu": "500m", "pods": "3", "limits.cpu": "1"}
            }
        });
        assert_eq!(
            resourcequota_cells(&q, now()),
            vec![
                json!("compute"),
                json!("pods: 3/10, requests.cpu: 500m/1"),
                json!("limits.cpu: 1/2, limits.memory: 0/2Gi"),
                json!("60m")
            ]
        );
    }

    #[test]
    fn bindings() {
        let rb = json!({
            "metadata": {"name": "admins", "creationTimestamp": "2024-06-01T11:00:00Z"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
            "subjects": [
                {"kind": "User", "name": "alice"},
                {"kind": "User", "name": "bob"},
                {"kind": "Group", "name": "ops"},
                {"kind": "ServiceAccount", "name": "ci", "namespace": "build"}
            ]
        });
        assert_eq!(
            binding_cells(&rb, now()),
            vec![
                json!("admins"),
                json!("ClusterRole/admin"),
                json!("60m"),
                json!("alice, bob"),
                json!("ops"),
                json!("build/ci")
            ]
        );
    }
}
