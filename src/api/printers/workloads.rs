//! Printers of the workload controllers: deployments, replica sets, replication
//! controllers, daemon sets, stateful sets and controller revisions.

use jiff::Timestamp;
use serde_json::{json, Value};

use super::duration::age;
use super::text::{
    arr, at, container_cells, format_label_selector, format_labels, int_at, int_or, name,
    selector_string, str_at,
};
use super::{col, Column, Printer, AGE, CONTAINERS, IMAGES, NAME};

const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    col(
        "Up-to-date",
        "string",
        "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
    ),
    col(
        "Available",
        "string",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    super::wide("Selector", "string", "Label selector for pods."),
];

pub(crate) static DEPLOYMENTS: Printer = Printer {
    columns: DEPLOYMENT_COLUMNS,
    cells: deployment_cells,
};

fn deployment_cells(d: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(at(d, "/spec/template/spec"));
    // Deployments print the selector unlike the other workloads: empty stays empty and
    // an invalid one reads "<invalid>".
    let selector = selector_string(at(d, "/spec/selector")).unwrap_or_else(|()| "<invalid>".into());
    vec![
        json!(name(d)),
        json!(format!(
            "{}/{}",
            int_at(d, "/status/readyReplicas"),
            int_or(d, "/spec/replicas", 1)
        )),
        json!(int_at(d, "/status/updatedReplicas")),
        json!(int_at(d, "/status/availableReplicas")),
        json!(age(d, now)),
        json!(names),
        json!(images),
        json!(selector),
    ]
}

const REPLICASET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "Replicas is the number of desired replicas.",
    ),
    col(
        "Current",
        "integer",
        "Replicas is the most recently observed number of replicas.",
    ),
    col(
        "Ready",
        "integer",
        "The number of ready replicas for this replica set.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    super::wide(
        "Selector",
        "string",
        "Selector is a label query over pods that should match the replica count.",
    ),
];

pub(crate) static REPLICASETS: Printer = Printer {
    columns: REPLICASET_COLUMNS,
    cells: replicaset_cells,
};

fn replicaset_cells(rs: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(at(rs, "/spec/template/spec"));
    vec![
        json!(name(rs)),
        json!(int_or(rs, "/spec/replicas", 1)),
        json!(int_at(rs, "/status/replicas")),
        json!(int_at(rs, "/status/readyReplicas")),
        json!(age(rs, now)),
        json!(names),
        json!(images),
        json!(format_label_selector(at(rs, "/spec/selector"))),
    ]
}

const REPLICATIONCONTROLLER_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "Replicas is the number of desired replicas.",
    ),
    col(
        "Current",
        "integer",
        "Replicas is the most recently observed number of replicas.",
    ),
    col(
        "Ready",
        "integer",
        "The number of ready replicas for this replication controller.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    super::wide(
        "Selector",
        "string",
        "Selector is a label query over pods that should match the Replicas count.",
    ),
];

pub(crate) static REPLICATIONCONTROLLERS: Printer = Printer {
    columns: REPLICATIONCONTROLLER_COLUMNS,
    cells: replicationcontroller_cells,
};

fn replicationcontroller_cells(rc: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(at(rc, "/spec/template/spec"));
    vec![
        json!(name(rc)),
        json!(int_or(rc, "/spec/replicas", 1)),
        json!(int_at(rc, "/status/replicas")),
        json!(int_at(rc, "/status/readyReplicas")),
        json!(age(rc, now)),
        json!(names),
        json!(images),
        json!(format_labels(at(rc, "/spec/selector"))),
    ]
}

const DAEMONSET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod).",
    ),
    col(
        "Current",
        "integer",
        "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
    ),
    col(
        "Ready",
        "integer",
        "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
    ),
    col(
        "Up-to-date",
        "integer",
        "The total number of nodes that are running updated daemon pod",
    ),
    col(
        "Available",
        "integer",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
    ),
    col(
        "Node Selector",
        "string",
        "NodeSelector is a selector which must be true for the pod to fit on a node.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    super::wide(
        "Selector",
        "string",
        "A label query over pods that are managed by the daemon set.",
    ),
];

pub(crate) static DAEMONSETS: Printer = Printer {
    columns: DAEMONSET_COLUMNS,
    cells: daemonset_cells,
};

fn daemonset_cells(ds: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(at(ds, "/spec/template/spec"));
    vec![
        json!(name(ds)),
        json!(int_at(ds, "/status/desiredNumberScheduled")),
        json!(int_at(ds, "/status/currentNumberScheduled")),
        json!(int_at(ds, "/status/numberReady")),
        json!(int_at(ds, "/status/updatedNumberScheduled")),
        json!(int_at(ds, "/status/numberAvailable")),
        json!(format_labels(at(ds, "/spec/template/spec/nodeSelector"))),
        json!(age(ds, now)),
        json!(names),
        json!(images),
        json!(format_label_selector(at(ds, "/spec/selector"))),
    ]
}

const STATEFULSET_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    AGE,
    CONTAINERS,
    IMAGES,
];

pub(crate) static STATEFULSETS: Printer = Printer {
    columns: STATEFULSET_COLUMNS,
    cells: statefulset_cells,
};

fn statefulset_cells(ss: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(at(ss, "/spec/template/spec"));
    vec![
        json!(name(ss)),
        json!(format!(
            "{}/{}",
            int_at(ss, "/status/readyReplicas"),
            int_or(ss, "/spec/replicas", 1)
        )),
        json!(age(ss, now)),
        json!(names),
        json!(images),
    ]
}

