//! Server-side printers: the `meta.k8s.io/v1` Table columns and cells `kubectl get` shows
//! for each built-in kind, computed the way upstream's printers do
//! (k8s.io/kubernetes `pkg/printers/internalversion/printers.go`). The server always
//! produces the wide (priority 1) columns; kubectl hides them unless `-o wide`.
//!
//! Everything here is a pure function of the raw JSON object and the current time.
//! Objects may come straight from a client without upstream's defaulting, so the
//! printers fall back to upstream's default where a defaulted spec field is missing
//! (service type `ClusterIP`, port protocol `TCP`, one replica, ...).

mod batch;
mod cluster;
mod duration;
mod events;
mod network;
mod pods;
mod scaling;
mod scheduling;
mod storage;
mod text;
mod workloads;

use jiff::Timestamp;
use serde_json::{json, Value};

pub use duration::human_duration;

/// One column definition, as upstream's `metav1.TableColumnDefinition`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Column {
    pub name: &'static str,
    pub kind: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    pub priority: i32,
}

impl Column {
    fn to_json(self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// A shown-by-default column.
pub(crate) const fn col(
    name: &'static str,
    kind: &'static str,
    description: &'static str,
) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority: 0,
    }
}

/// A column only `kubectl get -o wide` shows.
pub(crate) const fn wide(
    name: &'static str,
    kind: &'static str,
    description: &'static str,
) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority: 1,
    }
}

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const CREATED_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// The `Name` column every printer starts with; kubectl finds it by `format: name`.
pub(crate) const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: NAME_DESCRIPTION,
    priority: 0,
};

/// The `Age` column (a string cell made by [`human_duration`]).
pub(crate) const AGE: Column = col("Age", "string", CREATED_DESCRIPTION);

/// Column shared by workload printers' wide output.
pub(crate) const CONTAINERS: Column = wide(
    "Containers",
    "string",
    "Names of each container in the template.",
);
/// Column shared by workload printers' wide output.
pub(crate) const IMAGES: Column = wide(
    "Images",
    "string",
    "Images referenced by each container in the template.",
);

/// The table upstream's generic registry gives kinds without a printer
/// (`k8s.io/apiserver pkg/registry/rest/table.go`).
const DEFAULT_COLUMNS: &[Column] = &[
    NAME,
    Column {
        name: "Created At",
        kind: "date",
        format: "",
        description: CREATED_DESCRIPTION,
        priority: 0,
    },
];

/// Cells of a kind's row, computed at the given time.
type CellsFn = fn(&Value, Timestamp) -> Vec<Value>;

/// Columns and cells of one kind.
pub(crate) struct Printer {
    pub columns: &'static [Column],
    pub cells: CellsFn,
}

/// The printer of a resource, or `None` for kinds upstream prints with the default table.
fn printer(group: &str, plural: &str) -> Option<&'static Printer> {
    let p = match (group, plural) {
        ("", "pods") => &pods::PODS,
        ("", "nodes") => &cluster::NODES,
        ("", "namespaces") => &cluster::NAMESPACES,
        ("", "events") => &events::EVENTS,
        ("events.k8s.io", "events") => &events::EVENTS_V1,
        ("coordination.k8s.io", "leases") => &cluster::LEASES,
        ("", "configmaps") => &cluster::CONFIGMAPS,
        ("", "secrets") => &cluster::SECRETS,
        ("", "serviceaccounts") => &cluster::SERVICEACCOUNTS,
        ("", "resourcequotas") => &cluster::RESOURCEQUOTAS,
        ("rbac.authorization.k8s.io", "rolebindings") => &cluster::ROLEBINDINGS,
        ("rbac.authorization.k8s.io", "clusterrolebindings") => &cluster::CLUSTERROLEBINDINGS,
        ("", "services") => &network::SERVICES,
        ("", "endpoints") => &network::ENDPOINTS,
        ("discovery.k8s.io", "endpointslices") => &network::ENDPOINTSLICES,
        ("networking.k8s.io", "ingresses") => &network::INGRESSES,
        ("networking.k8s.io", "networkpolicies") => &network::NETWORKPOLICIES,
        ("", "persistentvolumes") => &storage::PERSISTENTVOLUMES,
        ("", "persistentvolumeclaims") => &storage::PERSISTENTVOLUMECLAIMS,
        ("storage.k8s.io", "storageclasses") => &storage::STORAGECLASSES,
        ("scheduling.k8s.io", "priorityclasses") => &scheduling::PRIORITYCLASSES,
        ("apps", "deployments") => &workloads::DEPLOYMENTS,
        ("apps", "replicasets") => &workloads::REPLICASETS,
        ("", "replicationcontrollers") => &workloads::REPLICATIONCONTROLLERS,
        ("apps", "daemonsets") => &workloads::DAEMONSETS,
        ("apps", "statefulsets") => &workloads::STATEFULSETS,
        ("apps", "controllerrevisions") => &workloads::CONTROLLERREVISIONS,
        ("batch", "jobs") => &batch::JOBS,
        ("batch", "cronjobs") => &batch::CRONJOBS,
        ("autoscaling", "horizontalpodautoscalers") => &scaling::HORIZONTALPODAUTOSCALERS,
        ("policy", "poddisruptionbudgets") => &scaling::PODDISRUPTIONBUDGETS,
        // Roles, cluster roles, limit ranges, CRDs and everything else: upstream has no
        // printer for them and serves the default table.
        _ => return None,
    };
    Some(p)
}

