//! The HorizontalPodAutoscaler's replica calculator, as upstream's: the proposal of one
//! Resource metric ([`resource_replicas`]): desired = ceil(usage ratio × ready pods),
//! the 0.1 tolerance, and pods that are pending, not yet ready (CPU) or missing metrics
//! treated as upstream's `groupPods` does; plus reading pods and quantities for it. No
//! I/O, so every rule is unit-tested; normalization is in [`super::hpa_normalize`].
//!
//! Times are milliseconds since the epoch; quantities are milli-units (upstream's
//! `MilliValue()` for both CPU and memory).

use crate::agent::pods::volumes::quantity::Quantity;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Usage ratios within this distance of 1.0 do not rescale (upstream's
/// `--horizontal-pod-autoscaler-tolerance`).
pub const TOLERANCE: f64 = 0.1;
/// CPU samples of a pod this young count only after a full window since it became ready
/// (`--horizontal-pod-autoscaler-cpu-initialization-period`, 5 min).
pub const CPU_INITIALIZATION_MS: i64 = 300_000;
/// A pod that turned unready within this time of starting has never been ready
/// (`--horizontal-pod-autoscaler-initial-readiness-delay`, 30 s).
pub const INITIAL_READINESS_DELAY_MS: i64 = 30_000;

/// Why no proposal could be computed; the text is upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    /// The metrics source had nothing for the selected pods.
    #[error(
        "unable to get metrics for resource {0}: no metrics returned from resource metrics API"
    )]
    NoMetrics(String),
    /// The selector matches no pod.
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    /// Every pod with metrics was unready or ignored.
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    AllUnready,
    /// A container of a selected pod has no request for the resource.
    #[error("missing request for {resource} in container {container} of Pod {pod}")]
    MissingRequest {
        /// The resource (`cpu`).
        resource: String,
        /// The container without a request.
        container: String,
        /// Its pod.
        pod: String,
    },
    /// Requests sum to zero over the pods with metrics.
    #[error("no metrics returned matched known pods")]
    NoMatchingPods,
}

/// One pod's usage of the resource from the metrics API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Usage summed over the pod's containers, in milli-units.
    pub value: i64,
    /// End of the metric window (ms since the epoch).
    pub timestamp_ms: i64,
    /// Length of the window (ms).
    pub window_ms: i64,
}

/// What the calculator needs to know of a selected pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// Pod name.
    pub name: String,
    /// Being deleted or Failed: ignored entirely.
    pub ignored: bool,
    /// Phase Pending.
    pub pending: bool,
    /// The Ready condition: (status is True, lastTransitionTime in ms), if present.
    pub ready: Option<(bool, i64)>,
    /// status.startTime in ms.
    pub start_ms: Option<i64>,
    /// Sum of the containers' requests for the resource (milli-units), or the first
    /// container without one.
    pub request: Result<i64, String>,
}

/// Milliseconds since the epoch of an RFC 3339 time.
pub fn parse_ms(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

/// A quantity in milli-units, rounded up like upstream's `MilliValue()`.
pub fn milli(q: &Value) -> Option<i64> {
    let s = match q {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Quantity::parse(&s).ok().map(Quantity::milli_value)
}

/// A milli-unit amount printed as upstream's `NewMilliQuantity(v, DecimalSI)`:
/// `250m`, `1`, `52428800`, `2k`.
pub fn format_milli(v: i64) -> String {
    if v % 1000 != 0 {
        return format!("{v}m");
    }
    let mut n = v / 1000;
    if n == 0 {
        return "0".into();
    }
    let mut suffix = "";
    for s in ["k", "M", "G", "T", "P", "E"] {
        if n % 1000 != 0 {
            break;
        }
        n /= 1000;
        suffix = s;
    }
    format!("{n}{suffix}")
}

/// The calculator's view of a pod object for `resource` (`cpu`, `memory`).
pub fn pod_info(pod: &Value, resource: &str) -> PodInfo {
    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    let phase = pod["status"]["phase"].as_str().unwrap_or("");
    let ready = pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| {
            let since = c["lastTransitionTime"]
                .as_str()
                .and_then(parse_ms)
                .unwrap_or(0);
            (c["status"] == "True", since)
        });
    let mut request = Ok(0);
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        match milli(&c["resources"]["requests"][resource]) {
            Some(v) => request = request.map(|sum| sum + v),
            None => {
                request = Err(c["name"].as_str().unwrap_or("").to_string());
                break;
            }
        }
    }
    PodInfo {
        ignored: pod["metadata"]["deletionTimestamp"].is_string() || phase == "Failed",
        pending: phase == "Pending",
        ready,
        start_ms: pod["status"]["startTime"].as_str().and_then(parse_ms),
        request,
        name,
    }
}

/// The metric target of a Resource metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Percent of the pods' requests (`averageUtilization`).
    Utilization(i64),
    /// Milli-units per pod (`averageValue`).
    AverageValue(i64),
}

/// A replica proposal of one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal {
    /// Desired replicas before normalization.
    pub replicas: i64,
    /// Current utilization in percent of requests (utilization targets only).
    pub utilization: Option<i64>,
    /// Current average usage per pod, milli-units.
    pub average: i64,
    /// Timestamp of the metrics used (ms).
    pub timestamp_ms: i64,
}

