//! Printers of the workload controllers and what scales them: deployments, replica
//! sets, replication controllers, daemon sets, stateful sets, controller revisions,
//! jobs, cron jobs, horizontal pod autoscalers and pod disruption budgets.

use jiff::Timestamp;
use serde_json::{json, Value};

use super::duration::{age, between, parse_time, since};
use super::text::{
    arr, at, container_cells, deleting, format_label_selector, format_labels, int_at, int_of,
    int_or, len_at, name, scalar, selector_string, str_at,
};
use super::{col, Column, Printer, AGE, CONTAINERS, IMAGES, NAME};

// ---------------------------------------------------------------------------------------
// Deployments, replica sets, replication controllers, daemon sets, stateful sets

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

// ---------------------------------------------------------------------------------------
// Jobs and cron jobs

const JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "Status of the job."),
    col(
        "Completions",
        "string",
        "The number of pods which reached phase Succeeded.",
    ),
    col("Duration", "string", "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    super::wide(
        "Selector",
        "string",
        "A label query over pods that should match the pod count.",
    ),
];

pub(crate) static JOBS: Printer = Printer {
    columns: JOB_COLUMNS,
    cells: job_cells,
};

/// Whether the first job condition of this type is True.
fn job_condition(job: &Value, kind: &str) -> bool {
    arr(job, "/status/conditions")
        .iter()
        .find(|c| str_at(c, "/type") == kind)
        .is_some_and(|c| str_at(c, "/status") == "True")
}

fn job_cells(job: &Value, now: Timestamp) -> Vec<Value> {
    let succeeded = int_at(job, "/status/succeeded");
    let completions = match at(job, "/spec/completions").and_then(int_of) {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let parallelism = int_at(job, "/spec/parallelism");
            if parallelism > 1 {
                format!("{succeeded}/1 of {parallelism}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };
    let start = parse_time(job.pointer("/status/startTime"));
    let end = parse_time(job.pointer("/status/completionTime"));
    let duration = match (start, end) {
        (None, _) => String::new(),
        (Some(s), None) => since(Some(s), now),
        (Some(s), Some(e)) => between(e, s),
    };
    let status = if job_condition(job, "Complete") {
        "Complete"
    } else if job_condition(job, "Failed") {
        "Failed"
    } else if deleting(job) {
        "Terminating"
    } else if job_condition(job, "Suspended") {
        "Suspended"
    } else if job_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = container_cells(at(job, "/spec/template/spec"));
    vec![
        json!(name(job)),
        json!(status),
        json!(completions),
        json!(duration),
        json!(age(job, now)),
        json!(names),
        json!(images),
        json!(format_label_selector(at(job, "/spec/selector"))),
    ]
}

const CRONJOB_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Schedule",
        "string",
        "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
    ),
    col(
        "Timezone",
        "string",
        "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones.",
    ),
    col(
        "Suspend",
        "boolean",
        "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.",
    ),
    col(
        "Active",
        "integer",
        "A list of pointers to currently running jobs.",
    ),
    col(
        "Last Schedule",
        "string",
        "Information when was the last time the job was successfully scheduled.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    super::wide(
        "Selector",
        "string",
        "A label query over pods that should match the pod count.",
    ),
];

pub(crate) static CRONJOBS: Printer = Printer {
    columns: CRONJOB_COLUMNS,
    cells: cronjob_cells,
};

fn cronjob_cells(cj: &Value, now: Timestamp) -> Vec<Value> {
    let last = match parse_time(cj.pointer("/status/lastScheduleTime")) {
        Some(t) => since(Some(t), now),
        None => "<none>".to_string(),
    };
    let time_zone = match at(cj, "/spec/timeZone").and_then(Value::as_str) {
        Some(tz) => tz.to_string(),
        None => "<none>".to_string(),
    };
    // Upstream prints the (defaulted to false) flag as the string "True"/"False".
    let suspend = match at(cj, "/spec/suspend").and_then(Value::as_bool) {
        Some(true) => "True",
        _ => "False",
    };
    let (names, images) = container_cells(at(cj, "/spec/jobTemplate/spec/template/spec"));
    vec![
        json!(name(cj)),
        json!(str_at(cj, "/spec/schedule")),
        json!(time_zone),
        json!(suspend),
        json!(len_at(cj, "/status/active")),
        json!(last),
        json!(age(cj, now)),
        json!(names),
        json!(images),
        json!(format_label_selector(at(
            cj,
            "/spec/jobTemplate/spec/selector"
        ))),
    ]
}

// ---------------------------------------------------------------------------------------
// Horizontal pod autoscalers and pod disruption budgets

const HPA_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Reference",
        "string",
        "scaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count.",
    ),
    col(
        "Targets",
        "string",
        "metrics contains the specifications for which to use to calculate the desired replica count (the maximum replica count across all metrics will be used).",
    ),
    col(
        "MinPods",
        "string",
        "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.",
    ),
    col(
        "MaxPods",
        "string",
        "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up.",
    ),
    col(
        "Replicas",
        "string",
        "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler.",
    ),
    AGE,
];

