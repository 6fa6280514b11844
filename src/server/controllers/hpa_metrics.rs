//! One HPA metric evaluated against the server's own pod metrics (the data
//! `metrics.k8s.io` serves): Resource and ContainerResource metrics with Utilization or
//! AverageValue targets, giving a replica proposal and the metric's status entry, or
//! upstream's failure reason and error texts. Pods, Object and External metrics need a
//! custom or external metrics API, which k3rs does not serve: they fail with a reason.

use super::hpa_rules::{self as rules, Sample, Target};
use crate::api::meta;
use crate::server::metrics::ResourceMetrics;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why one metric gave no proposal.
pub(super) struct MetricFailure {
    /// The condition and event reason (`FailedGetResourceMetric`).
    pub reason: String,
    /// The error as the event and condition show it.
    pub inner: String,
    /// The error wrapped with the metric, as FailedComputeMetricsReplicas shows it.
    pub outer: String,
}

impl MetricFailure {
    fn new(reason: &str, inner: String, outer: String) -> Self {
        MetricFailure {
            reason: reason.to_string(),
            inner,
            outer,
        }
    }
}

/// One metric's outcome: (replicas, metric name for events) or why not.
pub(super) type MetricResult = Result<(i64, String), MetricFailure>;

/// One metric spec: its proposal and its status entry.
pub(super) fn compute_metric(
    metrics: &ResourceMetrics,
    m: &Value,
    pods: &[Arc<Value>],
    ns: &str,
    current: i64,
    now_ms: i64,
) -> (MetricResult, Value) {
    let empty = json!({"type": ""});
    let kind = m["type"].as_str().unwrap_or("");
    let (source, container, wrap, failed) = match kind {
        "Resource" => (
            &m["resource"],
            None,
            "resource metric",
            "FailedGetResourceMetric",
        ),
        "ContainerResource" => (
            &m["containerResource"],
            m["containerResource"]["container"].as_str(),
            "container metric",
            "FailedGetContainerResourceMetric",
        ),
        "Pods" | "Object" | "External" => {
            // No custom or external metrics API is served: say so as upstream does
            // when that API is missing.
            let err = format!(
                "unable to get metric: no {} metrics API is served by this cluster",
                if kind == "External" {
                    "external"
                } else {
                    "custom"
                }
            );
            let outer = format!("failed to get {} metric value: {err}", kind.to_lowercase());
            let reason = format!("FailedGet{kind}Metric");
            return (Err(MetricFailure::new(&reason, err, outer)), empty);
        }
        other => {
            let err = format!("unknown metric source type \"{other}\"");
            let f = MetricFailure::new("InvalidMetricSourceType", err.clone(), err);
            return (Err(f), empty);
        }
    };
    let resource = source["name"].as_str().unwrap_or("");
    let target = &source["target"];
    let (target_kind, failed_what) = if let Some(v) =
        target.get("averageValue").filter(|v| !v.is_null())
    {
        match rules::milli(v) {
            Some(v) => (Target::AverageValue(v), "usage"),
            None => {
                let err = format!("invalid averageValue {v}");
                let outer = format!("failed to get {resource} {wrap} value: {err}");
                return (Err(MetricFailure::new(failed, err, outer)), empty);
            }
        }
    } else if let Some(u) = target["averageUtilization"].as_i64() {
        (Target::Utilization(u), "utilization")
    } else {
        let err = "invalid resource metric source: neither an average utilization target nor an average value (usage) target was set";
        let outer = format!("failed to get {resource} {wrap} value: {err}");
        return (Err(MetricFailure::new(failed, err.into(), outer)), empty);
    };
    let infos: Vec<rules::PodInfo> = pods
        .iter()
        .map(|p| rules::pod_info(&container_view(p, container), resource))
        .collect();
    let samples = samples(metrics, ns, pods, resource, container);
    match rules::resource_replicas(resource, current, target_kind, &infos, &samples, now_ms) {
        Ok(p) => {
            let mut cur = json!({"averageValue": rules::format_milli(p.average)});
            if let Some(u) = p.utilization {
                cur["averageUtilization"] = json!(u);
            }
            let mut src = json!({"name": resource, "current": cur});
            if let Some(c) = container {
                src["container"] = json!(c);
            }
            let key = if container.is_some() {
                "containerResource"
            } else {
                "resource"
            };
            let name = format!("{resource} resource utilization (percentage of request)");
            let name = match target_kind {
                Target::AverageValue(_) => format!("{resource} resource"),
                Target::Utilization(_) => name,
            };
            (Ok((p.replicas, name)), json!({"type": kind, key: src}))
        }
        Err(e) => {
            let inner = format!("failed to get {resource} {failed_what}: {e}");
            let outer = format!("failed to get {resource} {wrap} value: {inner}");
            (Err(MetricFailure::new(failed, inner, outer)), empty)
        }
    }
}

/// The selected pods' usage of `resource` (summed over containers, or one container)
/// in milli-units, from the same data `metrics.k8s.io` serves.
fn samples(
    metrics: &ResourceMetrics,
    ns: &str,
    pods: &[Arc<Value>],
    resource: &str,
    container: Option<&str>,
) -> BTreeMap<String, Sample> {
    let names: std::collections::BTreeSet<&str> = pods.iter().map(|p| meta::name(p)).collect();
    let mut out = BTreeMap::new();
    for u in metrics.pods() {
        if u.namespace != ns || !names.contains(u.name.as_str()) {
            continue;
        }
        let used: Vec<_> = u
            .containers
            .iter()
            .filter(|(n, _)| container.is_none_or(|c| c == n))
            .collect();
        let Some((_, first)) = used.first() else {
            continue;
        };
        let value: i64 = used
            .iter()
            .map(|(_, c)| match resource {
                // MilliValue() of a nanocore quantity rounds up.
                "cpu" => c.nano_cores.div_ceil(1_000_000) as i64,
                _ => (c.memory_bytes as i64).saturating_mul(1000),
            })
            .sum();
        if resource != "cpu" && resource != "memory" {
            continue;
        }
        out.insert(
            u.name.clone(),
            Sample {
                value,
                timestamp_ms: first.timestamp.as_millisecond(),
                window_ms: first.window.as_millis() as i64,
            },
        );
    }
    out
}

/// The pod with only `container` in its spec (for ContainerResource metrics, whose
/// requests count one container).
fn container_view(pod: &Value, container: Option<&str>) -> Value {
    let Some(c) = container else {
        return pod.clone();
    };
    let mut p = pod.clone();
    if let Some(cs) = p["spec"]["containers"].as_array_mut() {
        cs.retain(|x| x["name"] == c);
    }
    p
}