const CONTROLLERREVISION_COLUMNS: &[Column] = &[
    NAME,
    col("Controller", "string", "Controller of the object"),
    col(
        "Revision",
        "string",
        "Revision indicates the revision of the state represented by Data.",
    ),
    AGE,
];

pub(crate) static CONTROLLERREVISIONS: Printer = Printer {
    columns: CONTROLLERREVISION_COLUMNS,
    cells: controllerrevision_cells,
};

fn controllerrevision_cells(cr: &Value, now: Timestamp) -> Vec<Value> {
    let controller = arr(cr, "/metadata/ownerReferences")
        .iter()
        .find(|r| at(r, "/controller").and_then(Value::as_bool) == Some(true))
        .map(|r| {
            // "daemonset.apps/name": kind plus group, lower-cased.
            let api_version = str_at(r, "/apiVersion");
            let group = match api_version.split_once('/') {
                Some((g, _)) => g,
                None => "",
            };
            let kind = str_at(r, "/kind");
            let ref_name = str_at(r, "/name");
            let group_kind = if group.is_empty() {
                kind.to_string()
            } else {
                format!("{kind}.{group}")
            };
            if group_kind.is_empty() {
                ref_name.to_string()
            } else {
                format!("{}/{ref_name}", group_kind.to_lowercase())
            }
        })
        .unwrap_or_else(|| "<none>".to_string());
    vec![
        json!(name(cr)),
        json!(controller),
        json!(int_at(cr, "/revision")),
        json!(age(cr, now)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2024-06-01T12:00:00Z".parse().unwrap()
    }

    fn template() -> Value {
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
            {"name": "nginx", "image": "nginx:1.27"},
            {"name": "sidecar", "image": "busybox"}
        ]}})
    }

    #[test]
    fn deployment() {
        let d = json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-06-01T09:00:00Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template()},
            "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        assert_eq!(
            deployment_cells(&d, now()),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("3h"),
                json!("nginx,sidecar"),
                json!("nginx:1.27,busybox"),
                json!("app=web")
            ]
        );
        // Fresh deployment without status or replicas: one replica by default.
        let fresh = json!({"metadata": {"name": "web"}, "spec": {"template": template()}});
        let c = deployment_cells(&fresh, now());
        assert_eq!(
            c[1..5],
            [json!("0/1"), json!(0), json!(0), json!("<unknown>")]
        );
        assert_eq!(c[7], json!(""));
    }

    #[test]
    fn replicaset_daemonset_statefulset_rc() {
        let rs = json!({
            "metadata": {"name": "web-5d8f", "creationTimestamp": "2024-06-01T11:58:00Z"},
            "spec": {"replicas": 2, "template": template(),
                "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d8f"}}},
            "status": {"replicas": 2, "readyReplicas": 1}
        });
        assert_eq!(
            replicaset_cells(&rs, now()),
            vec![
                json!("web-5d8f"),
                json!(2),
                json!(2),
                json!(1),
                json!("2m"),
                json!("nginx,sidecar"),
                json!("nginx:1.27,busybox"),
                json!("app=web,pod-template-hash=5d8f")
            ]
        );

        let mut ds_template = template();
        ds_template["spec"]["nodeSelector"] = json!({"kubernetes.io/os": "linux"});
        let ds = json!({
            "metadata": {"name": "agent", "creationTimestamp": "2024-05-30T12:00:00Z"},
            "spec": {"template": ds_template, "selector": {"matchLabels": {"app": "agent"}}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                "updatedNumberScheduled": 3, "numberAvailable": 2}
        });
        assert_eq!(
            daemonset_cells(&ds, now())[..8],
            [
                json!("agent"),
                json!(3),
                json!(3),
                json!(2),
                json!(3),
                json!(2),
                json!("kubernetes.io/os=linux"),
                json!("2d")
            ]
        );

        let ss = json!({
            "metadata": {"name": "db", "creationTimestamp": "2024-06-01T11:00:00Z"},
            "spec": {"replicas": 3, "template": template()},
            "status": {"readyReplicas": 3}
        });
        assert_eq!(
            statefulset_cells(&ss, now()),
            vec![
                json!("db"),
                json!("3/3"),
                json!("60m"),
                json!("nginx,sidecar"),
                json!("nginx:1.27,busybox")
            ]
        );

        let rc = json!({
            "metadata": {"name": "old", "creationTimestamp": "2024-06-01T11:00:00Z"},
            "spec": {"replicas": 1, "selector": {"app": "old"}},
            "status": {"replicas": 1}
        });
        assert_eq!(
            replicationcontroller_cells(&rc, now()),
            vec![
                json!("old"),
                json!(1),
                json!(1),
                json!(0),
                json!("60m"),
                json!(""),
                json!(""),
                json!("app=old")
            ]
        );
    }

    #[test]
    fn controller_revision() {
        let cr = json!({
            "metadata": {"name": "agent-6b9c", "creationTimestamp": "2024-06-01T11:00:00Z",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "controller": true}]},
            "revision": 2
        });
        assert_eq!(
            controllerrevision_cells(&cr, now()),
            vec![
                json!("agent-6b9c"),
                json!("daemonset.apps/agent"),
                json!(2),
                json!("60m")
            ]
        );
        let orphan = json!({"metadata": {"name": "x"}, "revision": 1});
        assert_eq!(controllerrevision_cells(&orphan, now())[1], json!("<none>"));
    }
}