pub(crate) static HORIZONTALPODAUTOSCALERS: Printer = Printer {
    columns: HPA_COLUMNS,
    cells: hpa_cells,
};

/// A quantity as Go prints a possibly-nil `*resource.Quantity`.
fn quantity(v: &Value, pointer: &str) -> String {
    match at(v, pointer) {
        Some(q) => scalar(q),
        None => "<nil>".to_string(),
    }
}

/// The status entry at the same index as the spec entry, if it has the given source.
fn metric_status<'a>(statuses: &'a [Value], i: usize, source: &str) -> Option<&'a Value> {
    statuses.get(i).and_then(|s| at(s, &format!("/{source}")))
}

/// One `autoscaling/v2` metric spec rendered as `current/target`.
fn format_metric(spec: &Value, statuses: &[Value], i: usize) -> String {
    let unknown = || "<unknown>".to_string();
    match str_at(spec, "/type") {
        source @ ("External" | "Object") => {
            let key = if source == "External" {
                "external"
            } else {
                "object"
            };
            let status = metric_status(statuses, i, key);
            let target = at(spec, &format!("/{key}/target")).unwrap_or(&Value::Null);
            if at(target, "/averageValue").is_some() {
                let current = status
                    .filter(|s| at(s, "/current/averageValue").is_some())
                    .map(|s| quantity(s, "/current/averageValue"))
                    .unwrap_or_else(unknown);
                format!("{current}/{} (avg)", quantity(target, "/averageValue"))
            } else {
                let current = status
                    .map(|s| quantity(s, "/current/value"))
                    .unwrap_or_else(unknown);
                format!("{current}/{}", quantity(target, "/value"))
            }
        }
        "Pods" => {
            let current = metric_status(statuses, i, "pods")
                .map(|s| quantity(s, "/current/averageValue"))
                .unwrap_or_else(unknown);
            format!("{current}/{}", quantity(spec, "/pods/target/averageValue"))
        }
        source @ ("Resource" | "ContainerResource") => {
            let key = if source == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let status = metric_status(statuses, i, key);
            let resource = str_at(spec, &format!("/{key}/name"));
            let target = at(spec, &format!("/{key}/target")).unwrap_or(&Value::Null);
            if at(target, "/averageValue").is_some() {
                let current = status
                    .map(|s| quantity(s, "/current/averageValue"))
                    .unwrap_or_else(unknown);
                format!(
                    "{resource}: {current}/{}",
                    quantity(target, "/averageValue")
                )
            } else {
                let current = status
                    .and_then(|s| at(s, "/current/averageUtilization"))
                    .map(|u| format!("{}%", scalar(u)))
                    .unwrap_or_else(unknown);
                let target = at(target, "/averageUtilization")
                    .map(|u| format!("{}%", scalar(u)))
                    .unwrap_or_else(|| "<auto>".to_string());
                format!("{resource}: {current}/{target}")
            }
        }
        _ => "<unknown type>".to_string(),
    }
}