/// Upstream's groupPods: (ready count, unready, missing), dropping ignored pods.
fn group_pods(
    pods: &[PodInfo],
    metrics: &BTreeMap<String, Sample>,
    cpu: bool,
    now_ms: i64,
) -> (usize, BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let (mut ready, mut unready, mut missing, mut ignored) =
        (0, BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for p in pods {
        if p.ignored {
            ignored.insert(p.name.clone());
            continue;
        }
        if p.pending {
            unready.insert(p.name.clone());
            continue;
        }
        let Some(sample) = metrics.get(&p.name) else {
            missing.insert(p.name.clone());
            continue;
        };
        if cpu {
            let is_unready = match (p.ready, p.start_ms) {
                (Some((status, since)), Some(start)) => {
                    if start + CPU_INITIALIZATION_MS > now_ms {
                        // Young pod: its sample must cover a whole window after readiness.
                        !status || sample.timestamp_ms < since + sample.window_ms
                    } else {
                        // Unready and never was ready since starting.
                        !status && start + INITIAL_READINESS_DELAY_MS > since
                    }
                }
                _ => true,
            };
            if is_unready {
                unready.insert(p.name.clone());
                continue;
            }
        }
        ready += 1;
    }
    (ready, unready, missing, ignored)
}

/// (ratio to target, utilization percent, average raw) for utilization targets.
fn utilization_ratio(
    metrics: &BTreeMap<String, i64>,
    requests: &BTreeMap<String, i64>,
    target: i64,
) -> Result<(f64, i64, i64), MetricError> {
    let (mut used, mut requested, mut n) = (0i64, 0i64, 0i64);
    for (pod, v) in metrics {
        // Metrics of pods without a known request are extraneous.
        if let Some(r) = requests.get(pod) {
            used += v;
            requested += r;
            n += 1;
        }
    }
    if requested == 0 {
        return Err(MetricError::NoMatchingPods);
    }
    let utilization = used * 100 / requested;
    Ok((utilization as f64 / target as f64, utilization, used / n))
}

/// (ratio to target, average) for average-value targets.
fn value_ratio(metrics: &BTreeMap<String, i64>, target: i64) -> (f64, i64) {
    let total: i64 = metrics.values().sum();
    let avg = total / (metrics.len().max(1) as i64);
    (avg as f64 / target as f64, avg)
}

/// The replica proposal of one Resource metric, as upstream's GetResourceReplicas
/// (utilization) and GetRawResourceReplicas (average value). `metrics` holds the
/// samples of the selected pods by name; `current` is the target's spec.replicas.
pub fn resource_replicas(
    resource: &str,
    current: i64,
    target: Target,
    pods: &[PodInfo],
    samples: &BTreeMap<String, Sample>,
    now_ms: i64,
) -> Result<Proposal, MetricError> {
    if samples.is_empty() {
        return Err(MetricError::NoMetrics(resource.to_string()));
    }
    let timestamp_ms = samples.values().next().map_or(0, |s| s.timestamp_ms);
    if pods.is_empty() {
        return Err(MetricError::NoPods);
    }
    let (ready, unready, missing, ignored) = group_pods(pods, samples, resource == "cpu", now_ms);
    let mut metrics: BTreeMap<String, i64> = samples
        .iter()
        .filter(|(n, _)| !ignored.contains(*n) && !unready.contains(*n))
        .map(|(n, s)| (n.clone(), s.value))
        .collect();
    if metrics.is_empty() {
        return Err(MetricError::AllUnready);
    }
    let mut requests = BTreeMap::new();
    if let Target::Utilization(_) = target {
        for p in pods {
            match &p.request {
                Ok(r) => requests.insert(p.name.clone(), *r),
                Err(container) => {
                    return Err(MetricError::MissingRequest {
                        resource: resource.to_string(),
                        container: container.clone(),
                        pod: p.name.clone(),
                    })
                }
            };
        }
    }
    let ratio = |m: &BTreeMap<String, i64>| -> Result<(f64, Option<i64>, i64), MetricError> {
        match target {
            Target::Utilization(t) => {
                let (r, u, avg) = utilization_ratio(m, &requests, t)?;
                Ok((r, Some(u), avg))
            }
            Target::AverageValue(t) => {
                let (r, avg) = value_ratio(m, t);
                Ok((r, None, avg))
            }
        }
    };
    let (usage_ratio, utilization, average) = ratio(&metrics)?;
    let proposal = |replicas| Proposal {
        replicas,
        utilization,
        average,
        timestamp_ms,
    };
    let within = |r: f64| (1.0 - r).abs() <= TOLERANCE;
    let scale_up_with_unready = !unready.is_empty() && usage_ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if within(usage_ratio) {
            return Ok(proposal(current));
        }
        return Ok(proposal((usage_ratio * ready as f64).ceil() as i64));
    }
    // Missing pods count as using their whole request (or the target, if higher) on a
    // scale-down and nothing on a scale-up: the conservative side either way.
    if !missing.is_empty() {
        for name in &missing {
            let v = if usage_ratio < 1.0 {
                match target {
                    Target::Utilization(t) => {
                        requests.get(name).copied().unwrap_or(0) * t.max(100) / 100
                    }
                    Target::AverageValue(t) => t,
                }
            } else {
                0
            };
            if usage_ratio != 1.0 {
                metrics.insert(name.clone(), v);
            }
        }
    }
    if scale_up_with_unready {
        for name in &unready {
            metrics.insert(name.clone(), 0);
        }
    }
    let (new_ratio, _, _) = ratio(&metrics)?;
    if within(new_ratio)
        || (usage_ratio < 1.0 && new_ratio > 1.0)
        || (usage_ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(proposal(current));
    }
    let new_replicas = (new_ratio * metrics.len() as f64).ceil() as i64;
    if (new_ratio < 1.0 && new_replicas > current) || (new_ratio > 1.0 && new_replicas < current) {
        return Ok(proposal(current));
    }
    Ok(proposal(new_replicas))
}

#[cfg(test)]
#[path = "hpa_rules_tests.rs"]
mod tests;