/// Column definitions (name, type, format, description, priority) for a resource,
/// identified by group and plural resource name; kinds without a printer get upstream's
/// default (Name with format "name", Created At with type "date").
pub fn columns(group: &str, plural: &str) -> Vec<Value> {
    let cols = match printer(group, plural) {
        Some(p) => p.columns,
        None => DEFAULT_COLUMNS,
    };
    cols.iter().map(|c| c.to_json()).collect()
}

/// One row's cells for an object (same length as columns), computed at `now`.
pub fn cells(group: &str, plural: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    match printer(group, plural) {
        Some(p) => (p.cells)(obj, now),
        None => default_cells(obj),
    }
}

/// Row conditions (e.g. `[{"type":"Completed","status":"True",...}]` for finished pods), if any.
pub fn conditions(group: &str, plural: &str, obj: &Value) -> Option<Value> {
    match (group, plural) {
        ("", "pods") => pods::row_conditions(obj),
        _ => None,
    }
}

/// Name and creation time (RFC 3339, UTC, whole seconds; the zero time when unset, as
/// upstream formats an unset `metav1.Time`).
fn default_cells(obj: &Value) -> Vec<Value> {
    let created = duration::parse_time(obj.pointer("/metadata/creationTimestamp"))
        .map(duration::rfc3339_seconds)
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string());
    vec![json!(text::name(obj)), json!(created)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_for_kinds_without_printer() {
        for (g, p) in [
            ("rbac.authorization.k8s.io", "roles"),
            ("rbac.authorization.k8s.io", "clusterroles"),
            ("", "limitranges"),
            ("apiextensions.k8s.io", "customresourcedefinitions"),
        ] {
            let cols = columns(g, p);
            assert_eq!(cols.len(), 2);
            assert_eq!(cols[0]["name"], "Name");
            assert_eq!(cols[0]["format"], "name");
            assert_eq!(cols[1]["name"], "Created At");
            assert_eq!(cols[1]["type"], "date");
        }
        let obj =
            json!({"metadata": {"name": "admin", "creationTimestamp": "2024-05-01T10:20:30Z"}});
        let now: Timestamp = "2024-06-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            cells("rbac.authorization.k8s.io", "roles", &obj, now),
            vec![json!("admin"), json!("2024-05-01T10:20:30Z")]
        );
        let unset = json!({"metadata": {"name": "x"}});
        assert_eq!(
            cells("", "limitranges", &unset, now)[1],
            json!("0001-01-01T00:00:00Z")
        );
    }

    #[test]
    fn every_column_definition_is_complete() {
        let kinds = [
            ("", "pods"),
            ("", "nodes"),
            ("", "namespaces"),
            ("", "events"),
            ("events.k8s.io", "events"),
            ("coordination.k8s.io", "leases"),
            ("", "configmaps"),
            ("", "secrets"),
            ("", "serviceaccounts"),
            ("", "resourcequotas"),
            ("rbac.authorization.k8s.io", "rolebindings"),
            ("rbac.authorization.k8s.io", "clusterrolebindings"),
            ("", "services"),
            ("", "endpoints"),
            ("discovery.k8s.io", "endpointslices"),
            ("networking.k8s.io", "ingresses"),
            ("networking.k8s.io", "networkpolicies"),
            ("", "persistentvolumes"),
            ("", "persistentvolumeclaims"),
            ("storage.k8s.io", "storageclasses"),
            ("scheduling.k8s.io", "priorityclasses"),
            ("apps", "deployments"),
            ("apps", "replicasets"),
            ("", "replicationcontrollers"),
            ("apps", "daemonsets"),
            ("apps", "statefulsets"),
            ("apps", "controllerrevisions"),
            ("batch", "jobs"),
            ("batch", "cronjobs"),
            ("autoscaling", "horizontalpodautoscalers"),
            ("policy", "poddisruptionbudgets"),
        ];
        let now: Timestamp = "2024-06-01T00:00:00Z".parse().unwrap();
        let empty = json!({"metadata": {"name": "x"}});
        for (g, p) in kinds {
            assert!(printer(g, p).is_some(), "{g}/{p}");
            let cols = columns(g, p);
            let names = cols.iter().filter(|c| c["format"] == "name").count();
            assert!(names >= 1, "{g}/{p} has a name column");
            for c in &cols {
                for key in ["name", "type", "format", "description", "priority"] {
                    assert!(c.get(key).is_some(), "{g}/{p} column lacks {key}");
                }
                assert!(
                    !c["description"].as_str().unwrap_or("").is_empty(),
                    "{g}/{p} {c}"
                );
            }
            // Even a bare object yields exactly one cell per column.
            assert_eq!(cells(g, p, &empty, now).len(), cols.len(), "{g}/{p}");
        }
    }
}