/// The metrics of an HPA, as `autoscaling/v2` has them after upstream's conversion and
/// defaulting: v1's CPU percentage becomes a Resource metric, and no metrics at all
/// means the default 80% CPU utilization.
fn hpa_metrics(hpa: &Value) -> (Vec<Value>, Vec<Value>) {
    let specs = arr(hpa, "/spec/metrics").to_vec();
    if !specs.is_empty() {
        return (specs, arr(hpa, "/status/currentMetrics").to_vec());
    }
    let target = at(hpa, "/spec/targetCPUUtilizationPercentage")
        .cloned()
        .unwrap_or(json!(80));
    let spec = json!({"type": "Resource", "resource": {"name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": target}}});
    let statuses = match at(hpa, "/status/currentCPUUtilizationPercentage") {
        Some(current) => vec![json!({"type": "Resource", "resource": {"name": "cpu",
            "current": {"averageUtilization": current}}})],
        None => arr(hpa, "/status/currentMetrics").to_vec(),
    };
    (vec![spec], statuses)
}

/// The Targets cell: at most two metrics, then "+ N more...".
fn format_hpa_metrics(hpa: &Value) -> String {
    let (specs, statuses) = hpa_metrics(hpa);
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| format_metric(s, &statuses, i))
        .collect();
    const MAX: usize = 2;
    if list.len() > MAX {
        return format!("{} + {} more...", list[..MAX].join(", "), list.len() - MAX);
    }
    list.join(", ")
}

fn hpa_cells(hpa: &Value, now: Timestamp) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        str_at(hpa, "/spec/scaleTargetRef/kind"),
        str_at(hpa, "/spec/scaleTargetRef/name")
    );
    // minReplicas defaults to 1.
    let min = int_or(hpa, "/spec/minReplicas", 1).to_string();
    vec![
        json!(name(hpa)),
        json!(reference),
        json!(format_hpa_metrics(hpa)),
        json!(min),
        json!(int_at(hpa, "/spec/maxReplicas")),
        json!(int_at(hpa, "/status/currentReplicas")),
        json!(age(hpa, now)),
    ]
}

const PDB_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Min Available",
        "string",
        "The minimum number of pods that must be available.",
    ),
    col(
        "Max Unavailable",
        "string",
        "The maximum number of pods that may be unavailable.",
    ),
    col(
        "Allowed Disruptions",
        "integer",
        "Calculated number of pods that may be disrupted at this time.",
    ),
    AGE,
];

pub(crate) static PODDISRUPTIONBUDGETS: Printer = Printer {
    columns: PDB_COLUMNS,
    cells: pdb_cells,
};

