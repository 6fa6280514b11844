//! Printers of what scales and protects workloads: horizontal pod autoscalers (with
//! their metric targets) and pod disruption budgets.

use jiff::Timestamp;
use serde_json::{json, Value};

use super::duration::age;
use super::text::{arr, at, int_at, int_or, name, scalar, str_at};
use super::{col, Column, Printer, AGE, NAME};

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