fn pdb_cells(pdb: &Value, now: Timestamp) -> Vec<Value> {
    let int_or_string = |pointer: &str| match at(pdb, pointer) {
        Some(v) => scalar(v),
        None => "N/A".to_string(),
    };
    vec![
        json!(name(pdb)),
        json!(int_or_string("/spec/minAvailable")),
        json!(int_or_string("/spec/maxUnavailable")),
        json!(int_at(pdb, "/status/disruptionsAllowed")),
        json!(age(pdb, now)),
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

    fn job(spec: Value, status: Value) -> Value {
        let mut spec = spec;
        spec["template"] = template();
        spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "abc"}});
        json!({"metadata": {"name": "pi", "creationTimestamp": "2024-06-01T11:00:00Z"},
            "spec": spec, "status": status})
    }

    #[test]
    fn job_statuses_and_completions() {
        let running = job(
            json!({"completions": 3, "parallelism": 1}),
            json!({"startTime": "2024-06-01T11:00:00Z", "active": 1, "succeeded": 1}),
        );
        assert_eq!(
            job_cells(&running, now()),
            vec![
                json!("pi"),
                json!("Running"),
                json!("1/3"),
                json!("60m"),
                json!("60m"),
                json!("nginx,sidecar"),
                json!("nginx:1.27,busybox"),
                json!("batch.kubernetes.io/controller-uid=abc")
            ]
        );

        let complete = job(
            json!({"completions": 1}),
            json!({"startTime": "2024-06-01T11:00:00Z", "completionTime": "2024-06-01T11:00:42Z",
                "succeeded": 1, "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True"},
                    {"type": "Complete", "status": "True"}]}),
        );
        assert_eq!(
            job_cells(&complete, now())[1..4],
            [json!("Complete"), json!("1/1"), json!("42s")]
        );

        let failed = job(
            json!({"completions": 1, "parallelism": 1}),
            json!({"startTime": "2024-06-01T11:00:00Z", "failed": 6, "conditions": [
                {"type": "FailureTarget", "status": "True"},
                {"type": "Failed", "status": "True"}]}),
        );
        assert_eq!(
            job_cells(&failed, now())[1..3],
            [json!("Failed"), json!("0/1")]
        );

        let failure_target = job(
            json!({}),
            json!({"startTime": "2024-06-01T11:00:00Z", "conditions": [
                {"type": "FailureTarget", "status": "True"}]}),
        );
        assert_eq!(job_cells(&failure_target, now())[1], json!("FailureTarget"));

        let suspended = job(
            json!({"suspend": true, "parallelism": 4}),
            json!({"conditions": [{"type": "Suspended", "status": "True"}]}),
        );
        // No start time: empty duration; no completions: "of N" with parallelism.
        assert_eq!(
            job_cells(&suspended, now())[1..4],
            [json!("Suspended"), json!("0/1 of 4"), json!("")]
        );

        let mut terminating = job(json!({"completions": 2}), json!({"succeeded": 1}));
        terminating["metadata"]["deletionTimestamp"] = json!("2024-06-01T11:59:00Z");
        assert_eq!(job_cells(&terminating, now())[1], json!("Terminating"));

        // A condition that is not True does not count.
        let resumed = job(
            json!({}),
            json!({"conditions": [{"type": "Suspended", "status": "False"}]}),
        );
        assert_eq!(job_cells(&resumed, now())[1], json!("Running"));
    }

    #[test]
    fn cronjob() {
        let cj = json!({
            "metadata": {"name": "backup", "creationTimestamp": "2024-05-31T12:00:00Z"},
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template()}}},
            "status": {"active": [{"name": "backup-1"}], "lastScheduleTime": "2024-06-01T11:55:00Z"}
        });
        assert_eq!(
            cronjob_cells(&cj, now()),
            vec![
                json!("backup"),
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("5m"),
                json!("24h"),
                json!("nginx,sidecar"),
                json!("nginx:1.27,busybox"),
                json!("<none>")
            ]
        );
        let tz = json!({
            "metadata": {"name": "report"},
            "spec": {"schedule": "0 6 * * *", "timeZone": "Europe/Berlin", "suspend": true}
        });
        assert_eq!(
            cronjob_cells(&tz, now())[1..6],
            [
                json!("0 6 * * *"),
                json!("Europe/Berlin"),
                json!("True"),
                json!(0),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn hpa_targets() {
        let hpa = json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-06-01T11:00:00Z"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 2, "maxReplicas": 10,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "500Mi"}}},
                    {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": "1k"}}}
                ]},
            "status": {"currentReplicas": 3, "currentMetrics": [
                {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 23, "averageValue": "120m"}}}
            ]}
        });
        assert_eq!(
            hpa_cells(&hpa, now()),
            vec![
                json!("web"),
                json!("Deployment/web"),
                json!("cpu: 23%/50%, memory: <unknown>/500Mi + 1 more..."),
                json!("2"),
                json!(10),
                json!(3),
                json!("60m")
            ]
        );
        // No metrics: upstream defaults to 80% CPU.
        let bare = json!({"metadata": {"name": "x"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 3}});
        assert_eq!(
            hpa_cells(&bare, now())[2..4],
            [json!("cpu: <unknown>/80%"), json!("1")]
        );
    }

    #[test]
    fn pdb() {
        let p = json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-06-01T11:00:00Z"},
            "spec": {"minAvailable": 1},
            "status": {"disruptionsAllowed": 2}
        });
        assert_eq!(
            pdb_cells(&p, now()),
            vec![
                json!("web"),
                json!("1"),
                json!("N/A"),
                json!(2),
                json!("60m")
            ]
        );
        let pct = json!({"metadata": {"name": "db"}, "spec": {"maxUnavailable": "25%"}});
        assert_eq!(
            pdb_cells(&pct, now())[1..4],
            [json!("N/A"), json!("25%"), json!(0)]
        );
    }
}
